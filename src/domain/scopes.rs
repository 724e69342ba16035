//! Ending everything issued under one scope: closing a task, suspending an
//! agent. One path for both, and for every caller (a workflow engine's
//! CloseTask, the sweeper's overdue tasks, an operator's suspension): the
//! store ends the scope and queues its leases in one operation
//! ([`LeaseStore::close_scope`](crate::store::LeaseStore::close_scope)),
//! the evidence names what ended and why, and the caller may wait for the
//! revocations to finish.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Broker, Error, quoted};
use crate::audit::AuditEvent;
use crate::model::{AgentState, AgentStatus, Lease, LeaseState, RevocationReason};
use crate::store::{ClosedScope, Closure, LeaseFilter, Scope, StoreError};

/// What ending a scope did, once the wait for its revocations is over.
#[derive(Clone, Debug)]
pub struct ScopeOutcome {
    pub closed: ClosedScope,
    /// Leases of the scope revoked at their provider when the call returned.
    pub revoked: usize,
    /// Leases whose revocation is still being retried.
    pub retrying: usize,
    /// Leases whose revocation the provider said can never succeed.
    pub failed: usize,
}

/// Leases read per page when counting an agent's revocations.
const PAGE: usize = 1000;
/// How often a wait for revocations reads the store, besides hearing of
/// this replica's own.
const RECOUNT_EVERY: Duration = Duration::from_millis(100);
/// The most outstanding leases read at each of those (about 5 ms per
/// thousand on Redis), and how many at once.
const TICK_OFF: usize = 20_000;
const READ_AT_ONCE: usize = 1000;
/// How often, at most, a wait counts a scope's leases in full.
const FULL_COUNT_EVERY: Duration = Duration::from_millis(200);

