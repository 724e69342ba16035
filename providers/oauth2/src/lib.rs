//! OAuth2 access tokens as credentials, from an authorization server that
//! Writ is a client of.
//!
//! - **Endpoints** come from the issuer's metadata, fetched once when Writ
//!   starts (`discovery.rs`), or from `token_url`/`revocation_url`. With a
//!   revocation endpoint the credentials are revocable (RFC 7009),
//!   without one expiry-only.
//! - **Mint**, per role, in one of two modes: `client_credentials` (RFC
//!   6749 §4.4, through the `oauth2` crate) or `token_exchange` (RFC 8693,
//!   `exchange.rs`) of the agent's own workload token. Either asks for the
//!   grant's scopes, never more, and sends the role's RFC 8707 `resource`
//!   indicators (and, for an exchange, its `audience`s). The server fixes
//!   the token's lifetime; `expiry.rs` turns it into the lease's expiry.
//! - **Revoke** sends the token to the revocation endpoint with
//!   `token_type_hint=access_token` (`form.rs`, as `oauth2` allows only
//!   `https` there). The token is known only after minting,
//!   so the intent handle names none (`handle.rs`): a lease whose mint was
//!   never recorded cannot be revoked by it, but its token never left Writ
//!   and ends at its own expiry.
//! - **Renew** is refused: a token's lifetime cannot be extended, and a
//!   replacement could not be revoked, since a renewal keeps the lease's
//!   handle.
//!
//! Every request goes through one `reqwest` client (rustls, no redirects,
//! `timeout`), which sorts out "not now" answers first (`http.rs`); server
//! errors are mapped once (`error.rs`). The client secret is read from an
//! environment variable or a file, never from the configuration, and, like
//! every token, never appears in `Debug` output, errors or logs.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod config;
mod discovery;
mod error;
mod exchange;
mod expiry;
mod form;
mod handle;
mod http;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, Scope, TokenResponse, TokenUrl};
use secrecy::{ExposeSecret, SecretString};
use tracing::Instrument;
use uuid::Uuid;
use writ_provider_api::{
    Credential, CredentialShape, MintRequest, Minted, Provider, ProviderDescription, ProviderError,
    RenewRequest, Renewed, RevocationHandle, RevokeRequest, RoleDescription,
};

pub use config::{ClientAuth, Mode, OAuth2Config, RoleConfig};
pub use discovery::Endpoints;

use config::Server;
use handle::Handle;
use http::Http;

/// The `kind` this provider is configured with.
pub const KIND: &str = "oauth2";

/// The `oauth2` client, for client credentials at the token endpoint.
type OAuthClient = BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

pub struct OAuth2Provider {
    roles: BTreeMap<String, RoleConfig>,
    /// Writ's client for the requests `oauth2` does not make (token
    /// exchange, revocation); `client` holds its own copy of the secret.
    form: form::Client,
    client: OAuthClient,
    http: Http,
    endpoints: Endpoints,
}

impl std::fmt::Debug for OAuth2Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Provider")
            .field("client_id", &self.form.id)
            .field("client_secret", &"<redacted>")
            .field("client_auth", &self.form.auth)
            .field("endpoints", &self.endpoints)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// A token the server issued, before it becomes a credential.
pub(crate) struct Issued {
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_in: Option<Duration>,
    /// The scopes granted, if the server said (RFC 6749 §5.1: it may leave
    /// them out when they are the ones asked for).
    pub scopes: Option<Vec<String>>,
}

