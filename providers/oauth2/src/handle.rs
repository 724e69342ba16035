//! Revocation handles.
//!
//! RFC 7009 revokes a token by its value, which exists only once the
//! server has issued it. So there are two handles:
//!
//! - the **intent**, `oauth2-intent:<lease id>`, which [`Provider::intent`]
//!   returns before anything is minted. It names no token: revoking by it
//!   succeeds and does nothing.
//! - the **token** handle, `oauth2-token:<lease id>:<access token>`, which
//!   mint returns. Writ seals it and puts it in place of the intent when
//!   it activates the lease, and revocation sends the token to the
//!   revocation endpoint. It is the only place the token is kept.
//!
//! The lease id in both lets revocation refuse a handle that belongs to
//! another lease.
//!
//! [`Provider::intent`]: writ_provider_api::Provider::intent

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;
use writ_provider_api::{ProviderError, RevocationHandle};

const INTENT: &str = "oauth2-intent";
const TOKEN: &str = "oauth2-token";

/// What a handle says to revoke. `Debug` shows the token as redacted.
#[derive(Debug)]
pub(crate) enum Handle {
    /// Nothing minted was recorded for the lease.
    Intent,
    /// This access token.
    Token(SecretString),
}

pub(crate) fn intent(lease_id: Uuid) -> RevocationHandle {
    RevocationHandle::new(format!("{INTENT}:{lease_id}"))
}

pub(crate) fn token(lease_id: Uuid, access_token: &SecretString) -> RevocationHandle {
    RevocationHandle::new(format!("{TOKEN}:{lease_id}:{}", access_token.expose_secret()))
}

/// Reads a handle of lease `lease_id`. Errors never quote the handle.
pub(crate) fn parse(handle: &RevocationHandle, lease_id: Uuid) -> Result<Handle, ProviderError> {
    let wrong = |why: &str| ProviderError::Failed(format!("the revocation handle of lease {lease_id} {why}"));
    let (kind, rest) = handle.expose().split_once(':').ok_or_else(|| wrong("is not an oauth2 handle"))?;
    let (lease, access_token) = match kind {
        INTENT => (rest, None),
        TOKEN => {
            let (lease, access_token) = rest.split_once(':').ok_or_else(|| wrong("is damaged"))?;
            (lease, Some(access_token))
        }
        _ => return Err(wrong("is not an oauth2 handle")),
    };
    if Uuid::parse_str(lease).ok() != Some(lease_id) {
        return Err(wrong("belongs to another lease"));
    }
    match access_token {
        None => Ok(Handle::Intent),
        Some("") => Err(wrong("is damaged")),
        Some(access_token) => Ok(Handle::Token(SecretString::from(access_token.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_stay_with_their_lease() {
        let lease = Uuid::now_v7();
        assert!(matches!(parse(&intent(lease), lease).unwrap(), Handle::Intent));
        let minted = token(lease, &SecretString::from("tok:with:colons".to_string()));
        let Handle::Token(access_token) = parse(&minted, lease).unwrap() else { panic!("a token handle") };
        assert_eq!(access_token.expose_secret(), "tok:with:colons");

        let other = Uuid::now_v7();
        for handle in [intent(lease), minted] {
            let error = parse(&handle, other).unwrap_err();
            assert!(error.to_string().contains("another lease"), "{error}");
            assert!(!error.to_string().contains("tok"), "{error}");
        }
        for damaged in
            ["", "postgres-role", "writ_abc:x", &format!("{TOKEN}:{lease}"), &format!("{TOKEN}:{lease}:")]
        {
            let error = parse(&RevocationHandle::new(damaged), lease).unwrap_err();
            assert!(matches!(error, ProviderError::Failed(_)), "{damaged:?}: {error}");
        }
    }
}
