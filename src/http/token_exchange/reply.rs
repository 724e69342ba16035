//! What the token endpoint answers: an RFC 8693 §2.2.1 token response, or
//! an RFC 6749 §5.2 error, both JSON and never cached.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::params::TokenType;
use crate::api::proto::{self, credential::Kind};
use crate::domain::{Error, Issued};
use crate::model::Approval;
use crate::text::quoted;

/// An OAuth error response. The description is safe to show the caller:
/// it never holds the token or a provider's own text.
#[derive(Debug, PartialEq)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) error: &'static str,
    pub(super) description: String,
    /// Writ's extension members, such as `writ_approval_id`.
    extra: Vec<(&'static str, Value)>,
    /// The `WWW-Authenticate` challenge of a 401 (RFC 6749 §5.2).
    challenge: Option<&'static str>,
}

impl Refusal {
    /// An error with the status RFC 6749 §5.2 gives it: 400, except the
    /// codes that say to retry later (503) or that Writ failed (500).
    pub(super) fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self { status, error, description: description.into(), extra: Vec::new(), challenge: None }
    }

    pub(super) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    /// Client authentication was attempted: Writ has no clients to
    /// authenticate. 401 with a challenge in the scheme the client used.
    pub(super) fn client_authentication(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            challenge: Some("Basic realm=\"writ\""),
            ..Self::new("invalid_client", description)
        }
    }

    /// 401 for an `Authorization` header of scheme `Bearer`.
    pub(super) fn bearer_challenge(mut self) -> Self {
        self.challenge = Some("Bearer realm=\"writ\"");
        self
    }

    pub(super) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn with(mut self, name: &'static str, value: Value) -> Self {
        self.extra.push((name, value));
        self
    }

    /// The step-up answer: nothing is issued until the approver group
    /// agrees; the client collects with `writ_approval_id`.
    pub(super) fn approval_pending(approval: &Approval, now: DateTime<Utc>) -> Self {
        let grants: Vec<String> =
            approval.grants.iter().map(|grant| format!("{}/{}", grant.provider, grant.role)).collect();
        let description = format!(
            "{} needs approval by group {} ({} of {} so far): approval request {} is pending until {}; \
             nothing was issued. Ask again with writ_approval_id={} once it is approved",
            grants.join(", "),
            quoted(&approval.group),
            approval.approvers().count(),
            approval.quorum,
            approval.id,
            approval.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            approval.id
        );
        Self::new("authorization_pending", description)
            .with("writ_approval_id", json!(approval.id))
            .with("writ_approval_expires_in", json!(seconds_until(approval.expires_at, now)))
    }
}

/// A domain error as an OAuth error (docs/token-exchange.md has the
/// table). A policy denial is RFC 8693's `invalid_target` ("unwilling to
/// issue a token for the target"); a suspended agent, which is
/// PERMISSION_DENIED too, the caller tells apart.
pub(super) fn refusal(error: Error) -> Refusal {
    let code = match &error {
        Error::InvalidArgument(_) | Error::AlreadyExists(_) => "invalid_request",
        Error::NotFound(_) | Error::FailedPrecondition(_) => "invalid_grant",
        Error::PermissionDenied(_) => "invalid_target",
        Error::Aborted(_) | Error::Unavailable(_) => "temporarily_unavailable",
        Error::Internal(_) => "server_error",
    };
    Refusal::new(code, error.to_string())
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body: Map<String, Value> =
            self.extra.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
        body.insert("error".into(), Value::String(self.error.into()));
        body.insert("error_description".into(), Value::String(self.description));
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        never_cached(response)
    }
}

