//! Workers: several `host run --config` processes with one pipelines file and one PostgreSQL
//! state store share the pipelines, each run by one worker at a time.
//!
//! Every worker, each [`Membership::every`] (a third of `lease_ttl`, so a lease is renewed
//! twice before it could expire):
//! 1. renews the leases it holds; one that is no longer its own was taken over (it was paused
//!    past its lease): its pipeline stops, and its writes were already fenced;
//! 2. heartbeats, and counts the live workers (heartbeats not expired);
//! 3. aims at its fair share, `ceil(weight of the pipelines / live workers)` (a pipeline weighs
//!    1 unless the file gives it a `weight`): below it, it claims free or expired leases; above
//!    it (a worker joined), it hands the extra pipelines over, each after its batch in hand, and
//!    releases their leases then.
//!
//! A worker that stops (SIGTERM) releases every lease at once, after the batches in hand; one
//! that dies loses them when they expire. Leases, tokens and fencing live in the state store
//! (`state::leases`); this module decides what to claim and what to give up.
//!
//! Checkpoints are fenced by the lease's token in the store; deliveries by the worker's own
//! clock ([`crate::engine::fence::LeaseClock`]), which each round here moves on.
//!
//! An SQLite state store has no server to hold leases against: one worker per file, enforced
//! by a lock on a file beside it ([`crate::cluster::sqlite_lock`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::error::Result;
use crate::state::{StateStore, WorkerFigures};

/// Leases this process lost to another worker (it was paused past them), since it started.
/// Process-wide because a process is one worker.
pub static LEASES_LOST: AtomicU64 = AtomicU64::new(0);

/// Checkpoints, dead-letter writes and deliveries this process had refused because their
/// lease was no longer current (counted once per pipeline given up).
pub static FENCED: AtomicU64 = AtomicU64::new(0);

/// The default `lease_ttl` of a pipelines file.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// What one round of membership asks of the supervisor.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Leases just taken, with their tokens: start these pipelines.
    pub claimed: Vec<(String, i64)>,
    /// Leases another worker holds now: stop these pipelines, they may write nothing more.
    pub lost: Vec<String>,
    /// Pipelines above the fair share: stop each after its batch in hand, then release it.
    pub hand_over: Vec<String>,
    /// Until when the leases this round renewed or claimed are surely held: the round's start
    /// plus the TTL (the store counts the TTL from when its statement ran, later).
    pub held_until: Option<Instant>,
}

/// This worker's place among the workers of a state store.
pub struct Membership {
    store: Arc<StateStore>,
    me: String,
    ttl: Duration,
}

impl Membership {
    /// `store` is the worker's state store: membership uses a connection of its own (see
    /// [`StateStore::reader`]), so that renewals never wait behind checkpoints.
    pub fn new(store: &StateStore, ttl: Duration) -> Self {
        Membership {
            store: Arc::new(store.reader()),
            me: worker_name(),
            ttl,
        }
    }

    /// This worker's name in the store: host name, process id and a random tag (a restarted
    /// process is a new worker, and never mistakes its predecessor's leases for its own).
    pub fn name(&self) -> &str {
        &self.me
    }

    /// How often leases are renewed and shares looked at.
    pub fn every(&self) -> Duration {
        self.ttl / 3
    }

