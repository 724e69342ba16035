//! The connection to Writ's `CredentialService`, and its calls.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretSlice};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::credential::Credential;
use crate::error::{self, Error};
use crate::grant::{Grant, duration_to_proto};
use crate::lease::{Backend, BoxFuture, Lease};
use crate::proto;
use crate::proto::credential_service_client::CredentialServiceClient;
use crate::schedule::DEFAULT_RENEW_AT;
use crate::token::Token;

/// Writ's address when `WRIT_ENDPOINT` is unset, as for the `writ` CLI.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7070";
/// How long one call may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of Writ's agent API. Cheap to clone: clones share the
/// connection.
#[derive(Clone)]
pub struct Client {
    service: CredentialServiceClient<Channel>,
    endpoint: String,
    token: Token,
    timeout: Duration,
    renew_at: f64,
}

/// How to reach Writ: see [`Client::builder`].
pub struct ClientBuilder {
    endpoint: String,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, SecretSlice<u8>)>,
    token: Token,
    timeout: Duration,
    renew_at: f64,
}

/// What an Issue or an approval collection answered.
#[derive(Debug)]
pub enum Issued {
    /// One credential per grant, in the order asked.
    Credentials(Vec<IssuedCredential>),
    /// Policy permits the grants only with step-up approval: nothing was
    /// issued; the request waits for approvers.
    ApprovalRequired(Box<proto::Approval>),
}

/// One issued credential with its lease.
#[derive(Clone, Debug)]
pub struct IssuedCredential {
    /// The lease, as Writ recorded it (no secret in it).
    pub lease: proto::Lease,
    /// The credential.
    pub credential: Credential,
    /// Adjustments Writ made, e.g. "ttl clamped to the role maximum of 900s".
    pub notices: Vec<String>,
}

/// What a renewal answered.
#[derive(Clone, Debug)]
pub struct Renewed {
    /// The lease with its new expiry.
    pub lease: proto::Lease,
    /// A replacement credential, when the provider issues a new one on
    /// renewal (signed tokens carry their own expiry); `None` when the
    /// existing credential was extended.
    pub credential: Option<Credential>,
    /// Adjustments Writ made.
    pub notices: Vec<String>,
}

