//! The revocation queue and its worker.
//!
//! Every path that ends a lease (close, deadline, expiry, release, a failed
//! issue, an abandoned pending lease) only moves the lease to *revoking* in
//! the store. This one worker then claims due revocations, calls the
//! provider, and records the outcome. A failure the provider calls
//! transient ([`ProviderError::is_retryable`]) is retried with exponential
//! backoff and jitter, forever: a revocation is never dropped. One the
//! provider says can never succeed is not retried thousands of times: the
//! lease becomes *failed* with the reason, one audit record says so, and
//! `writ_revocations_failed_total` rises for an operator to act on. A claim
//! that is never finished (the process died) lapses and is taken again.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::audit::AuditEvent;
use crate::clock::Clock;
use crate::config::RevocationConfig;
use crate::domain::Broker;
use crate::model::Lease;
use crate::store::RevocationOutcome;
use writ_provider_api::ProviderError;

/// Signals between the code that queues revocations and the worker.
#[derive(Debug)]
pub struct RevocationQueue {
    /// Wakes the worker when something was queued.
    wake: Notify,
    /// The leases each finished batch is done with (revoked, or failed for
    /// good), once their outcome is in the store, so callers (CloseTask)
    /// can wait for their own leases instead of polling the store.
    finished: broadcast::Sender<Arc<[Uuid]>>,
    /// The time through which the sweeper last found nothing left to do:
    /// every lease due by then was queued. Tests wait on it (and on
    /// `revoked_through`) instead of sleeping, so that a check that
    /// something has not happened yet is exact.
    swept_through: watch::Sender<Option<DateTime<Utc>>>,
    /// The time through which the revocation worker last found no due
    /// revocation left to claim, having started its claim after the
    /// sweeper had queued everything due by then.
    revoked_through: watch::Sender<Option<DateTime<Utc>>>,
}

/// Finished batches a slow subscriber may fall behind by before it is told
/// it lagged (and must ask the store instead).
const FINISHED_BACKLOG: usize = 256;

impl Default for RevocationQueue {
    fn default() -> Self {
        Self {
            wake: Notify::new(),
            finished: broadcast::Sender::new(FINISHED_BACKLOG),
            swept_through: watch::Sender::new(None),
            revoked_through: watch::Sender::new(None),
        }
    }
}

impl RevocationQueue {
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Every batch finished from now on: the ids of the leases it revoked.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[Uuid]>> {
        self.finished.subscribe()
    }

    /// The sweeper has queued everything due by `at`.
    pub(crate) fn swept(&self, at: DateTime<Utc>) {
        self.swept_through.send_replace(Some(at));
    }

    /// Completes once both workers have caught up with `at`: the sweeper
    /// has queued everything due by then, and the revocation worker has
    /// then found nothing due left to claim. With a [`crate::clock::ManualClock`]
    /// that is moved to `at`, both run a pass at once; what they have not
    /// done by then they will not do before the clock moves again.
    pub async fn settled(&self, at: DateTime<Utc>) {
        let mut swept = self.swept_through.subscribe();
        let _ = swept.wait_for(|through| through.is_some_and(|through| through >= at)).await;
        let mut revoked = self.revoked_through.subscribe();
        let _ = revoked.wait_for(|through| through.is_some_and(|through| through >= at)).await;
    }

    fn finished_batch(&self, revoked: Arc<[Uuid]>) {
        // No subscriber is no error: nobody is waiting.
        let _ = self.finished.send(revoked);
    }
}

/// The delay before retry number `attempts` (1-based): doubling from
/// `min`, capped at `max`, then scaled by a random factor in [0.5, 1.0] so
/// that many failures do not retry in lockstep.
pub fn backoff(attempts: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << exponent).min(max);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

const BATCH: usize = 1024;

