//! Authentication and audience separation, as a tower layer in front of
//! every gRPC service.
//!
//! The request path names the service, and the service names its audience:
//! `CredentialService` is for agents, `TaskService` for callers with the
//! `workflow` role, `AdminService` for `operator`s. An agent's token never
//! works on a non-agent service, nor a service token on the agent one.
//! Health and reflection need no token. The verified caller travels to the
//! handler as a request extension.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use crate::clock::Clock;
use crate::config::ServiceRole;
use crate::domain::Broker;
use crate::identity::{AuthError, Verifier};
use crate::principals::{Agent, Principal, Service as ServicePrincipal};
use crate::tls::peer::ClientCertificate;

/// Who is calling, once authenticated.
#[derive(Clone, Debug)]
pub enum Caller {
    Agent(Arc<Agent>),
    Service(Arc<ServicePrincipal>),
}

impl Caller {
    pub fn agent(&self) -> Result<&Agent, Status> {
        match self {
            Self::Agent(agent) => Ok(agent),
            Self::Service(_) => Err(Status::permission_denied("this API is for agents")),
        }
    }

    pub fn service(&self) -> Result<&ServicePrincipal, Status> {
        match self {
            Self::Service(service) => Ok(service),
            Self::Agent(agent) => Err(Status::permission_denied(format!(
                "{:?} is an agent; an agent's token never decides approvals",
                agent.name
            ))),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Agent(agent) => &agent.name,
            Self::Service(service) => &service.name,
        }
    }
}

/// Reads the caller from a request, as put there by [`AuthLayer`].
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the request was not authenticated"))
}

/// The bearer token a request was authenticated with. [`AuthLayer`] has
/// verified it before any handler runs; handlers pass it on only to
/// providers that exchange it.
pub fn presented_token<T>(request: &tonic::Request<T>) -> Option<writ_provider_api::SecretString> {
    let token = bearer(request.metadata().as_ref()).ok()?;
    Some(writ_provider_api::SecretString::from(token.to_string()))
}

/// Which kind of caller a service is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Agents,
    Role(ServiceRole),
    /// A `writ.` service this version does not know: refused.
    Unknown,
}

impl Audience {
    /// The audience of a gRPC path, or `None` for open services.
    pub fn of(path: &str) -> Option<Self> {
        let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        match service {
            "writ.v1.CredentialService" => Some(Self::Agents),
            "writ.v1.TaskService" => Some(Self::Role(ServiceRole::Workflow)),
            "writ.v1.AdminService" => Some(Self::Role(ServiceRole::Operator)),
            "writ.v1.PolicyService" => Some(Self::Role(ServiceRole::PolicyAdmin)),
            "writ.v1.ApprovalService" => Some(Self::Role(ServiceRole::Approver)),
            "writ.v1.AuditService" => Some(Self::Role(ServiceRole::Auditor)),
            // Fail closed: a Writ service missing above is never open.
            name if name.starts_with("writ.") => Some(Self::Unknown),
            _ => None,
        }
    }
}

/// Verifies tokens and client certificates, and resolves principals.
pub struct Authenticator {
    verifier: Verifier,
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
    /// Agent tokens must be bound to the connection's client certificate.
    require_bound_agent_tokens: bool,
}

impl Authenticator {
    pub fn new(verifier: Verifier, broker: Arc<Broker>, clock: Arc<dyn Clock>) -> Self {
        Self { verifier, broker, clock, require_bound_agent_tokens: false }
    }

    /// Refuses agent tokens not bound to the caller's client certificate
    /// (RFC 8705).
    pub fn requiring_bound_agent_tokens(mut self, required: bool) -> Self {
        self.require_bound_agent_tokens = required;
        self
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        self.broker.metrics()
    }