impl Client {
    /// Settings for a client of Writ at `endpoint`: `https://host:port`
    /// speaks TLS (trusting the public web PKI unless
    /// [`ClientBuilder::ca_pem`] says otherwise), `http://host:port`
    /// plaintext (`writ dev` only).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            ca_pem: None,
            identity: None,
            token: Token::from_env(),
            timeout: DEFAULT_TIMEOUT,
            renew_at: DEFAULT_RENEW_AT,
        }
    }

    /// Settings from the variables the `writ` CLI reads: `WRIT_ENDPOINT`
    /// (default `http://127.0.0.1:7070`), `WRIT_TOKEN_FILE` or
    /// `WRIT_TOKEN`, `WRIT_CA`, `WRIT_CLIENT_CERT` and `WRIT_CLIENT_KEY`.
    pub fn from_env() -> Result<ClientBuilder, Error> {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        let endpoint = var("WRIT_ENDPOINT")
            .map(|value| value.to_string_lossy().into_owned())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let mut builder = Self::builder(endpoint);
        if let Some(ca) = var("WRIT_CA") {
            builder = builder.ca_pem(read(Path::new(&ca), "CA certificates")?);
        }
        match (var("WRIT_CLIENT_CERT"), var("WRIT_CLIENT_KEY")) {
            (Some(cert), Some(key)) => {
                builder = builder.identity_pem(
                    read(Path::new(&cert), "client certificate")?,
                    read(Path::new(&key), "client key")?,
                );
            }
            (None, None) => {}
            _ => return Err(Error::Config("WRIT_CLIENT_CERT and WRIT_CLIENT_KEY go together".into())),
        }
        Ok(builder)
    }

    /// Issues one credential per grant, all for one task, or none: policy
    /// sees the `tool` about to be called.
    pub async fn issue(&self, task_id: &str, tool: &str, grants: &[Grant]) -> Result<Issued, Error> {
        let request = proto::IssueRequest {
            task_id: task_id.into(),
            tool: tool.into(),
            grants: grants.iter().map(Grant::to_proto).collect(),
        };
        let request = self.request(request)?;
        let mut service = self.service.clone();
        let response = self.within(service.issue(request)).await?;
        issued(response.into_inner())
    }

    /// Issues the grants and starts renewing each lease (see [`Lease`]).
    /// A grant that needs approval is [`Error::ApprovalRequired`]. Call it
    /// inside a tokio runtime: each lease's renewer is a task of it.
    pub async fn leases(&self, task_id: &str, tool: &str, grants: &[Grant]) -> Result<Vec<Lease>, Error> {
        match self.issue(task_id, tool, grants).await? {
            Issued::Credentials(credentials) => Ok(self.start_leases(credentials, grants)),
            Issued::ApprovalRequired(approval) => Err(Error::ApprovalRequired(approval)),
        }
    }

    /// Starts renewing a credential issued by [`Client::issue`], asking for
    /// `ttl` (`None`: the role's default) at each renewal. Call it inside
    /// a tokio runtime.
    pub fn lease(&self, issued: IssuedCredential, ttl: Option<Duration>) -> Lease {
        Lease::start(std::sync::Arc::new(self.clone()), issued, ttl, self.renew_at)
    }

    /// Extends a lease by `ttl` from now (`None`: the role's default).
    pub async fn renew(&self, lease_id: &str, ttl: Option<Duration>) -> Result<Renewed, Error> {
        let request =
            self.request(proto::RenewRequest { lease_id: lease_id.into(), ttl: ttl.map(duration_to_proto) })?;
        let mut service = self.service.clone();
        let response = self.within(service.renew(request)).await?.into_inner();
        Ok(Renewed {
            lease: response.lease.ok_or_else(|| Error::Protocol("a renewal without its lease".into()))?,
            credential: response.credential.map(Credential::try_from).transpose()?,
            notices: response.notices,
        })
    }

    /// Gives a lease back: Writ revokes it at once. Releasing a lease that
    /// is revoked already succeeds.
    pub async fn release(&self, lease_id: &str) -> Result<proto::Lease, Error> {
        let request = self.request(proto::ReleaseRequest { lease_id: lease_id.into() })?;
        let mut service = self.service.clone();
        let response = self.within(service.release(request)).await?.into_inner();
        response.lease.ok_or_else(|| Error::Protocol("a release without its lease".into()))
    }

    /// Waits until the approval request is decided: the approved request,
    /// or [`Error::ApprovalEnded`]. Bound it with `tokio::time::timeout`.
    pub async fn wait_for_approval(&self, approval_id: &str) -> Result<proto::Approval, Error> {
        let request = self.request(proto::WatchApprovalRequest { approval_id: approval_id.into() })?;
        let mut service = self.service.clone();
        let mut stream = self.within(service.watch_approval(request)).await?.into_inner();
        while let Some(approval) = stream.message().await? {
            match approval.state() {
                proto::ApprovalState::Pending | proto::ApprovalState::Unspecified => continue,
                proto::ApprovalState::Approved => return Ok(approval),
                state => {
                    return Err(Error::ApprovalEnded {
                        approval_id: approval.approval_id,
                        state: state.as_str_name().trim_start_matches("APPROVAL_STATE_").to_lowercase(),
                        ended_by: approval.ended_by,
                        reason: approval.end_reason,
                    });
                }
            }
        }
        Err(Error::Protocol(format!(
            "the watch of approval request {approval_id} ended while it was pending"
        )))
    }

    /// Collects what an approved request grants (once).
    pub async fn collect(&self, approval_id: &str) -> Result<Issued, Error> {
        let request = self.request(proto::CollectApprovalRequest { approval_id: approval_id.into() })?;
        let mut service = self.service.clone();
        let response = self.within(service.collect_approval(request)).await?;
        issued(response.into_inner())
    }

    /// Collects an approved request and starts renewing each lease, asking
    /// for the lifetimes the request names.
    pub async fn collect_leases(&self, approval: &proto::Approval) -> Result<Vec<Lease>, Error> {
        match self.collect(&approval.approval_id).await? {
            Issued::Credentials(credentials) => {
                let grants: Vec<Grant> = approval.grants.iter().map(Grant::from_proto).collect();
                Ok(self.start_leases(credentials, &grants))
            }
            Issued::ApprovalRequired(approval) => Err(Error::ApprovalRequired(approval)),
        }
    }

    /// Writ answers in the order asked: each lease renews with its grant's
    /// lifetime.
    fn start_leases(&self, credentials: Vec<IssuedCredential>, grants: &[Grant]) -> Vec<Lease> {
        let same_order = credentials.len() == grants.len();
        credentials
            .into_iter()
            .enumerate()
            .map(|(index, issued)| {
                let ttl = if same_order { grants[index].ttl } else { None };
                self.lease(issued, ttl)
            })
            .collect()
    }

    /// `message` with the workload token, as every call carries it.
    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, Error> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = self.token.current()? {
            let value: MetadataValue<_> = format!("Bearer {}", token.expose_secret())
                .parse()
                .map_err(|_| Error::Token(format!("{:?} is not ASCII", self.token)))?;
            request.metadata_mut().insert("authorization", value);
        }
        request.set_timeout(self.timeout);
        Ok(request)
    }

    /// A call bounded by the client's timeout.
    async fn within<T>(&self, call: impl Future<Output = Result<T, tonic::Status>>) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(Error::from),
            Err(_) => Err(Error::Status {
                code: tonic::Code::DeadlineExceeded,
                message: format!("Writ at {} did not answer within {:?}", self.endpoint, self.timeout),
            }),
        }
    }
}

