//! The write operations, each split in two: a plan that reads and checks
//! everything and decides the rows to write, then the writes
//! ([`WriteTables::apply`]). A plan that fails has written nothing, so its
//! operation can fail alone while the rest of its batch commits.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use uuid::Uuid;

use super::tables::{
    Change, WriteTables, decode, due_leases, get_agent, get_lease, get_provider, get_task, indexed_lease,
    state_key, storage_error, task_leases,
};
use crate::model::{
    AgentState, AgentStatus, Lease, LeaseState, ProviderStatus, Revocation, RevocationReason, SealedHandle,
    Sighting, Task, TaskClosure, TaskState,
};
use crate::store::{ClosedScope, Closure, RevocationOutcome, Scope, StoreError, Swept, SweptLease};

/// What an operation will answer, and the rows it writes to get there.
pub(super) struct Planned<T> {
    /// Usually `Ok` when there are changes; `activate` of a lease that is
    /// no longer pending writes the handle and still answers an error.
    pub(super) reply: Result<T, StoreError>,
    pub(super) changes: Vec<Change>,
}

impl<T> Planned<T> {
    pub(super) fn done(value: T, changes: Vec<Change>) -> Result<Self, StoreError> {
        Ok(Self { reply: Ok(value), changes })
    }
}

pub(super) fn create_task(tables: &WriteTables<'_>, task: Task) -> Result<Planned<()>, StoreError> {
    if get_task(&tables.tasks, &task.id)?.is_some() {
        return Err(StoreError::TaskExists(task.id));
    }
    Planned::done((), vec![Change::task(None, task)?])
}

pub(super) fn close_scope(
    tables: &WriteTables<'_>,
    scope: &Scope,
    closure: &Closure,
    now: DateTime<Utc>,
) -> Result<Planned<ClosedScope>, StoreError> {
    let (ended, mut changes, leases) = match scope {
        Scope::Task(task_id) => {
            let task = get_task(&tables.tasks, task_id)?
                .ok_or_else(|| StoreError::TaskNotFound(task_id.to_owned()))?;
            if task.state == TaskState::Closed {
                let ended = ClosedScope {
                    task: Some(task),
                    agent: None,
                    provider: None,
                    ended_now: false,
                    revoking: Vec::new(),
                };
                return Planned::done(ended, Vec::new());
            }
            let mut closed = task.clone();
            closed.state = TaskState::Closed;
            closed.closed = Some(TaskClosure { at: now, by: closure.by.clone(), reason: closure.reason });
            let changes = vec![Change::task(Some(task), closed.clone())?];
            let leases = task_leases(&tables.leases_by_task, &tables.leases, task_id)?;
            (
                ClosedScope {
                    task: Some(closed),
                    agent: None,
                    provider: None,
                    ended_now: true,
                    revoking: Vec::new(),
                },
                changes,
                leases,
            )
        }
        Scope::Agent(agent) => {
            if let Some(status) = get_agent(&tables.agents, agent)?
                && status.state == AgentState::Suspended
            {
                let ended = ClosedScope {
                    task: None,
                    agent: Some(status),
                    provider: None,
                    ended_now: false,
                    revoking: Vec::new(),
                };
                return Planned::done(ended, Vec::new());
            }
            let status = AgentStatus {
                agent: agent.clone(),
                state: AgentState::Suspended,
                changed_at: now,
                changed_by: closure.by.clone(),
                reason: closure.note.clone(),
            };
            let changes = vec![Change::agent(status.clone())?];
            let leases = task_leases(&tables.leases_by_agent, &tables.leases, agent)?;
            (
                ClosedScope {
                    task: None,
                    agent: Some(status),
                    provider: None,
                    ended_now: true,
                    revoking: Vec::new(),
                },
                changes,
                leases,
            )
        }
        Scope::Provider(provider) => {
            if let Some(status) = get_provider(&tables.providers, provider)?
                && status.state == AgentState::Suspended
            {
                let ended = ClosedScope {
                    task: None,
                    agent: None,
                    provider: Some(status),
                    ended_now: false,
                    revoking: Vec::new(),
                };
                return Planned::done(ended, Vec::new());
            }
            let status = ProviderStatus {
                provider: provider.clone(),
                state: AgentState::Suspended,
                changed_at: now,
                changed_by: closure.by.clone(),
                reason: closure.note.clone(),
            };
            let changes = vec![Change::provider(status.clone())?];
            // No index by provider: its live leases are found among all the
            // pending and active ones, in this one transaction.
            let mut leases = Vec::new();
            for state in [LeaseState::Pending, LeaseState::Active] {
                let range = state_key(state, 0)..=state_key(state, u128::MAX);
                for entry in tables.leases_by_state.range(range).map_err(storage_error)? {
                    let (key, _) = entry.map_err(storage_error)?;
                    let lease = indexed_lease(&tables.leases, key.value().1)?;
                    if lease.provider == *provider {
                        leases.push(lease);
                    }
                }
            }
            (
                ClosedScope {
                    task: None,
                    agent: None,
                    provider: Some(status),
                    ended_now: true,
                    revoking: Vec::new(),
                },
                changes,
                leases,
            )
        }
    };
    let mut ended = ended;
    for lease in leases {
        if matches!(lease.state, LeaseState::Pending | LeaseState::Active) {
            ended.revoking.push(lease.id);
            changes.push(to_revoking(lease, closure.reason, now)?);
        }
    }
    Planned::done(ended, changes)
}

