//! The one doubling back-off: wait `first`, then twice as long after each failure, never
//! longer than `max`. The destination retry, the waits between failed passes, the restarts of
//! a pipeline and the busy-store open all count their failures with it; what they add (a
//! jitter, a reset after a healthy run, a deadline) stays with them.

use std::time::Duration;

/// How many times a wait doubles at most, whatever `max` allows (a very short first wait
/// stops growing there rather than overflowing).
const MAX_DOUBLINGS: u32 = 20;

/// Waits that double from `first` up to `max`, counting the failures seen since the last
/// [`Backoff::reset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            failures: 0,
        }
    }

    /// The wait after `failures` earlier failures: `first · 2^failures`, at most `max`.
    pub fn nth(&self, failures: u32) -> Duration {
        self.first
            .saturating_mul(1 << failures.min(MAX_DOUBLINGS))
            .min(self.max)
    }

    /// The wait for this failure; the next one waits twice as long.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.nth(self.failures);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Starts over from `first`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_longest_and_start_over_on_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(200));
        let waits: Vec<u128> = (0..9).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 200, 200, 200]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(5));
        assert_eq!(backoff.nth(3), Duration::from_millis(40));
    }

    #[test]
    fn a_wait_doubles_twenty_times_at_most_and_never_overflows() {
        let short = Backoff::new(Duration::from_nanos(1), Duration::from_secs(300));
        assert_eq!(short.nth(20), Duration::from_nanos(1 << 20));
        assert_eq!(short.nth(u32::MAX), Duration::from_nanos(1 << 20));
        let long = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(long.nth(u32::MAX), Duration::MAX);
        let mut counted = Backoff {
            failures: u32::MAX,
            ..short
        };
        assert_eq!(counted.next_wait(), Duration::from_nanos(1 << 20));
        assert_eq!(counted.next_wait(), Duration::from_nanos(1 << 20));
    }
}
