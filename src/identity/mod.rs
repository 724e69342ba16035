//! Workload identity: verifying the caller's OIDC JWT.
//!
//! A token is checked in a fixed order, cheapest first, and the first
//! failure is reported with a message a person can act on:
//! size → three canonical base64url parts of JSON objects without repeated
//! names → header rules (`alg` allow-list, `crit`, `b64`, `zip`, embedded
//! keys, `typ`, …) → claim types → trusted issuer (exact `iss`) → key (by
//! `kid`, from the issuer's JWKS) → signature, `aud` → `exp`, `nbf`, `iat`
//! against the caller-supplied `now`, with a small leeway.
//!
//! JOSE parsing and claim checks are `jsonwebtoken`'s, the signature
//! primitives `ring`'s (see the `writ-jose` crate); the header and claim
//! rules `jsonwebtoken` does not enforce are Writ's own, in [`rules`]
//! (`docs/token-rules.md` has the whole list). Keys are cached per issuer
//! by [`jwks::IssuerKeys`].

pub mod jwks;
mod rules;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::config::{IssuerConfig, Limits};
use jwks::{IssuerKeys, KeyError};
pub use rules::quoted;
use rules::{Round, check_claims, check_header, numeric_date, split_unverified};

/// The algorithms Writ accepts, whatever an issuer is configured with.
pub const ALLOWED_ALGORITHMS: [Algorithm; 4] =
    [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];

pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    ALLOWED_ALGORITHMS.into_iter().find(|algorithm| format!("{algorithm:?}") == name)
}

/// A verified workload identity.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub claims: Map<String, Value>,
}

/// Why a token was refused. Messages never quote the token, and quote
/// text taken from it (an `alg`, `iss` or `kid`) only through [`quoted`]:
/// escaped and at most 64 characters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send `authorization: Bearer <workload JWT>`")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    /// A well-formed token that uses a JOSE feature Writ refuses.
    #[error("token refused: {0}")]
    Refused(String),
    #[error("token is larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("algorithm {} is not allowed; use one of RS256, PS256, ES256, EdDSA", quoted(.0))]
    Algorithm(String),
    #[error("issuer {} is not trusted", quoted(.0))]
    UntrustedIssuer(String),
    /// No key for the token's `kid` (or, without a `kid`, no single key).
    #[error("{}", unknown_key(.0.as_deref()))]
    UnknownKey(Option<String>),
    #[error("the issuer's key does not fit the token's algorithm")]
    KeyMismatch,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token audience does not include {0:?}")]
    WrongAudience(String),
    #[error("token is missing the required claim {0:?}")]
    MissingClaim(String),
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token was issued in the future (iat)")]
    IssuedInFuture,
    /// The issuer's keys could not be fetched: not the caller's fault.
    #[error("cannot fetch the keys of issuer {}; try again later", quoted(.0))]
    IssuerUnavailable(String),
}

fn unknown_key(kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!("no key {} in the issuer's JWKS", quoted(kid)),
        None => "the token names no key (kid) and the issuer's JWKS does not hold exactly one".into(),
    }
}

/// The most verified tokens remembered at once (each at most
/// `max_token_bytes` of claims: 4,096 × 8 KiB = 32 MiB at worst).
const VERIFIED_CACHE_SIZE: usize = 4_096;
/// How long a verified token is remembered. Bounds how long a token signed
/// with a key the issuer has since withdrawn keeps working without a new
/// signature check.
const VERIFIED_CACHE_AGE: Duration = Duration::from_secs(60);

/// Verifies workload tokens against the trusted issuers.
pub struct Verifier {
    audience: String,
    max_token_bytes: usize,
    leeway: Duration,
    issuers: HashMap<String, Arc<IssuerKeys>>,
    /// Tokens whose signature and claims already checked out, by SHA-256:
    /// agents reuse one token for many calls, and a signature check costs
    /// far more than a hash. Lifetimes are still checked on every call.
    verified: std::sync::Mutex<HashMap<[u8; 32], (std::time::Instant, Identity)>>,
}

