//! Temporary AWS credentials as Writ credentials: one STS `AssumeRole`
//! session per lease, expiry-only.
//!
//! - **Names.** The session is `writ-` and the lease id's 32 hex digits
//!   ([`names::session_name`]), so [`Provider::intent`] names it before
//!   anything exists. The revocation handle is a small JSON document naming
//!   Writ's role, the IAM role and the session; the minted one adds the
//!   session's issue time as AWS reported it ([`names::Handle`]).
//! - **Mint** calls `AssumeRole` with Writ's own credentials (`client.rs`):
//!   `DurationSeconds` is the lease's lifetime (`lifetime.rs`), the session
//!   policy holds exactly the role's statements and those of the granted
//!   scopes (`policy.rs`), the session is tagged `writ:agent`, `writ:task`
//!   and `writ:owner`, and `SourceIdentity` is the agent.
//! - **Renew** is refused: an STS session cannot be extended.
//! - **Revoke** cannot end one STS session. By default it only succeeds (the
//!   lease is marked, the session lives to its expiry). With
//!   `revoke_by_token_issue_time`, it denies every session of the IAM role
//!   issued up to the revoked one's (`revoke.rs`), which cuts its siblings
//!   too.
//!
//! Failures are mapped once (`error.rs`): the network, throttling and 5xx
//! are `Unavailable`; access denied and policies AWS will not take are
//! `Refused`, as are unknown roles and scopes; the rest is `Failed`.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod client;
mod config;
mod error;
mod lifetime;
pub mod names;
pub mod policy;
mod revoke;

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_sts::types::Tag;
use chrono::{DateTime, Utc};
use tracing::Instrument;
use uuid::Uuid;
use writ_provider_api::{
    Credential, CredentialShape, MintRequest, Minted, Provider, ProviderDescription, ProviderError,
    RenewRequest, Renewed, RevocationHandle, RevokeRequest, RoleDescription,
};

pub use client::OwnCredentials;
pub use config::{AwsStsConfig, MAX_SESSION, MIN_SESSION, RoleConfig};

use config::Role;
use names::Handle;

/// The `kind` this provider is configured with.
pub const KIND: &str = "aws-sts";

/// What Writ's identity and the role's trust policy must allow; said with
/// every `AccessDenied`.
const ASSUME_ADVICE: &str = "Writ's identity needs sts:AssumeRole, sts:TagSession and \
                             sts:SetSourceIdentity on the role, and the role's trust policy must allow them";

pub struct AwsStsProvider {
    config: AwsStsConfig,
    /// The configured roles, their statements parsed once at start-up.
    roles: BTreeMap<String, Role>,
    sts: aws_sdk_sts::Client,
    /// Only when some role sets `revoke_by_token_issue_time`.
    iam: Option<aws_sdk_iam::Client>,
    /// Writ's own access key id, for `Debug` (the secret is never kept here).
    access_key_id: String,
}