impl Backend for Client {
    fn renew<'a>(
        &'a self,
        lease_id: &'a str,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<Renewed, Error>> {
        Box::pin(Client::renew(self, lease_id, ttl))
    }

    fn release<'a>(&'a self, lease_id: &'a str) -> BoxFuture<'a, Result<proto::Lease, Error>> {
        Box::pin(Client::release(self, lease_id))
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .field("renew_at", &self.renew_at)
            .finish()
    }
}

impl ClientBuilder {
    /// Trusts these CA certificates (PEM) for Writ's certificate, instead
    /// of the public web PKI.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate chain and key (PEM) (mTLS).
    pub fn identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert.into(), SecretSlice::from(key.into())));
        self
    }

    /// Where the workload token comes from; by default [`Token::from_env`].
    pub fn token(mut self, token: Token) -> Self {
        self.token = token;
        self
    }

    /// How long one call may take (30 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Renew leases once this fraction of the time they have left has
    /// passed: between 0 and 1, [`DEFAULT_RENEW_AT`] (2/3) by default.
    pub fn renew_at(mut self, fraction: f64) -> Self {
        self.renew_at = fraction;
        self
    }

    /// Connects now: an unreachable Writ is an error here.
    pub async fn connect(self) -> Result<Client, Error> {
        let endpoint = self.endpoint()?;
        let channel = endpoint.connect().await.map_err(|error| {
            let mut detail = error::chain(&error);
            if self.endpoint.starts_with("http://") {
                detail.push_str(" (if Writ serves TLS, use an https:// endpoint)");
            }
            Error::Connect { endpoint: self.endpoint.clone(), detail }
        })?;
        self.with_channel(channel)
    }

    /// Connects at the first call, and again after the connection broke.
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let channel = self.endpoint()?.connect_lazy();
        self.with_channel(channel)
    }

    /// A client on a channel made elsewhere (the endpoint is only named in
    /// messages; the TLS settings of this builder are not used).
    pub fn with_channel(self, channel: Channel) -> Result<Client, Error> {
        if !(self.renew_at > 0.0 && self.renew_at < 1.0) {
            return Err(Error::Config(format!(
                "renew_at is a fraction of the time left between 0 and 1, e.g. 2/3, not {}",
                self.renew_at
            )));
        }
        Ok(Client {
            service: CredentialServiceClient::new(channel),
            endpoint: self.endpoint,
            token: self.token,
            timeout: self.timeout,
            renew_at: self.renew_at,
        })
    }

    fn endpoint(&self) -> Result<Endpoint, Error> {
        let endpoint = Channel::from_shared(self.endpoint.clone())
            .map_err(|_| Error::Config(format!("endpoint {:?} is not a URL", self.endpoint)))?
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("writ-client-rust/", env!("CARGO_PKG_VERSION")))
            .map_err(|_| Error::Config("the user agent is not a header value".into()))?;
        let tls_options = self.ca_pem.is_some() || self.identity.is_some();
        if !self.endpoint.starts_with("https://") {
            if tls_options {
                return Err(Error::Config(format!(
                    "CA certificates and a client certificate need an https:// endpoint, not {:?}",
                    self.endpoint
                )));
            }
            return Ok(endpoint);
        }
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_pem {
            Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
            None => tls.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key.expose_secret()));
        }
        endpoint.tls_config(tls).map_err(|error| Error::Config(format!("TLS: {}", error::chain(&error))))
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "…"))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .field("renew_at", &self.renew_at)
            .finish()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|error| Error::Config(format!("reading the {what} {}: {error}", path.display())))
}

