//! Translation between the wire messages and the provider API types, and
//! the one mapping from gRPC status codes to [`ProviderError`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use tonic::{Code, Status};
use writ_provider_api::{Credential, CredentialShape, MintRequest, ProviderError, RoleDescription};

use crate::proto;

/// Maps a status from the plugin to what Writ should do about it. The
/// plugin's message is passed on; the protocol forbids secrets in it.
pub(crate) fn status_to_error(status: &Status) -> ProviderError {
    let message = status.message();
    if is_transport_failure(status) {
        return ProviderError::Unavailable(format!("plugin: connection failed: {message}"));
    }
    match status.code() {
        // Cancelled and aborted calls (a plugin restarting, a transaction
        // that lost a race) may well succeed when tried again.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Cancelled
        | Code::Aborted => ProviderError::Unavailable(format!("plugin: {:?}: {message}", status.code())),
        Code::InvalidArgument | Code::NotFound | Code::PermissionDenied | Code::FailedPrecondition => {
            ProviderError::Refused(message.to_string())
        }
        code => ProviderError::Failed(format!("plugin: {code:?}: {message}")),
    }
}

/// Whether tonic made this status itself from a broken connection (it
/// reports those as UNKNOWN "transport error"), rather than receiving it
/// from the plugin. A status off the wire carries no source error.
fn is_transport_failure(status: &Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    while let Some(error) = source {
        if error.is::<tonic::transport::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A plugin answer that breaks the protocol: an operator must fix the plugin.
pub(crate) fn contract(what: impl std::fmt::Display) -> ProviderError {
    ProviderError::Failed(format!("plugin broke the protocol: {what}"))
}

pub(crate) fn shape(shape: i32) -> Result<CredentialShape, String> {
    match proto::Shape::try_from(shape) {
        Ok(proto::Shape::Revocable) => Ok(CredentialShape::Revocable),
        Ok(proto::Shape::ExpiryOnly) => Ok(CredentialShape::ExpiryOnly),
        Ok(proto::Shape::Unspecified) | Err(_) => {
            Err(format!("shape {shape} is not REVOCABLE or EXPIRY_ONLY"))
        }
    }
}

fn duration(value: Option<prost_types::Duration>, field: &str) -> Result<Option<Duration>, String> {
    value
        .map(|d| Duration::try_from(d).map_err(|_| format!("{field} is negative or out of range")))
        .transpose()
}

/// Checks a described role the way Writ's own provider configs are checked.
pub(crate) fn role(role: proto::Role) -> Result<RoleDescription, String> {
    let name = role.name;
    let valid_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid_name {
        return Err(format!("role {name:?}: names are letters, digits and -_."));
    }
    let max_ttl =
        duration(role.max_ttl, "max_ttl")?.ok_or_else(|| format!("role {name:?}: max_ttl is required"))?;
    let default_ttl = duration(role.default_ttl, "default_ttl")?
        .ok_or_else(|| format!("role {name:?}: default_ttl is required"))?;
    let min_ttl = duration(role.min_ttl, "min_ttl")?.unwrap_or(Duration::ZERO);
    if max_ttl.is_zero() {
        return Err(format!("role {name:?}: max_ttl must be positive"));
    }
    if default_ttl.is_zero() || default_ttl < min_ttl || default_ttl > max_ttl {
        return Err(format!("role {name:?}: default_ttl must be within [min_ttl, max_ttl] and positive"));
    }
    if let Some(scope) = role.scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
        return Err(format!("role {name:?}: scope {scope:?} must be one non-empty word"));
    }
    Ok(RoleDescription { name, max_ttl, default_ttl, min_ttl, scopes: role.scopes })
}

pub(crate) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    // `timestamp_subsec_nanos` is below 2e9 (leap seconds), which fits i32.
    let nanos = i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(999_999_999);
    prost_types::Timestamp { seconds: at.timestamp(), nanos }
}

pub(crate) fn from_timestamp(
    at: Option<prost_types::Timestamp>,
    field: &str,
) -> Result<DateTime<Utc>, ProviderError> {
    let at = at.ok_or_else(|| contract(format_args!("{field} is required")))?;
    u32::try_from(at.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(at.seconds, nanos))
        .ok_or_else(|| contract(format_args!("{field} is out of range")))
}

pub(crate) fn mint_request(request: &MintRequest) -> proto::MintRequest {
    proto::MintRequest {
        lease_id: request.lease_id.hyphenated().to_string(),
        agent: request.agent.clone(),
        owner: request.owner.clone(),
        task_id: request.task_id.clone(),
        role: request.role.clone(),
        scopes: request.scopes.clone(),
        issued_at: Some(timestamp(request.issued_at)),
        expires_at: Some(timestamp(request.expires_at)),
    }
}

