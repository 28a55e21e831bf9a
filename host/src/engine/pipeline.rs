//! One pipeline, wired: its source driver, its module chain and output, its state, then the
//! sync loop. Used the same way by a single `host run` and by each pipeline of a pipelines
//! file.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::delivery::chain::Chain;
use crate::delivery::output::{Output, StageFailure};
use crate::engine::deletes;
use crate::engine::fence::{Fence, LeaseClock};
use crate::engine::settings::{ModulesConfig, RunConfig};
use crate::engine::sync;
use crate::engine::sync_log::Totals;
use crate::model::error::{Error, ErrorKind, Result};
use crate::model::redact::redact_url;
use crate::model::shutdown::Shutdown;
use crate::model::{Batch, Delivered, Usage};
use crate::runtime::{self, Module, Runtime};
use crate::source::{self, Source};
use crate::state::{Identity, StateStore};

/// Loads the modules of a pipeline, in order, and starts them before any row is read: each
/// module's configuration keys are checked against those it declares, then its `init` runs.
pub async fn load_modules(
    runtime: &Runtime,
    config: &ModulesConfig,
    pipeline: &str,
) -> Result<Vec<Module>> {
    let modules = config
        .modules
        .iter()
        .enumerate()
        .map(|(index, path)| {
            runtime.load(
                path,
                pipeline,
                config.module_config(index),
                config.limits,
                &config.http,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    runtime::start_modules(pipeline, &modules, &config.config, &config.module_overrides).await?;
    Ok(modules)
}

/// Runs one pipeline until `--once` is done, a stop is requested, or an error the sync loop
/// does not retry by itself. `permits`, when given, bounds the batches in flight across
/// pipelines: each delivery attempt waits its turn, first come first served. `fence`, the
/// lease a worker holds on the pipeline, makes every checkpoint fail with
/// [`ErrorKind::Fenced`] once another worker took the pipeline over, and every delivery
/// attempt once the worker could not renew the lease in time.
pub async fn run(
    config: &RunConfig,
    runtime: Option<&Runtime>,
    store: &StateStore,
    shutdown: &Shutdown,
    permits: Option<Arc<Semaphore>>,
    fence: Option<&Fence>,
) -> Result<Totals> {
    let modules = match runtime {
        Some(runtime) => load_modules(runtime, &config.modules_config, &config.pipeline).await?,
        None => Vec::new(),
    };
    let chain = Chain::new(modules, config.output.as_deref())?;
    if !config.modules_config.http.allow.is_empty() && !chain.has_destination() {
        tracing::warn!(
            "{}: allowed hosts have no effect: no destination module is loaded",
            config.pipeline
        );
    }
    let mut output = Throttled {
        inner: chain,
        permits,
        lease: fence.map(|fence| fence.clock.clone()),
    };
    let token = fence.map(|fence| fence.token);
    let result = connect_and_sync(config, &mut output, store, shutdown, token).await;
    let Err(err) = result else { return result };
    // The pipeline is another worker's now: its errors are not this one's to record.
    if err.kind() == ErrorKind::Fenced {
        return Err(err);
    }
    let identity = Identity {
        source: redact_url(&config.source_url),
        table: config.table.table.to_string(),
        cursor: config.table.cursor.clone(),
        key: String::new(),
    };
    let recorded = store
        .record_error(&config.pipeline, &err, Some(&identity))
        .await;
    if let Err(unrecorded) = recorded {
        tracing::warn!("{}: {unrecorded:#}", config.pipeline);
    }
    Err(err.context(format!(
        "pipeline {:?}: syncing {} from {}",
        config.pipeline,
        config.table.table,
        redact_url(&config.source_url)
    )))
}

async fn connect_and_sync<O: Output>(
    config: &RunConfig,
    output: &mut O,
    store: &StateStore,
    shutdown: &Shutdown,
    fence: Option<i64>,
) -> Result<Totals> {
    let mut source = source::connect(&config.source_url, &config.table).await?;
    sync_with(&mut source, output, store, config, shutdown, fence).await
}

async fn sync_with<S: Source, O: Output>(
    source: &mut S,
    output: &mut O,
    store: &StateStore,
    config: &RunConfig,
    shutdown: &Shutdown,
    fence: Option<i64>,
) -> Result<Totals> {
    let identity = Identity {
        source: redact_url(&config.source_url),
        table: config.table.table.to_string(),
        cursor: config.table.cursor.clone(),
        key: source.key_column().to_owned(),
    };
    let initial = config.sync.null_cursor.initial_position();
    let mut state = store
        .load_or_create(&config.pipeline, &identity, initial.clone())
        .await?;
    state.fence = fence;
    // A pipeline that has delivered nothing yet (say, its first run refused NULL cursors)
    // starts where the policy it runs with now says.
    if state.batches_synced == 0 && state.pending.is_none() && state.position != initial {
        store.advance(&mut state, &initial).await?;
    }
    let every = config.sync.detect_deletes;
    deletes::prepare(source, store, &mut state, every, shutdown).await?;
    let totals = sync::run(source, output, store, &mut state, &config.sync, shutdown).await?;
    tracing::debug!(
        "{}: {} rows in {} batches",
        state.name,
        totals.rows,
        totals.batches
    );
    Ok(totals)
}

/// An output that waits for a process-wide permit before each delivery attempt. Tokio's
/// semaphore queues waiters in order, so every pipeline gets its turn: none starves. A
/// worker then makes sure it still holds the pipeline's lease: the wait may have been long.
struct Throttled<O> {
    inner: O,
    permits: Option<Arc<Semaphore>>,
    /// A worker's hold on the pipeline's lease, looked at once the attempt's turn has come.
    lease: Option<LeaseClock>,
}

impl<O: Output> Output for Throttled<O> {
    async fn deliver(&mut self, batch: Batch<'_>) -> (Result<Delivered>, Usage) {
        self.deliver_from(0, batch).await
    }

    async fn deliver_from(&mut self, stage: usize, batch: Batch<'_>) -> (Result<Delivered>, Usage) {
        let _permit = match &self.permits {
            Some(permits) => match permits.acquire().await {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let stopping = Error::new(ErrorKind::Fatal, "the host is stopping");
                    return (Err(stopping), Usage::default());
                }
            },
            None => None,
        };
        if let Some(lease) = &self.lease {
            if let Err(fenced) = lease.wait_held(batch.pipeline).await {
                return (Err(fenced), Usage::default());
            }
        }
        self.inner.deliver_from(stage, batch).await
    }

    fn take_failure(&mut self) -> Option<StageFailure> {
        self.inner.take_failure()
    }

    fn stage_of(&self, module: &str) -> Option<usize> {
        self.inner.stage_of(module)
    }

    fn last_stage(&self) -> usize {
        self.inner.last_stage()
    }
}