impl Broker {
    /// Ends `scope` and queues everything issued under it for revocation,
    /// with evidence; does not wait for the revocations.
    pub(crate) async fn end_scope(
        &self,
        caller: &str,
        scope: &Scope,
        reason: RevocationReason,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<ClosedScope, Error> {
        let closure = Closure { by: caller.to_owned(), reason, note: note.to_owned() };
        let closed = match self.store.close_scope(scope, &closure, now).await {
            Ok(closed) => closed,
            Err(error) => {
                // The scope may be ended already (on Redis the first batch
                // ends it): the attempt is evidence too.
                let attempt = scope_event(scope, caller, reason, note, "error", None);
                self.audit.record_or_log(now, attempt).await;
                return Err(error.into());
            }
        };
        if !closed.revoking.is_empty() {
            self.revocations.wake();
        }
        if let (Scope::Agent(agent), true) = (scope, closed.ended_now) {
            self.caep.agent_revoked(agent, reason, now);
        }
        if closed.ended_now || !closed.revoking.is_empty() {
            // The scope is ended whatever the audit log says: refusing to
            // stop issuing because evidence cannot be written would be
            // failing open.
            let evidence = scope_event(scope, caller, reason, note, "ok", Some(&closed));
            self.audit.record_or_log(now, evidence).await;
            // Its approval requests can no longer be decided or collected
            // (the store refuses both already); end them now rather than at
            // the next sweep, so approvers stop seeing them.
            if let Err(error) = self.end_approvals(now).await {
                tracing::warn!(%error, "cannot end the approval requests of an ended scope; the sweeper will");
            }
        }
        Ok(closed)
    }

    /// Suspends an agent (the kill switch): from the moment this returns
    /// nothing more is issued, activated or renewed for it on any replica,
    /// and every lease it holds, in every task, is queued for revocation.
    /// Waits up to `limits.close_wait` for the revocations.
    pub async fn suspend_agent(
        &self,
        caller: &str,
        agent: &str,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<ScopeOutcome, Error> {
        if self.store.get_agent(agent).await?.is_none() {
            return Err(Error::NotFound(format!("agent {} is not registered", quoted(agent))));
        }
        let scope = Scope::Agent(agent.to_owned());
        let finished = self.revocations.subscribe();
        let closed = self.end_scope(caller, &scope, RevocationReason::AgentSuspended, note, now).await?;
        if !closed.ended_now {
            return Err(Error::FailedPrecondition(format!("agent {} is suspended already", quoted(agent))));
        }
        self.wait_for_scope(closed, &scope, finished).await
    }

    /// Lifts an agent's suspension. What the suspension revoked stays
    /// revoked.
    pub async fn resume_agent(
        &self,
        caller: &str,
        agent: &str,
        note: &str,
        now: DateTime<Utc>,
    ) -> Result<AgentStatus, Error> {
        if self.store.get_agent(agent).await?.is_none() {
            return Err(Error::NotFound(format!("agent {} is not registered", quoted(agent))));
        }
        let suspended =
            self.registry.status(agent).await?.is_some_and(|status| status.state == AgentState::Suspended);
        if !suspended {
            return Err(StoreError::AgentNotSuspended(agent.to_owned()).into());
        }
        // Resuming gives access back: its evidence is durable first, and
        // without it nothing is resumed.
        self.audit
            .record(
                now,
                AuditEvent {
                    event: "agent_resumed",
                    actor: caller.to_owned(),
                    outcome: "ok",
                    agent: Some(agent.to_owned()),
                    details: (!note.is_empty()).then(|| json!({ "note": note })),
                    ..AuditEvent::default()
                },
            )
            .await?;
        Ok(self.store.resume_agent(agent, caller, note, now).await?)
    }

    /// Waits until every lease of the scope is final or `limits.close_wait`
    /// passes, and counts (revoked, still retrying). `finished` must have
    /// been subscribed before the scope was ended, so that no batch is
    /// missed.
    pub(crate) async fn wait_for_scope(
        &self,
        closed: ClosedScope,
        scope: &Scope,
        finished: broadcast::Receiver<Arc<[Uuid]>>,
    ) -> Result<ScopeOutcome, Error> {
        self.wait_for_scope_within(closed, scope, finished, self.limits.close_wait).await
    }

    /// [`Self::wait_for_scope`], waiting at most `wait`.
    pub(crate) async fn wait_for_scope_within(
        &self,
        closed: ClosedScope,
        scope: &Scope,
        finished: broadcast::Receiver<Arc<[Uuid]>>,
        wait: Duration,
    ) -> Result<ScopeOutcome, Error> {
        let progress = self.wait_for_revocations(scope, &closed.revoking, finished, wait).await?;
        Ok(ScopeOutcome {
            closed,
            revoked: progress.revoked,
            retrying: progress.retrying,
            failed: progress.failed,
        })
    }

    /// The leases this close queued are ticked off as the worker reports
    /// them revoked, without reading the store; the store is read once they
    /// are all done (to count, and to catch leases that were revoking
    /// before the close or are revoked by another replica), after every
    /// later batch until nothing is left, and when `wait` runs out.
    async fn wait_for_revocations(
        &self,
        scope: &Scope,
        queued: &[Uuid],
        mut finished: broadcast::Receiver<Arc<[Uuid]>>,
        wait: Duration,
    ) -> Result<Progress, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut all_queued: HashSet<Uuid> = queued.iter().copied().collect();
        if let Some(filter) = suspended_by(scope) {
            // On Redis another replica may have moved some of the agent's
            // (or provider's) leases meanwhile (finishing what looked like a
            // cut-short close): they are this suspension's too.
            match self.leases_in(&filter, LeaseState::Revoking).await {
                Ok(revoking) => all_queued.extend(revoking.iter().map(|lease| lease.id)),
                Err(error) => {
                    tracing::warn!(%error, "cannot list the agent's revoking leases; counting this replica's")
                }
            }
        }
        let mut outstanding = all_queued.clone();
        let mut counted: Option<tokio::time::Instant> = None;
        loop {
            // All heard of: count from the store (at most every
            // FULL_COUNT_EVERY: on the embedded store an agent's count
            // walks its history).
            if outstanding.is_empty() && counted.is_none_or(|at| at.elapsed() >= FULL_COUNT_EVERY) {
                match self.revocation_progress(scope, &all_queued).await {
                    Ok(progress) if progress.retrying == 0 => return Ok(progress),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "cannot count the revocations yet; waiting on"),
                }
                counted = Some(tokio::time::Instant::now());
            }
            let look = deadline.min(tokio::time::Instant::now() + RECOUNT_EVERY);
            match tokio::time::timeout_at(look, finished.recv()).await {
                Ok(Ok(batch)) => {
                    for lease_id in batch.iter() {
                        outstanding.remove(lease_id);
                    }
                }
                // Too far behind to know which were revoked, or another
                // replica's worker revoked some (this replica never hears
                // of those): read the ones still outstanding.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => self.tick_off(&mut outstanding).await,
                Err(_) if look < deadline => self.tick_off(&mut outstanding).await,
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                    return self.revocation_progress(scope, &all_queued).await;
                }
            }
        }
    }

    /// Drops from `outstanding` the leases the store says are final (or
    /// gone), reading at most [`TICK_OFF`] of them, [`READ_AT_ONCE`] at a
    /// time.
    async fn tick_off(&self, outstanding: &mut HashSet<Uuid>) {
        let ids: Vec<Uuid> = outstanding.iter().take(TICK_OFF).copied().collect();
        for chunk in ids.chunks(READ_AT_ONCE) {
            let mut reads = tokio::task::JoinSet::new();
            for &id in chunk {
                let store = self.store.clone();
                reads.spawn(async move { (id, store.get_lease(id).await) });
            }
            while let Some(read) = reads.join_next().await {
                if let Ok((id, Ok(lease))) = read
                    && lease.is_none_or(|lease| lease.state.is_final())
                {
                    outstanding.remove(&id);
                }
            }
        }
    }

    /// How far the scope's leases are, from the store. For a task: all
    /// its leases. For an agent, whose history may be long: the leases this
    /// suspension `queued`, and any of the agent's still being revoked,
    /// read from the (small) revoking and failed states only.
    async fn revocation_progress(&self, scope: &Scope, queued: &HashSet<Uuid>) -> Result<Progress, Error> {
        match scope {
            Scope::Task(task_id) => {
                let leases = self.store.task_leases(task_id).await?;
                let failed = leases.iter().filter(|lease| lease.revocation_gave_up()).count();
                let finished = leases.iter().filter(|lease| lease.state.is_final()).count();
                Ok(Progress { revoked: finished - failed, retrying: leases.len() - finished, failed })
            }
            Scope::Agent(_) | Scope::Provider(_) => {
                let filter = suspended_by(scope).unwrap_or_default();
                let revoking = self.leases_in(&filter, LeaseState::Revoking).await?;
                let failed = self
                    .leases_in(&filter, LeaseState::Failed)
                    .await?
                    .iter()
                    .filter(|lease| queued.contains(&lease.id) && lease.revocation_gave_up())
                    .count();
                let still_queued = revoking.iter().filter(|lease| queued.contains(&lease.id)).count();
                let revoked = queued.len().saturating_sub(still_queued + failed);
                Ok(Progress { revoked, retrying: revoking.len(), failed })
            }
        }
    }

    /// Every lease `filter` names in `state`, a page at a time.
    async fn leases_in(&self, filter: &LeaseFilter, state: LeaseState) -> Result<Vec<Lease>, Error> {
        let filter = LeaseFilter { state: Some(state), ..filter.clone() };
        let mut leases = Vec::new();
        loop {
            let page =
                self.store.list_leases(&filter, leases.last().map(|lease: &Lease| lease.id), PAGE).await?;
            let full = page.len() == PAGE;
            leases.extend(page);
            if !full {
                return Ok(leases);
            }
        }
    }
}

