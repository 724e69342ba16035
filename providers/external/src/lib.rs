//! A provider that lives in another process and speaks the
//! `writ.provider.v1.ProviderPlugin` gRPC protocol
//! (`proto/writ/provider/v1/provider.proto`), so teams can add providers in
//! any language without rebuilding Writ.
//!
//! [`ExternalProvider::connect`] dials the plugin, calls `Describe` once and
//! caches the answer: the trait's [`Provider::describe`] and
//! [`Provider::intent`] are synchronous and must not touch the network.
//! `intent` expands the plugin's `intent_template` (rules in the proto and
//! `docs/providers/external.md`); `mint`, `renew`, `revoke` and `health` are
//! one call each, under the configured timeout. Every failure goes through one mapping from
//! gRPC status codes to [`ProviderError`] (`convert::status_to_error`).
//!
//! The optional bearer token is read once from `token_file`, sent as
//! `authorization` metadata marked sensitive, and never printed.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod config;
mod convert;
mod template;

/// The generated protocol types and client, for tools and tests that talk
/// to a plugin directly.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("writ.provider.v1");
}

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};
use uuid::Uuid;
use writ_provider_api::{
    Credential, MintRequest, Minted, Provider, ProviderDescription, ProviderError, RenewRequest, Renewed,
    RevocationHandle, RevokeRequest,
};

pub use config::ExternalConfig;
use config::Target;
use convert::{contract, status_to_error};
use proto::provider_plugin_client::ProviderPluginClient;
use template::IntentTemplate;

/// The `kind` this provider is configured with.
pub const KIND: &str = "external";

pub struct ExternalProvider {
    endpoint: String,
    /// The name the plugin gave itself, for logs.
    plugin_name: String,
    /// Fetched once at connect; the trait's `describe` is synchronous.
    description: ProviderDescription,
    template: IntentTemplate,
    /// Cloned per call: tonic clients take `&mut self`, and a clone shares
    /// the one underlying connection.
    client: ProviderPluginClient<Channel>,
    timeout: Duration,
    /// `Bearer <token>` from `token_file`, marked sensitive; never printed.
    authorization: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for ExternalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalProvider")
            .field("endpoint", &self.endpoint)
            .field("plugin_name", &self.plugin_name)
            .field("timeout", &self.timeout)
            .field("authorization", &self.authorization.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ExternalProvider {
    /// Dials the plugin, fetches and checks its description, and checks its
    /// `Intent` against the template when the plugin implements it. Fails if
    /// the plugin is unreachable or describes itself inconsistently.
    pub async fn connect(config: ExternalConfig) -> Result<Self, String> {
        config.validate()?;
        let authorization = config.token_file.as_deref().map(read_token).transpose()?;
        let channel = dial(&config).await?;
        // Describe goes through `call`, which needs the client and token, so
        // the description starts empty and `adopt` fills it in.
        let mut provider = Self {
            endpoint: config.endpoint.clone(),
            plugin_name: String::new(),
            description: ProviderDescription {
                kind: KIND.into(),
                shape: writ_provider_api::CredentialShape::Revocable,
                roles: Vec::new(),
            },
            template: IntentTemplate::parse("")?,
            client: ProviderPluginClient::new(channel),
            timeout: config.timeout,
            authorization,
        };
        let described = provider
            .call(
                |mut client, request| async move { client.describe(request).await },
                proto::DescribeRequest {},
            )
            .await
            .map_err(|e| format!("plugin at {}: describe: {e}", config.endpoint))?;
        provider.adopt(described).map_err(|e| format!("plugin at {}: {e}", config.endpoint))?;
        provider.check_intent().await.map_err(|e| format!("plugin at {}: {e}", config.endpoint))?;
        tracing::info!(
            endpoint = %provider.endpoint,
            plugin = %provider.plugin_name,
            roles = provider.description.roles.len(),
            "external provider connected"
        );
        Ok(provider)
    }

    /// The name the plugin gave itself in `Describe`.
    pub fn plugin_name(&self) -> &str {
        &self.plugin_name
    }

    /// Asks the plugin whether a credential works at its peer now. The
    /// `Introspect` RPC is optional and meant for tests and diagnostics.
    pub async fn introspect(&self, credential: &Credential) -> Result<bool, ProviderError> {
        let message = proto::IntrospectRequest { credential: Some(convert::credential_to_proto(credential)) };
        let response =
            self.call(|mut client, request| async move { client.introspect(request).await }, message).await?;
        Ok(response.active)
    }

    fn adopt(&mut self, described: proto::DescribeResponse) -> Result<(), String> {
        let shape = convert::shape(described.shape)?;
        if described.roles.is_empty() {
            return Err("describes no roles".into());
        }
        let roles = described.roles.into_iter().map(convert::role).collect::<Result<Vec<_>, _>>()?;
        if let Some(duplicate) = roles.iter().enumerate().find_map(|(i, role)| {
            roles[..i].iter().any(|other| other.name == role.name).then_some(&role.name)
        }) {
            return Err(format!("describes role {duplicate:?} twice"));
        }
        self.template = IntentTemplate::parse(&described.intent_template)?;
        self.plugin_name = described.name;
        self.description = ProviderDescription { kind: KIND.into(), shape, roles };
        Ok(())
    }

    /// A plugin whose `Intent` disagrees with its template would revoke the
    /// wrong thing after a crash; refuse to start with it.
    async fn check_intent(&self) -> Result<(), String> {
        let Some(role) = self.description.roles.first() else { return Ok(()) };
        let lease_id = Uuid::now_v7();
        let message =
            proto::IntentRequest { lease_id: lease_id.hyphenated().to_string(), role: role.name.clone() };
        let mut client = self.client.clone();
        let outcome = tokio::time::timeout(self.timeout, client.intent(self.request(message))).await;
        match outcome {
            Ok(Ok(response)) => {
                if response.into_inner().revocation_handle == self.template.expand(lease_id, &role.name) {
                    Ok(())
                } else {
                    Err("Intent disagrees with intent_template".into())
                }
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => Ok(()),
            Ok(Err(status)) => Err(format!("intent: {}", status_to_error(&status))),
            Err(_) => Err(format!("intent: no answer within {:?}", self.timeout)),
        }
    }

    /// Wraps a message with the token and the deadline the plugin should
    /// honour.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(authorization) = &self.authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        request
    }

    /// Makes one call under the timeout and maps its failure. The timeout is
    /// ours rather than the channel's so that it maps to `Unavailable`.
    async fn call<T, R, F, Fut>(&self, rpc: F, message: T) -> Result<R, ProviderError>
    where
        F: FnOnce(ProviderPluginClient<Channel>, tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let call = rpc(self.client.clone(), self.request(message));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status_to_error(&status)),
            Err(_) => {
                Err(ProviderError::Unavailable(format!("plugin did not answer within {:?}", self.timeout)))
            }
        }
    }

