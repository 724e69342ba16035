//! Continuous access evaluation: when Writ revokes a credential early, the
//! downstream systems that cache sessions hear of it. Writ transmits
//! Security Event Tokens (RFC 8417) carrying the CAEP `session-revoked`
//! event, signed with its own ES256 key (published at `/caep/jwks.json` on
//! the HTTP listener), by push delivery (RFC 8935) to each configured
//! receiver.
//!
//! ```text
//! revocation worker ─lease_revoked()─┐
//! kill switch ───────agent_revoked()─┴▶ Transmitter ─bounded queue─▶ SetDeliveries::run ─POST─▶ receiver
//!                                      signs one SET per receiver    each SET retried alone
//! ```
//!
//! - **When.** A lease Writ revoked because its scope ended early
//!   (task closed or past its deadline, released by the agent, revoked by
//!   an operator, the agent suspended or retired, the provider suspended):
//!   one SET whose subject is the session (the lease id) of the agent, sent
//!   when the provider confirms the revocation, or at the first failed
//!   attempt (receivers should not wait for a provider in trouble; the SET
//!   sent on success then has the same `jti`, derived from the lease and
//!   the receiver, so receivers de-duplicate it), or when Writ gives up. Not
//!   for a lease that simply expired, nor one never handed out (its mint
//!   failed, or it was abandoned). When an agent is suspended or retired,
//!   also one SET whose subject is the agent alone: every session of it.
//! - **What.** Identifiers and reason codes only: lease id, agent, task,
//!   provider, role and why. Never a credential, a handle or a reason an
//!   operator typed.
//! - **Delivery.** `POST` with `Content-Type: application/secevent+jwt`. A
//!   2xx answer delivers it. A 400 with an RFC 8935 error
//!   (`invalid_request`, `authentication_failed`, …) is the receiver
//!   refusing that SET for good: logged, not retried, except `invalid_key`
//!   (a receiver that has not fetched a new key yet), which is retried. Anything else is retried with the approval webhooks'
//!   backoff ([`RetryPolicy`]) for up to a day, the same SET (same `jti`)
//!   each time. SETs are kept in memory: those undelivered at shutdown are
//!   counted in the log, and the audit log keeps every revocation.
//! - Credentials for receivers (a bearer token) appear in no log, error or
//!   `Debug` output; receiver URLs are shown as scheme, host and port.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::model::{Lease, RevocationReason};
use crate::webhooks::RetryPolicy;

/// The CAEP event type of a revoked session.
pub const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// The media type of a SET in push delivery (RFC 8935 §2).
pub const SET_MEDIA_TYPE: &str = "application/secevent+jwt";
/// The JWT `typ` of a SET (RFC 8417 §2.3).
pub const SET_TYP: &str = "secevent+jwt";

const QUEUE_CAPACITY: usize = 8192;
const MAX_CONCURRENT_ATTEMPTS: usize = 16;
const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `[caep]`: where SETs go, and who signs them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaepConfig {
    /// The `iss` of every SET: the URL receivers know Writ by.
    pub issuer: String,
    /// An ES256 (P-256) PKCS#8 private key, PEM or DER, used for SETs only.
    pub signing_key_file: PathBuf,
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// The receiver's push endpoint: `http` or `https`, no user or password.
    pub url: String,
    /// The `aud` of the SETs it gets.
    pub audience: String,
    /// Only leases of these providers (empty: every provider). Agent-wide
    /// SETs go to every receiver.
    #[serde(default)]
    pub providers: Vec<String>,
    /// A bearer token the receiver requires (`Authorization: Bearer …`):
    /// the file's contents less trailing line breaks.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl fmt::Debug for ReceiverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverConfig")
            .field("url", &shown(&self.url))
            .field("audience", &self.audience)
            .field("providers", &self.providers)
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// A URL as logs show it: scheme, host and port (a path may be a token).
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(url) => format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or("?"),
            url.port().map(|port| format!(":{port}")).unwrap_or_default()
        ),
        Err(_) => "<invalid url>".into(),
    }
}

struct Receiver {
    url: reqwest::Url,
    shown: String,
    audience: String,
    providers: Vec<String>,
    token: Option<SecretString>,
}

struct Signer {
    issuer: String,
    key: EncodingKey,
    kid: String,
    jwks: Value,
}

/// A signed SET on its way to one receiver.
struct Set {
    receiver: usize,
    jti: Uuid,
    token: String,
    queued: Instant,
}