impl OAuth2Provider {
    /// Builds the provider: checks the configuration, reads the client
    /// secret and, with `issuer`, fetches the server's metadata. Fails,
    /// and so does Writ's start, if any of that fails: with discovery the
    /// authorization server must be reachable when Writ starts.
    pub async fn connect(config: OAuth2Config) -> Result<Self, String> {
        let server = config.validate()?;
        let client_secret = read_secret(&config)?;
        let http = Http::new(config.timeout)?;
        let endpoints = match server {
            Server::Issuer(issuer) => {
                let modes = config.roles.values().map(|role| role.mode);
                discovery::discover(&http, &issuer, config.client_auth, modes).await?
            }
            Server::Explicit { token, revocation } => Endpoints { token, revocation, metadata: None },
        };
        let client = BasicClient::new(ClientId::new(config.client_id.clone()))
            .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_string()))
            .set_auth_type(match config.client_auth {
                ClientAuth::ClientSecretBasic => AuthType::BasicAuth,
                ClientAuth::ClientSecretPost => AuthType::RequestBody,
            })
            .set_token_uri(TokenUrl::from_url(endpoints.token.clone()));
        tracing::info!(
            token_endpoint = %endpoints.token,
            revocation_endpoint = endpoints.revocation.as_ref().map(tracing::field::display),
            "oauth2 provider ready"
        );
        Ok(Self {
            roles: config.roles,
            form: form::Client { id: config.client_id, secret: client_secret, auth: config.client_auth },
            client,
            http,
            endpoints,
        })
    }

    /// The endpoints in use.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    fn shape(&self) -> CredentialShape {
        if self.endpoints.revocation.is_some() {
            CredentialShape::Revocable
        } else {
            CredentialShape::ExpiryOnly
        }
    }

    fn role(&self, name: &str) -> Result<&RoleConfig, ProviderError> {
        self.roles
            .get(name)
            .ok_or_else(|| ProviderError::Refused(format!("the oauth2 provider has no role {name:?}")))
    }

    /// The grant's scopes, each one the role offers; at least one, so that
    /// the server's defaults for Writ's client never apply.
    fn scopes<'a>(role: &RoleConfig, request: &'a MintRequest) -> Result<&'a [String], ProviderError> {
        if let Some(scope) = request.scopes.iter().find(|scope| !role.scopes.contains(scope)) {
            return Err(ProviderError::Refused(format!(
                "the role {:?} does not offer the scope {scope:?}",
                request.role
            )));
        }
        if request.scopes.is_empty() {
            return Err(ProviderError::Refused(format!(
                "the role {:?} needs at least one of its scopes: {}",
                request.role,
                role.scopes.join(", ")
            )));
        }
        Ok(&request.scopes)
    }

    async fn client_credentials(
        &self,
        role: &RoleConfig,
        scopes: &[String],
    ) -> Result<Issued, ProviderError> {
        let mut token_request =
            self.client.exchange_client_credentials().add_scopes(scopes.iter().cloned().map(Scope::new));
        for resource in &role.resource {
            token_request = token_request.add_extra_param("resource", resource.as_str());
        }
        let response = token_request
            .request_async(&self.http)
            .await
            .map_err(|e| error::request(e, "token request", &[self.form.secret.expose_secret()]))?;
        Ok(Issued {
            access_token: SecretString::from(response.access_token().secret().clone()),
            token_type: response.token_type().as_ref().to_string(),
            expires_in: response.expires_in(),
            scopes: response.scopes().map(|scopes| scopes.iter().map(|scope| scope.to_string()).collect()),
        })
    }

    async fn token_exchange(
        &self,
        role: &RoleConfig,
        scopes: &[String],
        request: &MintRequest,
    ) -> Result<Issued, ProviderError> {
        let subject_token = request.subject_token.as_ref().ok_or_else(|| {
            ProviderError::Refused(format!(
                "the role {:?} exchanges the agent's own workload token (RFC 8693), and this request \
                 carries none",
                request.role
            ))
        })?;
        let exchange = exchange::Exchange {
            subject_token,
            scopes,
            resources: &role.resource,
            audiences: &role.audience,
        };
        exchange::exchange(&self.http, &self.endpoints.token, &self.form, &exchange).await
    }

    /// What Writ can hand out: a bearer token with no scope beyond those asked for.
    fn check(issued: &Issued, asked: &[String]) -> Result<(), ProviderError> {
        if !issued.token_type.eq_ignore_ascii_case("bearer") {
            return Err(ProviderError::Failed(format!(
                "the authorization server issued a {:?} token; Writ hands out bearer tokens only",
                error::sanitize(&issued.token_type, &[issued.access_token.expose_secret()])
            )));
        }
        let granted = issued.scopes.iter().flatten();
        let beyond: Vec<&String> = granted.filter(|scope| !asked.contains(scope)).collect();
        if !beyond.is_empty() {
            let beyond: Vec<String> = beyond.iter().map(|scope| error::sanitize(scope, &[])).collect();
            return Err(ProviderError::Failed(format!(
                "the authorization server granted scopes beyond those asked for ({}); the token is not \
                 handed out",
                beyond.join(", ")
            )));
        }
        Ok(())
    }

    /// Takes back a token that will not be handed out, where the server
    /// allows; a failure is logged, the token then ends at its expiry.
    async fn discard(&self, access_token: &SecretString) {
        if let Err(error) = self.revoke_token(access_token).await {
            tracing::warn!(%error, "cannot revoke a token that was not handed out; it ends at its expiry");
        }
    }

    /// Revokes at the server; without a revocation endpoint (expiry-only)
    /// there is nothing to do and the token ends at its expiry.
    async fn revoke_token(&self, access_token: &SecretString) -> Result<Revoked, ProviderError> {
        match &self.endpoints.revocation {
            Some(url) => {
                form::revoke(&self.http, url, &self.form, access_token).await?;
                Ok(Revoked::AtTheServer)
            }
            None => Ok(Revoked::IntentOnly),
        }
    }
}