    /// Takes back a credential the plugin minted but Writ will not hand out,
    /// because the answer broke the protocol. Best effort: the error that
    /// matters is the one already being returned.
    async fn discard(&self, request: &MintRequest, handle: &RevocationHandle) {
        let revoke =
            RevokeRequest { lease_id: request.lease_id, role: request.role.clone(), handle: handle.clone() };
        if let Err(error) = self.revoke(&revoke).await {
            tracing::warn!(lease_id = %request.lease_id, %error, "cannot revoke a rejected credential");
        }
    }
}

#[async_trait]
impl Provider for ExternalProvider {
    fn describe(&self) -> ProviderDescription {
        self.description.clone()
    }

    fn intent(&self, lease_id: Uuid, role: &str) -> Result<RevocationHandle, ProviderError> {
        if self.description.role(role).is_none() {
            return Err(ProviderError::Refused(format!("unknown role {role:?}")));
        }
        Ok(RevocationHandle::new(self.template.expand(lease_id, role)))
    }

    async fn mint(&self, request: &MintRequest) -> Result<Minted, ProviderError> {
        let message = convert::mint_request(request);
        let response =
            self.call(|mut client, request| async move { client.mint(request).await }, message).await?;
        let handle = if response.revocation_handle.is_empty() {
            RevocationHandle::new(self.template.expand(request.lease_id, &request.role))
        } else {
            RevocationHandle::new(response.revocation_handle)
        };
        let checked = convert::credential(response.credential).and_then(|credential| {
            let expires_at = convert::from_timestamp(response.expires_at, "expires_at")?;
            if expires_at > request.expires_at {
                return Err(contract("mint expires_at is later than requested"));
            }
            Ok((credential, expires_at))
        });
        match checked {
            Ok((credential, expires_at)) => Ok(Minted { credential, expires_at, handle }),
            Err(error) => {
                self.discard(request, &handle).await;
                Err(error)
            }
        }
    }

    async fn renew(&self, request: &RenewRequest) -> Result<Renewed, ProviderError> {
        let message = proto::RenewRequest {
            mint: Some(convert::mint_request(&request.mint)),
            revocation_handle: request.handle.expose().to_string(),
        };
        let response =
            self.call(|mut client, request| async move { client.renew(request).await }, message).await?;
        let expires_at = convert::from_timestamp(response.expires_at, "expires_at")?;
        if expires_at > request.mint.expires_at {
            return Err(contract("renew expires_at is later than requested"));
        }
        let credential =
            response.credential.map(|credential| convert::credential(Some(credential))).transpose()?;
        Ok(Renewed { credential, expires_at })
    }

    async fn revoke(&self, request: &RevokeRequest) -> Result<(), ProviderError> {
        let message = proto::RevokeRequest {
            lease_id: request.lease_id.hyphenated().to_string(),
            role: request.role.clone(),
            revocation_handle: request.handle.expose().to_string(),
        };
        self.call(|mut client, request| async move { client.revoke(request).await }, message).await?;
        Ok(())
    }

    async fn health(&self) -> Result<(), ProviderError> {
        self.call(|mut client, request| async move { client.health(request).await }, proto::HealthRequest {})
            .await?;
        Ok(())
    }
}

/// Reads the token and turns it into a sensitive header value. Errors name
/// the file, never its contents.
fn read_token(path: &std::path::Path) -> Result<AsciiMetadataValue, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token_file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("token_file {} is empty", path.display()));
    }
    let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| format!("token_file {}: the token must be printable ASCII", path.display()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Opens the channel: TCP for `http://`, a Unix socket for `unix:`.
async fn dial(config: &ExternalConfig) -> Result<Channel, String> {
    let unreachable = |e: tonic::transport::Error| format!("cannot reach plugin at {}: {e}", config.endpoint);
    match config.target()? {
        Target::Http(url) => Endpoint::from_shared(url)
            .map_err(|e| format!("endpoint {:?}: {e}", config.endpoint))?
            .connect_timeout(config.timeout)
            .connect()
            .await
            .map_err(unreachable),
        Target::Unix(path) => {
            // The URI is required by the API but unused: the connector
            // ignores it and dials the socket.
            Endpoint::from_static("http://plugin.invalid")
                .connect_timeout(config.timeout)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
                }))
                .await
                .map_err(unreachable)
        }
    }
}
