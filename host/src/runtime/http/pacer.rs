//! The pace of a destination's requests (`--max-requests-per-second`).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Spaces requests `1 / rate` seconds apart: a destination's rate limit is met by waiting
/// here, not by a storm of 429s.
pub struct Pacer {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    pub fn new(rate: f64) -> Self {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Mutex::new(None),
        }
    }

    pub async fn wait(&self) {
        let slot = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let now = Instant::now();
            let slot = next.map_or(now, |next| next.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pacer_spaces_requests_by_the_rate() {
        let pacer = Pacer::new(50.0);
        let start = Instant::now();
        for _ in 0..5 {
            pacer.wait().await;
        }
        // The first request goes at once, the next four 20 ms apart.
        assert!(
            start.elapsed() >= Duration::from_millis(80),
            "{:?}",
            start.elapsed()
        );
    }
}