/// What revoking a token did.
enum Revoked {
    AtTheServer,
    /// Expiry-only: recorded, nothing sent.
    IntentOnly,
}

/// The client secret, from the environment variable or file the
/// configuration names. Errors name the source, never the value.
fn read_secret(config: &OAuth2Config) -> Result<SecretString, String> {
    let (raw, source) = match (&config.client_secret_env, &config.client_secret_file) {
        (Some(name), _) => {
            let value = std::env::var(name).map_err(|e| match e {
                std::env::VarError::NotPresent => format!("client_secret_env: {name} is not set"),
                std::env::VarError::NotUnicode(_) => format!("client_secret_env: {name} is not UTF-8"),
            })?;
            (SecretString::from(value), format!("client_secret_env: {name}"))
        }
        (None, Some(path)) => {
            let value = std::fs::read_to_string(path)
                .map_err(|e| format!("client_secret_file {}: {e}", path.display()))?;
            (SecretString::from(value), format!("client_secret_file {}", path.display()))
        }
        (None, None) => return Err("client_secret_env or client_secret_file is required".into()),
    };
    let trimmed = raw.expose_secret().trim();
    if trimmed.is_empty() {
        return Err(format!("{source} is empty"));
    }
    Ok(SecretString::from(trimmed.to_string()))
}

#[async_trait]
impl Provider for OAuth2Provider {
    fn describe(&self) -> ProviderDescription {
        let roles = self
            .roles
            .iter()
            .map(|(name, role)| RoleDescription {
                name: name.clone(),
                max_ttl: role.max_ttl,
                default_ttl: role.default_ttl,
                min_ttl: role.min_ttl,
                scopes: role.scopes.clone(),
            })
            .collect();
        ProviderDescription { kind: KIND.into(), shape: self.shape(), roles }
    }

    fn intent(&self, lease_id: Uuid, role: &str) -> Result<RevocationHandle, ProviderError> {
        self.role(role)?;
        Ok(handle::intent(lease_id))
    }

