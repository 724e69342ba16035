//! `POST /oauth2/token`: an RFC 8693 token exchange, for agents that speak
//! OAuth rather than gRPC.
//!
//! The agent sends its workload JWT as `subject_token` and names the grant
//! (`audience=<provider>/<role>`, `scope`, `writ_task_id`, `writ_tool`,
//! `writ_ttl`); Writ answers with the credential in the RFC 8693 response
//! shape, or an RFC 6749 §5.2 error. Nothing here decides: the token is
//! verified by the same [`Authenticator`](crate::api::Authenticator) as
//! on gRPC, and the request goes to the same
//! [`Broker::issue`](crate::domain::Broker::issue) (or
//! [`Broker::collect_approval`](crate::domain::Broker::collect_approval))
//! as `CredentialService`, so policy, lease, audit, step-up and suspension
//! behave as they do there. This module reads the form ([`params`]) and
//! writes the answer ([`reply`]). docs/token-exchange.md has the mapping
//! and the error table.

mod params;
mod reply;

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::Value;
use writ_provider_api::{ExposeSecret, SecretString};

use self::params::{Ask, TokenRequest, TokenType};
use self::reply::{Refusal, refusal};
use super::Shared;
use crate::api::{Caller, convert};
use crate::domain::{Error, GrantRequest, IssueOutcome, IssueRequest, Issued};
use crate::model::{AgentState, Approval, ApprovalState};
use crate::principals::Agent;
use crate::text::quoted;

/// Room in the body beside the subject token (at most
/// `limits.max_token_bytes`) for the other parameters.
const FORM_ALLOWANCE: usize = 16 * 1024;

pub(super) async fn token(
    State(shared): State<Shared>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<crate::tls::PeerCertificates>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let certificate = peer.and_then(|axum::Extension(axum::extract::ConnectInfo(peer))| peer.leaf());
    match exchange(&shared, &headers, body, certificate.as_ref()).await {
        Ok(body) => reply::never_cached(Json(body).into_response()),
        Err(refusal) => {
            tracing::debug!(error = refusal.error, description = %refusal.description, "token exchange refused");
            refusal.into_response()
        }
    }
}

async fn exchange(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
    certificate: Option<&crate::tls::peer::ClientCertificate>,
) -> Result<Value, Refusal> {
    let TokenRequest { subject_token, wanted, ask } = read(shared, headers, body).await?;
    let agent = authenticate(shared, &subject_token, certificate).await?;
    let now = shared.clock.now();
    match ask {
        Ask::Issue { task_id, tool, grant } => {
            check_target(shared, &grant)?;
            let request =
                IssueRequest { task_id, tool, grants: vec![grant], subject_token: Some(subject_token) };
            match shared.broker.issue(&agent, request, now).await {
                Ok(IssueOutcome::Issued(issued)) => deliver(shared, &agent, issued, wanted, now).await,
                Ok(IssueOutcome::ApprovalRequired(approval)) => {
                    Err(Refusal::approval_pending(&approval, now))
                }
                Err(error) => Err(denied(shared, &agent, error).await),
            }
        }
        Ask::Collect { approval_id } => {
            collect(shared, &agent, &approval_id, subject_token, wanted, now).await
        }
    }
}

/// The request, read within its bounds: no client credentials, a form
/// body of at most `limits.max_token_bytes` + [`FORM_ALLOWANCE`].
async fn read(shared: &Shared, headers: &HeaderMap, body: Body) -> Result<TokenRequest, Refusal> {
    refuse_client_authentication(headers)?;
    require_form(headers)?;
    let limit = shared.broker.limits.max_token_bytes.saturating_add(FORM_ALLOWANCE);
    let too_large = || {
        Refusal::invalid_request(format!("the body is larger than {limit} bytes"))
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok());
    if declared.and_then(|length| length.parse::<usize>().ok()).is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| too_large())?;
    TokenRequest::read(&params::parse_form(&body)?)
}

/// RFC 8693 leaves client authentication to the server: Writ has no
/// OAuth clients, and authenticates the agent by its subject token alone.
/// Credentials it cannot check are refused rather than ignored.
fn refuse_client_authentication(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(()) };
    let scheme = value.to_str().ok().and_then(|value| value.split(' ').next()).unwrap_or_default();
    let refusal = Refusal::client_authentication(
        "the Authorization header is not used here: Writ keeps no OAuth client registrations; send the \
         agent's workload JWT as subject_token, and no client credentials",
    );
    Err(if scheme.eq_ignore_ascii_case("bearer") { refusal.bearer_challenge() } else { refusal })
}

/// RFC 6749 §3.2: parameters come form-encoded in the body.
fn require_form(headers: &HeaderMap) -> Result<(), Refusal> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let essence = content_type.and_then(|value| value.split(';').next()).map(str::trim);
    if essence.is_some_and(|essence| essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")) {
        Ok(())
    } else {
        Err(Refusal::invalid_request(
            "send the parameters in the body as Content-Type: application/x-www-form-urlencoded",
        ))
    }
}

/// The agent the subject token names. RFC 8693 §2.2.2: an invalid
/// subject token is `invalid_request`. A service's token is valid but not
/// an agent's: `unauthorized_client`.
async fn authenticate(
    shared: &Shared,
    token: &SecretString,
    certificate: Option<&crate::tls::peer::ClientCertificate>,
) -> Result<Arc<Agent>, Refusal> {
    match shared.authenticator.bound_principal(token.expose_secret(), certificate).await {
        Ok(Caller::Agent(agent)) => Ok(agent),
        Ok(Caller::Service(service)) => Err(Refusal::new(
            "unauthorized_client",
            format!(
                "{} is a service, not an agent: only agents exchange their workload token for credentials",
                quoted(&service.name)
            ),
        )),
        Err(status) => Err(match status.code() {
            tonic::Code::Unavailable => Refusal::new("temporarily_unavailable", status.message()),
            tonic::Code::Internal => Refusal::new("server_error", status.message()),
            _ => Refusal::invalid_request(format!("subject_token is not accepted: {}", status.message())),
        }),
    }
}

