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

/// Verifies tokens and resolves principals.
pub struct Authenticator {
    verifier: Verifier,
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
}

impl Authenticator {
    pub fn new(verifier: Verifier, broker: Arc<Broker>, clock: Arc<dyn Clock>) -> Self {
        Self { verifier, broker, clock }
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Authenticates a bearer token for `audience`.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        audience: Audience,
    ) -> Result<Caller, Status> {
        if audience == Audience::Unknown {
            return Err(Status::unimplemented("no such Writ service"));
        }
        let token = bearer(headers).map_err(|e| super::auth_status(&e))?;
        let caller = self.principal(token).await?;
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
        let now = self.clock.now();
        let identity = self.verifier.verify(token, now).await.map_err(|error| {
            tracing::debug!(%error, "workload token refused");
            super::auth_status(&error)
        })?;
        match self.broker.registry().resolve(&identity, now).await.map_err(super::status)? {
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
        Box::pin(async move {
            let Some(audience) = Audience::of(request.uri().path()) else {
                return inner.call(request).await;
            };
            match authenticator.authenticate(request.headers(), audience).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