impl Verifier {
    pub fn new(audience: &str, limits: &Limits, issuers: &[IssuerConfig]) -> Result<Self, String> {
        writ_jose::install()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?;
        let issuers = issuers
            .iter()
            .map(|config| {
                let http = match &config.ca_file {
                    // Only this CA: the issuer's endpoints are private.
                    Some(path) => {
                        let pem = std::fs::read(path).map_err(|e| {
                            format!("issuer {:?}: ca_file {}: {e}", config.issuer, path.display())
                        })?;
                        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                            format!(
                                "issuer {:?}: ca_file {} is not PEM certificates: {e}",
                                config.issuer,
                                path.display()
                            )
                        })?;
                        let mut builder = reqwest::Client::builder()
                            .timeout(Duration::from_secs(5))
                            .connect_timeout(Duration::from_secs(2))
                            .redirect(reqwest::redirect::Policy::none())
                            .tls_built_in_root_certs(false);
                        for certificate in certificates {
                            builder = builder.add_root_certificate(certificate);
                        }
                        builder.build().map_err(|e| format!("cannot build the JWKS HTTP client: {e}"))?
                    }
                    None => http.clone(),
                };
                let keys = IssuerKeys::new(config, limits, http)?;
                Ok((config.issuer.clone(), Arc::new(keys)))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            audience: audience.to_string(),
            max_token_bytes: limits.max_token_bytes,
            leeway: limits.clock_leeway,
            issuers,
            verified: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Fetches every issuer's keys once, so the first request does not wait
    /// and a misconfigured issuer shows up in the start-up log.
    pub async fn warm_up(&self) -> Vec<(String, String)> {
        let mut failures = Vec::new();
        for (issuer, keys) in &self.issuers {
            if let Err(error) = keys.refresh().await {
                failures.push((issuer.clone(), error.to_string()));
            }
        }
        failures
    }

    pub async fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Identity, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge(self.max_token_bytes));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        let remembered = self.remembered().get(&key).cloned();
        if let Some((verified_at, identity)) = remembered
            && verified_at.elapsed() < VERIFIED_CACHE_AGE
        {
            self.check_lifetime(&identity.claims, now)?;
            return Ok(identity);
        }
        let identity = self.verify_fully(token, now).await?;
        let mut verified = self.remembered();
        if verified.len() >= VERIFIED_CACHE_SIZE {
            // Forget what can no longer be used, or everything if that is not
            // enough: the cache only saves work.
            verified.retain(|_, (verified_at, identity)| {
                verified_at.elapsed() < VERIFIED_CACHE_AGE
                    && self.check_lifetime(&identity.claims, now).is_ok()
            });
            if verified.len() >= VERIFIED_CACHE_SIZE {
                verified.clear();
            }
        }
        verified.insert(key, (std::time::Instant::now(), identity.clone()));
        Ok(identity)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (std::time::Instant, Identity)>> {
        self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every check but the lifetime is made here, before the identity is
    /// remembered: Writ's own header and claim rules ([`rules`]) first, then
    /// issuer and key, then `jsonwebtoken`'s signature and claim checks.
    async fn verify_fully(&self, token: &str, now: DateTime<Utc>) -> Result<Identity, AuthError> {
        let (header, payload, signature) = split_unverified(token)?;
        let algorithm = check_header(&header)?;
        if signature.is_empty() {
            return Err(AuthError::Malformed("the token has no signature".into()));
        }
        check_claims(&payload)?;
        let issuer_name = payload.get("iss").and_then(Value::as_str).unwrap_or_default();
        let issuer = self
            .issuers
            .get(issuer_name)
            .ok_or_else(|| AuthError::UntrustedIssuer(issuer_name.to_string()))?;
        if !issuer.allows(algorithm) {
            return Err(AuthError::Algorithm(format!("{algorithm:?}")));
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let key = issuer.key(kid, algorithm).await.map_err(|error| match error {
            KeyError::Unknown(kid) => AuthError::UnknownKey(kid),
            KeyError::WrongAlgorithm => AuthError::KeyMismatch,
            KeyError::Fetch(_) => AuthError::IssuerUnavailable(issuer_name.to_string()),
        })?;

        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer_name]);
        validation.set_audience(&[&self.audience]);
        // `exp` is required by `check_claims`, and it and the other
        // lifetimes are checked below against `now`, not the system clock
        // (`jsonwebtoken` would take a negative `exp` for a missing one).
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|error| self.explain(&error))?;
        let claims = data.claims;
        self.check_lifetime(&claims, now)?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|sub| !sub.is_empty())
            .ok_or_else(|| AuthError::MissingClaim("sub".into()))?
            .to_string();
        Ok(Identity { issuer: issuer_name.to_string(), subject, claims })
    }

    /// A `jsonwebtoken` refusal in words. Most kinds cannot occur after
    /// Writ's own checks; they are mapped anyway, and none is shown as
    /// Rust debug text.
    fn explain(&self, error: &jsonwebtoken::errors::Error) -> AuthError {
        let malformed = |text: &str| AuthError::Malformed(text.into());
        match error.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAudience => AuthError::WrongAudience(self.audience.clone()),
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
            ErrorKind::InvalidClaimFormat(claim) => {
                AuthError::Malformed(format!("claim {} has the wrong type", quoted(claim)))
            }
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => malformed("iss does not name the issuer whose key was used"),
            ErrorKind::InvalidSubject => malformed("the subject is not the expected one"),
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_) => AuthError::KeyMismatch,
            ErrorKind::InvalidToken => malformed("the token is not a signed JWT"),
            ErrorKind::Base64(_) => malformed("a part of the token is not unpadded base64url"),
            ErrorKind::Json(_) => malformed("a header parameter or claim has the wrong type"),
            ErrorKind::Utf8(_) => malformed("a part of the token is not UTF-8"),
            // Signing errors and provider errors, and kinds added later.
            _ => malformed("the token could not be verified"),
        }
    }

    fn check_lifetime(&self, claims: &Claims, now: DateTime<Utc>) -> Result<(), AuthError> {
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        let now = now.timestamp();
        let exp =
            numeric_date(claims, "exp", Round::Down)?.ok_or_else(|| AuthError::MissingClaim("exp".into()))?;
        if now > exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if numeric_date(claims, "nbf", Round::Up)?.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
            return Err(AuthError::NotYetValid);
        }
        if numeric_date(claims, "iat", Round::Up)?.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(AuthError::IssuedInFuture);
        }
        Ok(())
    }
}

/// A decoded header or claims set.
type Claims = rules::Object;

#[cfg(test)]
mod tests;
