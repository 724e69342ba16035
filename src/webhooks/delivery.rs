//! The worker: takes notices off the queue and POSTs each to each of its
//! endpoints, retrying every delivery on its own schedule.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::body::Notice;
use super::signature::sign;
use super::{Counters, Endpoint, RetryPolicy};

/// POSTs in flight at once, across all notices and endpoints.
const MAX_CONCURRENT_ATTEMPTS: usize = 16;

/// Deliveries kept (sending or waiting to retry) before the worker stops
/// taking notices off the queue, which then fills and refuses new ones.
const MAX_IN_FLIGHT: usize = 4096;

/// The background worker that delivers what [`super::Notifier::send`]
/// queues. Run it once with [`Deliveries::run`].
pub struct Deliveries {
    /// `None`: no webhooks are configured; `run` only waits for shutdown.
    worker: Option<Worker>,
    retry: RetryPolicy,
}

struct Worker {
    notices_rx: mpsc::Receiver<Notice>,
    client: reqwest::Client,
    counters: Arc<Counters>,
    endpoints: usize,
}

impl fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints = self.worker.as_ref().map_or(0, |worker| worker.endpoints);
        f.debug_struct("Deliveries").field("endpoints", &endpoints).field("retry", &self.retry).finish()
    }
}

impl Deliveries {
    pub(super) fn new(
        notices_rx: mpsc::Receiver<Notice>,
        client: reqwest::Client,
        counters: Arc<Counters>,
        endpoints: usize,
    ) -> Self {
        let worker = Worker { notices_rx, client, counters, endpoints };
        Self { worker: Some(worker), retry: RetryPolicy::default() }
    }

    pub(super) fn disabled() -> Self {
        Self { worker: None, retry: RetryPolicy::default() }
    }

    /// Retries on `policy` instead of [`RetryPolicy::default`].
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Delivers notices until `shutdown` is cancelled, then stops at once:
    /// attempts in flight are abandoned and the undelivered notices are
    /// counted in the log (Writ re-sends the notices of open requests at
    /// start). Returns only on shutdown, with or without webhooks.
    pub async fn run(self, shutdown: CancellationToken) {
        let endpoints = self.worker.as_ref().map_or(0, |worker| worker.endpoints);
        tracing::info!(endpoints, "approval webhooks started");
        match self.worker {
            Some(worker) => worker.run(self.retry, &shutdown).await,
            None => shutdown.cancelled().await,
        }
        tracing::info!("approval webhooks stopped");
    }
}

impl Worker {
    async fn run(mut self, retry: RetryPolicy, shutdown: &CancellationToken) {
        let attempts = Arc::new(Semaphore::new(MAX_CONCURRENT_ATTEMPTS));
        let mut deliveries = JoinSet::new();
        // False once every `Notifier` is gone: then only shutdown is awaited.
        let mut queue_open = true;
        loop {
            let room = deliveries.len() < MAX_IN_FLIGHT;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(joined) = deliveries.join_next() => {
                    if let Err(error) = joined
                        && error.is_panic()
                    {
                        tracing::error!(%error, "approval webhook delivery panicked");
                    }
                }
                notice = self.notices_rx.recv(), if queue_open && room => match notice {
                    Some(notice) => self.start(notice, retry, &attempts, &mut deliveries),
                    None => queue_open = false,
                },
            }
        }
        deliveries.shutdown().await;
        self.notices_rx.close();
        let undelivered = self.counters.pending.load(Ordering::Relaxed);
        if undelivered > 0 {
            tracing::warn!(
                undelivered,
                "approval webhooks stopping with undelivered notices; \
                 the notices of open requests are sent again at start"
            );
        }
    }

    /// Spawns one delivery per endpoint of `notice`.
    fn start(
        &self,
        notice: Notice,
        retry: RetryPolicy,
        attempts: &Arc<Semaphore>,
        deliveries: &mut JoinSet<()>,
    ) {
        for endpoint in &notice.targets {
            let span = tracing::info_span!(
                "approval_webhook",
                approval = %notice.approval.id,
                event = notice.event.as_str(),
                event_id = %notice.id,
                endpoint = %endpoint.label,
            );
            let body = match notice.render(endpoint.format) {
                Ok(body) => body,
                Err(error) => {
                    span.in_scope(|| tracing::error!(%error, "cannot render approval webhook; dropping it"));
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    self.counters.pending.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
            };
            let delivery = Delivery {
                event_id: notice.id,
                endpoint: endpoint.clone(),
                body,
                enqueued: notice.enqueued,
                client: self.client.clone(),
                counters: self.counters.clone(),
                attempts: attempts.clone(),
                retry,
            };
            deliveries.spawn(delivery.run().instrument(span));
        }
    }
}

