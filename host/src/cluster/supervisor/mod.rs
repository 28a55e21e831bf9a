//! Many pipelines in one process, from a pipelines file.
//!
//! Each pipeline runs as its own task with its own source connection, module instances,
//! configuration, secrets and allow-list; they share the WebAssembly engine, the state store
//! and a bound on the batches delivered at once (`max_batches_in_flight`, handed out first
//! come first served, so no pipeline starves another).
//!
//! Fault isolation: a pipeline whose run fails (source unreachable, destination down past its
//! retries, a module that traps on every batch, a bad configuration) is restarted after a
//! backoff of its own, doubling up to five minutes; the others are not touched. Guests yield
//! to the executor at every epoch tick, so a module that spins until its deadline does not
//! hold a worker thread.
//!
//! SIGHUP reads the file again: pipelines that appeared start, those that went away stop,
//! those whose settings or module files changed restart after the batch in hand (their
//! watermarks stay in the state store). SIGTERM or SIGINT stops every pipeline after its batch
//! in hand; batches still in flight after `stop_timeout` are abandoned unacknowledged, to be
//! delivered again under the same id on the next start.
//!
//! With a PostgreSQL state store (and without `--once`) the process is one of several
//! workers: it runs only the pipelines whose lease it holds, and claims and hands them over
//! as [`crate::cluster::membership`] decides. With SQLite it runs every pipeline of the file, and is the
//! only host that may.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::cluster::membership::{self, Membership};
use crate::cluster::settings::{PipelinesFile, Reload};
use crate::cluster::sqlite_lock::lock_sqlite;
use crate::engine::fence::Fence;
use crate::engine::pipeline;
use crate::engine::settings::RunConfig;
use crate::model::backoff::Backoff;
use crate::model::error::{Error, ErrorKind, Result};
use crate::model::shutdown::Shutdown;
use crate::runtime::engine::EngineOptions;
use crate::runtime::Runtime;
use crate::state::StateStore;

mod balance;

const LAST_RESTART: Duration = Duration::from_secs(300);
/// The waits before the restarts of a failing pipeline: 1 s doubling to five minutes.
const RESTARTS: Backoff = Backoff::new(Duration::from_secs(1), LAST_RESTART);

/// How a multi-pipeline run ended.
#[derive(Debug)]
pub struct Summary {
    /// Pipelines whose last run failed (with `--once`: their pass did not complete).
    pub failed: Vec<String>,
}

struct Running {
    fingerprint: String,
    shutdown: Shutdown,
    task: JoinHandle<bool>,
    /// The lease the pipeline runs under, when the process is a worker.
    fence: Option<Fence>,
}

pub struct Supervisor {
    file: PipelinesFile,
    /// Reads the file again on SIGHUP.
    reload: Reload,
    runtime: Arc<Runtime>,
    engine: EngineOptions,
    store: Arc<StateStore>,
    permits: Arc<Semaphore>,
    once: bool,
    running: BTreeMap<String, Running>,
    /// This worker among others (PostgreSQL state store), or `None`: every pipeline here.
    membership: Option<Membership>,
    /// Pipelines handed over or lost, still finishing their batch in hand.
    leaving: Vec<JoinHandle<()>>,
    /// The lock that makes this process the only one on an SQLite state store.
    _only_worker: Option<std::fs::File>,
}

impl Supervisor {
    /// Opens the state store and creates the engine every pipeline of `file` shares; a reload
    /// reads the file again with `reload`.
    pub async fn new(mut file: PipelinesFile, once: bool, reload: Reload) -> Result<Self> {
        run_once(&mut file, once);
        let store = Arc::new(StateStore::open(&file.state_url).await?);
        crate::source::pools::share(file.max_source_connections);
        let only_worker = lock_sqlite(&file.state_url)?;
        let membership =
            (!store.is_sqlite() && !once).then(|| Membership::new(&store, file.lease_ttl));
        let engine = engine_options(&file);
        let runtime = Arc::new(Runtime::new(&engine)?);
        Ok(Supervisor {
            membership,
            leaving: Vec::new(),
            _only_worker: only_worker,
            permits: Arc::new(Semaphore::new(file.max_batches_in_flight)),
            file,
            reload,
            runtime,
            engine,
            store,
            once,
            running: BTreeMap::new(),
        })
    }

