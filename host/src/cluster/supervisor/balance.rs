//! The supervisor's side of membership (see [`crate::cluster::membership`]): starting the pipelines a
//! worker claimed, stopping those it lost or hands over, giving leases back.

use std::collections::BTreeMap;

use super::{stop_all, Supervisor};
use crate::engine::fence::{Fence, LeaseClock};

impl Supervisor {
    /// One round of membership: pipelines that ended by themselves (fenced) give their lease
    /// back, lost ones stop, extra ones are handed over after their batch in hand, claimed
    /// ones start.
    pub(super) async fn balance(&mut self) {
        let Some(membership) = &self.membership else {
            return;
        };
        let ended: Vec<String> = self
            .running
            .iter()
            .filter(|(_, run)| run.task.is_finished())
            .map(|(name, _)| name.clone())
            .collect();
        for name in ended {
            if let Some(fence) = self.running.remove(&name).and_then(|run| run.fence) {
                membership.release(&name, fence.token).await;
            }
        }
        let owned: BTreeMap<String, i64> = self
            .running
            .iter()
            .filter_map(|(name, run)| Some((name.clone(), run.fence.as_ref()?.token)))
            .collect();
        let plan = match membership.tick(&self.file.weighted(), &owned).await {
            Ok(plan) => plan,
            Err(err) => {
                tracing::warn!("worker {}: {err:#}; trying again", membership.name());
                return;
            }
        };
        let held_until = plan.held_until.unwrap_or_else(tokio::time::Instant::now);
        for name in plan.lost {
            tracing::warn!(
                "pipeline {name:?}: its lease was taken over by another worker (this one was paused past it); stopping it here"
            );
            self.leave(name, false);
        }
        for name in plan.hand_over {
            tracing::info!(
                "pipeline {name:?}: handing it over to another worker after its batch in hand"
            );
            self.leave(name, true);
        }
        // Renewed: what is left running after the lost and handed over pipelines went.
        for fence in self.running.values().filter_map(|run| run.fence.as_ref()) {
            fence.clock.renewed(held_until);
        }
        for (name, token) in plan.claimed {
            let config = self
                .file
                .pipelines
                .iter()
                .find(|config| config.pipeline == name)
                .cloned();
            if let Some(config) = config {
                tracing::info!("pipeline {name:?}: claimed (lease {token})");
                let clock = LeaseClock::new(held_until, self.file.lease_ttl);
                self.start(config, Some(Fence { token, clock }));
            }
        }
    }

    /// Stops pipeline `name` after its batch in hand, in the background; then releases its
    /// lease if `release` (a handover; a lost lease is no longer ours to release).
    pub(super) fn leave(&mut self, name: String, release: bool) {
        let Some(run) = self.running.remove(&name) else {
            return;
        };
        let fence = run
            .fence
            .as_ref()
            .map(|fence| fence.token)
            .filter(|_| release);
        let store = self.store.clone();
        let timeout = self.file.stop_timeout;
        self.leaving.push(tokio::spawn(async move {
            stop_all(vec![(name.clone(), run)], timeout).await;
            if let Some(token) = fence {
                if let Err(err) = store.release(&name, token).await {
                    tracing::warn!("{name}: {err:#}; its lease will expire instead");
                }
            }
        }));
        self.leaving.retain(|task| !task.is_finished());
    }
}
