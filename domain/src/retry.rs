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

    /// As [`Backoff::after`], but no sooner than the receiver `asked` (a
    /// rate limit's reset), and still never longer than the cap.
    pub fn after_at_least(&self, attempts: i32, asked: Option<Duration>) -> Option<Duration> {
        self.after(attempts)
            .map(|w| w.max(asked.unwrap_or_default()).min(self.max))
    }
}

/// How long a rate-limited receiver asked to be left alone: `Retry-After`
/// (seconds, or an HTTP date) or X's `x-rate-limit-reset` (epoch seconds),
/// whichever is later; `now` in epoch seconds. None when neither says.
pub fn asked_wait(
    retry_after: Option<&str>,
    rate_limit_reset: Option<&str>,
    now: i64,
) -> Option<Duration> {
    let until = |epoch: i64| u64::try_from(epoch - now).ok().map(Duration::from_secs);
    let retry_after = retry_after
        .map(str::trim)
        .and_then(|v| match v.parse::<u64>() {
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => chrono::DateTime::parse_from_rfc2822(v)
                .ok()
                .and_then(|t| until(t.timestamp())),
        });
    let reset = rate_limit_reset
        .and_then(|v| v.trim().parse::<i64>().ok())
        .and_then(until);
    retry_after.max(reset)
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
        // A receiver's asked wait lengthens the delay, never past the cap.
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(b.after_at_least(1, secs(45)), secs(45));
        assert_eq!(b.after_at_least(1, secs(5)), secs(10));
        assert_eq!(b.after_at_least(2, secs(900)), secs(60));
        assert_eq!(b.after_at_least(5, secs(45)), None);
    }

    #[test]
    fn rate_limit_headers_are_read() {
        let now = 1_700_000_000;
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(asked_wait(Some("120"), None, now), secs(120));
        assert_eq!(asked_wait(None, Some("1700000300"), now), secs(300));
        assert_eq!(asked_wait(Some("10"), Some("1700000300"), now), secs(300));
        // A reset in the past, or nonsense, asks for nothing.
        assert_eq!(asked_wait(None, Some("1699999999"), now), None);
        assert_eq!(asked_wait(Some("soon"), None, now), None);
        // The HTTP-date form.
        let at = chrono::DateTime::from_timestamp(now + 60, 0).unwrap();
        let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        assert_eq!(asked_wait(Some(&date), None, now), secs(60));
    }
}