/// Takes a credential off the wire, refusing one without secret material.
pub(crate) fn credential(credential: Option<proto::Credential>) -> Result<Credential, ProviderError> {
    use proto::credential::Kind;
    let credential = match credential.and_then(|c| c.kind) {
        Some(Kind::BearerToken(bearer)) => {
            Credential::BearerToken { token: bearer.token.into(), token_type: bearer.token_type }
        }
        Some(Kind::Password(login)) => Credential::Password {
            username: login.username,
            password: login.password.into(),
            connection: login.connection.into_iter().collect(),
        },
        Some(Kind::AwsSession(session)) => Credential::AwsSession {
            access_key_id: session.access_key_id,
            secret_access_key: session.secret_access_key.into(),
            session_token: session.session_token.into(),
        },
        None => return Err(contract("credential is required")),
    };
    if credential.secrets().iter().any(|secret| secret.is_empty()) {
        return Err(contract(format_args!("{} credential has an empty secret", credential.kind())));
    }
    Ok(credential)
}

/// Puts a credential on the wire, for `Introspect`.
pub(crate) fn credential_to_proto(credential: &Credential) -> proto::Credential {
    use proto::credential::Kind;
    let kind = match credential {
        Credential::BearerToken { token, token_type } => Kind::BearerToken(proto::BearerToken {
            token: token.expose_secret().to_string(),
            token_type: token_type.clone(),
        }),
        Credential::Password { username, password, connection } => Kind::Password(proto::Password {
            username: username.clone(),
            password: password.expose_secret().to_string(),
            connection: connection.clone().into_iter().collect(),
        }),
        Credential::AwsSession { access_key_id, secret_access_key, session_token } => {
            Kind::AwsSession(proto::AwsSession {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.expose_secret().to_string(),
                session_token: session_token.expose_secret().to_string(),
            })
        }
    };
    proto::Credential { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_reactions() {
        let unavailable = [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Cancelled,
            Code::Aborted,
        ];
        for code in unavailable {
            assert!(
                matches!(status_to_error(&Status::new(code, "x")), ProviderError::Unavailable(_)),
                "{code:?}"
            );
        }
        let refused =
            [Code::InvalidArgument, Code::NotFound, Code::PermissionDenied, Code::FailedPrecondition];
        for code in refused {
            assert_eq!(
                status_to_error(&Status::new(code, "unknown role \"x\"")),
                ProviderError::Refused("unknown role \"x\"".into())
            );
        }
        let failed =
            [Code::Internal, Code::Unknown, Code::Unimplemented, Code::Unauthenticated, Code::DataLoss];
        for code in failed {
            assert!(matches!(status_to_error(&Status::new(code, "x")), ProviderError::Failed(_)), "{code:?}");
        }
    }

    #[test]
    fn roles_are_checked() {
        let secs = |s| Some(prost_types::Duration { seconds: s, nanos: 0 });
        let good = proto::Role {
            name: "reports-read".into(),
            max_ttl: secs(900),
            default_ttl: secs(300),
            min_ttl: None,
            scopes: vec!["reports:read".into()],
        };
        let described = role(good.clone()).unwrap();
        assert_eq!(described.min_ttl, Duration::ZERO);
        assert_eq!(described.max_ttl, Duration::from_secs(900));
        assert!(role(proto::Role { name: "bad name".into(), ..good.clone() }).is_err());
        assert!(role(proto::Role { max_ttl: None, ..good.clone() }).is_err());
        assert!(role(proto::Role { default_ttl: secs(901), ..good.clone() }).is_err());
        assert!(role(proto::Role { min_ttl: secs(400), ..good.clone() }).is_err());
        assert!(role(proto::Role { max_ttl: secs(-1), ..good }).is_err());
    }

    #[test]
    fn credentials_without_secrets_are_refused() {
        let empty = proto::Credential {
            kind: Some(proto::credential::Kind::BearerToken(proto::BearerToken {
                token: String::new(),
                token_type: "Bearer".into(),
            })),
        };
        assert!(matches!(credential(Some(empty)), Err(ProviderError::Failed(_))));
        assert!(matches!(credential(None), Err(ProviderError::Failed(_))));
        let token = Credential::BearerToken { token: "t".into(), token_type: "Bearer".into() };
        let round_trip = credential(Some(credential_to_proto(&token))).unwrap();
        assert_eq!(round_trip.secrets(), vec!["t"]);
    }

    #[test]
    fn timestamps_round_trip() {
        let now = Utc::now();
        assert_eq!(from_timestamp(Some(timestamp(now)), "t").unwrap(), now);
        assert!(from_timestamp(None, "t").is_err());
    }
}
