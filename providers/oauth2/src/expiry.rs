//! When a lease on an access token ends.
//!
//! The authorization server fixes a token's lifetime (`expires_in`) when it
//! issues it; Writ cannot ask for a shorter one, and the token's clock
//! starts somewhere between the moment the request left (`sent_at`) and the
//! moment the answer came back (`received_at`). The lease must not claim
//! more than Writ can deliver:
//!
//! - **Revocable** (a revocation endpoint is known): the lease ends at the
//!   requested expiry or when the token surely still works
//!   (`sent_at + expires_in`), whichever is first. A token that would
//!   outlive the lease is revoked when the lease ends.
//! - **Expiry-only**: nothing can end the token early, so the lease must
//!   last as long as the token can (`received_at + expires_in`). If that is
//!   past the requested expiry the mint is refused: the agent must ask for
//!   a longer TTL, or an operator raises the role's `min_ttl` above the
//!   server's token lifetime. The token already issued is never handed out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use writ_provider_api::{CredentialShape, ProviderError};

/// The lease's expiry for a token issued in answer to a request sent at
/// `sent_at` and answered at `received_at`.
pub(crate) fn lease_expiry(
    shape: CredentialShape,
    sent_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    requested: DateTime<Utc>,
    expires_in: Option<Duration>,
) -> Result<DateTime<Utc>, ProviderError> {
    let lifetime = match expires_in {
        Some(lifetime) if lifetime.is_zero() => {
            return Err(ProviderError::Failed(
                "the authorization server issued a token that expires at once (expires_in 0)".into(),
            ));
        }
        Some(lifetime) => chrono::Duration::from_std(lifetime).ok(),
        None => None,
    };
    let after = |start: DateTime<Utc>| lifetime.and_then(|lifetime| start.checked_add_signed(lifetime));
    match shape {
        CredentialShape::Revocable => Ok(after(sent_at).map_or(requested, |alive| alive.min(requested))),
        CredentialShape::ExpiryOnly => {
            let Some(dead) = after(received_at) else {
                return Err(ProviderError::Failed(
                    "the authorization server gave no expires_in and cannot revoke tokens, so nothing \
                     bounds how long the token lives"
                        .into(),
                ));
            };
            if dead > requested {
                let seconds = expires_in.unwrap_or_default().as_secs();
                return Err(ProviderError::Refused(format!(
                    "the authorization server issues tokens valid for {seconds}s and cannot revoke them, so \
                     one would outlive this lease (ending at {requested}); ask for a TTL over {seconds}s \
                     (an operator can raise the role's min_ttl above {seconds}s)"
                )));
            }
            Ok(dead)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn secs(seconds: u64) -> Option<Duration> {
        Some(Duration::from_secs(seconds))
    }

    #[test]
    fn a_revocable_token_ends_with_the_lease_or_before() {
        let revocable = CredentialShape::Revocable;
        // Outlives the lease: the lease ends as asked and Writ revokes then.
        assert_eq!(lease_expiry(revocable, t(0), t(1), t(900), secs(3600)).unwrap(), t(900));
        // Dies first: the lease says so, counted from when the request left.
        assert_eq!(lease_expiry(revocable, t(0), t(1), t(900), secs(600)).unwrap(), t(600));
        // No lifetime given: revocation at the lease's end is what ends it.
        assert_eq!(lease_expiry(revocable, t(0), t(1), t(900), None).unwrap(), t(900));
    }

    #[test]
    fn an_expiry_only_token_must_not_outlive_its_lease() {
        let expiry_only = CredentialShape::ExpiryOnly;
        // Dies first: the lease ends when it surely has died.
        assert_eq!(lease_expiry(expiry_only, t(0), t(2), t(900), secs(600)).unwrap(), t(602));
        assert_eq!(lease_expiry(expiry_only, t(0), t(2), t(602), secs(600)).unwrap(), t(602));
        // Would outlive it, if only by the round trip: refused, saying how to fix it.
        let error = lease_expiry(expiry_only, t(0), t(2), t(601), secs(600)).unwrap_err();
        let ProviderError::Refused(message) = error else { panic!("refused, got {error:?}") };
        assert!(message.contains("600s") && message.contains("min_ttl"), "{message}");
        assert!(matches!(lease_expiry(expiry_only, t(0), t(1), t(900), None), Err(ProviderError::Failed(_))));
    }

    #[test]
    fn a_token_that_is_dead_on_arrival_is_a_failure() {
        for shape in [CredentialShape::Revocable, CredentialShape::ExpiryOnly] {
            assert!(matches!(
                lease_expiry(shape, t(0), t(1), t(900), secs(0)),
                Err(ProviderError::Failed(_))
            ));
        }
    }
}