/// The leases of a suspended agent or provider (a task's are read whole).
fn suspended_by(scope: &Scope) -> Option<LeaseFilter> {
    match scope {
        Scope::Task(_) => None,
        Scope::Agent(agent) => Some(LeaseFilter { agent: Some(agent.clone()), ..LeaseFilter::default() }),
        Scope::Provider(provider) => {
            Some(LeaseFilter { provider: Some(provider.clone()), ..LeaseFilter::default() })
        }
    }
}

/// The evidence of ending a scope: `task_closed`, `agent_suspended` or
/// `provider_suspended`.
fn scope_event(
    scope: &Scope,
    caller: &str,
    reason: RevocationReason,
    note: &str,
    outcome: &'static str,
    closed: Option<&ClosedScope>,
) -> AuditEvent {
    let (event, agent, task) = match scope {
        Scope::Task(task_id) => (
            "task_closed",
            closed.and_then(|closed| closed.task.as_ref()).map(|task| task.agent.clone()),
            Some(task_id.clone()),
        ),
        Scope::Agent(agent) => ("agent_suspended", Some(agent.clone()), None),
        Scope::Provider(_) => ("provider_suspended", None, None),
    };
    let mut details = json!({});
    if let Some(closed) = closed {
        details["revoking"] = json!(closed.revoking.len());
        if !closed.ended_now {
            details["finished_a_cut_short_close"] = json!(true);
        }
    }
    if !note.is_empty() {
        details["note"] = json!(note);
    }
    AuditEvent {
        event,
        actor: caller.to_owned(),
        outcome,
        agent,
        task,
        provider: match scope {
            Scope::Provider(provider) => Some(provider.clone()),
            _ => None,
        },
        reason: Some(reason.as_str().to_owned()),
        details: Some(details),
        ..AuditEvent::default()
    }
}

/// Where a scope's leases are: revoked (or cleaned up after a failed
/// mint), still being retried, or failed for good.
struct Progress {
    revoked: usize,
    retrying: usize,
    failed: usize,
}
