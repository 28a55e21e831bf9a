//! How long to wait before a destination gets the same batch again, and when to give up.

use std::time::Duration;

use crate::model::backoff::Backoff;
use crate::model::error::Error;

/// The longest wait between two attempts of a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The longest `Retry-After` honoured as given; longer asks wait this long.
const MAX_ASKED_WAIT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RetryPolicy {
    /// Attempts after the first before the pipeline stops.
    pub max_retries: u32,
    /// The first wait; each retry doubles it, up to five minutes.
    pub backoff: Duration,
    /// What to do once a module has failed a batch on every attempt.
    pub on_poison: OnPoison,
}

/// What to do with a batch that a module fails on every attempt (`--on-poison`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
pub enum OnPoison {
    /// Retry the batch (not after a transform's fatal answer), then find the rows it fails on
    /// alone, keep them as dead letters and deliver the rest.
    Park,
    /// Fail the batch at once, watermark unmoved (the pipeline stops, or a polling host tries
    /// the batch again later).
    Stop,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            backoff: Duration::from_secs(1),
            on_poison: OnPoison::Park,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (from 1): what the destination asked for when it
    /// said, else exponential backoff with jitter, so that many pipelines behind one failing
    /// destination do not come back in step.
    pub fn wait(&self, retry: u32, asked: Option<Duration>) -> Duration {
        if let Some(asked) = asked {
            return asked.min(MAX_ASKED_WAIT);
        }
        let doubled = Backoff::new(self.backoff, MAX_BACKOFF).nth(retry.saturating_sub(1));
        // Somewhere in the upper half: never much shorter than the backoff promises.
        doubled.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// The error that stops a pipeline whose destination kept asking to retry.
    pub fn gave_up(&self, last: &Error) -> Error {
        Error::fatal(format!(
            "{last}; gave up after {} retries",
            self.max_retries
        ))
        .with_hint(
            "the watermark did not move: the next run delivers the same batch again; \
             raise --max-retries or --retry-backoff to keep trying longer",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_and_honour_what_was_asked() {
        let policy = RetryPolicy {
            max_retries: 8,
            backoff: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        for retry in 1..=4 {
            let full = Duration::from_millis(100 << (retry - 1));
            let wait = policy.wait(retry, None);
            assert!(wait >= full / 2 && wait <= full, "retry {retry}: {wait:?}");
        }
        assert!(policy.wait(40, None) <= MAX_BACKOFF);
        assert_eq!(
            policy.wait(3, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(86_400))),
            MAX_ASKED_WAIT
        );
    }

    /// Pins the whole sequence: retry `n` waits between half and all of `backoff · 2^(n-1)`,
    /// capped at five minutes, and the doubling stops after 20 doublings whatever the backoff.
    #[test]
    fn the_waits_of_a_retry_policy_stay_as_they_are() {
        let waits = |backoff: Duration, retries: u32| -> Vec<(Duration, Duration)> {
            let policy = RetryPolicy {
                backoff,
                ..RetryPolicy::default()
            };
            (1..=retries)
                .map(|retry| {
                    let samples: Vec<Duration> =
                        (0..200).map(|_| policy.wait(retry, None)).collect();
                    (
                        *samples.iter().min().unwrap(),
                        *samples.iter().max().unwrap(),
                    )
                })
                .collect()
        };
        let full = |backoff: Duration, retries: u32| -> Vec<Duration> {
            let mut full = Vec::new();
            let mut wait = backoff;
            for retry in 1..=retries {
                full.push(wait.min(MAX_BACKOFF));
                if retry <= 20 {
                    wait *= 2;
                }
            }
            full
        };
        for (backoff, retries) in [
            (Duration::from_secs(1), 12),
            (Duration::from_millis(100), 16),
            (Duration::from_micros(100), 30),
            (Duration::from_nanos(1), 30),
        ] {
            for (retry, ((shortest, longest), full)) in waits(backoff, retries)
                .into_iter()
                .zip(full(backoff, retries))
                .enumerate()
            {
                assert!(
                    shortest >= full / 2 && longest <= full,
                    "{backoff:?}, retry {}: {shortest:?}..{longest:?}, not within {full:?}",
                    retry + 1
                );
            }
        }
        assert_eq!(
            full(Duration::from_secs(1), 12)
                .iter()
                .map(Duration::as_secs)
                .collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
        // 100 µs doubles 20 times, to 104.9 s, and no further.
        assert_eq!(
            full(Duration::from_micros(100), 30)[29],
            Duration::from_micros(100 << 20)
        );
    }
}
