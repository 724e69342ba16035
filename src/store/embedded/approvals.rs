//! Approval requests in the embedded store: the plans that change them
//! (each checked and decided whole before anything is written, like every
//! plan) and the reads.

use std::ops::Bound;

use chrono::{DateTime, Utc};
use redb::{ReadTransaction, ReadableTable};
use uuid::Uuid;

use super::plans::{Planned, refusal};
use super::tables::{APPROVALS, Change, WriteTables, decode, get_approval, storage_error};
use crate::model::{Approval, ApprovalState, ApprovalVote};
use crate::store::approval_rules as rules;
use crate::store::{ApprovalFilter, StoreError};

pub(super) fn create(
    tables: &WriteTables<'_>,
    approval: Approval,
    now: DateTime<Utc>,
) -> Result<Planned<()>, StoreError> {
    if let Some((refused, _)) = refusal(tables, &approval.task_id, &approval.agent, None, now)? {
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

pub(super) fn vote(
    tables: &WriteTables<'_>,
    id: Uuid,
    vote: ApprovalVote,
) -> Result<Planned<Approval>, StoreError> {
    let approval = existing(tables, id)?;
    let now = vote.at;
    let updated = rules::voted(&approval, vote)?;
    if let Some((refused, _)) = refusal(tables, &approval.task_id, &approval.agent, None, now)? {
        return Err(refused);
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
    let updated = rules::collected(&approval, agent, now)?;
    if let Some((refused, _)) = refusal(tables, &approval.task_id, &approval.agent, None, now)? {
        return Err(refused);
    }
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
        let cancelled = match refusal(tables, &approval.task_id, &approval.agent, None, now) {
            Ok(refused) => refused.map(|(_, reason)| reason.as_str()),
            // A request under a task the store no longer has cannot go on.
            Err(StoreError::TaskNotFound(_)) => Some("task_closed"),
            Err(error) => return Err(error),
        };
        if let Some(updated) = rules::ended(&approval, cancelled, now) {
            changes.push(Change::approval(Some(approval), updated.clone())?);
            ended.push(updated);
        }
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
