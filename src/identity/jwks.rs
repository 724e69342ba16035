//! Per-issuer key cache.
//!
//! Keys come from the issuer's JWKS, found through OIDC discovery unless a
//! URL is configured. They are cached and fetched again when they grow old
//! or when a token names a `kid` the cache does not hold. Refreshes caused
//! by unknown kids are rate-limited per issuer, so a flood of tokens with
//! made-up kids costs the issuer at most one request per interval.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::config::{IssuerConfig, Limits};

/// The largest discovery or JWKS document Writ reads.
const MAX_DOCUMENT: usize = 256 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// No key for this `kid` (or, without a `kid`, no single key).
    #[error("no such key")]
    Unknown(Option<String>),
    /// The key the `kid` names is pinned to another algorithm.
    #[error("the key is for another algorithm")]
    WrongAlgorithm,
    #[error("cannot fetch keys: {0}")]
    Fetch(String),
}

struct CachedKey {
    key: DecodingKey,
    /// The JWK's own `alg`, when it names one: the token must use it.
    algorithm: Option<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, CachedKey>,
    /// Keys published without a `kid`, usable only when they are alone.
    anonymous: Vec<CachedKey>,
    fetched_at: Option<Instant>,
}

pub struct IssuerKeys {
    issuer: String,
    jwks_url: Option<String>,
    algorithms: Vec<Algorithm>,
    max_age: Duration,
    http: reqwest::Client,
    /// A bearer token to fetch with, read again for every fetch.
    token_file: Option<std::path::PathBuf>,
    /// The cached keys; read on every request, replaced on refresh.
    cache: RwLock<KeySet>,
    /// Serializes refreshes so concurrent misses cause one fetch.
    refreshing: Mutex<()>,
    /// Bounds refreshes triggered by unknown kids or stale caches.
    limiter: DefaultDirectRateLimiter,
}

impl IssuerKeys {
    pub fn new(config: &IssuerConfig, limits: &Limits, http: reqwest::Client) -> Result<Self, String> {
        let algorithms = if config.algorithms.is_empty() {
            super::ALLOWED_ALGORITHMS.to_vec()
        } else {
            config
                .algorithms
                .iter()
                .map(|name| super::parse_algorithm(name).ok_or(format!("algorithm {name:?}")))
                .collect::<Result<_, _>>()?
        };
        let quota = Quota::with_period(limits.jwks_refresh_interval.max(Duration::from_millis(1)))
            .ok_or("jwks_refresh_interval must be positive")?;
        Ok(Self {
            issuer: config.issuer.clone(),
            token_file: config.token_file.clone(),
            jwks_url: config.jwks_url.clone(),
            algorithms,
            max_age: limits.jwks_max_age,
            http,
            cache: RwLock::new(KeySet::default()),
            refreshing: Mutex::new(()),
            limiter: RateLimiter::direct(quota),
        })
    }

    pub fn allows(&self, algorithm: Algorithm) -> bool {
        self.algorithms.contains(&algorithm)
    }

    /// The key for `kid`, fetching the JWKS again if it is unknown or old
    /// and the rate limit allows.
    pub async fn key(&self, kid: Option<&str>, algorithm: Algorithm) -> Result<DecodingKey, KeyError> {
        let (found, stale) = {
            let cache = self.cache.read().await;
            (lookup(&cache, kid, algorithm), is_stale(&cache, self.max_age))
        };
        if let Some(key) = found.clone()
            && !stale
        {
            return key;
        }
        if self.limiter.check().is_ok() {
            let before = self.cache.read().await.fetched_at;
            let _guard = self.refreshing.lock().await;
            // Another request may have refreshed while this one waited.
            if self.cache.read().await.fetched_at == before
                && let Err(error) = self.refresh_locked().await
            {
                // A stale but known key beats no key while the issuer is down.
                return found.unwrap_or(Err(error));
            }
            let cache = self.cache.read().await;
            return lookup(&cache, kid, algorithm)
                .unwrap_or_else(|| Err(KeyError::Unknown(kid.map(str::to_string))));
        }
        found.unwrap_or_else(|| Err(KeyError::Unknown(kid.map(str::to_string))))
    }