    pub fn store(&self) -> Arc<StateStore> {
        self.store.clone()
    }

    /// Runs until every pipeline is done (`--once`) or `shutdown` is requested; reloads the
    /// file on SIGHUP.
    pub async fn run(mut self, shutdown: &Shutdown) -> Result<Summary> {
        if let Some(membership) = &self.membership {
            tracing::info!(
                "worker {}: sharing the {} pipelines of {} with the other workers of the state store (leases of {:?})",
                membership.name(),
                self.file.pipelines.len(),
                self.file.path.display(),
                self.file.lease_ttl
            );
        } else {
            let pipelines = self.file.pipelines.clone();
            for config in pipelines {
                self.start(config, None);
            }
            tracing::info!(
                "running {} pipelines from {} ({} batches in flight at most)",
                self.running.len(),
                self.file.path.display(),
                self.file.max_batches_in_flight
            );
        }
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let every = self
            .membership
            .as_ref()
            .map_or(Duration::from_secs(3600), Membership::every);
        let mut rounds = tokio::time::interval(every);
        rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.once && self.running.values().all(|run| run.task.is_finished()) {
                break;
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                Some(_) = async { hangup.as_mut()?.recv().await } => self.reload().await,
                _ = rounds.tick(), if self.membership.is_some() => self.balance().await,
                _ = tokio::time::sleep(Duration::from_millis(200)), if self.once => {}
            }
        }
        Ok(self.stop().await)
    }

    fn start(&mut self, config: RunConfig, fence: Option<Fence>) {
        let shutdown = Shutdown::default();
        let task = tokio::spawn(supervise(
            config.clone(),
            self.runtime.clone(),
            self.store.clone(),
            self.permits.clone(),
            shutdown.clone(),
            fence.clone(),
        ));
        self.running.insert(
            config.pipeline.clone(),
            Running {
                fingerprint: fingerprint(&config),
                shutdown,
                task,
                fence,
            },
        );
    }

    /// Reads the file again and applies the differences. A file that no longer parses changes
    /// nothing: the pipelines go on as they were.
    async fn reload(&mut self) {
        let mut file = match (self.reload)(&self.file.path) {
            Ok(file) => file,
            Err(err) => {
                let hint = err
                    .hint()
                    .map(|hint| format!(" ({hint})"))
                    .unwrap_or_default();
                tracing::error!("reload refused, pipelines unchanged: {err:#}{hint}");
                return;
            }
        };
        if file.state_url != self.file.state_url {
            tracing::warn!(
                "reload: a new state store takes a restart of host; keeping {}",
                self.file.state_url
            );
        }
        let engine = engine_options(&file);
        if (engine.fuel && !self.engine.fuel) || engine.max_memory > self.engine.max_memory {
            tracing::warn!(
                "reload: fuel metering or a larger memory limit takes a restart of host; pipelines that need them will fail until then"
            );
        }
        run_once(&mut file, self.once);
        let wanted: BTreeMap<String, RunConfig> = file
            .pipelines
            .iter()
            .map(|config| (config.pipeline.clone(), config.clone()))
            .collect();
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        let outdated: Vec<String> = self
            .running
            .iter()
            .filter(|(name, run)| {
                wanted
                    .get(*name)
                    .is_none_or(|config| run.fingerprint != fingerprint(config))
            })
            .map(|(name, _)| name.clone())
            .collect();
        // All stop at once, each after its batch in hand; their watermarks stay for the new
        // settings. One that takes longer than the stop timeout is abandoned, to come again.
        let stopping: Vec<(String, Running)> = outdated
            .into_iter()
            .filter_map(|name| self.running.remove(&name).map(|run| (name, run)))
            .collect();
        let fences: BTreeMap<String, i64> = stopping
            .iter()
            .filter_map(|(name, run)| Some((name.clone(), run.fence.as_ref()?.token)))
            .collect();
        for (name, _) in stop_all(stopping, self.file.stop_timeout).await {
            // A worker gives the lease back: the next round claims the pipeline again, here
            // or elsewhere, with its new settings.
            if let (Some(membership), Some(token)) = (&self.membership, fences.get(&name)) {
                membership.release(&name, *token).await;
                tracing::info!("reload: pipeline {name:?} changed or removed; released");
                continue;
            }
            match wanted.get(&name) {
                Some(config) => {
                    tracing::info!("reload: pipeline {name:?} changed; restarting it");
                    self.start(config.clone(), None);
                    changed += 1;
                }
                None => {
                    tracing::info!("reload: pipeline {name:?} removed; stopped");
                    removed += 1;
                }
            }
        }
        for (name, config) in wanted {
            if self.membership.is_none() && !self.running.contains_key(&name) {
                tracing::info!("reload: pipeline {name:?} added");
                self.start(config, None);
                added += 1;
            }
        }
        self.file.pipelines = file.pipelines;
        self.file.weights = file.weights;
        tracing::info!(
            "reloaded {}: {added} added, {changed} changed, {removed} removed, {} running",
            self.file.path.display(),
            self.running.len()
        );
    }

    /// Asks every pipeline to stop after its batch in hand and waits up to the stop timeout.
    /// A worker then releases every lease at once, for the others to take.
    async fn stop(self) -> Summary {
        let running = self.running.into_iter().collect();
        let failed = stop_all(running, self.file.stop_timeout)
            .await
            .into_iter()
            .filter(|(_, succeeded)| *succeeded == Some(false))
            .map(|(name, _)| name)
            .collect();
        for task in self.leaving {
            let _ = tokio::time::timeout(self.file.stop_timeout, task).await;
        }
        if let Some(membership) = &self.membership {
            membership.leave().await;
        }
        Summary { failed }
    }
}

