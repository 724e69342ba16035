//! Writ's HTTP endpoints: metrics, and those of providers that sign their
//! own tokens:
//!
//! - `GET /providers/<name>/jwks.json`: the public keys, so resource
//!   servers can verify tokens offline;
//! - `GET /metrics`: Prometheus metrics (see `crate::metrics`);
//! - `POST /providers/<name>/introspect`: RFC 7662 token introspection.
//!   A token is active only if its signature and lifetime check out *and*
//!   its lease is still active, so a revocation is visible at once. The
//!   caller must present a workload token of a service with the
//!   `resource_server` role (RFC 7662 §2.1 requires the endpoint to be
//!   protected);
//! - `GET /healthz` (liveness: the process answers) and `GET /readyz`
//!   (readiness: the store and the audit log work and every background
//!   worker runs, as the gRPC health service says), for probes that cannot
//!   speak gRPC over TLS;
//! - `POST /oauth2/token`: RFC 8693 token exchange, the agent's way in for
//!   OAuth clients: the same issuance as gRPC `Issue` (module
//!   `token_exchange`, docs/token-exchange.md).

mod token_exchange;

use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Authenticator, Caller};
use crate::clock::Clock;
use crate::config::ServiceRole;
use crate::domain::Broker;
use crate::model::LeaseState;

#[derive(Clone)]
struct Shared {
    broker: Arc<Broker>,
    authenticator: Arc<Authenticator>,
    clock: Arc<dyn Clock>,
    /// Kept by the health watch (every 500 ms).
    ready: Arc<Readiness>,
}

/// Whether Writ can serve, as the health watch last found, and when.
pub struct Readiness {
    base: std::time::Instant,
    ready: std::sync::atomic::AtomicBool,
    /// Milliseconds after `base` of the last check.
    checked: std::sync::atomic::AtomicU64,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            base: std::time::Instant::now(),
            ready: std::sync::atomic::AtomicBool::new(false),
            checked: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Readiness {
    /// A check older than this is no answer: the watch itself stopped.
    const STALE: std::time::Duration = std::time::Duration::from_secs(3);

    pub fn set(&self, ready: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.ready.store(ready, Relaxed);
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.checked.store(elapsed, Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let checked = std::time::Duration::from_millis(self.checked.load(Relaxed));
        self.ready.load(Relaxed) && self.base.elapsed().saturating_sub(checked) < Self::STALE
    }
}

pub fn router(
    broker: Arc<Broker>,
    authenticator: Arc<Authenticator>,
    clock: Arc<dyn Clock>,
    ready: Arc<Readiness>,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/providers/{name}/jwks.json", get(jwks))
        .route("/providers/{name}/introspect", post(introspect))
        .route("/metrics", get(metrics))
        .route("/caep/jwks.json", get(caep_jwks))
        .route("/oauth2/token", post(token_exchange::token))
        .with_state(Shared { broker, authenticator, clock, ready })
}

/// 200 while Writ can serve (the store and audit log work, every worker
/// runs), else 503: take the replica out of the load balancer.
async fn readyz(State(shared): State<Shared>) -> Response {
    if shared.ready.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the store, the audit log or a worker is down\n")
            .into_response()
    }
}

fn error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, Json(json!({ "error": code, "error_description": description }))).into_response()
}

/// Prometheus scrape endpoint. Open like the JWKS: the series carry only
/// configured names and counts, never agents, tasks or secrets.
async fn metrics(State(shared): State<Shared>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        shared.broker.metrics().render(),
    )
        .into_response()
}

/// The keys CAEP receivers verify Writ's Security Event Tokens with.
async fn caep_jwks(State(shared): State<Shared>) -> Response {
    match shared.broker.caep().jwks() {
        Some(jwks) => {
            ([(axum::http::header::CACHE_CONTROL, "public, max-age=300")], Json(jwks.clone())).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "not_found", "CAEP is not configured"),
    }
}

async fn jwks(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    match shared.broker.providers().get(&name).and_then(|p| p.provider.token_authority()) {
        Some(authority) => {
            ([(axum::http::header::CACHE_CONTROL, "public, max-age=300")], Json(authority.jwks()))
                .into_response()
        }
        None => error(StatusCode::NOT_FOUND, "not_found", "no token provider by that name"),
    }
}

#[derive(Deserialize)]
struct IntrospectionForm {
    token: String,
    #[serde(default)]
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

async fn introspect(
    State(shared): State<Shared>,
    Path(name): Path<String>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<crate::tls::PeerCertificates>>>,
    headers: HeaderMap,
    form: Result<Form<IntrospectionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "send the token as form field `token`");
    };
    let token = match crate::api::auth::bearer(&headers) {
        Ok(token) => token,
        Err(e) => return error(StatusCode::UNAUTHORIZED, "invalid_client", &e.to_string()),
    };
    let certificate = peer.and_then(|axum::Extension(axum::extract::ConnectInfo(peer))| peer.leaf());
    match shared.authenticator.bound_principal(token, certificate.as_ref()).await {
        Ok(Caller::Service(service)) if service.roles.contains(&ServiceRole::ResourceServer) => {}
        Ok(_) => {
            return error(
                StatusCode::FORBIDDEN,
                "invalid_client",
                "introspection needs the resource_server role",
            );
        }
        Err(status) if status.code() == tonic::Code::Unavailable => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", status.message());
        }
        Err(status) => return error(StatusCode::UNAUTHORIZED, "invalid_client", status.message()),
    }
    let Some(authority) = shared.broker.providers().get(&name).and_then(|p| p.provider.token_authority())
    else {
        return error(StatusCode::NOT_FOUND, "not_found", "no token provider by that name");
    };
    let now = shared.clock.now();
    let inactive = || Json(json!({ "active": false })).into_response();
    let Ok(verified) = authority.verify(&form.token, now) else {
        return inactive();
    };
    let lease = match shared.broker.store().get_lease(verified.lease_id).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return inactive(),
        // The domain's message: the store's own text (hosts, errors) is for the log.
        Err(e) => {
            let message = crate::domain::Error::from(e).to_string();
            return error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", &message);
        }
    };
    if lease.state != LeaseState::Active || lease.expires_at <= now || lease.provider != name {
        return inactive();
    }
    let mut body = verified.claims;
    body.insert("active".into(), Value::Bool(true));
    body.insert("token_type".into(), Value::String("Bearer".into()));
    // The lease's expiry wins over the token's when a renewal moved it.
    body.insert("exp".into(), json!(lease.expires_at.timestamp()));
    Json(Value::Object(body)).into_response()
}
