//! A development OIDC issuer: discovery, a JWKS and an ES256 signing key,
//! so `writ dev` (and tests, and benchmarks) can mint workload tokens for
//! made-up agents and services without a real identity provider. It is an
//! issuer like any other to Writ: tokens go through the same verification.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

pub struct DevIssuer {
    issuer: String,
    key: EncodingKey,
    kid: String,
    jwks: Value,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer").field("issuer", &self.issuer).field("kid", &self.kid).finish()
    }
}

impl DevIssuer {
    /// An issuer with a fresh key.
    pub fn generate(issuer: &str) -> anyhow::Result<Self> {
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("key generation failed"))?;
        Self::from_pkcs8(issuer, document.as_ref())
    }

    /// Loads the key at `path`, creating it first if missing.
    pub fn load_or_create(issuer: &str, path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            let document =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(|_| anyhow::anyhow!("key generation failed"))?;
            super::write_secret(path, document.as_ref())?;
        }
        let der = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_pkcs8(issuer, &der)
    }

    fn from_pkcs8(issuer: &str, der: &[u8]) -> anyhow::Result<Self> {
        writ_jose::install().map_err(anyhow::Error::msg)?;
        let key = EncodingKey::from_ec_der(der);
        let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256)?;
        let mut public = serde_json::to_value(&jwk)?;
        if let Some(object) = public.as_object_mut() {
            object.insert("kid".into(), json!(kid));
            object.insert("use".into(), json!("sig"));
            object.insert("alg".into(), json!("ES256"));
        }
        Ok(Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            key,
            kid,
            jwks: json!({ "keys": [public] }),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public keys, as a JWK Set document.
    pub fn jwks(&self) -> Value {
        self.jwks.clone()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Mints a workload token for `subject`.
    pub fn mint(
        &self,
        subject: &str,
        audience: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        self.mint_with(subject, audience, ttl, now, json!({}))
    }

    /// Mints a token with extra claims merged in (they may override).
    pub fn mint_with(
        &self,
        subject: &str,
        audience: &str,
        ttl: Duration,
        now: DateTime<Utc>,
        extra: Value,
    ) -> anyhow::Result<String> {
        let mut claims = json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now.timestamp(),
            "nbf": now.timestamp(),
            "exp": now.timestamp() + i64::try_from(ttl.as_secs())?,
            "jti": uuid::Uuid::now_v7().to_string(),
        });
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }

    /// Signs `header` and `payload` exactly as given, byte for byte: tests
    /// need tokens with headers or JSON that [`Self::mint`] never produces.
    #[cfg(test)]
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> anyhow::Result<String> {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, Algorithm::ES256)?;
        Ok(format!("{message}.{signature}"))
    }

    /// Discovery and JWKS, to be served at the issuer URL.
    pub fn router(&self) -> Router {
        let discovery = json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks.json", self.issuer),
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let jwks = self.jwks.clone();
        Router::new()
            .route("/.well-known/openid-configuration", get(move || async move { Json(discovery) }))
            .route("/jwks.json", get(move || async move { Json(jwks) }))
    }
}
