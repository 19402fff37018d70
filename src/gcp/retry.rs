//! Exponential backoff with full jitter, shared by every Google API call.

use std::time::Duration;

/// How often and how patiently a failed request is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in a row without progress before giving up (the first try counts).
    pub max_attempts: u32,
    /// Upper bound of the first delay.
    pub initial_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A policy for tests: the same number of attempts, no real waiting.
    pub fn fast(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        }
    }

    /// The delay before retry number `attempt` (1 for the first retry).
    /// Full jitter: many clients failing together do not retry in lockstep.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let cap = self
            .initial_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(rand::random_range(0..=cap_ms))
    }

    /// Whether another attempt is allowed after `attempts` failed ones.
    pub(crate) fn allows(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }
}

/// HTTP statuses worth trying again: timeouts, throttling, server trouble.
pub(crate) fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_cap() {
        let policy = RetryPolicy::default();
        for attempt in 1..40 {
            assert!(policy.delay(attempt) <= policy.max_delay);
        }
        assert!(policy.delay(1) <= policy.initial_delay);
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 308, 400, 401, 403, 404, 409, 410] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