pub(super) fn resume_provider(
    tables: &WriteTables<'_>,
    provider: &str,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Planned<ProviderStatus>, StoreError> {
    let suspended = get_provider(&tables.providers, provider)?
        .is_some_and(|status| status.state == AgentState::Suspended);
    if !suspended {
        return Err(StoreError::ProviderNotSuspended(provider.to_owned()));
    }
    let status = ProviderStatus {
        provider: provider.to_owned(),
        state: AgentState::Active,
        changed_at: now,
        changed_by: by.to_owned(),
        reason: reason.to_owned(),
    };
    Planned::done(status.clone(), vec![Change::provider(status)?])
}

pub(super) fn resume_agent(
    tables: &WriteTables<'_>,
    agent: &str,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Planned<AgentStatus>, StoreError> {
    let suspended =
        get_agent(&tables.agents, agent)?.is_some_and(|status| status.state == AgentState::Suspended);
    if !suspended {
        return Err(StoreError::AgentNotSuspended(agent.to_owned()));
    }
    if super::registry::is_retired(&tables.registry, agent)? {
        return Err(StoreError::AgentRetired(agent.to_owned()));
    }
    let status = AgentStatus {
        agent: agent.to_owned(),
        state: AgentState::Active,
        changed_at: now,
        changed_by: by.to_owned(),
        reason: reason.to_owned(),
    };
    Planned::done(status.clone(), vec![Change::agent(status)?])
}

/// Why nothing may be issued under `lease` at `now`, if so: the error to
/// answer, and the reason to revoke the lease with. A closed task or one
/// past its deadline, then a suspended agent, then (for a lease) a
/// suspended provider.
pub(super) fn refusal(
    tables: &WriteTables<'_>,
    task_id: &str,
    agent: &str,
    provider: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<(StoreError, RevocationReason)>, StoreError> {
    let task =
        get_task(&tables.tasks, task_id)?.ok_or_else(|| StoreError::TaskNotFound(task_id.to_owned()))?;
    if !task.is_open_at(now) {
        let reason = task.closed.map_or(RevocationReason::DeadlinePassed, |closure| closure.reason);
        return Ok(Some((StoreError::TaskClosed(task.id), reason)));
    }
    if get_agent(&tables.agents, agent)?.is_some_and(|status| status.state == AgentState::Suspended) {
        return Ok(Some((StoreError::AgentSuspended(agent.to_owned()), RevocationReason::AgentSuspended)));
    }
    if let Some(provider) = provider
        && get_provider(&tables.providers, provider)?
            .is_some_and(|status| status.state == AgentState::Suspended)
    {
        return Ok(Some((
            StoreError::ProviderSuspended(provider.to_owned()),
            RevocationReason::ProviderSuspended,
        )));
    }
    Ok(None)
}

pub(super) fn insert_pending(
    tables: &WriteTables<'_>,
    lease: Lease,
    now: DateTime<Utc>,
) -> Result<Planned<()>, StoreError> {
    if let Some((refused, _)) = refusal(tables, &lease.task_id, &lease.agent, Some(&lease.provider), now)? {
        return Err(refused);
    }
    if lease.state != LeaseState::Pending {
        return Err(StoreError::LeaseState { id: lease.id, state: lease.state });
    }
    // Overwriting would orphan the existing lease's index entries; there is
    // no `LeaseExists`, and "not in the state the change needs" is the truth.
    if let Some(existing) = get_lease(&tables.leases, lease.id.as_u128())? {
        return Err(StoreError::LeaseState { id: existing.id, state: existing.state });
    }
    Planned::done((), vec![Change::lease(None, lease)?])
}

pub(super) fn activate(
    tables: &WriteTables<'_>,
    lease_id: Uuid,
    expires_at: DateTime<Utc>,
    handle: SealedHandle,
    now: DateTime<Utc>,
) -> Result<Planned<Lease>, StoreError> {
    let lease = existing_lease(tables, lease_id)?;
    let mut updated = lease.clone();
    updated.handle = handle;
    if lease.state == LeaseState::Pending
        && let Some((refused, reason)) =
            refusal(tables, &lease.task_id, &lease.agent, Some(&lease.provider), now)?
    {
        // Its task closed, or its agent was suspended, by a close that has
        // not reached this lease yet: it goes now, with the close's reason,
        // and with the handle of what was minted.
        let revoking = revoking(updated, reason, now);
        return Ok(Planned { reply: Err(refused), changes: vec![Change::lease(Some(lease), revoking)?] });
    }
    match lease.state {
        LeaseState::Pending => {
            updated.state = LeaseState::Active;
            updated.issued_at = Some(now);
            updated.expires_at = expires_at;
            Planned::done(updated.clone(), vec![Change::lease(Some(lease), updated)?])
        }
        // Closed meanwhile: the credential exists at the provider now, and
        // the queued revocation must use its real handle, even if an attempt
        // with the intent handle is under way (its outcome becomes stale).
        LeaseState::Revoking => {
            let revocation = revocation_of(&mut updated)?;
            revocation.generation = revocation.generation.wrapping_add(1);
            revocation.next_attempt_at = now;
            Ok(Planned {
                reply: Err(StoreError::LeaseState { id: lease_id, state: lease.state }),
                changes: vec![Change::lease(Some(lease), updated)?],
            })
        }
        // The revocation finished (with the intent handle) before the mint
        // returned: the credential that now exists must be revoked too, so
        // queue the lease again with its real handle.
        LeaseState::Revoked | LeaseState::Failed => {
            updated.state = LeaseState::Revoking;
            let revocation = revocation_of(&mut updated)?;
            revocation.generation = revocation.generation.wrapping_add(1);
            revocation.next_attempt_at = now;
            revocation.completed_at = None;
            Ok(Planned {
                reply: Err(StoreError::LeaseState { id: lease_id, state: lease.state }),
                changes: vec![Change::lease(Some(lease), updated)?],
            })
        }
        state => Err(StoreError::LeaseState { id: lease_id, state }),
    }
}

pub(super) fn extend(
    tables: &WriteTables<'_>,
    lease_id: Uuid,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Planned<Lease>, StoreError> {
    let lease = existing_lease(tables, lease_id)?;
    if lease.state != LeaseState::Active {
        return Err(StoreError::LeaseState { id: lease_id, state: lease.state });
    }
    if let Some((refused, _)) = refusal(tables, &lease.task_id, &lease.agent, Some(&lease.provider), now)? {
        return Err(refused);
    }
    let mut extended = lease.clone();
    extended.expires_at = expires_at;
    Planned::done(extended.clone(), vec![Change::lease(Some(lease), extended)?])
}

/// Unknown ids are left alone like leases in other states: the caller asks
/// for an end state, and a lease that does not exist is already there.
pub(super) fn request_revocation(
    tables: &WriteTables<'_>,
    lease_ids: &[Uuid],
    reason: RevocationReason,
    now: DateTime<Utc>,
) -> Result<Planned<Vec<Uuid>>, StoreError> {
    let mut moved = Vec::new();
    let mut changes = Vec::new();
    for &lease_id in lease_ids {
        if moved.contains(&lease_id) {
            continue;
        }
        let Some(lease) = get_lease(&tables.leases, lease_id.as_u128())? else {
            continue;
        };
        if matches!(lease.state, LeaseState::Pending | LeaseState::Active) {
            moved.push(lease_id);
            changes.push(to_revoking(lease, reason, now)?);
        }
    }
    Planned::done(moved, changes)
}

pub(super) fn sweep(
    tables: &WriteTables<'_>,
    now: DateTime<Utc>,
    pending_before: DateTime<Utc>,
    limit: usize,
) -> Result<Planned<Swept>, StoreError> {
    // The state checks are the row's word over the index's, should they
    // ever disagree.
    let expired = due_leases(&tables.expiries, &tables.leases, now, limit, |lease| {
        lease.state == LeaseState::Active && lease.expires_at <= now
    })?;
    let abandoned = due_leases(&tables.pending, &tables.leases, pending_before, limit, |lease| {
        lease.state == LeaseState::Pending && lease.created_at < pending_before
    })?;
    let mut swept = Swept::default();
    let mut changes = Vec::with_capacity(expired.len() + abandoned.len());
    for lease in expired {
        swept.expired.push(swept_lease(&lease));
        changes.push(to_revoking(lease, RevocationReason::Expired, now)?);
    }
    for lease in abandoned {
        swept.abandoned.push(swept_lease(&lease));
        changes.push(to_revoking(lease, RevocationReason::Abandoned, now)?);
    }
    Planned::done(swept, changes)
}

pub(super) fn claim_revocations(
    tables: &WriteTables<'_>,
    now: DateTime<Utc>,
    claim_until: DateTime<Utc>,
    limit: usize,
) -> Result<Planned<Vec<Lease>>, StoreError> {
    let due = due_leases(&tables.revocation_queue, &tables.leases, now, limit, |lease| {
        lease.state == LeaseState::Revoking
            && lease.revocation.as_ref().is_some_and(|revocation| revocation.next_attempt_at <= now)
    })?;
    let mut claimed = Vec::with_capacity(due.len());
    let mut changes = Vec::with_capacity(due.len());
    for lease in due {
        let mut updated = lease.clone();
        let revocation = revocation_of(&mut updated)?;
        revocation.attempts = revocation.attempts.saturating_add(1);
        revocation.next_attempt_at = claim_until;
        claimed.push(updated.clone());
        changes.push(Change::lease(Some(lease), updated)?);
    }
    Planned::done(claimed, changes)
}

/// Outcomes for leases that are no longer revoking (a lapsed claim that
/// another worker finished) are ignored; an unknown lease fails the call,
/// since outcomes come from claims and one that names nothing is a bug.
pub(super) fn finish_revocations(
    tables: &WriteTables<'_>,
    outcomes: &[RevocationOutcome],
    now: DateTime<Utc>,
) -> Result<Planned<()>, StoreError> {
    // Original and updated lease by id, so that two outcomes for one lease
    // apply in order.
    let mut touched: HashMap<Uuid, (Lease, Lease)> = HashMap::new();
    let mut order = Vec::new();
    for outcome in outcomes {
        let lease_id = outcome.lease_id();
        let lease = match touched.entry(lease_id) {
            Entry::Occupied(entry) => &mut entry.into_mut().1,
            Entry::Vacant(entry) => {
                let lease = existing_lease(tables, lease_id)?;
                order.push(lease_id);
                &mut entry.insert((lease.clone(), lease)).1
            }
        };
        if lease.state != LeaseState::Revoking || revocation_of(lease)?.generation != outcome.generation() {
            continue;
        }
        let failed_mint = revocation_of(lease)?.reason == RevocationReason::MintFailed;
        match outcome {
            RevocationOutcome::Done { .. } => {
                // A finished revocation carries no error: an error on a
                // failed lease is what says its revocation gave up.
                revocation_of(lease)?.completed_at = Some(now);
                revocation_of(lease)?.last_error = None;
                lease.state = if failed_mint { LeaseState::Failed } else { LeaseState::Revoked };
            }
            RevocationOutcome::GaveUp { error, .. } => {
                let revocation = revocation_of(lease)?;
                revocation.completed_at = Some(now);
                revocation.last_error = Some(error.clone());
                lease.state = LeaseState::Failed;
            }
            RevocationOutcome::Retry { next_attempt_at, error, .. } => {
                let revocation = revocation_of(lease)?;
                revocation.next_attempt_at = *next_attempt_at;
                revocation.last_error = Some(error.clone());
            }
        }
    }
    let mut changes = Vec::new();
    for lease_id in order {
        if let Some((original, updated)) = touched.remove(&lease_id)
            && original != updated
        {
            changes.push(Change::lease(Some(original), updated)?);
        }
    }
    Planned::done((), changes)
}

pub(super) fn record_sighting(
    tables: &WriteTables<'_>,
    issuer: &str,
    subject: &str,
    now: DateTime<Utc>,
) -> Result<Planned<()>, StoreError> {
    let old: Option<Sighting> = match tables.sightings.get((issuer, subject)).map_err(storage_error)? {
        Some(row) => Some(decode("sighting", row.value())?),
        None => None,
    };
    let new = match &old {
        // Callers' clocks may disagree a little: keep the widest span.
        Some(seen) => Sighting {
            first_seen: seen.first_seen.min(now),
            last_seen: seen.last_seen.max(now),
            count: seen.count.saturating_add(1),
            ..seen.clone()
        },
        None => Sighting {
            issuer: issuer.to_owned(),
            subject: subject.to_owned(),
            first_seen: now,
            last_seen: now,
            count: 1,
        },
    };
    Planned::done((), vec![Change::sighting(old, new)?])
}

fn swept_lease(lease: &Lease) -> SweptLease {
    SweptLease { id: lease.id, agent: lease.agent.clone(), task_id: lease.task_id.clone() }
}

fn existing_lease(tables: &WriteTables<'_>, lease_id: Uuid) -> Result<Lease, StoreError> {
    get_lease(&tables.leases, lease_id.as_u128())?.ok_or(StoreError::LeaseNotFound(lease_id))
}

/// Queues a pending or active lease for revocation, due at once.
fn to_revoking(lease: Lease, reason: RevocationReason, now: DateTime<Utc>) -> Result<Change, StoreError> {
    let moved = revoking(lease.clone(), reason, now);
    Change::lease(Some(lease), moved)
}

/// `lease` as queued for revocation, due at once.
fn revoking(mut revoking: Lease, reason: RevocationReason, now: DateTime<Utc>) -> Lease {
    revoking.state = LeaseState::Revoking;
    revoking.revocation = Some(Revocation {
        reason,
        requested_at: now,
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        completed_at: None,
        generation: 0,
    });
    revoking
}

/// The revocation record every revoking lease has.
fn revocation_of(lease: &mut Lease) -> Result<&mut Revocation, StoreError> {
    let lease_id = lease.id;
    lease
        .revocation
        .as_mut()
        .ok_or_else(|| StoreError::Corrupt(format!("revoking lease {lease_id} has no revocation record")))
}