/// Tells the OAuth client which target it named wrong: an unknown
/// provider or role is `invalid_target`, a scope the role does not offer
/// `invalid_scope`. The broker checks both again (and decides everything
/// else); this only picks the error code, and runs once the caller is
/// known, so the configuration is never shown to anonymous callers.
fn check_target(shared: &Shared, grant: &GrantRequest) -> Result<(), Refusal> {
    let provider = shared.broker.providers().get(&grant.provider).ok_or_else(|| {
        Refusal::new("invalid_target", format!("provider {} is not configured", quoted(&grant.provider)))
    })?;
    let role = provider.role(&grant.role).ok_or_else(|| {
        Refusal::new(
            "invalid_target",
            format!("provider {} has no role {}", quoted(&grant.provider), quoted(&grant.role)),
        )
    })?;
    match grant.scopes.iter().find(|scope| !role.scopes.contains(scope)) {
        Some(scope) => Err(Refusal::new(
            "invalid_scope",
            format!(
                "role {} of provider {} does not offer scope {}",
                quoted(&grant.role),
                quoted(&grant.provider),
                quoted(scope)
            ),
        )),
        None => Ok(()),
    }
}

/// A refusal by the broker. A suspended agent is refused with
/// PERMISSION_DENIED like a policy denial; it is `invalid_grant` here
/// (its authority is withdrawn), not `invalid_target`.
async fn denied(shared: &Shared, agent: &Agent, error: Error) -> Refusal {
    let permission = matches!(error, Error::PermissionDenied(_));
    let mut refusal = refusal(error);
    if permission && suspended(shared, agent).await {
        refusal.error = "invalid_grant";
    }
    refusal
}

async fn suspended(shared: &Shared, agent: &Agent) -> bool {
    let status = shared.broker.registry().status(&agent.name).await;
    status.ok().flatten().is_some_and(|status| status.state == AgentState::Suspended)
}

/// Collects an approved request (RFC 8628's polling, with the approval id
/// for a device code): `authorization_pending` until the quorum agrees,
/// then the credential once; `access_denied` when an approver denied,
/// `expired_token` when it expired or was cancelled.
async fn collect(
    shared: &Shared,
    agent: &Agent,
    approval_id: &str,
    subject_token: SecretString,
    wanted: Option<TokenType>,
    now: DateTime<Utc>,
) -> Result<Value, Refusal> {
    let approval = shared.broker.own_approval(agent, approval_id).await.map_err(refusal)?;
    if approval.grants.len() != 1 {
        return Err(Refusal::invalid_request(format!(
            "approval request {} grants {} credentials, and a token response holds one: collect it with \
             gRPC CredentialService/CollectApproval",
            approval.id,
            approval.grants.len()
        )));
    }
    match shared.broker.collect_approval(agent, approval_id, Some(subject_token), now).await {
        Ok(issued) => deliver(shared, agent, issued, wanted, now).await,
        Err(error) => Err(not_collected(shared, agent, &approval, error, now).await),
    }
}

async fn not_collected(
    shared: &Shared,
    agent: &Agent,
    approval: &Approval,
    error: Error,
    now: DateTime<Utc>,
) -> Refusal {
    if suspended(shared, agent).await {
        return Refusal::new("invalid_grant", error.to_string());
    }
    match approval.state {
        ApprovalState::Pending => Refusal::approval_pending(approval, now),
        ApprovalState::Denied => Refusal::new("access_denied", error.to_string()),
        ApprovalState::Expired | ApprovalState::Cancelled => Refusal::new("expired_token", error.to_string()),
        ApprovalState::Collected => Refusal::new("invalid_grant", error.to_string()),
        ApprovalState::Approved => denied(shared, agent, error).await,
    }
}

/// The one credential of a request, in the response shape. One the client
/// did not ask for (`requested_token_type`) is released at once, so it is
/// revoked and never left live unseen.
async fn deliver(
    shared: &Shared,
    agent: &Agent,
    issued: Vec<Issued>,
    wanted: Option<TokenType>,
    now: DateTime<Utc>,
) -> Result<Value, Refusal> {
    let [issued] = <[Issued; 1]>::try_from(issued).map_err(|issued| {
        tracing::error!(credentials = issued.len(), "one grant asked, another number of credentials issued");
        Refusal::new("server_error", "Writ issued an unexpected number of credentials")
    })?;
    let lease = &issued.lease;
    let signed_by_writ = shared
        .broker
        .providers()
        .get(&lease.provider)
        .is_some_and(|p| p.provider.token_authority().is_some());
    let Some(delivery) = reply::delivery(convert::credential(&issued.credential), wanted, signed_by_writ)
    else {
        let wanted = wanted.map_or("", TokenType::uri);
        let released = match shared.broker.release(agent, &lease.id.to_string(), now).await {
            Ok(_) => "it was released at once",
            Err(error) => {
                tracing::warn!(lease = %lease.id, %error, "cannot release a credential of the wrong type");
                "it expires with its lease"
            }
        };
        return Err(Refusal::new(
            "invalid_target",
            format!(
                "{}/{} does not issue {wanted} tokens; lease {} was not handed out and {released}",
                lease.provider, lease.role, lease.id
            ),
        ));
    };
    Ok(reply::token_response(delivery, &issued, now))
}