    /// Authenticates a caller for `audience`: by its bearer token (bound
    /// to `certificate` if the token says so), or, with no token, a
    /// service by the verified client certificate of its connection.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        certificate: Option<&ClientCertificate>,
        audience: Audience,
    ) -> Result<Caller, Status> {
        if audience == Audience::Unknown {
            return Err(Status::unimplemented("no such Writ service"));
        }
        let caller = match (bearer(headers), certificate) {
            (Ok(token), _) => self.bound_principal(token, certificate).await?,
            (Err(AuthError::Missing), Some(certificate)) => {
                let directory = self.broker.registry().directory();
                let service = directory.resolve_certificate(certificate).ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "client certificate {} is not bound to any service; send a workload token, or \
                         name the certificate in a [[services]] entry",
                        crate::text::quoted(&certificate.describe())
                    ))
                })?;
                Caller::Service(service.clone())
            }
            (Err(error), _) => return Err(super::auth_status(&error)),
        };
        match (&caller, audience) {
            (Caller::Agent(_), Audience::Agents) => Ok(caller),
            (Caller::Agent(agent), Audience::Role(role)) => Err(Status::permission_denied(format!(
                "{:?} is an agent; this API needs the {} role",
                agent.name,
                role_name(role)
            ))),
            (Caller::Service(service), Audience::Agents) => Err(Status::permission_denied(format!(
                "{:?} is not an agent; this API is for agents",
                service.name
            ))),
            (Caller::Service(service), Audience::Role(role)) if service.roles.contains(&role) => Ok(caller),
            (Caller::Service(service), Audience::Role(role)) => Err(Status::permission_denied(format!(
                "{:?} lacks the {} role",
                service.name,
                role_name(role)
            ))),
            (_, Audience::Unknown) => Err(Status::unimplemented("no such Writ service")),
        }
    }

    /// Verifies a token and has the broker's registry resolve its
    /// principal (which records an unknown identity as a sighting).
    pub async fn principal(&self, token: &str) -> Result<Caller, Status> {
        self.bound_principal(token, None).await
    }

    /// [`Self::principal`], and RFC 8705: a token whose `cnf` claim names
    /// a certificate thumbprint (`x5t#S256`) is accepted only over a
    /// connection that presented that certificate.
    pub async fn bound_principal(
        &self,
        token: &str,
        certificate: Option<&ClientCertificate>,
    ) -> Result<Caller, Status> {
        let now = self.clock.now();
        let identity = self.verifier.verify(token, now).await.map_err(|error| {
            tracing::debug!(%error, "workload token refused");
            super::auth_status(&error)
        })?;
        let bound_to = certificate_binding(&identity.claims)?;
        if let Some(thumbprint) = bound_to {
            match certificate {
                Some(certificate) if certificate.thumbprint == thumbprint => {}
                Some(_) => {
                    return Err(Status::unauthenticated(
                        "the token is bound to another client certificate than this connection's (cnf x5t#S256)",
                    ));
                }
                None => {
                    return Err(Status::unauthenticated(
                        "the token is bound to a client certificate (cnf x5t#S256), and this connection \
                         presented none: connect with that certificate over mTLS",
                    ));
                }
            }
        }
        match self.broker.registry().resolve(&identity, now).await.map_err(super::status)? {
            Principal::Agent(_) if self.require_bound_agent_tokens && bound_to.is_none() => {
                Err(Status::unauthenticated(
                    "agent tokens must be bound to the client certificate they are sent with \
                     (RFC 8705 cnf x5t#S256); this one is not",
                ))
            }
            Principal::Agent(agent) => Ok(Caller::Agent(agent)),
            Principal::Service(service) => Ok(Caller::Service(service)),
        }
    }
}

fn role_name(role: ServiceRole) -> &'static str {
    match role {
        ServiceRole::Workflow => "workflow",
        ServiceRole::Operator => "operator",
        ServiceRole::ResourceServer => "resource_server",
        ServiceRole::PolicyAdmin => "policy_admin",
        ServiceRole::Approver => "approver",
        ServiceRole::Auditor => "auditor",
    }
}

/// One line per call that failed, at `INFO` (its span names the method,
/// task, agent and trace); calls that succeeded at `DEBUG`. A handler's
/// error travels in the response headers (a trailers-only response).
fn log_outcome(headers: &http::HeaderMap) -> tonic::Code {
    let code = headers.get("grpc-status").and_then(|value| value.to_str().ok()).unwrap_or("0");
    if code == "0" {
        tracing::debug!("call served");
        return tonic::Code::Ok;
    }
    let code = code.parse::<i32>().map(tonic::Code::from_i32).unwrap_or(tonic::Code::Unknown);
    // grpc-message is percent-encoded; what Writ puts there never holds a
    // secret (see the API's error rules).
    let message = headers.get("grpc-message").and_then(|value| value.to_str().ok()).unwrap_or("");
    let message = percent_encoding::percent_decode_str(message).decode_utf8_lossy();
    tracing::info!(code = ?code, "call failed: {message}");
    code
}

