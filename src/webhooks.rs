//! Signed webhooks for step-up approvals: approvers learn of a request, of
//! its votes and of its end without watching a screen.
//!
//! ```text
//! domain ──send()──▶ Notifier ──bounded queue──▶ Deliveries::run ──POST──▶ endpoint
//!        never waits,                            one task per notice and endpoint,
//!        never fails                             at most 16 POSTs in flight
//! ```
//!
//! - [`Notifier::send`] picks the endpoints whose `groups` match the
//!   request's approver group, snapshots the approval into the documented
//!   body (nothing beyond it: the wire schema is pinned by this module's own
//!   types, not by [`Approval`]) and enqueues one notice. It never waits and
//!   never fails its caller: a full queue costs a warning and a count.
//! - [`Deliveries::run`] is the worker. Each notice to each endpoint is a
//!   task of its own that retries on a non-2xx answer or a failed
//!   connection, with exponential backoff and jitter ([`RetryPolicy`]),
//!   until delivered or too old. A semaphore bounds the POSTs in flight,
//!   not the tasks waiting to retry, so a dead endpoint does not hold up a
//!   live one.
//! - Every attempt is signed afresh: `Writ-Timestamp` is the time of the
//!   attempt and `Writ-Signature` an HMAC-SHA256 over `"<timestamp>.<body>"`,
//!   so a receiver can refuse anything older than a few minutes. [`verify`]
//!   is the reference check for a Rust receiver.
//! - Event ids are derived, not drawn: a UUID v7 whose time is the event's
//!   own time in the approval and whose other bits hash the approval id, the
//!   event type and (for a vote) the vote's position. A retry, another
//!   endpoint and a re-send after a restart all carry the same id.
//! - Nothing is persisted. On shutdown the worker stops at once and logs how
//!   many notices were undelivered; at start Writ re-sends the notices of
//!   open requests, so receivers de-duplicate by `Writ-Event-Id`.
//! - The signing secret appears in no error, log line or `Debug` output, and
//!   URLs are shown as scheme, host and port only: a chat webhook's path is
//!   often itself a token.
//!
//! The wire format and a receiver's checks are in `docs/webhooks.md`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::hmac;
use secrecy::zeroize::Zeroizing;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::model::Approval;

mod body;
mod delivery;
mod signature;
#[cfg(test)]
mod tests;

pub use delivery::Deliveries;
pub use signature::verify;

/// The shortest signing secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// How far a receiver should let `Writ-Timestamp` stray from its clock.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Notices waiting for the worker. Approvals are paced by people, so this
/// overflows only when the worker is not running.
const QUEUE_CAPACITY: usize = 1024;

/// One endpoint to notify, as configured.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST: `http` or `https`, with no user name or password.
    pub url: String,
    /// The signing secret: the file's bytes less trailing line breaks, at
    /// least [`MIN_SECRET_BYTES`] of them.
    pub secret_file: PathBuf,
    #[serde(default)]
    pub format: WebhookFormat,
    /// The approver groups whose requests go here; empty: every group.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// By hand: the URL's path and query may be a token.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redacted_url(&self.url))
            .field("secret_file", &self.secret_file)
            .field("format", &self.format)
            .field("groups", &self.groups)
            .finish()
    }
}

/// What the body looks like; the signature headers are the same for both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The JSON event documented in `docs/webhooks.md`.
    #[default]
    Writ,
    /// `{"text": "..."}` with a one-paragraph summary, for a chat
    /// incoming webhook.
    Slack,
}

/// What happened to an approval request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    Requested,
    Approved,
    Denied,
    Expired,
    Cancelled,
    Collected,
    Voted,
}

impl WebhookEvent {
    /// Every event, for listings and tests.
    pub const ALL: [Self; 7] = [
        Self::Requested,
        Self::Approved,
        Self::Denied,
        Self::Expired,
        Self::Cancelled,
        Self::Collected,
        Self::Voted,
    ];

    /// The body's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "approval.requested",
            Self::Approved => "approval.approved",
            Self::Denied => "approval.denied",
            Self::Expired => "approval.expired",
            Self::Cancelled => "approval.cancelled",
            Self::Collected => "approval.collected",
            Self::Voted => "approval.voted",
        }
    }
}