struct Inner {
    signer: Signer,
    receivers: Arc<[Receiver]>,
    queue: mpsc::Sender<Set>,
    dropped: AtomicU64,
}

/// Signs SETs and queues them for delivery. Cheap to call: it never waits
/// and never fails its caller.
#[derive(Clone, Default)]
pub struct Transmitter {
    /// `None`: CAEP is not configured.
    inner: Option<Arc<Inner>>,
}

impl fmt::Debug for Transmitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let receivers = self.inner.as_ref().map_or(0, |inner| inner.receivers.len());
        f.debug_struct("Transmitter").field("receivers", &receivers).finish()
    }
}

/// The worker that delivers what a [`Transmitter`] queues.
pub struct SetDeliveries {
    work: Option<(mpsc::Receiver<Set>, Arc<[Receiver]>, reqwest::Client)>,
    retry: RetryPolicy,
}

impl Transmitter {
    /// From configuration: disabled without `[caep]`. Fails on a key that
    /// cannot be read or is not ES256, a bad URL, or an empty field.
    pub fn new(config: Option<&CaepConfig>) -> Result<(Self, SetDeliveries), String> {
        let Some(config) = config else {
            return Ok((Self::default(), SetDeliveries { work: None, retry: RetryPolicy::default() }));
        };
        if config.issuer.trim().is_empty() {
            return Err("caep.issuer must not be empty".into());
        }
        writ_jose::install()?;
        let key = writ_provider_jwt::SigningKey::load(
            writ_provider_jwt::SigningAlgorithm::ES256,
            &config.signing_key_file,
        )?;
        let (jwk, kid) = key.public_jwk()?;
        let signer = Signer {
            issuer: config.issuer.clone(),
            key: key.encoding_key(),
            kid,
            jwks: json!({ "keys": [jwk] }),
        };
        let mut receivers = Vec::new();
        for receiver in &config.receivers {
            receivers.push(receiver_from(receiver)?);
        }
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the CAEP HTTP client: {e}"))?;
        let receivers: Arc<[Receiver]> = receivers.into();
        let (queue, queued) = mpsc::channel(QUEUE_CAPACITY);
        let inner = Inner { signer, receivers: receivers.clone(), queue, dropped: AtomicU64::new(0) };
        let deliveries =
            SetDeliveries { work: Some((queued, receivers, client)), retry: RetryPolicy::default() };
        Ok((Self { inner: Some(Arc::new(inner)) }, deliveries))
    }

    /// The JWKS receivers verify SETs with; `None` when CAEP is off.
    pub fn jwks(&self) -> Option<&Value> {
        self.inner.as_ref().map(|inner| &inner.signer.jwks)
    }

    /// A lease was revoked at its provider: its session ends, if it ended
    /// early (see the module documentation for which reasons count).
    pub fn lease_revoked(&self, lease: &Lease, now: DateTime<Utc>) {
        let Some(reason) = lease.revocation.as_ref().map(|revocation| revocation.reason) else {
            return;
        };
        if matches!(
            reason,
            RevocationReason::Expired | RevocationReason::MintFailed | RevocationReason::Abandoned
        ) {
            return;
        }
        let subject = json!({
            "format": "complex",
            "session": { "format": "opaque", "id": lease.id.to_string() },
            "user": { "format": "opaque", "id": lease.agent },
        });
        let details = json!({
            "task": lease.task_id,
            "provider": lease.provider,
            "role": lease.role,
        });
        let id = format!("lease\n{}", lease.id);
        self.send(subject, reason, Some(&lease.task_id), Some(&lease.provider), details, &id, now);
    }

    /// An agent was suspended or retired: every session of it ends.
    pub fn agent_revoked(&self, agent: &str, reason: RevocationReason, now: DateTime<Utc>) {
        let subject = json!({ "format": "complex", "user": { "format": "opaque", "id": agent } });
        let id = format!("agent\n{agent}\n{}", now.timestamp_micros());
        self.send(subject, reason, None, None, json!({}), &id, now);
    }