    /// One round: renew, heartbeat, then claim or hand over towards the fair share of
    /// `pipelines` (the file's, with their weights). `owned` holds the leases this worker runs
    /// pipelines under.
    pub async fn tick(
        &self,
        pipelines: &[(String, u32)],
        owned: &BTreeMap<String, i64>,
    ) -> Result<Plan> {
        let started = tokio::time::Instant::now();
        let renewed = self.store.renew(&self.me, self.ttl).await?;
        let lost: Vec<String> = owned
            .iter()
            .filter(|(name, token)| renewed.get(*name) != Some(token))
            .map(|(name, _)| name.clone())
            .collect();
        LEASES_LOST.fetch_add(lost.len() as u64, Ordering::Relaxed);
        let kept: Vec<&String> = owned.keys().filter(|name| !lost.contains(name)).collect();
        let figures = WorkerFigures {
            pipelines: kept.len() as u64,
            leases_lost: LEASES_LOST.load(Ordering::Relaxed),
            fenced: FENCED.load(Ordering::Relaxed),
        };
        self.store.heartbeat(&self.me, self.ttl, figures).await?;
        let live = self.store.live_workers().await?.len();
        let weights: BTreeMap<&str, u64> = pipelines
            .iter()
            .map(|(name, weight)| (name.as_str(), u64::from(*weight)))
            .collect();
        // A pipeline that left the file (before a reload) weighs what it did by default.
        let weight = |name: &str| weights.get(name).copied().unwrap_or(1);
        let fair = fair_share(weights.values().sum(), live);
        let kept: Vec<(&str, u64)> = kept
            .iter()
            .map(|name| (name.as_str(), weight(name)))
            .collect();
        let mut plan = Plan {
            lost,
            hand_over: surplus(&kept, fair),
            held_until: Some(started + self.ttl),
            ..Plan::default()
        };
        let mut held: u64 = kept.iter().map(|(_, weight)| weight).sum();
        if !plan.hand_over.is_empty() || held >= fair {
            return Ok(plan);
        }
        let taken: BTreeSet<String> = self
            .store
            .leases()
            .await?
            .into_iter()
            .filter(|lease| lease.is_held())
            .map(|lease| lease.pipeline)
            .collect();
        let mut free: Vec<&String> = pipelines
            .iter()
            .map(|(name, _)| name)
            .filter(|name| !taken.contains(*name) && !owned.contains_key(*name))
            .collect();
        // In a random order, so that workers claiming at once mostly try different leases.
        fastrand::shuffle(&mut free);
        for name in free {
            // Claims one at a time take a round trip each: past half a round, the rest wait
            // for the next one, so that renewals stay on time.
            if held >= fair || started.elapsed() > self.every() / 2 {
                break;
            }
            if let Some(token) = self.store.claim(name, &self.me, self.ttl).await? {
                plan.claimed.push((name.clone(), token));
                held += weight(name);
            }
        }
        Ok(plan)
    }

    /// Gives up the lease of `pipeline` held under `token`, logging a failure (the lease then
    /// expires by itself).
    pub async fn release(&self, pipeline: &str, token: i64) {
        if let Err(err) = self.store.release(pipeline, token).await {
            tracing::warn!("{pipeline}: {err:#}; its lease expires in {:?}", self.ttl);
        }
    }

    /// Leaves the workers: every lease is released at once.
    pub async fn leave(&self) {
        match self.store.leave(&self.me).await {
            Ok(released) => tracing::info!("worker {}: released {released} leases", self.me),
            Err(err) => tracing::warn!("{err:#}; the leases expire in {:?}", self.ttl),
        }
    }
}

/// The weight of pipelines each of `workers` live workers aims at: all of it shared out,
/// rounded up.
pub fn fair_share(weight: u64, workers: usize) -> u64 {
    weight.div_ceil(workers.max(1) as u64)
}

/// Which of the pipelines a worker holds (by name, with their weights) it hands over to come
/// down to its `fair` share: the last by name (which ones does not matter, only the weight),
/// each only while the worker keeps at least its share without it. A pipeline heavier than
/// the surplus stays where it is: handed over, it would leave this worker below its share and
/// put another above, which would hand it back.
pub fn surplus(held: &[(&str, u64)], fair: u64) -> Vec<String> {
    let mut weight: u64 = held.iter().map(|(_, weight)| weight).sum();
    let mut handed = Vec::new();
    for (name, own) in held.iter().rev() {
        if weight.saturating_sub(*own) >= fair {
            weight -= own;
            handed.push(name.to_string());
        }
    }
    handed.reverse();
    handed
}