/// When to try a notice again and when to give up on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The pause after the first failed attempt; it doubles after each.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
    /// A notice this long in the worker is dropped (and counted) after its
    /// next failed attempt.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(5 * 60),
            give_up_after: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1-based): `first`
    /// doubled per earlier failure, capped at `max`, then scaled by a
    /// factor in [0.5, 1.0] from `jitter` (in [0, 1]) so that the notices
    /// of one outage do not retry in lockstep.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let base = self.first.saturating_mul(1u32 << exponent).min(self.max);
        base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// What went wrong, in words that say what to fix. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("approvals.webhooks[{index}].url is not a URL: {reason}")]
    InvalidUrl { index: usize, reason: String },
    #[error("approvals.webhooks[{index}].url ({url}) must use http or https, not {scheme:?}")]
    UnsupportedScheme { index: usize, url: String, scheme: String },
    #[error(
        "approvals.webhooks[{index}].url ({url}) holds a user name or password; remove it: \
         the signature from secret_file authenticates Writ"
    )]
    UrlHasCredentials { index: usize, url: String },
    #[error("approvals.webhooks[{index}].groups holds an empty group name")]
    EmptyGroup { index: usize },
    #[error("approvals.webhooks[{index}].secret_file: cannot read {}: {source}", path.display())]
    ReadSecret { index: usize, path: PathBuf, source: std::io::Error },
    #[error(
        "approvals.webhooks[{index}].secret_file: {} holds {length} bytes, a signing secret needs at least \
         {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32 > {}`)",
        path.display(),
        path.display()
    )]
    SecretTooShort { index: usize, path: PathBuf, length: usize },
    #[error("cannot build the webhook HTTP client: {reason}")]
    Client { reason: String },
    #[error("Writ-Timestamp is not a unix time in seconds")]
    InvalidTimestamp,
    #[error("Writ-Signature holds no v1= signature")]
    MissingSignature,
    #[error("Writ-Signature does not match the body (wrong secret, or the body was changed)")]
    BadSignature,
    #[error("Writ-Timestamp is {age_seconds} s from now, beyond the tolerance of {tolerance_seconds} s")]
    StaleTimestamp { age_seconds: i64, tolerance_seconds: u64 },
}

/// Hands approval notices to the [`Deliveries`] worker. Cheap to clone;
/// every clone feeds the same queue.
#[derive(Clone)]
pub struct Notifier {
    /// `None`: no webhooks are configured and [`Notifier::send`] does
    /// nothing.
    shared: Option<Arc<Shared>>,
}

struct Shared {
    /// Where notices may go; each notice takes the ones of its group.
    endpoints: Vec<Arc<Endpoint>>,
    /// To the worker. Bounded, so that a worker that is not running cannot
    /// grow memory without limit; `send` never waits on it.
    notices_tx: mpsc::Sender<body::Notice>,
    /// Shared with the worker, which does most of the counting.
    counters: Arc<Counters>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints = self.shared.as_ref().map_or(0, |shared| shared.endpoints.len());
        f.debug_struct("Notifier").field("endpoints", &endpoints).finish()
    }
}

impl Notifier {
    /// Validates every endpoint and reads its secret. Hand the
    /// [`Deliveries`] to a background task; nothing is sent until it runs.
    pub fn new(configs: &[WebhookConfig]) -> Result<(Notifier, Deliveries), WebhookError> {
        if configs.is_empty() {
            return Ok((Notifier::disabled(), Deliveries::disabled()));
        }
        let endpoints = configs
            .iter()
            .enumerate()
            .map(|(index, config)| Endpoint::new(index, config).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // A redirect would drop or replay the signed body elsewhere;
            // a 3xx is a failed attempt like any other non-2xx.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("writ/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| WebhookError::Client { reason: error.without_url().to_string() })?;
        let (notices_tx, notices_rx) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let deliveries = Deliveries::new(notices_rx, client, counters.clone(), endpoints.len());
        let shared = Shared { endpoints, notices_tx, counters };
        Ok((Notifier { shared: Some(Arc::new(shared)) }, deliveries))
    }

    /// A notifier for no webhooks: [`Notifier::send`] does nothing.
    pub fn disabled() -> Notifier {
        Notifier { shared: None }
    }

    /// Queues `event` about `approval`, which happened at `at`, for every
    /// endpoint of the approval's group. Never waits, never fails.
    pub fn send(&self, event: WebhookEvent, approval: &Approval, at: DateTime<Utc>) {
        let Some(shared) = &self.shared else { return };
        let targets: Vec<_> =
            shared.endpoints.iter().filter(|endpoint| endpoint.wants(&approval.group)).cloned().collect();
        if targets.is_empty() {
            return;
        }
        let count = targets.len() as u64;
        let notice = body::Notice::new(event, approval, at, targets);
        shared.counters.pending.fetch_add(count, Ordering::Relaxed);
        if let Err(error) = shared.notices_tx.try_send(notice) {
            shared.counters.pending.fetch_sub(count, Ordering::Relaxed);
            let (approval, event) = (approval.id, event.as_str());
            match error {
                mpsc::error::TrySendError::Full(_) => {
                    shared.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%approval, event, "approval webhook queue is full; notice not sent");
                }
                mpsc::error::TrySendError::Closed(_) => {
                    tracing::warn!(%approval, event, "approval webhooks are stopped; notice not sent");
                }
            }
        }
    }

