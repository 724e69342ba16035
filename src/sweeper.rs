//! The expiry sweeper: queues for revocation every active lease whose TTL
//! ran out and every pending lease left behind by an issue that never
//! finished, and closes tasks whose deadline passed; a store that keeps
//! finished leases only for a while (Redis) forgets those past their
//! retention in the same sweep. It sleeps until the store says something
//! falls due (at most the poll interval), and works only on what is due,
//! so a pass costs the same with ten leases in the store or a million.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::audit::AuditEvent;
use crate::clock::Clock;
use crate::config::RevocationConfig;
use crate::domain::Broker;
use crate::model::RevocationReason;
use crate::store::Scope;

const BATCH: usize = 1000;

pub async fn run(
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
    config: RevocationConfig,
    shutdown: CancellationToken,
) {
    tracing::info!("expiry sweeper started");
    loop {
        // Taken before the time, so that a move of a manual clock after it
        // wakes the sleep below.
        let moved = clock.changed();
        let now = clock.now();
        let busy = match sweep_once(&broker, now, &config).await {
            Ok(busy) => {
                if !busy {
                    broker.revocations().swept(now);
                }
                busy
            }
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
            () = moved => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!("expiry sweeper stopped");
}

/// One pass. Returns whether a batch was full (so there may be more).
pub async fn sweep_once(
    broker: &Broker,
    now: chrono::DateTime<chrono::Utc>,
    config: &RevocationConfig,
) -> Result<bool, crate::domain::Error> {
    let pending_before = now - chrono::Duration::from_std(config.pending_timeout).unwrap_or_default();
    let swept = broker.store().sweep(now, pending_before, BATCH).await?;
    // One commit for the whole batch: a thousand expiries recorded one
    // after another would hold the next sweep back by a second or more.
    let requested = (swept.expired.iter().map(|lease| (lease, RevocationReason::Expired)))
        .chain(swept.abandoned.iter().map(|lease| (lease, RevocationReason::Abandoned)))
        .chain(swept.closed.iter().map(|(lease, reason)| (lease, *reason)))
        .map(|(lease, reason)| AuditEvent {
            event: "revocation_requested",
            actor: "writ".into(),
            outcome: "ok",
            agent: Some(lease.agent.clone()),
            task: Some(lease.task_id.clone()),
            lease: Some(lease.id),
            reason: Some(reason.as_str().into()),
            ..AuditEvent::default()
        })
        .collect::<Vec<_>>();
    if !requested.is_empty() {
        broker.audit().record_all_or_log(now, requested).await;
        broker.revocations().wake();
    }
    // Overdue tasks close through the same path as a workflow engine's
    // CloseTask, without waiting for their revocations.
    let overdue = broker.store().overdue_tasks(now, BATCH).await?;
    for task_id in &overdue {
        let scope = Scope::Task(task_id.clone());
        if let Err(error) = broker.end_scope("writ", &scope, RevocationReason::DeadlinePassed, "", now).await
        {
            tracing::warn!(task = %task_id, %error, "cannot close an overdue task");
        }
    }
    // Approval requests past their deadline, or under an ended task or
    // agent, end here.
    let ended_approvals = broker.end_approvals(now).await?;
    if ended_approvals > 0 {
        tracing::debug!(ended = ended_approvals, "approval requests ended");
    }
    if swept.forgotten > 0 || swept.forgotten_tasks > 0 {
        tracing::debug!(
            forgotten = swept.forgotten,
            forgotten_tasks = swept.forgotten_tasks,
            "finished leases and closed tasks past their retention forgotten"
        );
    }
    Ok(swept.expired.len() == BATCH
        || swept.abandoned.len() == BATCH
        || overdue.len() == BATCH
        || swept.forgotten == BATCH
        || swept.forgotten_tasks == BATCH)
}
