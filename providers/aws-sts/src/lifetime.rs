//! How long a session is asked for, and which expiry Writ is told.
//!
//! Writ core has already clamped the lease to the role's `[min_ttl,
//! max_ttl]` and to the task's deadline, so `DurationSeconds` is the lease's
//! lifetime in whole seconds (rounded down, so the session never outlives
//! the lease on that account). STS counts it from when *it* handles the
//! call, which is later than the lease's issue time by the call's latency,
//! and by however far AWS's clock is ahead of Writ's. So AWS's
//! `Expiration` is normally a little after the lease's expiry:
//!
//! - up to `expiry_tolerance` after it, Writ reports the lease's expiry
//!   (the session may outlive the lease by that much at most);
//! - further after it, the session is discarded, never handed out, and the
//!   mint fails (`Failed`): Writ's clock is too far behind AWS's to say
//!   truthfully when the credential dies;
//! - before it (AWS's clock is behind), AWS's `Expiration` is reported.

use std::time::Duration;

use chrono::{DateTime, Utc};
use writ_provider_api::ProviderError;

use crate::config::MIN_SESSION;

/// `DurationSeconds` for a lease from `issued_at` to `expires_at`, at most
/// `max_ttl`. A lease shorter than STS's 15 minutes cannot be served
/// without outliving it, so it is refused.
pub fn duration_seconds(
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    max_ttl: Duration,
) -> Result<i32, ProviderError> {
    let asked = (expires_at - issued_at).num_seconds();
    let min = MIN_SESSION.as_secs() as i64;
    if asked < min {
        return Err(ProviderError::Refused(format!(
            "the lease lasts {asked}s, shorter than the {min}s STS issues a session for at least"
        )));
    }
    let max = i64::try_from(max_ttl.as_secs()).unwrap_or(i64::MAX);
    i32::try_from(asked.min(max))
        .map_err(|_| ProviderError::Failed(format!("a lifetime of {asked}s does not fit DurationSeconds")))
}

/// The expiry to report for a session AWS says expires at `aws_expiration`.
pub fn reported_expiry(
    requested: DateTime<Utc>,
    aws_expiration: DateTime<Utc>,
    tolerance: Duration,
) -> Result<DateTime<Utc>, ProviderError> {
    if aws_expiration <= requested {
        return Ok(aws_expiration);
    }
    let overshoot = aws_expiration - requested;
    if overshoot.to_std().is_ok_and(|overshoot| overshoot <= tolerance) {
        return Ok(requested);
    }
    Err(ProviderError::Failed(format!(
        "AWS says the session expires at {aws_expiration}, {}s after the lease's expiry {requested} \
         (expiry_tolerance is {}s); Writ's clock is likely behind AWS's: the session was discarded",
        overshoot.num_seconds(),
        tolerance.as_secs()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn the_duration_is_the_lease_in_whole_seconds_within_max_ttl() {
        let hour = Duration::from_secs(3600);
        assert_eq!(duration_seconds(at(0), at(900), hour).unwrap(), 900);
        assert_eq!(duration_seconds(at(0), at(1800), hour).unwrap(), 1800);
        let fraction = at(1800) + chrono::Duration::milliseconds(999);
        assert_eq!(duration_seconds(at(0), fraction, hour).unwrap(), 1800, "rounded down");
        assert_eq!(duration_seconds(at(0), at(7200), hour).unwrap(), 3600, "clamped to max_ttl");
        for short in [899, 60, 0, -5] {
            let error = duration_seconds(at(0), at(short), hour).unwrap_err();
            let ProviderError::Refused(message) = &error else { panic!("refused, got {error:?}") };
            assert!(message.contains(&format!("{short}s")) && message.contains("900s"), "{message}");
        }
    }

    #[test]
    fn the_reported_expiry_is_never_later_than_the_lease() {
        let tolerance = Duration::from_secs(30);
        let lease = at(900);
        assert_eq!(reported_expiry(lease, at(890), tolerance).unwrap(), at(890), "AWS's earlier expiry");
        assert_eq!(reported_expiry(lease, lease, tolerance).unwrap(), lease);
        assert_eq!(reported_expiry(lease, at(901), tolerance).unwrap(), lease, "the call's latency");
        assert_eq!(reported_expiry(lease, at(930), tolerance).unwrap(), lease);
        let error = reported_expiry(lease, at(931), tolerance).unwrap_err();
        assert!(
            matches!(&error, ProviderError::Failed(m) if m.contains("31s after") && m.contains("discarded")),
            "{error:?}"
        );
        assert!(reported_expiry(lease, at(901), Duration::ZERO).is_err());
    }
}