    /// What the worker has done so far.
    pub fn stats(&self) -> DeliveryStats {
        self.shared.as_ref().map(|shared| shared.counters.snapshot()).unwrap_or_default()
    }
}

/// Counts of deliveries, one delivery being one notice to one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Answered with a 2xx.
    pub delivered: u64,
    /// Failed attempts that were followed by a pause and another attempt.
    pub retried: u64,
    /// Given up on, too old ([`RetryPolicy::give_up_after`]).
    pub dropped: u64,
    /// Notices not queued because the queue was full.
    pub queue_full: u64,
    /// Queued or being tried; at shutdown, the undelivered ones.
    pub pending: u64,
}

/// The live counters behind [`DeliveryStats`].
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    queue_full: AtomicU64,
    pending: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DeliveryStats {
        DeliveryStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            queue_full: self.queue_full.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
        }
    }
}

/// One validated endpoint with its signing key.
struct Endpoint {
    url: reqwest::Url,
    /// For logs and errors: scheme, host and port only.
    label: String,
    key: hmac::Key,
    format: WebhookFormat,
    groups: Vec<String>,
}

/// By hand: the key must never show, nor the URL's path.
impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.label)
            .field("key", &"<redacted>")
            .field("format", &self.format)
            .field("groups", &self.groups)
            .finish()
    }
}

impl Endpoint {
    fn new(index: usize, config: &WebhookConfig) -> Result<Self, WebhookError> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|error| WebhookError::InvalidUrl { index, reason: error.to_string() })?;
        let label = url_label(&url);
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError::UnsupportedScheme {
                index,
                url: label,
                scheme: url.scheme().to_owned(),
            });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(WebhookError::UrlHasCredentials { index, url: label });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(WebhookError::InvalidUrl { index, reason: "it has no host".to_owned() });
        }
        if config.groups.iter().any(|group| group.trim().is_empty()) {
            return Err(WebhookError::EmptyGroup { index });
        }
        let key = read_secret(index, &config.secret_file)?;
        Ok(Self { url, label, key, format: config.format, groups: config.groups.clone() })
    }

    /// Whether requests of approver group `group` go here.
    fn wants(&self, group: &str) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|wanted| wanted == group)
    }
}

/// Reads a signing secret: the file's bytes less trailing `\r` and `\n`.
fn read_secret(index: usize, path: &Path) -> Result<hmac::Key, WebhookError> {
    let mut secret = Zeroizing::new(std::fs::read(path).map_err(|source| WebhookError::ReadSecret {
        index,
        path: path.to_owned(),
        source,
    })?);
    let length = secret.iter().rposition(|byte| !matches!(byte, b'\n' | b'\r')).map_or(0, |last| last + 1);
    secret.truncate(length);
    if length < MIN_SECRET_BYTES {
        return Err(WebhookError::SecretTooShort { index, path: path.to_owned(), length });
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &secret))
}

/// `scheme://host[:port]`, and `/…` when there is more: what a log may say
/// of a URL whose path or query may be a token.
fn url_label(url: &reqwest::Url) -> String {
    let mut label = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        label.push_str(&format!(":{port}"));
    }
    if url.path() != "/" || url.query().is_some() {
        label.push_str("/…");
    }
    label
}

fn redacted_url(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(|_| "<not a URL>".to_owned(), |url| url_label(&url))
}
