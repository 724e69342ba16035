//! Approval requests in the embedded store: the plans that change them
//! (each checked and decided whole before anything is written, like every
//! plan) and the reads.

use std::ops::Bound;

use chrono::{DateTime, TimeDelta, Utc};
use redb::{ReadTransaction, ReadableTable};
use uuid::Uuid;

use super::plans::{Planned, refusal};
use super::tables::{APPROVALS, Change, WriteTables, decode, get_approval, storage_error};
use crate::model::{Approval, ApprovalEnd, ApprovalState, ApprovalVote};
use crate::store::{ApprovalFilter, StoreError};

pub(super) fn create(
    tables: &WriteTables<'_>,
    approval: Approval,
    now: DateTime<Utc>,
) -> Result<Planned<()>, StoreError> {
    if let Some((refused, _)) = refusal(tables, &approval.task_id, &approval.agent, now)? {
        return Err(refused);
    }
    if let Some(existing) = get_approval(&tables.approvals, approval.id.as_u128())? {
        return Err(StoreError::ApprovalState { id: existing.id, state: existing.state });
    }
    if approval.state != ApprovalState::Pending {
        return Err(StoreError::ApprovalState { id: approval.id, state: approval.state });
    }
    Planned::done((), vec![Change::approval(None, approval)?])
}

fn existing(tables: &WriteTables<'_>, id: Uuid) -> Result<Approval, StoreError> {
    get_approval(&tables.approvals, id.as_u128())?.ok_or(StoreError::ApprovalNotFound(id))
}

/// The state a request is in at `now` for the purpose of a change: a
/// request past its due time counts as expired even before a sweep ends it.
fn effective_state(approval: &Approval, now: DateTime<Utc>) -> ApprovalState {
    match approval.due_at() {
        Some(due) if due <= now => ApprovalState::Expired,
        _ => approval.state,
    }
}

pub(super) fn vote(
    tables: &WriteTables<'_>,
    id: Uuid,
    vote: ApprovalVote,
) -> Result<Planned<Approval>, StoreError> {
    let approval = existing(tables, id)?;
    let now = vote.at;
    let state = effective_state(&approval, now);
    if state != ApprovalState::Pending {
        return Err(StoreError::ApprovalState { id, state });
    }
    if let Some((refused, _)) = refusal(tables, &approval.task_id, &approval.agent, now)? {
        return Err(refused);
    }
    if approval.votes.iter().any(|cast| cast.by == vote.by) {
        return Err(StoreError::AlreadyVoted { id, by: vote.by });
    }
    let mut updated = approval.clone();
    if vote.approve {
        updated.votes.push(vote);
        let approvers = u32::try_from(updated.approvers().count()).unwrap_or(u32::MAX);
        if approvers >= updated.quorum {
            updated.state = ApprovalState::Approved;
            updated.approved_at = Some(now);
            let within = i64::try_from(updated.collect_within_seconds).unwrap_or(i64::MAX);
            updated.collect_by = Some(now + TimeDelta::try_seconds(within).unwrap_or(TimeDelta::MAX));
        }
    } else {
        updated.ended = Some(ApprovalEnd { at: now, by: vote.by.clone(), reason: vote.reason.clone() });
        updated.votes.push(vote);
        updated.state = ApprovalState::Denied;
    }
    Planned::done(updated.clone(), vec![Change::approval(Some(approval), updated)?])
}

pub(super) fn collect(
    tables: &WriteTables<'_>,
    id: Uuid,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<Planned<Approval>, StoreError> {
    let approval = existing(tables, id)?;
    // Another agent's request is not this agent's business.
    if approval.agent != agent {
        return Err(StoreError::ApprovalNotFound(id));
    }
    let state = effective_state(&approval, now);
    if state != ApprovalState::Approved {
        return Err(StoreError::ApprovalState { id, state });
    }
    if let Some((refused, _)) = refusal(tables, &approval.task_id, &approval.agent, now)? {
        return Err(refused);
    }
    let mut updated = approval.clone();
    updated.state = ApprovalState::Collected;
    updated.collected_at = Some(now);
    Planned::done(updated.clone(), vec![Change::approval(Some(approval), updated)?])
}

/// Walks every open request (a small table), cancelling those whose scope
/// ended and expiring those past due, up to `limit`.
pub(super) fn end(
    tables: &WriteTables<'_>,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Planned<Vec<Approval>>, StoreError> {
    let mut ended = Vec::new();
    let mut changes = Vec::new();
    for entry in tables.open_approvals.iter().map_err(storage_error)? {
        if ended.len() == limit {
            break;
        }
        let (key, _) = entry.map_err(storage_error)?;
        let id = key.value().1;
        let approval = get_approval(&tables.approvals, id)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the open approvals index names missing request {}",
                Uuid::from_u128(id)
            ))
        })?;
        let (state, reason) = match refusal(tables, &approval.task_id, &approval.agent, now) {
            Ok(Some((_, reason))) => (ApprovalState::Cancelled, reason.as_str()),
            // A request under a task the store no longer has cannot go on.
            Err(StoreError::TaskNotFound(_)) => (ApprovalState::Cancelled, "task_closed"),
            Err(error) => return Err(error),
            Ok(None) => match effective_state(&approval, now) {
                ApprovalState::Expired if approval.state == ApprovalState::Pending => {
                    (ApprovalState::Expired, "not_decided")
                }
                ApprovalState::Expired => (ApprovalState::Expired, "not_collected"),
                _ => continue,
            },
        };
        let mut updated = approval.clone();
        updated.state = state;
        updated.ended = Some(ApprovalEnd { at: now, by: "writ".into(), reason: reason.into() });
        changes.push(Change::approval(Some(approval), updated.clone())?);
        ended.push(updated);
    }
    Planned::done(ended, changes)
}

pub(super) fn get(txn: &ReadTransaction, id: Uuid) -> Result<Option<Approval>, StoreError> {
    get_approval(&txn.open_table(APPROVALS).map_err(storage_error)?, id.as_u128())
}

/// In id order from just past `after`, checking the filter on each.
pub(super) fn list(
    txn: &ReadTransaction,
    filter: &ApprovalFilter,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<Approval>, StoreError> {
    let approvals = txn.open_table(APPROVALS).map_err(storage_error)?;
    let from = after.map_or(Bound::Included(0), |id| Bound::Excluded(id.as_u128()));
    let mut found = Vec::new();
    for entry in approvals.range((from, Bound::Unbounded)).map_err(storage_error)? {
        if found.len() == limit {
            break;
        }
        let (_, row) = entry.map_err(storage_error)?;
        let approval: Approval = decode("approval request", row.value())?;
        if filter.matches(&approval) {
            found.push(approval);
        }
    }
    Ok(found)
}

/// When the first open request falls due.
pub(super) fn next_due(txn: &ReadTransaction) -> Result<Option<DateTime<Utc>>, StoreError> {
    let open = txn.open_table(super::tables::OPEN_APPROVALS).map_err(storage_error)?;
    let Some((key, _)) = open.first().map_err(storage_error)? else { return Ok(None) };
    let id = key.value().1;
    let approval = get(txn, Uuid::from_u128(id))?
        .ok_or_else(|| StoreError::Corrupt("the open approvals index names a missing request".into()))?;
    Ok(approval.due_at())
}
