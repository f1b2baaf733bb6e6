//! How every outgoing delivery (agency webhooks, published replies) is
//! retried: exponential backoff from a base delay, capped, for a bounded
//! number of attempts. One policy, so retries behave the same everywhere.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failed attempt; doubles per attempt.
    pub base: Duration,
    /// No delay exceeds this.
    pub max: Duration,
    /// Attempts in all, the first included; then the delivery gives up.
    pub max_attempts: i32,
}

impl Backoff {
    /// The wait before the next attempt after `attempts` failed ones, or
    /// `None` when no attempt is left.
    pub fn after(&self, attempts: i32) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doublings = (attempts - 1).clamp(0, 30) as u32;
        Some(self.base.saturating_mul(1 << doublings).min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_gives_up() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
            max_attempts: 5,
        };
        assert_eq!(b.after(1), Some(Duration::from_secs(10)));
        assert_eq!(b.after(2), Some(Duration::from_secs(20)));
        assert_eq!(b.after(3), Some(Duration::from_secs(40)));
        assert_eq!(b.after(4), Some(Duration::from_secs(60)));
        assert_eq!(b.after(5), None);
        assert_eq!(b.after(0), Some(Duration::from_secs(10)));
    }
}