/// Runs until `shutdown` is cancelled.
///
/// Batches overlap by one step: while a batch's outcomes are being written
/// to the store, the next batch is claimed and revoked. At most one write
/// is in flight, and each is awaited before the next starts, so outcomes
/// land in order and none is left behind when the worker stops. A batch
/// whose claims are near their end (its revocations were slow) is written
/// before the next claim, which would otherwise take those leases again.
/// How often [`watch_backlog`] reads the queue for the metrics.
const BACKLOG_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps the backlog gauges (revocation queue depth, how overdue its head
/// is, open approval requests) up to date: one small read every 5 s. A
/// store that cannot be read leaves the last values and is counted.
pub async fn watch_backlog(broker: Arc<Broker>, clock: Arc<dyn Clock>, stop: CancellationToken) {
    loop {
        match broker.store().backlog().await {
            Ok(backlog) => {
                let now = clock.now();
                let overdue =
                    backlog.earliest_due.and_then(|due| (now - due).to_std().ok()).unwrap_or_default();
                broker.metrics().revocation_backlog(backlog.queued, overdue);
                broker.metrics().approvals_pending(backlog.approvals_open);
            }
            Err(error) => {
                crate::metrics::store_unavailable();
                tracing::debug!(%error, "cannot read the backlog for the metrics");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(BACKLOG_POLL) => {}
        }
    }
}

pub async fn run(
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
    config: RevocationConfig,
    shutdown: CancellationToken,
) {
    tracing::info!("revocation worker started");
    let queue = broker.revocations().clone();
    let claim_timeout = chrono::Duration::from_std(config.claim_timeout).unwrap_or_default();
    let mut finishing: Option<tokio::task::JoinHandle<()>> = None;
    // When the claims of the batch being written lapse.
    let mut finishing_claims_end = DateTime::<Utc>::MAX_UTC;
    loop {
        if clock.now() + claim_timeout / 2 >= finishing_claims_end {
            finished(&mut finishing).await;
        }
        // Taken before the time, so that a move of a manual clock after it
        // wakes the sleep below.
        let moved = clock.changed();
        // What the sweeper had queued when this pass began: an empty claim
        // below settles through that time at most.
        let swept = *queue.swept_through.borrow();
        let now = clock.now();
        let claim_until = now + claim_timeout;
        let claimed = match broker.store().claim_revocations(now, claim_until, BATCH).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "cannot claim revocations; retrying");
                finished(&mut finishing).await;
                if sleep_or_stop(&shutdown, &queue, moved, config.poll_interval).await {
                    break;
                }
                continue;
            }
        };
        if claimed.is_empty() {
            finished(&mut finishing).await;
            queue.revoked_through.send_replace(swept.map(|swept| swept.min(now)));
            let pause = next_pause(&broker, clock.as_ref(), config.poll_interval).await;
            if sleep_or_stop(&shutdown, &queue, moved, pause).await {
                break;
            }
            continue;
        }
        let full = claimed.len() == BATCH;
        let outcomes = revoke_all(&broker, claimed, &config, &clock).await;
        finished(&mut finishing).await;
        let (broker, now) = (broker.clone(), clock.now());
        finishing = Some(tokio::spawn(async move { finish(&broker, &outcomes, now).await }));
        finishing_claims_end = claim_until;
        if !full && shutdown.is_cancelled() {
            break;
        }
    }
    finished(&mut finishing).await;
    tracing::info!("revocation worker stopped");
}

/// Waits for the write of the previous batch's outcomes, if one is running.
async fn finished(finishing: &mut Option<tokio::task::JoinHandle<()>>) {
    if let Some(finishing) = finishing.take()
        && finishing.await.is_err()
    {
        tracing::error!("recording revocation outcomes panicked; the claims will lapse and run again");
    }
}

/// Records a batch's outcomes, then tells those waiting which leases it
/// revoked.
async fn finish(broker: &Broker, outcomes: &[RevocationOutcome], now: DateTime<Utc>) {
    match broker.store().finish_revocations(outcomes, now).await {
        Ok(()) => broker.revocations().finished_batch(
            outcomes
                .iter()
                .filter_map(|outcome| match outcome {
                    RevocationOutcome::Done { lease_id, .. } | RevocationOutcome::GaveUp { lease_id, .. } => {
                        Some(*lease_id)
                    }
                    RevocationOutcome::Retry { .. } => None,
                })
                .collect(),
        ),
        // The claims lapse and the revocations run again: revoking is
        // idempotent, so nothing is lost by repeating.
        Err(error) => tracing::warn!(%error, "cannot record revocation outcomes; they will be retried"),
    }
}