/// One notice to one endpoint, tried until delivered or too old.
struct Delivery {
    /// Sent in `Writ-Event-Id` on every attempt.
    event_id: Uuid,
    endpoint: Arc<Endpoint>,
    /// The raw body, the same on every attempt.
    body: Vec<u8>,
    enqueued: tokio::time::Instant,
    client: reqwest::Client,
    counters: Arc<Counters>,
    /// Held during a POST, not during a pause: bounds the POSTs in flight.
    attempts: Arc<Semaphore>,
    retry: RetryPolicy,
}

impl Delivery {
    async fn run(self) {
        let mut attempt: u32 = 1;
        loop {
            let outcome = match self.attempts.acquire().await {
                Ok(_permit) => self.attempt().await,
                // Never closed; were it, there would be nothing to wait for.
                Err(_) => return,
            };
            let failure = match outcome {
                Ok(()) => {
                    if attempt > 1 {
                        tracing::info!(attempts = attempt, "approval webhook delivered");
                    } else {
                        tracing::debug!("approval webhook delivered");
                    }
                    self.settle(&self.counters.delivered);
                    return;
                }
                Err(failure) => failure,
            };
            let age = self.enqueued.elapsed();
            if age >= self.retry.give_up_after {
                tracing::error!(
                    attempts = attempt,
                    failure = %failure,
                    give_up_after = ?self.retry.give_up_after,
                    "approval webhook undelivered for too long; dropping it"
                );
                self.settle(&self.counters.dropped);
                return;
            }
            let backoff = self.retry.delay(attempt, fastrand::f64());
            let asked = failure.retry_after().map_or(Duration::ZERO, |asked| asked.min(self.retry.max));
            let pause = backoff.max(asked).min(self.retry.give_up_after.saturating_sub(age));
            if failure.is_refusal() {
                tracing::warn!(
                    attempt,
                    status = failure.status().map(|status| status.as_u16()),
                    retry_in = ?pause,
                    "approval webhook refused by the receiver; retrying in case it is fixed"
                );
            } else if attempt == 1 {
                tracing::warn!(attempt, failure = %failure, retry_in = ?pause, "approval webhook not delivered; retrying");
            } else {
                tracing::debug!(attempt, failure = %failure, retry_in = ?pause, "approval webhook not delivered; retrying");
            }
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            attempt = attempt.saturating_add(1);
        }
    }

    /// One signed POST; `Ok` on a 2xx.
    async fn attempt(&self) -> Result<(), Failure> {
        let timestamp = Utc::now().timestamp();
        let response = self
            .client
            .post(self.endpoint.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("Writ-Event-Id", self.event_id.to_string())
            .header("Writ-Timestamp", timestamp.to_string())
            .header("Writ-Signature", sign(&self.endpoint.key, timestamp, &self.body))
            .body(self.body.clone())
            .send()
            .await
            // The URL may hold a token: keep it out of the message.
            .map_err(|error| Failure::Transport(error.without_url()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(Failure::Status { status, retry_after: retry_after(response.headers()) })
    }

    /// Counts the delivery as `outcome` and no longer pending.
    fn settle(&self, outcome: &std::sync::atomic::AtomicU64) {
        outcome.fetch_add(1, Ordering::Relaxed);
        self.counters.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why an attempt failed.
enum Failure {
    /// No answer: refused, reset, timed out, TLS.
    Transport(reqwest::Error),
    /// An answer other than 2xx.
    Status { status: StatusCode, retry_after: Option<Duration> },
}

impl Failure {
    fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Transport(_) => None,
        }
    }

    /// A 4xx that is not "try later": the receiver is misconfigured or
    /// refuses the signature. Still retried, but louder.
    fn is_refusal(&self) -> bool {
        self.status().is_some_and(|status| {
            status.is_client_error()
                && status != StatusCode::REQUEST_TIMEOUT
                && status != StatusCode::TOO_MANY_REQUESTS
        })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            Self::Transport(_) => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status { status, .. } => write!(f, "the receiver answered {status}"),
            Self::Transport(error) => {
                write!(f, "{error}")?;
                let mut source = std::error::Error::source(error);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

/// A `Retry-After` in seconds (the HTTP-date form is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn refusals_are_4xx_but_not_408_or_429() {
        let failure =
            |code: u16| Failure::Status { status: StatusCode::from_u16(code).unwrap(), retry_after: None };
        assert!(failure(400).is_refusal());
        assert!(failure(401).is_refusal());
        assert!(failure(404).is_refusal());
        assert!(!failure(408).is_refusal());
        assert!(!failure(429).is_refusal());
        assert!(!failure(500).is_refusal());
        assert!(!failure(503).is_refusal());
    }
}
