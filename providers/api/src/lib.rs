//! The contract between Writ and the systems it mints credentials at.
//!
//! A [`Provider`] turns an authorized grant into a short-lived credential
//! and takes it back again. Writ calls it in a fixed order (see
//! `docs/architecture.md`):
//!
//! 1. [`Provider::intent`] names the revocation handle *before* anything is
//!    minted. It is derived from the lease id alone, so a crash between
//!    minting and recording the lease can still be cleaned up.
//! 2. [`Provider::mint`] creates the credential, with an expiry set at the
//!    provider wherever it allows one, so that it dies even if Writ is gone.
//! 3. [`Provider::revoke`] takes it back. It is idempotent: revoking what was
//!    never minted, or was revoked already, succeeds.
//!
//! Errors are [`ProviderError`]s whose variant tells the caller how to react.
//! Secrets travel only inside [`Credential`] and [`RevocationHandle`], whose
//! `Debug` output is redacted. With the `conformance` feature, the
//! [`conformance`] module holds the test suite every provider must pass.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod credential;
mod error;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

pub use credential::{Credential, RevocationHandle};
pub use error::ProviderError;

/// Whether a credential can be taken back before it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialShape {
    /// Revocation makes the credential unusable at once.
    Revocable,
    /// The credential lives until its expiry; revocation only records intent
    /// (and may apply a coarse provider-wide control where one exists).
    ExpiryOnly,
}

/// What a provider offers, read once when Writ starts.
#[derive(Clone, Debug)]
pub struct ProviderDescription {
    /// The provider's kind, as named in configuration (`jwt`, `postgres`, …).
    pub kind: String,
    pub shape: CredentialShape,
    pub roles: Vec<RoleDescription>,
}

impl ProviderDescription {
    pub fn role(&self, name: &str) -> Option<&RoleDescription> {
        self.roles.iter().find(|role| role.name == name)
    }
}

/// One role a provider can mint for, with its limits.
#[derive(Clone, Debug)]
pub struct RoleDescription {
    pub name: String,
    /// The longest lifetime a single grant or renewal may have.
    pub max_ttl: Duration,
    /// The lifetime used when the agent asks for none.
    pub default_ttl: Duration,
    /// The shortest lifetime the provider can mint (STS sessions: 15 minutes).
    pub min_ttl: Duration,
    /// The scopes an agent may ask for; empty means the role takes no scopes.
    pub scopes: Vec<String>,
}

/// Everything a provider may know about one grant. It never sees any other
/// lease's data.
#[derive(Clone, Debug)]
pub struct MintRequest {
    pub lease_id: Uuid,
    pub agent: String,
    pub owner: String,
    pub task_id: String,
    pub role: String,
    pub scopes: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The workload token the agent presented with this request, for
    /// providers that exchange it (RFC 8693). It is a live credential: it
    /// prints as redacted, and a provider must never store or log it.
    pub subject_token: Option<SecretString>,
}

/// A freshly minted credential.
#[derive(Debug)]
pub struct Minted {
    pub credential: Credential,
    /// When the credential stops working at the provider; never later than
    /// the requested expiry.
    pub expires_at: DateTime<Utc>,
    /// What [`Provider::revoke`] needs later. Providers whose handle is fully
    /// determined by the lease id return [`Provider::intent`]'s value.
    pub handle: RevocationHandle,
}

/// A request to extend a live credential.
#[derive(Clone, Debug)]
pub struct RenewRequest {
    pub mint: MintRequest,
    pub handle: RevocationHandle,
}

/// The outcome of a renewal.
#[derive(Debug)]
pub struct Renewed {
    /// A replacement credential, for providers whose credentials carry their
    /// own expiry (signed tokens); `None` when the existing one was extended.
    pub credential: Option<Credential>,
    pub expires_at: DateTime<Utc>,
}

/// A request to take a credential back.
#[derive(Clone, Debug)]
pub struct RevokeRequest {
    pub lease_id: Uuid,
    pub role: String,
    pub handle: RevocationHandle,
}

/// A source of credentials. Object-safe: Writ holds providers as
/// `Arc<dyn Provider>` in a registry built from configuration.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider's kind, shape and roles.
    fn describe(&self) -> ProviderDescription;

    /// The revocation handle for a lease about to be minted, derived from
    /// the lease id and role alone.
    fn intent(&self, lease_id: Uuid, role: &str) -> Result<RevocationHandle, ProviderError>;

    /// Mints a credential for an authorized grant.
    async fn mint(&self, request: &MintRequest) -> Result<Minted, ProviderError>;

    /// Extends a live credential to `request.mint.expires_at`.
    async fn renew(&self, request: &RenewRequest) -> Result<Renewed, ProviderError>;

    /// Takes a credential back. Idempotent.
    async fn revoke(&self, request: &RevokeRequest) -> Result<(), ProviderError>;

    /// Whether the provider can serve requests now.
    async fn health(&self) -> Result<(), ProviderError>;

    /// Providers that issue self-contained tokens offer a way to verify them,
    /// so Writ can publish their keys and answer token introspection.
    fn token_authority(&self) -> Option<&dyn TokenAuthority> {
        None
    }
}

/// Verification of tokens a provider signed itself.
pub trait TokenAuthority: Send + Sync {
    /// The public keys, as a JWK Set document.
    fn jwks(&self) -> serde_json::Value;

    /// Checks a token's signature and lifetime at `now`. The error text is
    /// safe to log; it never contains the token.
    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<VerifiedToken, String>;
}

/// The claims of a token that passed [`TokenAuthority::verify`].
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedToken {
    pub lease_id: Uuid,
    pub claims: serde_json::Map<String, serde_json::Value>,
}