/// Asks `runs` to stop after their batch in hand and waits for them all until `timeout`;
/// those still delivering then are abandoned unacknowledged (their batches come again under
/// the same id). Gives each pipeline's outcome: whether its last run succeeded, or `None` if
/// it was abandoned.
async fn stop_all(runs: Vec<(String, Running)>, timeout: Duration) -> Vec<(String, Option<bool>)> {
    for (_, run) in &runs {
        run.shutdown.request();
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut outcomes = Vec::with_capacity(runs.len());
    for (name, mut run) in runs {
        let outcome = match tokio::time::timeout_at(deadline, &mut run.task).await {
            Ok(Ok(succeeded)) => Some(succeeded),
            Ok(Err(panicked)) => {
                tracing::error!("pipeline {name:?} crashed: {panicked}");
                Some(false)
            }
            Err(_) => {
                run.task.abort();
                tracing::warn!(
                    "pipeline {name:?} did not stop within {timeout:?}; its batch in flight is abandoned and will be delivered again under the same id"
                );
                None
            }
        };
        outcomes.push((name, outcome));
    }
    outcomes
}

/// Runs one pipeline, restarting it after failures with a backoff of its own. Returns
/// whether its last run succeeded.
async fn supervise(
    config: RunConfig,
    runtime: Arc<Runtime>,
    store: Arc<StateStore>,
    permits: Arc<Semaphore>,
    shutdown: Shutdown,
    fence: Option<Fence>,
) -> bool {
    let mut backoff = RESTARTS;
    loop {
        let runtime = (!config.modules_config.modules.is_empty()).then_some(&*runtime);
        let started = tokio::time::Instant::now();
        let permits = Some(permits.clone());
        match pipeline::run(&config, runtime, &store, &shutdown, permits, fence.as_ref()).await {
            Ok(_) => return true,
            // Another worker runs the pipeline now: restarting here could only be fenced again.
            Err(err) if err.kind() == ErrorKind::Fenced => {
                membership::FENCED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("{err:#}; giving the pipeline up");
                return false;
            }
            Err(err) => {
                let hint = err
                    .hint()
                    .map(|hint| format!(" (hint: {hint})"))
                    .unwrap_or_default();
                if config.sync.once || shutdown.is_requested() {
                    tracing::error!("{err:#}{hint}");
                    return false;
                }
                // A run that went well for a while starts its backoff over.
                if started.elapsed() > LAST_RESTART {
                    backoff.reset();
                }
                let wait = backoff.next_wait();
                let kind = if err.kind() == ErrorKind::Invalid {
                    "configuration error"
                } else {
                    "error"
                };
                tracing::error!(
                    "{err:#}{hint}; {kind}, restarting pipeline {:?} in {wait:?}",
                    config.pipeline
                );
                shutdown.sleep(wait).await;
                // Stopped as asked while waiting to restart: a polling host's stop is clean
                // (exit 0), as it is for a pipeline stopped between passes; the failure was
                // logged and counted in the state store.
                if shutdown.is_requested() {
                    return true;
                }
            }
        }
    }
}

/// `--once` applies to every pipeline of the file.
fn run_once(file: &mut PipelinesFile, once: bool) {
    for config in &mut file.pipelines {
        config.sync.once = once;
    }
}

/// The engine every pipeline of the file fits in: fuel metering if any pipeline has a fuel
/// budget, memory slots as large as the largest limit.
fn engine_options(file: &PipelinesFile) -> EngineOptions {
    let modules = file.pipelines.iter().map(|config| &config.modules_config);
    EngineOptions {
        fuel: modules.clone().any(|p| p.limits.fuel.is_some()),
        max_memory: modules
            .clone()
            .map(|p| p.limits.memory)
            .max()
            .unwrap_or(crate::runtime::limits::DEFAULT_MEMORY),
        cache_dir: modules.clone().find_map(|p| p.cache_dir.clone()),
    }
}

/// What makes two versions of a pipeline the same: its settings (serialised, secrets only as
/// digests) and its module files.
fn fingerprint(config: &RunConfig) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    match serde_json::to_vec(config) {
        Ok(settings) => hasher.update(&settings),
        // Plain data always serialises; were it ever to fail, the error text stands in.
        Err(err) => hasher.update(err.to_string().as_bytes()),
    }
    for path in &config.modules_config.modules {
        hasher.update([0]);
        hasher.update(module_stamp(path).as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// What a module file holds, as a digest: a module rebuilt in place is a change even when its
/// size and modification time were kept (the compile cache keys on content too).
fn module_stamp(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    match std::fs::read(path) {
        Ok(bytes) => hex::encode(Sha256::digest(&bytes)),
        // Unreadable now: the restart that follows reports why.
        Err(err) => format!("{}: {err}", path.display()),
    }
}

impl Summary {
    /// An error when a pipeline failed, naming them.
    pub fn into_result(self) -> Result<()> {
        if self.failed.is_empty() {
            return Ok(());
        }
        Err(Error::fatal(format!(
            "{} pipelines failed: {}",
            self.failed.len(),
            self.failed.join(", ")
        ))
        .with_hint("the log above has each pipeline's error; `host status` shows the last one"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waits before the first `restarts` restarts of a pipeline that keeps failing.
    fn restart_waits(restarts: usize) -> Vec<u64> {
        let mut backoff = RESTARTS;
        (0..restarts)
            .map(|_| backoff.next_wait().as_secs())
            .collect()
    }

    /// Pins the restart sequence: 1 s doubling to five minutes.
    #[test]
    fn restart_waits_stay_as_they_are() {
        assert_eq!(
            restart_waits(12),
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
        assert_eq!(restart_waits(100)[99], 300);
    }
}