/// RFC 6749 §5.1: token endpoint answers are not stored anywhere.
pub(super) fn never_cached(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// What was issued, for the token response.
pub(super) struct Delivery {
    pub(super) access_token: String,
    pub(super) issued_token_type: TokenType,
    /// `Bearer` for a token to send as one; `N_A` otherwise (RFC 8693).
    pub(super) token_type: String,
}

/// The response form of a credential. A bearer token is itself; a
/// credential of several parts (a login, an AWS session) is a JSON object
/// of them, typed by Writ's own token type. `wanted` is the
/// `requested_token_type`; `signed_by_writ` says whether the token is a
/// JWT Writ signed. `None` when the credential is not of the wanted type.
pub(super) fn delivery(
    credential: proto::Credential,
    wanted: Option<TokenType>,
    signed_by_writ: bool,
) -> Option<Delivery> {
    let (access_token, issued_token_type, token_type) = match credential.kind? {
        Kind::BearerToken(bearer) => {
            let issued = match wanted {
                Some(TokenType::Jwt) if signed_by_writ => TokenType::Jwt,
                _ => TokenType::AccessToken,
            };
            let token_type =
                if bearer.token_type.is_empty() { "Bearer".to_owned() } else { bearer.token_type };
            (bearer.token, issued, token_type)
        }
        Kind::Password(login) => (
            json!({ "username": login.username, "password": login.password, "connection": login.connection })
                .to_string(),
            TokenType::Password,
            "N_A".to_owned(),
        ),
        Kind::AwsSession(session) => (
            json!({
                "access_key_id": session.access_key_id,
                "secret_access_key": session.secret_access_key,
                "session_token": session.session_token,
            })
            .to_string(),
            TokenType::AwsSession,
            "N_A".to_owned(),
        ),
    };
    if wanted.is_some_and(|wanted| wanted != issued_token_type) {
        return None;
    }
    Some(Delivery { access_token, issued_token_type, token_type })
}

/// The RFC 8693 §2.2.1 body, with Writ's lease id so the agent can renew
/// or release the lease over gRPC.
pub(super) fn token_response(delivery: Delivery, issued: &Issued, now: DateTime<Utc>) -> Value {
    let lease = &issued.lease;
    let mut body = json!({
        "access_token": delivery.access_token,
        "issued_token_type": delivery.issued_token_type.uri(),
        "token_type": delivery.token_type,
        "expires_in": seconds_until(lease.expires_at, now),
        "writ_lease_id": lease.id,
        "writ_task_id": lease.task_id,
    });
    if !lease.scopes.is_empty() {
        body["scope"] = json!(lease.scopes.join(" "));
    }
    if !issued.notices.is_empty() {
        body["writ_notices"] = json!(issued.notices);
    }
    body
}

fn seconds_until(at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (at - now).num_seconds().max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token_type: &str) -> proto::Credential {
        proto::Credential {
            kind: Some(Kind::BearerToken(proto::BearerToken {
                token: "t0k".into(),
                token_type: token_type.into(),
            })),
        }
    }

    fn aws() -> proto::Credential {
        proto::Credential {
            kind: Some(Kind::AwsSession(proto::AwsSession {
                access_key_id: "AKIA".into(),
                secret_access_key: "secret".into(),
                session_token: "session".into(),
            })),
        }
    }

    fn login() -> proto::Credential {
        proto::Credential {
            kind: Some(Kind::Password(proto::Password {
                username: "writ_1".into(),
                password: "pw".into(),
                connection: [("host".to_string(), "db".to_string())].into_iter().collect(),
            })),
        }
    }

    #[test]
    fn a_bearer_token_is_an_access_token_or_a_jwt_when_writ_signed_it() {
        let plain = delivery(bearer(""), None, true).unwrap();
        assert_eq!(
            (plain.access_token.as_str(), plain.issued_token_type, plain.token_type.as_str()),
            ("t0k", TokenType::AccessToken, "Bearer")
        );
        let dpop = delivery(bearer("DPoP"), Some(TokenType::AccessToken), false).unwrap();
        assert_eq!(dpop.token_type, "DPoP", "the provider's token type is kept");
        assert_eq!(
            delivery(bearer(""), Some(TokenType::Jwt), true).unwrap().issued_token_type,
            TokenType::Jwt
        );
        assert!(
            delivery(bearer(""), Some(TokenType::Jwt), false).is_none(),
            "an upstream's token may be opaque"
        );
        assert!(delivery(bearer(""), Some(TokenType::AwsSession), true).is_none());
    }

    #[test]
    fn credentials_of_several_parts_are_json_of_writ_types() {
        let session = delivery(aws(), None, false).unwrap();
        assert_eq!((session.issued_token_type, session.token_type.as_str()), (TokenType::AwsSession, "N_A"));
        let parts: Value = serde_json::from_str(&session.access_token).unwrap();
        assert_eq!(
            parts,
            json!({"access_key_id": "AKIA", "secret_access_key": "secret", "session_token": "session"})
        );
        assert!(delivery(aws(), Some(TokenType::AccessToken), false).is_none());
        assert!(delivery(aws(), Some(TokenType::AwsSession), false).is_some());

        let login = delivery(login(), None, false).unwrap();
        assert_eq!((login.issued_token_type, login.token_type.as_str()), (TokenType::Password, "N_A"));
        let parts: Value = serde_json::from_str(&login.access_token).unwrap();
        assert_eq!(parts, json!({"username": "writ_1", "password": "pw", "connection": {"host": "db"}}));
    }

    #[test]
    fn domain_errors_map_to_oauth_errors() {
        let cases = [
            (Error::InvalidArgument("x".into()), StatusCode::BAD_REQUEST, "invalid_request"),
            (Error::NotFound("x".into()), StatusCode::BAD_REQUEST, "invalid_grant"),
            (Error::FailedPrecondition("x".into()), StatusCode::BAD_REQUEST, "invalid_grant"),
            (Error::PermissionDenied("x".into()), StatusCode::BAD_REQUEST, "invalid_target"),
            (Error::Unavailable("x".into()), StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
            (Error::Aborted("x".into()), StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
            (Error::Internal("x".into()), StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        ];
        for (error, status, code) in cases {
            let refusal = refusal(error);
            assert_eq!((refusal.status, refusal.error, refusal.description.as_str()), (status, code, "x"));
        }
    }

    #[tokio::test]
    async fn errors_are_json_never_cached_with_a_challenge_on_401() {
        let response = Refusal::client_authentication("no clients").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let headers = response.headers();
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::PRAGMA], "no-cache");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic realm=\"writ\"");
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, json!({"error": "invalid_client", "error_description": "no clients"}));
    }
}