async fn revoke_all(
    broker: &Arc<Broker>,
    claimed: Vec<Lease>,
    config: &RevocationConfig,
    clock: &Arc<dyn Clock>,
) -> Vec<RevocationOutcome> {
    let limit = Arc::new(tokio::sync::Semaphore::new(config.concurrency));
    let mut running = JoinSet::new();
    for lease in claimed {
        let (broker, limit, clock, config) = (broker.clone(), limit.clone(), clock.clone(), config.clone());
        // Each revocation records its own evidence, so the audit writes of a
        // batch are group-committed together instead of one after another.
        running.spawn(async move {
            let result = {
                let _permit = limit.acquire_owned().await;
                broker.revoke_at_provider(&lease).await
            };
            outcome(&broker, &lease, result, &config, clock.now()).await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(outcome) => outcomes.push(outcome),
            Err(_) => {
                tracing::error!("a revocation task panicked; its claim will lapse and it will run again")
            }
        }
    }
    outcomes
}

async fn outcome(
    broker: &Broker,
    lease: &Lease,
    result: Result<(), ProviderError>,
    config: &RevocationConfig,
    now: DateTime<Utc>,
) -> RevocationOutcome {
    let revocation = lease.revocation.as_ref();
    let attempts = revocation.map_or(1, |r| r.attempts.max(1));
    let generation = revocation.map_or(0, |r| r.generation);
    let reason = revocation.map(|r| r.reason.as_str().to_string());
    let event = |name: &'static str, outcome: &'static str, details| AuditEvent {
        event: name,
        actor: "writ".into(),
        outcome,
        agent: Some(lease.agent.clone()),
        task: Some(lease.task_id.clone()),
        provider: Some(lease.provider.clone()),
        role: Some(lease.role.clone()),
        lease: Some(lease.id),
        reason: reason.clone(),
        details: Some(details),
        ..AuditEvent::default()
    };
    match result {
        Ok(()) => {
            broker.metrics().revocation_done(&lease.provider);
            if revocation.is_some_and(|r| r.reason == crate::model::RevocationReason::Expired) {
                let lag = (now - lease.expires_at).to_std().unwrap_or_default();
                broker.metrics().expiry_lag(&lease.provider, lag);
            }
            broker.caep().lease_revoked(lease, now);
            broker.audit().record_or_log(now, event("revoked", "ok", json!({ "attempts": attempts }))).await;
            RevocationOutcome::Done { lease_id: lease.id, generation }
        }
        Err(error) if !error.is_retryable() && attempts >= config.give_up_after => {
            // Writ has ended the session even if the provider cannot.
            broker.caep().lease_revoked(lease, now);
            let error = error.to_string();
            tracing::error!(lease = %lease.id, provider = %lease.provider, attempts, %error, "revocation can never succeed; the lease is failed and needs an operator");
            broker.metrics().revocation_failed(&lease.provider);
            broker
                .audit()
                .record_or_log(
                    now,
                    event("revocation_failed", "error", json!({ "attempts": attempts, "error": error })),
                )
                .await;
            RevocationOutcome::GaveUp { lease_id: lease.id, generation, error }
        }
        Err(error) => {
            if attempts == 1 {
                // Receivers hear now, not after the provider recovers; the
                // SET sent again on success has the same `jti`.
                broker.caep().lease_revoked(lease, now);
            }
            let error = error.to_string();
            let delay = backoff(attempts, config.min_backoff, config.max_backoff, fastrand::f64());
            let next_attempt_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
            tracing::warn!(lease = %lease.id, provider = %lease.provider, attempts, %error, retry_in = ?delay, "revocation failed; will retry");
            broker.metrics().revocation_retried(&lease.provider);
            broker
                .audit()
                .record_or_log(
                    now,
                    event(
                        "revocation_retry",
                        "error",
                        json!({ "attempts": attempts, "error": error, "next_attempt_at": next_attempt_at }),
                    ),
                )
                .await;
            RevocationOutcome::Retry { lease_id: lease.id, generation, next_attempt_at, error }
        }
    }
}

/// How long to sleep when there is nothing to do: until the next thing
/// falls due, at most `poll`.
pub(crate) async fn next_pause(broker: &Broker, clock: &dyn Clock, poll: Duration) -> Duration {
    match broker.store().next_due().await {
        Ok(Some(due)) => {
            (due - clock.now()).to_std().unwrap_or_default().max(Duration::from_millis(5)).min(poll)
        }
        _ => poll,
    }
}

/// Sleeps for `pause`, or less if woken or the clock is moved by hand.
/// Returns true if shutdown began.
async fn sleep_or_stop(
    shutdown: &CancellationToken,
    queue: &RevocationQueue,
    moved: impl std::future::Future<Output = ()>,
    pause: Duration,
) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = queue.wake.notified() => false,
        () = moved => false,
        () = tokio::time::sleep(pause) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(60));
        assert_eq!(backoff(1, min, max, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(2, min, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(4, min, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(20, min, max, 1.0), max);
        assert_eq!(backoff(u32::MAX, min, max, 1.0), max);
        assert_eq!(backoff(1, min, max, 0.0), Duration::from_millis(250));
    }
}
