//! Exponential backoff: the one schedule every retry loop follows (a
//! database that is still starting, a broker link, a failed batch commit, an
//! LLM provider, the alert outbox).

use std::time::Duration;

use rand::Rng;

/// Delays that double from `start` up to `max`; optionally jittered so that
/// many clients of one server do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    max: Duration,
    jitter: bool,
    doublings: u32,
}

impl Backoff {
    pub const fn new(start: Duration, max: Duration) -> Self {
        Self {
            start,
            max,
            jitter: false,
            doublings: 0,
        }
    }

    /// Each delay drawn from its second half (50–100 %) at random.
    pub const fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// The delay after `failures` doublings, without jitter: for schedules
    /// that are persisted as a count of attempts (the alert outbox).
    pub fn delay_after(&self, failures: u32) -> Duration {
        // 2^20 times any sensible start is past any sensible bound.
        self.start
            .saturating_mul(1 << failures.min(20))
            .min(self.max)
    }

    /// The next delay to wait; each call doubles the one after it.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay_after(self.doublings);
        self.doublings = self.doublings.saturating_add(1);
        if self.jitter {
            delay.mul_f64(rand::rng().random_range(0.5..1.0))
        } else {
            delay
        }
    }

    /// Back to `start`, after a success.
    pub fn reset(&mut self) {
        self.doublings = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_bound_and_reset() {
        let mut backoff = Backoff::new(100 * MS, 500 * MS);
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays, [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), 100 * MS);
    }

    #[test]
    fn jittered_delays_stay_in_the_upper_half() {
        let mut backoff = Backoff::new(100 * MS, 100 * MS).with_jitter();
        for _ in 0..100 {
            let delay = backoff.next_delay();
            assert!(delay >= 50 * MS && delay <= 100 * MS, "{delay:?}");
        }
    }

    #[test]
    fn delay_after_a_count_of_failures_never_overflows() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(900));
        assert_eq!(backoff.delay_after(1), Duration::from_secs(2));
        assert_eq!(backoff.delay_after(4), Duration::from_secs(16));
        assert_eq!(backoff.delay_after(u32::MAX), Duration::from_secs(900));
    }
}
