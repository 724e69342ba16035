//! The oauth2 provider against a real authorization server nobody here
//! wrote: npm `oidc-provider` (`tests/peers/oidc/authz.mjs`), with a second
//! `oidc-provider` (`server.mjs`) issuing the agents' workload tokens.
//! One test binary; every test starts its own servers on free ports.

mod conformance;
mod minting;
mod outage;
mod peer;
mod revocation;
mod setup;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use writ_provider_api::conformance::{Grant, Probe};
use writ_provider_api::{
    Credential, MintRequest, Minted, Provider, ProviderDescription, ProviderError, RenewRequest, Renewed,
    RevocationHandle, RevokeRequest,
};
use writ_provider_oauth2::{OAuth2Config, OAuth2Provider};

use peer::{AuthServer, BILLING, ORDERS, WRIT_SECRET};

/// The roles every test provider has. `admin` offers a scope the server
/// does not allow Writ's client; `elsewhere` names a resource the server
/// does not know.
fn roles() -> String {
    format!(
        r#"
[roles.reader]
mode = "client_credentials"
scopes = ["orders:read", "orders:write"]
resource = ["{ORDERS}"]
max_ttl = "15m"
default_ttl = "5m"

[roles.billing]
mode = "client_credentials"
scopes = ["billing:read"]
resource = ["{BILLING}"]
max_ttl = "15m"

[roles.on-behalf]
mode = "token_exchange"
scopes = ["orders:read", "orders:write"]
resource = ["{ORDERS}"]
audience = ["{ORDERS}"]
max_ttl = "15m"

[roles.admin]
mode = "client_credentials"
scopes = ["orders:admin"]
resource = ["{ORDERS}"]
max_ttl = "15m"

[roles.elsewhere]
mode = "client_credentials"
scopes = ["orders:read"]
resource = ["https://unknown.example.com/"]
max_ttl = "15m"
"#
    )
}

/// A file holding Writ's client secret, as an operator would deploy it.
struct SecretFile(tempfile::NamedTempFile);

impl SecretFile {
    fn new(secret: &str) -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), format!("{secret}\n")).unwrap();
        Self(file)
    }

    fn path(&self) -> String {
        self.0.path().display().to_string()
    }
}

/// Parses provider settings the way Writ does (TOML, unknown fields refused).
fn config(text: &str) -> OAuth2Config {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Settings that discover `server` by its issuer, with `extra` lines.
fn discovered(server: &AuthServer, secret: &SecretFile, extra: &str) -> OAuth2Config {
    config(&format!(
        "issuer = \"{}\"\nclient_id = \"writ\"\nclient_secret_file = \"{}\"\ntimeout = \"5s\"\n{extra}\n{}",
        server.issuer,
        secret.path(),
        roles()
    ))
}

/// Settings that name `server`'s endpoints, with `extra` lines.
fn explicit(server: &AuthServer, secret: &SecretFile, extra: &str) -> OAuth2Config {
    let revocation = match &server.revocation_endpoint {
        Some(url) => format!("revocation_url = \"{url}\""),
        None => String::new(),
    };
    config(&format!(
        "token_url = \"{}\"\n{revocation}\nclient_id = \"writ\"\nclient_secret_file = \"{}\"\ntimeout = \"5s\"\n\
         {extra}\n{}",
        server.token_endpoint,
        secret.path(),
        roles()
    ))
}

/// The provider for `server`, found by discovery.
async fn provider(server: &AuthServer) -> Arc<OAuth2Provider> {
    let secret = SecretFile::new(WRIT_SECRET);
    Arc::new(OAuth2Provider::connect(discovered(server, &secret, "")).await.unwrap())
}

fn grant(role: &str, scopes: &[&str]) -> Grant {
    Grant { role: role.into(), scopes: scopes.iter().map(|scope| scope.to_string()).collect() }
}

fn request(role: &str, scopes: &[&str], ttl: Duration) -> MintRequest {
    writ_provider_api::conformance::request(&grant(role, scopes), Utc::now(), ttl)
}

fn revocation(request: &MintRequest, handle: RevocationHandle) -> RevokeRequest {
    RevokeRequest { lease_id: request.lease_id, role: request.role.clone(), handle }
}

fn token_of(minted: &Minted) -> &str {
    match &minted.credential {
        Credential::BearerToken { token, token_type } => {
            assert_eq!(token_type, "Bearer");
            token.expose_secret()
        }
        other => panic!("the oauth2 provider mints bearer tokens, got {other:?}"),
    }
}

/// A token works if the resource server's introspection says it is active.
struct Introspection<'a>(&'a AuthServer);

#[async_trait]
impl Probe for Introspection<'_> {
    async fn is_live(&self, credential: &Credential, _request: &MintRequest) -> bool {
        let Credential::BearerToken { token, .. } = credential else {
            panic!("the oauth2 provider mints bearer tokens, got {credential:?}")
        };
        let answer = self.0.introspect(token.expose_secret()).await;
        answer["active"] == true
    }
}

/// Gives every mint the agent's workload token, as Writ does for a grant
/// the agent asked for with it; the shared suite's requests carry none.
struct WithSubject {
    inner: Arc<dyn Provider>,
    subject_token: SecretString,
}

#[async_trait]
impl Provider for WithSubject {
    fn describe(&self) -> ProviderDescription {
        self.inner.describe()
    }

    fn intent(&self, lease_id: uuid::Uuid, role: &str) -> Result<RevocationHandle, ProviderError> {
        self.inner.intent(lease_id, role)
    }

    async fn mint(&self, request: &MintRequest) -> Result<Minted, ProviderError> {
        let mut request = request.clone();
        request.subject_token.get_or_insert_with(|| self.subject_token.clone());
        self.inner.mint(&request).await
    }

    async fn renew(&self, request: &RenewRequest) -> Result<Renewed, ProviderError> {
        self.inner.renew(request).await
    }

    async fn revoke(&self, request: &RevokeRequest) -> Result<(), ProviderError> {
        self.inner.revoke(request).await
    }

    async fn health(&self) -> Result<(), ProviderError> {
        self.inner.health().await
    }
}