    /// Fetches the keys now, ignoring the rate limit (start-up warm-up).
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let _guard = self.refreshing.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Result<(), KeyError> {
        let url = match &self.jwks_url {
            Some(url) => url.clone(),
            None => self.discover().await?,
        };
        let document = self.get_json(&url).await?;
        let keys = parse_jwks(&document)?;
        tracing::info!(issuer = %self.issuer, keys = keys.keys.len() + keys.anonymous.len(), "fetched issuer keys");
        *self.cache.write().await = keys;
        Ok(())
    }

    async fn discover(&self) -> Result<String, KeyError> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let document = self.get_json(&url).await?;
        if document.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(KeyError::Fetch(format!("discovery at {url} names another issuer")));
        }
        document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| KeyError::Fetch(format!("discovery at {url} has no jwks_uri")))
    }

    async fn get_json(&self, url: &str) -> Result<Value, KeyError> {
        let fail = |message: String| KeyError::Fetch(format!("GET {url}: {message}"));
        let mut request = self.http.get(url);
        if let Some(path) = &self.token_file {
            // The token is Writ's own (a projected service-account token):
            // sent, never logged.
            let token = std::fs::read_to_string(path)
                .map_err(|e| fail(format!("reading the token_file {}: {e}", path.display())))?;
            request = request.bearer_auth(token.trim());
        }
        let mut response = request.send().await.map_err(|e| fail(crate::text::error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        // Read at most MAX_DOCUMENT bytes: a key set is small, and an issuer
        // (or whatever a discovery document points at) must not be able to
        // make Writ buffer without bound.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(fail(format!("the document is larger than {MAX_DOCUMENT} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))
    }
}

fn is_stale(cache: &KeySet, max_age: Duration) -> bool {
    cache.fetched_at.is_none_or(|at| at.elapsed() > max_age)
}

fn lookup(cache: &KeySet, kid: Option<&str>, algorithm: Algorithm) -> Option<Result<DecodingKey, KeyError>> {
    let cached = match kid {
        Some(kid) => cache.keys.get(kid),
        None if cache.keys.is_empty() && cache.anonymous.len() == 1 => cache.anonymous.first(),
        None => return None,
    }?;
    if cached.algorithm.is_some_and(|own| own != algorithm) {
        return Some(Err(KeyError::WrongAlgorithm));
    }
    Some(Ok(cached.key.clone()))
}

/// Keeps the signing keys Writ can use; skips symmetric keys, encryption
/// keys and keys it cannot parse rather than failing the whole set.
fn parse_jwks(document: &Value) -> Result<KeySet, KeyError> {
    let entries = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| KeyError::Fetch("the JWKS has no keys array".into()))?;
    let mut set = KeySet { fetched_at: Some(Instant::now()), ..KeySet::default() };
    for entry in entries {
        if entry.get("kty").and_then(Value::as_str) == Some("oct") {
            continue;
        }
        if entry.get("use").and_then(Value::as_str).is_some_and(|usage| usage != "sig") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else { continue };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
        // A key pinned to an algorithm Writ does not accept is not used at
        // all, rather than loosened to any algorithm of its family.
        let algorithm = match entry.get("alg").and_then(Value::as_str) {
            None => None,
            Some(name) => match super::parse_algorithm(name) {
                Some(algorithm) => Some(algorithm),
                None => continue,
            },
        };
        let cached = CachedKey { key, algorithm };
        match entry.get("kid").and_then(Value::as_str) {
            Some(kid) => {
                set.keys.insert(kid.to_string(), cached);
            }
            None => set.anonymous.push(cached),
        }
    }
    Ok(set)
}