impl std::fmt::Debug for AwsStsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsStsProvider")
            .field("region", &self.config.region)
            .field("endpoint_url", &self.config.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field("roles", &self.roles.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AwsStsProvider {
    /// Builds the provider with Writ's credentials from the process
    /// environment. Makes no call to AWS, so Writ starts while AWS is out of
    /// reach. Fails if the configuration is invalid or a variable is unset.
    pub fn new(config: AwsStsConfig) -> Result<Self, String> {
        Self::with_env(config, |name| std::env::var(name).ok())
    }

    /// As [`Self::new`], reading the credential variables through `env`.
    pub fn with_env(config: AwsStsConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let roles = config.roles()?;
        let credentials = OwnCredentials::from_env(&config, env)?;
        let http = client::http_client();
        let sts = client::sts(&config, &credentials, http.clone());
        let iam = config.uses_iam().then(|| client::iam(&config, &credentials, http));
        Ok(Self { access_key_id: credentials.access_key_id().to_string(), config, roles, sts, iam })
    }

    fn role(&self, name: &str) -> Result<&Role, ProviderError> {
        self.roles
            .get(name)
            .ok_or_else(|| ProviderError::Refused(format!("the aws-sts provider has no role {name:?}")))
    }

    fn session_policy(role: &Role, request: &MintRequest) -> Result<Option<String>, ProviderError> {
        if let Some(scope) = request.scopes.iter().find(|scope| !role.scopes.contains_key(scope.as_str())) {
            return Err(ProviderError::Refused(format!(
                "the role {:?} does not offer the scope {scope:?}",
                request.role
            )));
        }
        Ok(role.session_policy(request.scopes.iter().map(String::as_str)))
    }

    fn tags(request: &MintRequest) -> Result<Vec<Tag>, ProviderError> {
        [
            (names::TAG_AGENT, &request.agent),
            (names::TAG_TASK, &request.task_id),
            (names::TAG_OWNER, &request.owner),
        ]
        .into_iter()
        .map(|(key, value)| {
            Tag::builder()
                .key(key)
                .value(names::tag_value(value))
                .build()
                .map_err(|e| ProviderError::Failed(format!("cannot build the session tag {key}: {e}")))
        })
        .collect()
    }
}

fn to_chrono(time: &aws_sdk_sts::primitives::DateTime) -> Result<DateTime<Utc>, ProviderError> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
        .ok_or_else(|| ProviderError::Failed(format!("AWS returned an expiration out of range: {time}")))
}

#[async_trait]
impl Provider for AwsStsProvider {
    fn describe(&self) -> ProviderDescription {
        let roles = self
            .roles
            .iter()
            .map(|(name, role)| RoleDescription {
                name: name.clone(),
                max_ttl: role.config.max_ttl,
                default_ttl: role.config.default_ttl,
                min_ttl: MIN_SESSION,
                scopes: role.scopes.keys().cloned().collect(),
            })
            .collect();
        ProviderDescription { kind: KIND.into(), shape: CredentialShape::ExpiryOnly, roles }
    }

    fn intent(&self, lease_id: Uuid, role: &str) -> Result<RevocationHandle, ProviderError> {
        let config = &self.role(role)?.config;
        Handle::new(role, &config.role_arn, lease_id).to_revocation_handle()
    }

    async fn mint(&self, request: &MintRequest) -> Result<Minted, ProviderError> {
        let session = names::session_name(request.lease_id);
        let span = tracing::info_span!("aws_sts.mint", role = %request.role, session = %session);
        async {
            let role = self.role(&request.role)?;
            let policy = Self::session_policy(role, request)?;
            if let Some(policy) = &policy
                && policy.chars().count() > policy::MAX_SESSION_POLICY_CHARS
            {
                return Err(ProviderError::Failed(format!(
                    "the session policy of role {:?} is over AWS's limit of {} characters",
                    request.role,
                    policy::MAX_SESSION_POLICY_CHARS
                )));
            }
            let duration =
                lifetime::duration_seconds(request.issued_at, request.expires_at, role.config.max_ttl)?;
            let output = self
                .sts
                .assume_role()
                .role_arn(&role.config.role_arn)
                .role_session_name(&session)
                .duration_seconds(duration)
                .set_policy(policy)
                .set_tags(Some(Self::tags(request)?))
                .set_transitive_tag_keys(
                    Some(role.config.transitive_tag_keys.clone()).filter(|keys| !keys.is_empty()),
                )
                .source_identity(names::source_identity(&request.agent))
                .send()
                .await
                .map_err(|e| {
                    let what =
                        format!("assuming IAM role {} for role {:?}", role.config.role_arn, request.role);
                    error::sdk(&e, &what, ASSUME_ADVICE)
                })?;
            let credentials = output
                .credentials()
                .ok_or_else(|| ProviderError::Failed("AWS answered AssumeRole without credentials".into()))?;
            let aws_expiration = to_chrono(credentials.expiration())?;
            let expires_at =
                lifetime::reported_expiry(request.expires_at, aws_expiration, self.config.expiry_tolerance)?;
            if let Some(utilization) = output.session_token_utilization()
                && utilization >= 90
            {
                tracing::warn!(
                    session_token_utilization = utilization,
                    "the session policy and tags make the session token near AWS's size limit"
                );
            }
            tracing::info!(%expires_at, %aws_expiration, duration_seconds = duration, "assumed the role");
            let handle = Handle {
                issued_at: Some(aws_expiration - chrono::Duration::seconds(duration.into())),
                ..Handle::new(&request.role, &role.config.role_arn, request.lease_id)
            };
            Ok(Minted {
                credential: Credential::AwsSession {
                    access_key_id: credentials.access_key_id().to_string(),
                    secret_access_key: credentials.secret_access_key().into(),
                    session_token: credentials.session_token().into(),
                },
                expires_at,
                handle: handle.to_revocation_handle()?,
            })
        }
        .instrument(span)
        .await
    }

    async fn renew(&self, request: &RenewRequest) -> Result<Renewed, ProviderError> {
        self.role(&request.mint.role)?;
        Err(ProviderError::Refused(
            "an STS session cannot be extended: release the lease and ask for a new one".into(),
        ))
    }

    async fn revoke(&self, request: &RevokeRequest) -> Result<(), ProviderError> {
        let handle = Handle::parse(&request.handle, request.lease_id)?;
        let span = tracing::info_span!("aws_sts.revoke", role = %handle.role, session = %handle.session);
        async {
            let Some(role) = self.roles.get(&handle.role) else {
                tracing::warn!("the role is no longer configured; the session lives until its expiry");
                return Ok(());
            };
            let (true, Some(iam)) = (role.config.revoke_by_token_issue_time, &self.iam) else {
                tracing::info!("an STS session cannot be revoked; it lives until its expiry");
                return Ok(());
            };
            let role_name = names::role_name(&handle.role_arn).ok_or_else(|| {
                ProviderError::Failed(format!("the revocation handle names no IAM role: {}", handle.role_arn))
            })?;
            // A pending lease's handle has no issue time; its session, if
            // there is one, was issued before now. The edge reads the clock.
            let cutoff = revoke::cutoff(handle.issued_at.unwrap_or_else(Utc::now));
            revoke::deny_sessions_before(iam, role_name, cutoff).await.map(drop)
        }
        .instrument(span)
        .await
    }

    async fn health(&self) -> Result<(), ProviderError> {
        self.sts.get_caller_identity().send().await.map(drop).map_err(|e| {
            match error::sdk(&e, "checking Writ's own AWS identity", "") {
                unavailable @ ProviderError::Unavailable(_) => unavailable,
                other => ProviderError::Unavailable(other.to_string()),
            }
        })
    }
}