/// The host's name (a Kubernetes pod's name), the process id and a random tag.
fn worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::TempDir;

    #[test]
    fn the_fair_share_rounds_up() {
        assert_eq!(fair_share(60, 3), 20);
        assert_eq!(fair_share(60, 4), 15);
        assert_eq!(fair_share(61, 4), 16);
        assert_eq!(fair_share(5, 0), 5);
        assert_eq!(fair_share(0, 3), 0);
    }

    #[test]
    fn a_worker_hands_over_its_surplus_weight_only() {
        let held = |weights: &[u64]| -> Vec<(String, u64)> {
            weights
                .iter()
                .enumerate()
                .map(|(n, weight)| (format!("p{n}"), *weight))
                .collect()
        };
        let surplus_of = |weights: &[u64], fair| {
            let held = held(weights);
            let held: Vec<(&str, u64)> = held.iter().map(|(n, w)| (n.as_str(), *w)).collect();
            surplus(&held, fair)
        };
        // Unweighted, the last ones above the share.
        assert_eq!(surplus_of(&[1, 1, 1, 1, 1], 3), ["p3", "p4"]);
        assert_eq!(surplus_of(&[1, 1, 1], 3), Vec::<String>::new());
        // A heavy pipeline stays when giving it up would leave the worker below its share;
        // lighter ones behind it go instead.
        assert_eq!(surplus_of(&[3, 3], 5), Vec::<String>::new());
        assert_eq!(surplus_of(&[1, 4, 1, 1], 4), ["p0", "p2", "p3"]);
        assert_eq!(surplus_of(&[4, 1, 1, 1, 1], 4), ["p1", "p2", "p3", "p4"]);
        assert_eq!(surplus_of(&[1, 4], 1), ["p1"]);
    }

    #[tokio::test]
    async fn weighted_pipelines_are_shared_by_weight() {
        let dir = TempDir::new();
        let store = dir.open().await;
        let ttl = Duration::from_secs(30);
        // A heavy pipeline of 4 and four light ones: 8 in all, 4 for each of two workers.
        let mut names: Vec<(String, u32)> = vec![("heavy".to_owned(), 4)];
        names.extend((0..4).map(|n| (format!("light{n}"), 1)));
        let first = Membership::new(&store, ttl);
        let plan = first.tick(&names, &BTreeMap::new()).await.unwrap();
        assert_eq!(plan.claimed.len(), 5, "alone, a worker takes everything");
        let owned: BTreeMap<String, i64> = plan.claimed.into_iter().collect();
        let second = Membership::new(&store, ttl);
        second.tick(&names, &BTreeMap::new()).await.unwrap();
        let plan = first.tick(&names, &owned).await.unwrap();
        assert_eq!(plan.hand_over, ["light0", "light1", "light2", "light3"]);
        for name in &plan.hand_over {
            first.release(name, owned[name]).await;
        }
        let plan = second.tick(&names, &BTreeMap::new()).await.unwrap();
        let mut claimed: Vec<String> = plan.claimed.into_iter().map(|(name, _)| name).collect();
        claimed.sort();
        assert_eq!(claimed, ["light0", "light1", "light2", "light3"]);
    }

    #[tokio::test]
    async fn workers_share_and_hand_over_on_an_sqlite_store() {
        // The store's side of membership works the same on SQLite; one file, two members
        // in one process stand in for two workers.
        let dir = TempDir::new();
        let store = dir.open().await;
        let ttl = Duration::from_secs(30);
        let names: Vec<(String, u32)> = (0..6).map(|n| (format!("p{n}"), 1)).collect();
        let first = Membership::new(&store, ttl);
        let plan = first.tick(&names, &BTreeMap::new()).await.unwrap();
        assert_eq!(plan.claimed.len(), 6);
        let owned: BTreeMap<String, i64> = plan.claimed.into_iter().collect();
        let second = Membership::new(&store, ttl);
        let plan = second.tick(&names, &BTreeMap::new()).await.unwrap();
        assert_eq!(plan.claimed, [], "nothing is free yet");
        let plan = first.tick(&names, &owned).await.unwrap();
        assert_eq!((plan.hand_over.len(), plan.lost.len()), (3, 0));
        for name in &plan.hand_over {
            first.release(name, owned[name]).await;
        }
        let plan = second.tick(&names, &BTreeMap::new()).await.unwrap();
        assert_eq!(plan.claimed.len(), 3);
        for (name, token) in &plan.claimed {
            assert_eq!(*token, owned[name] + 1, "a token only grows");
        }
        second.leave().await;
        let held: Vec<_> = store.leases().await.unwrap();
        assert_eq!(held.iter().filter(|lease| lease.is_held()).count(), 6 - 3);
    }
}