    /// Signs one SET per receiver (of `provider`'s leases, if given). The
    /// `jti` is derived from `id` and the receiver, so the same event sent
    /// again is recognised as such.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        subject: Value,
        reason: RevocationReason,
        txn: Option<&str>,
        provider: Option<&str>,
        details: Value,
        id: &str,
        now: DateTime<Utc>,
    ) {
        let Some(inner) = &self.inner else { return };
        for (index, receiver) in inner.receivers.iter().enumerate() {
            if let Some(provider) = provider
                && !receiver.providers.is_empty()
                && !receiver.providers.iter().any(|wanted| wanted == provider)
            {
                continue;
            }
            let jti = derived_jti(id, &receiver.audience);
            let mut event = json!({
                "event_timestamp": now.timestamp(),
                "initiating_entity": initiating_entity(reason),
                "reason_admin": { "en": reason.as_str() },
                "writ": details,
            });
            event["writ"]["reason"] = json!(reason.as_str());
            let mut claims = json!({
                "iss": inner.signer.issuer,
                "iat": now.timestamp(),
                "jti": jti.to_string(),
                "aud": receiver.audience,
                "sub_id": subject,
                "events": { SESSION_REVOKED: event },
            });
            if let Some(txn) = txn {
                claims["txn"] = json!(txn);
            }
            let mut header = Header::new(Algorithm::ES256);
            header.typ = Some(SET_TYP.into());
            header.kid = Some(inner.signer.kid.clone());
            let token = match jsonwebtoken::encode(&header, &claims, &inner.signer.key) {
                Ok(token) => token,
                Err(error) => {
                    tracing::error!(%error, "cannot sign a security event token; it is not sent");
                    continue;
                }
            };
            let set = Set { receiver: index, jti, token, queued: Instant::now() };
            if inner.queue.try_send(set).is_err() {
                let dropped = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(receiver = %receiver.shown, dropped, "the CAEP queue is full; a security event token was dropped");
            }
        }
    }
}

/// A UUID (version 8) from the SHA-256 of the event's id and the
/// receiver's audience.
fn derived_jti(id: &str, audience: &str) -> Uuid {
    let digest =
        ring::digest::digest(&ring::digest::SHA256, format!("writ-set\n{id}\n{audience}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Who caused the session to end, in CAEP's terms.
fn initiating_entity(reason: RevocationReason) -> &'static str {
    match reason {
        RevocationReason::Released => "user",
        RevocationReason::DeadlinePassed | RevocationReason::Expired => "policy",
        RevocationReason::Operator
        | RevocationReason::AgentSuspended
        | RevocationReason::AgentRetired
        | RevocationReason::ProviderSuspended => "admin",
        RevocationReason::TaskClosed | RevocationReason::MintFailed | RevocationReason::Abandoned => "system",
    }
}

fn receiver_from(config: &ReceiverConfig) -> Result<Receiver, String> {
    let shown = shown(&config.url);
    let url = reqwest::Url::parse(&config.url).map_err(|e| format!("caep receiver {shown}: bad url: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "caep receiver {shown}: the url must be http or https, with no user or password"
        ));
    }
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if url.scheme() == "http" && !loopback {
        return Err(format!(
            "caep receiver {shown}: SETs (and any bearer token) go over https; plain http only to a loopback \
             address"
        ));
    }
    if config.audience.trim().is_empty() {
        return Err(format!("caep receiver {shown}: audience must not be empty"));
    }
    let token = match &config.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!("caep receiver {shown}: cannot read token_file {}: {e}", path.display())
            })?;
            let token = text.trim_end_matches(['\r', '\n']).to_owned();
            if token.is_empty() || token.chars().any(|c| c.is_control() || c == ' ') {
                return Err(format!("caep receiver {shown}: token_file holds no usable bearer token"));
            }
            Some(SecretString::from(token))
        }
        None => None,
    };
    Ok(Receiver { url, shown, audience: config.audience.clone(), providers: config.providers.clone(), token })
}

impl SetDeliveries {
    /// Retries on `policy` instead of the default.
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Delivers SETs until `shutdown`, then stops at once and logs how many
    /// were left undelivered.
    pub async fn run(self, shutdown: CancellationToken) {
        let Some((mut queued, receivers, client)) = self.work else {
            shutdown.cancelled().await;
            return;
        };
        tracing::info!(receivers = receivers.len(), "CAEP transmitter started");
        let attempts = Arc::new(Semaphore::new(MAX_CONCURRENT_ATTEMPTS));
        let mut deliveries = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(_) = deliveries.join_next() => {}
                set = queued.recv() => match set {
                    Some(set) => {
                        let (receivers, client, attempts) = (receivers.clone(), client.clone(), attempts.clone());
                        deliveries.spawn(deliver(set, receivers, client, attempts, self.retry));
                    }
                    None => break,
                },
            }
        }
        let undelivered = deliveries.len() + queued.len();
        deliveries.shutdown().await;
        if undelivered > 0 {
            tracing::warn!(undelivered, "CAEP transmitter stopping with undelivered security event tokens");
        }
        tracing::info!("CAEP transmitter stopped");
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    Refused(String),
    Failed(String),
}

