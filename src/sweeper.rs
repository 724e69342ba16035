//! The expiry sweeper: queues for revocation every active lease whose TTL
//! ran out and every pending lease left behind by an issue that never
//! finished, and closes tasks whose deadline passed. It sleeps until the
//! store says something falls due (at most the poll interval).

use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditEvent;
use crate::clock::Clock;
use crate::config::RevocationConfig;
use crate::domain::Broker;
use crate::model::RevocationReason;

const BATCH: usize = 1000;

pub async fn run(
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
    config: RevocationConfig,
    shutdown: CancellationToken,
) {
    tracing::info!("expiry sweeper started");
    loop {
        let busy = match sweep_once(&broker, clock.as_ref(), &config).await {
            Ok(busy) => busy,
            Err(error) => {
                tracing::warn!(%error, "sweep failed; retrying");
                false
            }
        };
        let pause = if busy {
            std::time::Duration::ZERO
        } else {
            crate::revocation::next_pause(&broker, clock.as_ref(), config.poll_interval).await
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!("expiry sweeper stopped");
}

/// One pass. Returns whether a batch was full (so there may be more).
pub async fn sweep_once(
    broker: &Broker,
    clock: &dyn Clock,
    config: &RevocationConfig,
) -> Result<bool, crate::domain::Error> {
    let now = clock.now();
    let pending_before = now - chrono::Duration::from_std(config.pending_timeout).unwrap_or_default();
    let swept = broker.store().sweep(now, pending_before, BATCH).await?;
    for (ids, reason) in
        [(&swept.expired, RevocationReason::Expired), (&swept.abandoned, RevocationReason::Abandoned)]
    {
        for lease in ids {
            broker
                .audit()
                .record_or_log(
                    now,
                    AuditEvent {
                        event: "revocation_requested",
                        actor: "writ".into(),
                        outcome: "ok",
                        lease: Some(*lease),
                        reason: Some(reason.as_str().into()),
                        ..AuditEvent::default()
                    },
                )
                .await;
        }
    }
    let overdue = broker.store().overdue_tasks(now, BATCH).await?;
    for task_id in &overdue {
        match broker.store().close_task(task_id, "writ", RevocationReason::DeadlinePassed, now).await {
            Ok(closed) => {
                broker
                    .audit()
                    .record_or_log(
                        now,
                        AuditEvent {
                            event: "task_closed",
                            actor: "writ".into(),
                            outcome: "ok",
                            agent: Some(closed.task.agent.clone()),
                            task: Some(task_id.clone()),
                            reason: Some(RevocationReason::DeadlinePassed.as_str().into()),
                            details: Some(json!({ "revoking": closed.revoking.len() })),
                            ..AuditEvent::default()
                        },
                    )
                    .await;
            }
            Err(error) => tracing::warn!(task = %task_id, %error, "cannot close an overdue task"),
        }
    }
    if !swept.expired.is_empty() || !swept.abandoned.is_empty() || !overdue.is_empty() {
        broker.revocations().wake();
    }
    Ok(swept.expired.len() == BATCH || swept.abandoned.len() == BATCH || overdue.len() == BATCH)
}