/// The certificate thumbprint a token is bound to (RFC 8705 §3.1), if any.
/// A `cnf` that is not an object, or an `x5t#S256` that is not a string,
/// is refused rather than ignored.
fn certificate_binding(claims: &serde_json::Map<String, serde_json::Value>) -> Result<Option<&str>, Status> {
    let Some(cnf) = claims.get("cnf") else { return Ok(None) };
    let malformed = || Status::unauthenticated("the token's cnf claim is malformed (RFC 7800)");
    let cnf = cnf.as_object().ok_or_else(malformed)?;
    match cnf.get("x5t#S256") {
        None => Ok(None),
        Some(serde_json::Value::String(thumbprint)) if !thumbprint.is_empty() => Ok(Some(thumbprint)),
        Some(_) => Err(malformed()),
    }
}

/// The verified client certificate of the connection a request came on.
pub fn client_certificate(extensions: &http::Extensions) -> Option<ClientCertificate> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let certs = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?.peer_certs()?;
    let leaf = certs.first()?;
    match ClientCertificate::read(leaf) {
        Ok(certificate) => Some(certificate),
        Err(error) => {
            // The handshake verified it, so this is not expected.
            tracing::warn!(%error, "a verified client certificate does not parse; ignored");
            None
        }
    }
}

/// The token of an `authorization: Bearer …` header.
pub fn bearer(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value =
        value.to_str().map_err(|_| AuthError::Malformed("authorization header is not ASCII".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}

/// A tower layer running [`Authenticator::authenticate`] before every call.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>) -> Self {
        Self { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, authenticator: self.authenticator.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready service is the one polled; keep a fresh clone in its place.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let authenticator = self.authenticator.clone();
        let Some(audience) = Audience::of(request.uri().path()) else {
            // Health and reflection: no token, no span.
            return Box::pin(async move { inner.call(request).await });
        };
        use tracing::Instrument as _;
        let method = super::method_name(request.uri().path());
        let span = crate::telemetry::request_span(method, request.headers());
        Box::pin(
            async move {
                let certificate = client_certificate(request.extensions());
                let authenticated = authenticator
                    .authenticate(request.headers(), certificate.as_ref(), audience)
                    .instrument(tracing::debug_span!("identity"))
                    .await;
                match authenticated {
                    Ok(caller) => {
                        tracing::Span::current().record("agent", caller.name());
                        request.extensions_mut().insert(caller);
                        let response = inner.call(request).await?;
                        let code = log_outcome(response.headers());
                        authenticator.metrics().call(method, code);
                        Ok(response)
                    }
                    Err(status) => {
                        tracing::debug!(code = ?status.code(), "call refused: {}", status.message());
                        authenticator.metrics().call(method, status.code());
                        Ok(status.into_http())
                    }
                }
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writ_s_own_methods_name_spans_and_labels() {
        assert_eq!(
            crate::api::method_name("/writ.v1.CredentialService/Issue"),
            "writ.v1.CredentialService/Issue"
        );
        assert_eq!(
            crate::api::method_name("/writ.v1.TaskService/CloseTask"),
            "writ.v1.TaskService/CloseTask"
        );
        assert_eq!(crate::api::method_name("/writ.v1.CredentialService/MadeUp123"), "unknown");
        assert_eq!(crate::api::method_name("/evil"), "unknown");
    }

    #[test]
    fn audiences_follow_the_service_name() {
        assert_eq!(Audience::of("/writ.v1.CredentialService/Issue"), Some(Audience::Agents));
        assert_eq!(
            Audience::of("/writ.v1.TaskService/StartTask"),
            Some(Audience::Role(ServiceRole::Workflow))
        );
        assert_eq!(
            Audience::of("/writ.v1.AdminService/ListLeases"),
            Some(Audience::Role(ServiceRole::Operator))
        );
        assert_eq!(
            Audience::of("/writ.v1.PolicyService/ReloadPolicies"),
            Some(Audience::Role(ServiceRole::PolicyAdmin))
        );
        assert_eq!(Audience::of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(Audience::of("/writ.v2.AdminService/ListLeases"), Some(Audience::Unknown));
    }

    #[test]
    fn bearer_tokens_are_read_strictly() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer(&headers), Err(AuthError::Missing));
        headers.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), Err(AuthError::Missing));
        headers.insert(http::header::AUTHORIZATION, "Bearer a.b.c".parse().unwrap());
        assert_eq!(bearer(&headers), Ok("a.b.c"));
    }
}