async fn deliver(
    set: Set,
    receivers: Arc<[Receiver]>,
    client: reqwest::Client,
    attempts: Arc<Semaphore>,
    retry: RetryPolicy,
) {
    let receiver = &receivers[set.receiver];
    for attempt in 1u32.. {
        let outcome = {
            let Ok(_permit) = attempts.acquire().await else { return };
            post(&client, receiver, &set.token).await
        };
        match outcome {
            Attempt::Delivered => {
                tracing::debug!(receiver = %receiver.shown, jti = %set.jti, attempt, "security event token delivered");
                return;
            }
            Attempt::Refused(error) => {
                tracing::error!(receiver = %receiver.shown, jti = %set.jti, %error, "the receiver refused a security event token; it is not sent again");
                return;
            }
            Attempt::Failed(error) if set.queued.elapsed() >= retry.give_up_after => {
                tracing::error!(receiver = %receiver.shown, jti = %set.jti, attempt, %error, "a security event token could not be delivered; giving up");
                return;
            }
            Attempt::Failed(error) => {
                let delay = retry.delay(attempt, fastrand::f64());
                tracing::warn!(receiver = %receiver.shown, jti = %set.jti, attempt, %error, retry_in = ?delay, "security event token not delivered; will retry");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn post(client: &reqwest::Client, receiver: &Receiver, token: &str) -> Attempt {
    let mut request = client
        .post(receiver.url.clone())
        .header(reqwest::header::CONTENT_TYPE, SET_MEDIA_TYPE)
        .header(reqwest::header::ACCEPT, "application/json")
        .body(token.to_owned());
    if let Some(bearer) = &receiver.token {
        request = request.bearer_auth(bearer.expose_secret());
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => Attempt::Delivered,
        Ok(response) if response.status() == StatusCode::BAD_REQUEST => {
            // RFC 8935 §2.3: {"err": "...", "description": "..."}; shown
            // cut short, as the receiver's words.
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let err: String = body["err"].as_str().unwrap_or("invalid_request").chars().take(64).collect();
            let description: String = body["description"].as_str().unwrap_or("").chars().take(200).collect();
            if err == "invalid_key" {
                // The receiver may not have fetched a rotated key yet.
                Attempt::Failed(format!("{err}: {description}"))
            } else {
                Attempt::Refused(format!("{err}: {description}"))
            }
        }
        Ok(response) => Attempt::Failed(format!("the receiver answered {}", response.status())),
        Err(error) => Attempt::Failed(format!("cannot reach the receiver: {}", error.without_url())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_path_or_query() {
        assert_eq!(shown("https://siem.example:8443/hook/SECRET?x=1"), "https://siem.example:8443");
        assert_eq!(shown("not a url"), "<invalid url>");
    }

    #[test]
    fn receivers_are_checked() {
        let receiver = |url: &str, audience: &str| ReceiverConfig {
            url: url.into(),
            audience: audience.into(),
            providers: Vec::new(),
            token_file: None,
        };
        assert!(receiver_from(&receiver("https://r.example/events", "r")).is_ok());
        assert!(receiver_from(&receiver("http://127.0.0.1:9/events", "r")).is_ok(), "http to loopback");
        assert!(receiver_from(&receiver("http://localhost:9/events", "r")).is_ok());
        assert!(receiver_from(&receiver("http://r.example/events", "r")).is_err(), "http elsewhere");
        for (url, audience) in
            [("ftp://r.example", "r"), ("https://u:p@r.example", "r"), ("https://r.example", " ")]
        {
            let error = receiver_from(&receiver(url, audience)).err().unwrap();
            assert!(!error.contains("u:p"), "{error}");
        }
    }

    #[test]
    fn the_same_event_keeps_its_jti() {
        assert_eq!(derived_jti("lease\n1", "a"), derived_jti("lease\n1", "a"));
        assert_ne!(derived_jti("lease\n1", "a"), derived_jti("lease\n1", "b"), "one per receiver");
        assert_ne!(derived_jti("lease\n1", "a"), derived_jti("lease\n2", "a"));
        assert_eq!(derived_jti("x", "y").get_version_num(), 8);
    }

    #[test]
    fn who_initiated() {
        assert_eq!(initiating_entity(RevocationReason::AgentSuspended), "admin");
        assert_eq!(initiating_entity(RevocationReason::Released), "user");
        assert_eq!(initiating_entity(RevocationReason::TaskClosed), "system");
    }
}
