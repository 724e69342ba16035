//! Writ's own token provider: short-lived JWT access tokens (RFC 9068
//! shape) signed with `ring`, ES256 or EdDSA.
//!
//! A token's `jti` is its lease id, so revocation is observable: Writ's
//! introspection endpoint reports a token inactive once its lease is
//! revoked. The provider also keeps a denylist of revoked token ids until
//! they expire, so [`TokenAuthority::verify`] refuses them even without the
//! lease store. Resource servers that verify offline with the published JWKS
//! accept a token until its `exp`: keep role TTLs short.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod config;
mod key;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};
use uuid::Uuid;
use writ_provider_api::{
    Credential, CredentialShape, MintRequest, Minted, Provider, ProviderDescription, ProviderError,
    RenewRequest, Renewed, RevocationHandle, RevokeRequest, RoleDescription, TokenAuthority, VerifiedToken,
};

pub use config::{JwtConfig, RoleConfig};
pub use key::{SigningAlgorithm, SigningKey};

/// The `kind` this provider is configured with.
pub const KIND: &str = "jwt";

pub struct JwtProvider {
    config: JwtConfig,
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    jwks: Value,
    /// Token ids revoked while this process runs, with their expiry, so
    /// `verify` refuses them. Pruned as they expire; the lease store stays
    /// the source of truth across restarts.
    revoked: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl std::fmt::Debug for JwtProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtProvider").field("issuer", &self.config.issuer).field("kid", &self.kid).finish()
    }
}

impl JwtProvider {
    /// Builds the provider. Fails if the configuration is inconsistent or the
    /// key does not match its algorithm.
    pub fn new(config: JwtConfig, key: &SigningKey) -> Result<Self, String> {
        config.validate()?;
        writ_jose::install()?;
        let algorithm = key.algorithm().jose();
        let encoding = key.encoding_key();
        let (published, kid) = key.public_jwk()?;
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(published.clone()).map_err(|e| format!("bad public key: {e}"))?;
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad public key: {e}"))?;
        Ok(Self {
            config,
            algorithm,
            encoding,
            decoding,
            kid,
            jwks: json!({ "keys": [published] }),
            revoked: Mutex::new(HashMap::new()),
        })
    }

    fn role(&self, name: &str) -> Result<&RoleConfig, ProviderError> {
        self.config
            .roles
            .get(name)
            .ok_or_else(|| ProviderError::Refused(format!("the jwt provider has no role {name:?}")))
    }

    fn sign(&self, request: &MintRequest) -> Result<Credential, ProviderError> {
        let role = self.role(&request.role)?;
        if let Some(scope) = request.scopes.iter().find(|scope| !role.scopes.contains(*scope)) {
            return Err(ProviderError::Refused(format!(
                "the role {:?} does not offer the scope {scope:?}",
                request.role
            )));
        }
        let mut header = Header::new(self.algorithm);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        let claims = json!({
            "iss": self.config.issuer,
            "sub": request.agent,
            "aud": role.audience,
            "client_id": request.agent,
            "iat": request.issued_at.timestamp(),
            "nbf": request.issued_at.timestamp(),
            "exp": request.expires_at.timestamp(),
            "jti": request.lease_id.to_string(),
            "scope": request.scopes.join(" "),
            "writ_task": request.task_id,
            "writ_role": request.role,
        });
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| ProviderError::Failed(format!("signing failed: {e}")))?;
        Ok(Credential::BearerToken { token: token.into(), token_type: "Bearer".into() })
    }

    fn is_revoked(&self, lease_id: Uuid, now: DateTime<Utc>) -> bool {
        let mut revoked = self.revoked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        revoked.retain(|_, expires_at| *expires_at > now);
        revoked.contains_key(&lease_id)
    }
}

#[async_trait]
impl Provider for JwtProvider {
    fn describe(&self) -> ProviderDescription {
        let roles = self
            .config
            .roles
            .iter()
            .map(|(name, role)| RoleDescription {
                name: name.clone(),
                max_ttl: role.max_ttl,
                default_ttl: role.default_ttl,
                min_ttl: std::time::Duration::from_secs(1),
                scopes: role.scopes.clone(),
            })
            .collect();
        ProviderDescription { kind: KIND.into(), shape: CredentialShape::Revocable, roles }
    }

    fn intent(&self, lease_id: Uuid, role: &str) -> Result<RevocationHandle, ProviderError> {
        self.role(role)?;
        Ok(RevocationHandle::new(lease_id.to_string()))
    }

    async fn mint(&self, request: &MintRequest) -> Result<Minted, ProviderError> {
        let credential = self.sign(request)?;
        Ok(Minted {
            credential,
            expires_at: request.expires_at,
            handle: RevocationHandle::new(request.lease_id.to_string()),
        })
    }

    async fn renew(&self, request: &RenewRequest) -> Result<Renewed, ProviderError> {
        if self.is_revoked(request.mint.lease_id, request.mint.issued_at) {
            return Err(ProviderError::Refused("the token was revoked".into()));
        }
        let credential = self.sign(&request.mint)?;
        Ok(Renewed { credential: Some(credential), expires_at: request.mint.expires_at })
    }

    async fn revoke(&self, request: &RevokeRequest) -> Result<(), ProviderError> {
        let lease_id = Uuid::parse_str(request.handle.expose())
            .map_err(|_| ProviderError::Failed("the revocation handle is not a token id".into()))?;
        let max_ttl = self.config.roles.values().map(|role| role.max_ttl).max().unwrap_or_default();
        let keep_until = Utc::now() + chrono::Duration::from_std(max_ttl).unwrap_or_default();
        let mut revoked = self.revoked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        revoked.insert(lease_id, keep_until);
        Ok(())
    }

    async fn health(&self) -> Result<(), ProviderError> {
        Ok(())
    }

    fn token_authority(&self) -> Option<&dyn TokenAuthority> {
        Some(self)
    }
}

impl TokenAuthority for JwtProvider {
    fn jwks(&self) -> Value {
        self.jwks.clone()
    }

    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<VerifiedToken, String> {
        let mut validation = Validation::new(self.algorithm);
        validation.set_issuer(&[&self.config.issuer]);
        validation.validate_aud = false;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "iss", "jti"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &validation)
            .map_err(|e| format!("token rejected: {e}"))?;
        let claims = data.claims;
        let expires_at = claims.get("exp").and_then(Value::as_i64).unwrap_or_default();
        if now.timestamp() >= expires_at {
            return Err("token expired".into());
        }
        let lease_id = claims
            .get("jti")
            .and_then(Value::as_str)
            .and_then(|jti| Uuid::parse_str(jti).ok())
            .ok_or("token has no valid jti")?;
        if self.is_revoked(lease_id, now) {
            return Err("token revoked".into());
        }
        Ok(VerifiedToken { lease_id, claims })
    }
}

/// The role table, keyed by role name, for callers that list roles.
pub type Roles = BTreeMap<String, RoleConfig>;

#[cfg(test)]
mod tests;
