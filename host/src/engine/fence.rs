//! The fence a worker delivers under: a pipeline run by one of several workers holds a lease,
//! whose token fences its writes in the state store and whose clock ([`LeaseClock`]) fences
//! its deliveries. A worker that has not renewed a lease for its TTL (paused, or cut off from
//! the state store while the destination still answers) hands no batch of that pipeline on,
//! since another worker may be delivering newer ones. Membership
//! ([`crate::cluster::membership`]) moves the clock on; the engine only reads it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::error::{Error, ErrorKind, Result};

/// A lease this process runs a pipeline under: the token that fences its writes, and the
/// clock that fences its deliveries.
#[derive(Debug, Clone)]
pub struct Fence {
    pub token: i64,
    pub clock: LeaseClock,
}

/// Until when this worker surely holds a lease, by its own monotonic clock, which goes on
/// while the process is paused. Membership moves it on at each round that renews the lease;
/// a lease another worker took over is never moved on again.
#[derive(Debug, Clone)]
pub struct LeaseClock {
    held_until: Arc<Mutex<Instant>>,
    ttl: Duration,
}

impl LeaseClock {
    pub fn new(held_until: Instant, ttl: Duration) -> Self {
        LeaseClock {
            held_until: Arc::new(Mutex::new(held_until)),
            ttl,
        }
    }

    fn held_until(&self) -> Instant {
        *self
            .held_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves the clock on after a round renewed the lease.
    pub fn renewed(&self, held_until: Instant) {
        let mut current = self
            .held_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = (*current).max(held_until);
    }

    /// Returns once the lease is surely held. A lease not renewed on time (a slow round of a
    /// busy store) gets one TTL to be renewed; then [`ErrorKind::Fenced`]: another worker
    /// may run `pipeline` now, and this one must hand nothing more on.
    pub async fn wait_held(&self, pipeline: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            let held_until = self.held_until();
            let now = Instant::now();
            if now < held_until {
                return Ok(());
            }
            if now.duration_since(started) >= self.ttl {
                return Err(Error::new(
                    ErrorKind::Fenced,
                    format!(
                        "pipeline {pipeline:?}: this worker has not renewed its lease for {:?}, past its lease_ttl of {:?} (it was paused, or cannot reach the state store): another worker may run the pipeline now, so this one hands no batch on",
                        now.duration_since(held_until) + self.ttl,
                        self.ttl
                    ),
                ));
            }
            tokio::time::sleep((self.ttl / 20).max(Duration::from_millis(10))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_delivery_waits_for_a_late_renewal_and_is_fenced_without_one() {
        // Long beside the renewal below, so that a loaded machine cannot make it late.
        let ttl = Duration::from_millis(500);
        let held = LeaseClock::new(Instant::now() + ttl, ttl);
        held.wait_held("p").await.expect("a current lease");

        // Expired, then renewed by the next round: the delivery goes on.
        let late = LeaseClock::new(Instant::now(), ttl);
        let renewer = late.clone();
        let renewal = tokio::spawn(async move {
            tokio::time::sleep(ttl / 25).await;
            renewer.renewed(Instant::now() + ttl);
        });
        late.wait_held("p").await.expect("renewed in time");
        renewal.await.unwrap();

        // Never renewed (taken over, or the store out of reach): fenced after one TTL.
        let lost = LeaseClock::new(Instant::now() - ttl, ttl);
        let started = Instant::now();
        let err = lost.wait_held("p").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fenced);
        assert!(started.elapsed() >= ttl, "{:?}", started.elapsed());
        assert!(err.to_string().contains("hands no batch on"), "{err}");
        // A round can only move the clock on.
        lost.renewed(Instant::now() - 2 * ttl);
        assert!(lost.wait_held("p").await.is_err());
    }
}