/// An Issue's or a collection's answer, checked.
fn issued(response: proto::IssueResponse) -> Result<Issued, Error> {
    if let Some(approval) = response.approval_required {
        return Ok(Issued::ApprovalRequired(Box::new(approval)));
    }
    let credentials = response
        .credentials
        .into_iter()
        .map(|issued| {
            Ok(IssuedCredential {
                lease: issued
                    .lease
                    .ok_or_else(|| Error::Protocol("a credential without its lease".into()))?,
                credential: issued
                    .credential
                    .ok_or_else(|| Error::Protocol("a lease without its credential".into()))?
                    .try_into()?,
                notices: issued.notices,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    if credentials.is_empty() {
        return Err(Error::Protocol(
            "an Issue answered with neither credentials nor an approval request".into(),
        ));
    }
    Ok(Issued::Credentials(credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_need_an_https_endpoint() {
        let error =
            Client::builder("http://127.0.0.1:7070").ca_pem(b"pem".to_vec()).connect_lazy().unwrap_err();
        assert!(error.to_string().contains("need an https:// endpoint"), "{error}");
        let error = Client::builder("not a url").connect_lazy().unwrap_err();
        assert!(error.to_string().contains("is not a URL"), "{error}");
    }

    #[tokio::test]
    async fn renew_at_is_a_fraction() {
        for fraction in [0.0, 1.0, 1.5, f64::NAN] {
            let error =
                Client::builder("http://127.0.0.1:7070").renew_at(fraction).connect_lazy().unwrap_err();
            assert!(matches!(error, Error::Config(_)), "{fraction}: {error}");
        }
        let client =
            Client::builder("http://127.0.0.1:7070").token(Token::fixed("s3cret")).connect_lazy().unwrap();
        assert!(!format!("{client:?}").contains("s3cret"));
    }

    #[test]
    fn an_answer_without_credentials_or_approval_is_refused() {
        assert!(matches!(issued(proto::IssueResponse::default()), Err(Error::Protocol(_))));
        let approval = proto::Approval { approval_id: "a-1".into(), ..Default::default() };
        let response = proto::IssueResponse { approval_required: Some(approval), ..Default::default() };
        assert!(matches!(issued(response), Ok(Issued::ApprovalRequired(_))));
    }
}
