//! When to renew, as pure functions of the time a lease has left, and
//! Writ's clock as seen from here.
//!
//! A lease is renewed once [`DEFAULT_RENEW_AT`] of the time it has left
//! has passed (a 5-minute lease after 3 minutes 20 seconds), never sooner
//! than [`MIN_DELAY`] after the last try. A renewal that fails in a way
//! that may pass is tried again after a backoff (250 ms, doubling, at most
//! 10 s and at most a third of the time left) until the lease expires.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// The fraction of the time a lease has left after which it is renewed.
pub const DEFAULT_RENEW_AT: f64 = 2.0 / 3.0;
/// The shortest wait between two tries for one lease.
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// The first and the longest backoff after a failure that may pass.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How long to wait before renewing a lease with `remaining` left; `None`
/// once it has expired.
pub(crate) fn renew_delay(remaining: Duration, renew_at: f64) -> Option<Duration> {
    if remaining.is_zero() {
        return None;
    }
    Some(remaining.mul_f64(renew_at).max(MIN_DELAY))
}

/// How long to wait before trying again after `failures` failed tries in
/// a row (1 for the first), with `remaining` left; `None` when the lease
/// will have expired by then.
pub(crate) fn retry_delay(remaining: Duration, failures: u32) -> Option<Duration> {
    if remaining <= MIN_DELAY {
        return None;
    }
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    Some(doubled.min(MAX_BACKOFF).min(remaining / 3).max(MIN_DELAY))
}

/// Writ's clock, estimated from a time Writ stated (a lease's `issued_at`)
/// and when its answer arrived here. Runs on tokio's clock, so tests can
/// pause it; a skewed local wall clock does not matter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerClock {
    at: Instant,
    server: SystemTime,
}

impl ServerClock {
    /// Writ said it was `server` when the answer that arrived now left.
    pub(crate) fn new(server: SystemTime) -> Self {
        Self { at: Instant::now(), server }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.server + self.at.elapsed()
    }

    /// The time left until `expires_at` on Writ's clock (zero once past).
    pub(crate) fn remaining(&self, expires_at: SystemTime) -> Duration {
        expires_at.duration_since(self.now()).unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_after_two_thirds_of_the_time_left() {
        assert_eq!(renew_delay(Duration::from_secs(300), DEFAULT_RENEW_AT), Some(Duration::from_secs(200)));
        assert_eq!(renew_delay(Duration::from_secs(3), 0.5), Some(Duration::from_millis(1500)));
        assert_eq!(renew_delay(Duration::from_millis(10), DEFAULT_RENEW_AT), Some(MIN_DELAY));
        assert_eq!(renew_delay(Duration::ZERO, DEFAULT_RENEW_AT), None);
    }

    #[test]
    fn backs_off_within_the_time_left() {
        let plenty = Duration::from_secs(600);
        let delays: Vec<_> = (1..=8).map(|failures| retry_delay(plenty, failures).unwrap()).collect();
        assert_eq!(delays[0], Duration::from_millis(250));
        assert_eq!(delays[1], Duration::from_millis(500));
        assert_eq!(delays[7], MAX_BACKOFF, "capped");
        assert_eq!(
            retry_delay(Duration::from_secs(3), 10),
            Some(Duration::from_secs(1)),
            "a third of what is left"
        );
        assert_eq!(retry_delay(Duration::from_millis(50), 1), None, "expires before a retry");
        assert_eq!(retry_delay(plenty, u32::MAX), Some(MAX_BACKOFF));
    }

    #[tokio::test(start_paused = true)]
    async fn writs_clock_moves_with_tokios() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = ServerClock::new(issued);
        let expires = issued + Duration::from_secs(60);
        assert_eq!(clock.remaining(expires), Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(45)).await;
        assert_eq!(clock.remaining(expires), Duration::from_secs(15));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(clock.remaining(expires), Duration::ZERO);
    }
}