    async fn mint(&self, request: &MintRequest) -> Result<Minted, ProviderError> {
        let span = tracing::info_span!("oauth2.mint", role = %request.role, lease = %request.lease_id);
        async {
            let role = self.role(&request.role)?;
            let scopes = Self::scopes(role, request)?;
            if request.expires_at <= request.issued_at {
                return Err(ProviderError::Refused(
                    "the requested expiry is not after the issue time".into(),
                ));
            }
            // The token's lifetime runs from when the server issued it, which
            // only the wall clock around the request can bound.
            let sent_at = Utc::now();
            let issued = match role.mode {
                Mode::ClientCredentials => self.client_credentials(role, scopes).await?,
                Mode::TokenExchange => self.token_exchange(role, scopes, request).await?,
            };
            let received_at = Utc::now();
            let checked = Self::check(&issued, scopes).and_then(|()| {
                expiry::lease_expiry(
                    self.shape(),
                    sent_at,
                    received_at,
                    request.expires_at,
                    issued.expires_in,
                )
            });
            let expires_at = match checked {
                Ok(expires_at) => expires_at,
                Err(error) => {
                    self.discard(&issued.access_token).await;
                    return Err(error);
                }
            };
            tracing::info!(
                mode = role.mode.grant_type(),
                %expires_at,
                expires_in = issued.expires_in.map(|lifetime| lifetime.as_secs()),
                "minted an access token"
            );
            Ok(Minted {
                handle: handle::token(request.lease_id, &issued.access_token),
                credential: Credential::BearerToken {
                    token: issued.access_token,
                    token_type: "Bearer".into(),
                },
                expires_at,
            })
        }
        .instrument(span)
        .await
    }

    async fn renew(&self, request: &RenewRequest) -> Result<Renewed, ProviderError> {
        self.role(&request.mint.role)?;
        Err(ProviderError::Refused(
            "an OAuth2 access token cannot be extended: the authorization server fixed its lifetime when \
             it issued it; ask for a new grant instead"
                .into(),
        ))
    }

    async fn revoke(&self, request: &RevokeRequest) -> Result<(), ProviderError> {
        let span = tracing::info_span!("oauth2.revoke", role = %request.role, lease = %request.lease_id);
        async {
            match handle::parse(&request.handle, request.lease_id)? {
                Handle::Intent => {
                    tracing::info!("no token was recorded for this lease; nothing to revoke");
                    Ok(())
                }
                Handle::Token(access_token) => {
                    match self.revoke_token(&access_token).await? {
                        Revoked::AtTheServer => tracing::info!("revoked an access token"),
                        Revoked::IntentOnly => tracing::info!(
                            "the authorization server cannot revoke tokens; this one ends at its expiry"
                        ),
                    }
                    Ok(())
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn health(&self) -> Result<(), ProviderError> {
        match &self.endpoints.metadata {
            // The metadata document: cheap, unauthenticated, and proof the
            // server is up.
            Some(url) => {
                let (status, _) = self
                    .http
                    .send(|client| client.get(url.clone()))
                    .await
                    .map_err(|e| e.into_provider_error("health check"))?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(ProviderError::Unavailable(format!(
                        "health check: the metadata at {url} answered HTTP {}",
                        status.as_u16()
                    )))
                }
            }
            // No metadata: an empty, unauthenticated token request. Any
            // answer but "not now" shows the endpoint is serving; nothing
            // is issued.
            None => {
                let token_url = self.endpoints.token.clone();
                self.http
                    .send(|client| client.post(token_url).form(&[("grant_type", "")]))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.into_provider_error("health check"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(token_type: &str, scopes: Option<&[&str]>) -> Issued {
        Issued {
            access_token: SecretString::from("tok-s3cret".to_string()),
            token_type: token_type.into(),
            expires_in: Some(Duration::from_secs(600)),
            scopes: scopes.map(|scopes| scopes.iter().map(|scope| scope.to_string()).collect()),
        }
    }

    #[test]
    fn only_bearer_tokens_within_the_asked_scopes_are_handed_out() {
        let asked = ["orders:read".to_string(), "orders:write".to_string()];
        OAuth2Provider::check(&issued("Bearer", None), &asked).unwrap();
        OAuth2Provider::check(&issued("bearer", Some(&["orders:read"])), &asked).unwrap();

        let broader =
            OAuth2Provider::check(&issued("Bearer", Some(&["orders:read", "orders:admin"])), &asked);
        let Err(ProviderError::Failed(message)) = broader else { panic!("{broader:?}") };
        assert!(message.contains("beyond those asked for (orders:admin)"), "{message}");

        let bound = OAuth2Provider::check(&issued("DPoP", None), &asked);
        let Err(ProviderError::Failed(message)) = bound else { panic!("{bound:?}") };
        assert!(message.contains("\"DPoP\"") && !message.contains("s3cret"), "{message}");
    }
}
