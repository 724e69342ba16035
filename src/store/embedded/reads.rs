//! The read operations, each in one redb read transaction: a consistent
//! snapshot that runs beside the writer without waiting for it.

use std::ops::Bound;

use chrono::{DateTime, Utc};
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition};
use uuid::Uuid;

use super::tables::{
    AGENTS, EXPIRIES, LEASES, LEASES_BY_AGENT, LEASES_BY_STATE, LEASES_BY_TASK, REVOCATION_QUEUE, SIGHTINGS,
    SIGHTINGS_BY_LAST_SEEN, TASK_DEADLINES, TASKS, decode, indexed_lease, millis, state_key, storage_error,
};
use crate::model::{AgentStatus, Lease, Sighting, Task, TaskState};
use crate::store::{LeaseFilter, StoreError};

fn open<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<ReadOnlyTable<K, V>, StoreError> {
    txn.open_table(table).map_err(storage_error)
}

/// Whether a read transaction can open the tables.
pub(super) fn check(txn: &ReadTransaction) -> Result<(), StoreError> {
    open(txn, TASKS).map(drop)
}

pub(super) fn get_task(txn: &ReadTransaction, task_id: &str) -> Result<Option<Task>, StoreError> {
    super::tables::get_task(&open(txn, TASKS)?, task_id)
}

pub(super) fn agent_status(txn: &ReadTransaction, agent: &str) -> Result<Option<AgentStatus>, StoreError> {
    super::tables::get_agent(&open(txn, AGENTS)?, agent)
}

pub(super) fn provider_status(
    txn: &ReadTransaction,
    provider: &str,
) -> Result<Option<crate::model::ProviderStatus>, StoreError> {
    super::tables::get_provider(&open(txn, super::tables::PROVIDERS)?, provider)
}

pub(super) fn get_lease(txn: &ReadTransaction, lease_id: Uuid) -> Result<Option<Lease>, StoreError> {
    super::tables::get_lease(&open(txn, LEASES)?, lease_id.as_u128())
}

pub(super) fn overdue_tasks(
    txn: &ReadTransaction,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let tasks = open(txn, TASKS)?;
    let deadlines = open(txn, TASK_DEADLINES)?;
    let now_millis = millis(now);
    let mut overdue = Vec::new();
    for entry in deadlines.iter().map_err(storage_error)? {
        if overdue.len() == limit {
            break;
        }
        let (key, _) = entry.map_err(storage_error)?;
        let (deadline_millis, task_id) = key.value();
        if deadline_millis > now_millis {
            break;
        }
        // Within `now`'s own millisecond only the row knows which side it is.
        if deadline_millis == now_millis {
            let task = super::tables::get_task(&tasks, task_id)?.ok_or_else(|| {
                StoreError::Corrupt(format!("deadline index names missing task {task_id:?}"))
            })?;
            if task.state != TaskState::Open || task.deadline > now {
                continue;
            }
        }
        overdue.push(task_id.to_owned());
    }
    Ok(overdue)
}

pub(super) fn task_leases(txn: &ReadTransaction, task_id: &str) -> Result<Vec<Lease>, StoreError> {
    let mut leases = super::tables::task_leases(&open(txn, LEASES_BY_TASK)?, &open(txn, LEASES)?, task_id)?;
    leases.sort_by_key(|lease| (lease.created_at, lease.id));
    Ok(leases)
}

/// Walks the most selective index the filter allows (task, then agent,
/// then state), in lease id order, and checks the rest of the filter on
/// each lease.
pub(super) fn list_leases(
    txn: &ReadTransaction,
    filter: &LeaseFilter,
    after: Option<Uuid>,
    limit: usize,
) -> Result<Vec<Lease>, StoreError> {
    let leases = open(txn, LEASES)?;
    let mut found = Vec::new();
    if limit == 0 {
        return Ok(found);
    }
    let mut take = |lease: Lease| {
        if filter.matches(&lease) {
            found.push(lease);
        }
        found.len() < limit
    };
    // Where the walk starts, as a lease id: just past `after`.
    let from = after.map_or(Bound::Included(0), |id| Bound::Excluded(id.as_u128()));
    if let Some(key) = filter.task_id.as_deref().or(filter.agent.as_deref()) {
        let index = open(txn, if filter.task_id.is_some() { LEASES_BY_TASK } else { LEASES_BY_AGENT })?;
        let start = from.map(|id| (key, id));
        for entry in index.range((start, Bound::Included((key, u128::MAX)))).map_err(storage_error)? {
            let (entry_key, _) = entry.map_err(storage_error)?;
            if !take(indexed_lease(&leases, entry_key.value().1)?) {
                break;
            }
        }
    } else if let Some(state) = filter.state {
        let index = open(txn, LEASES_BY_STATE)?;
        let start = from.map(|id| state_key(state, id));
        let end = Bound::Included(state_key(state, u128::MAX));
        for entry in index.range((start, end)).map_err(storage_error)? {
            let (entry_key, _) = entry.map_err(storage_error)?;
            if !take(indexed_lease(&leases, entry_key.value().1)?) {
                break;
            }
        }
    } else {
        for entry in leases.range((from, Bound::Unbounded)).map_err(storage_error)? {
            let (_, row) = entry.map_err(storage_error)?;
            if !take(decode("lease", row.value())?) {
                break;
            }
        }
    }
    Ok(found)
}

/// The earliest of the three schedules' first entries. Keys are rounded to
/// the millisecond, so when several entries share the first millisecond
/// this may name one up to a millisecond after the earliest: a worker
/// wakes that much late, never early.
pub(super) fn next_due(txn: &ReadTransaction) -> Result<Option<DateTime<Utc>>, StoreError> {
    let leases = open(txn, LEASES)?;
    let mut due: Vec<DateTime<Utc>> = Vec::with_capacity(3);
    if let Some((key, _)) = open(txn, EXPIRIES)?.first().map_err(storage_error)? {
        due.push(indexed_lease(&leases, key.value().1)?.expires_at);
    }
    if let Some((key, _)) = open(txn, REVOCATION_QUEUE)?.first().map_err(storage_error)? {
        let lease = indexed_lease(&leases, key.value().1)?;
        let revocation = lease.revocation.ok_or_else(|| {
            StoreError::Corrupt(format!("queued lease {} has no revocation record", lease.id))
        })?;
        due.push(revocation.next_attempt_at);
    }
    if let Some((key, _)) = open(txn, TASK_DEADLINES)?.first().map_err(storage_error)? {
        let (_, task_id) = key.value();
        let task = super::tables::get_task(&open(txn, TASKS)?, task_id)?
            .ok_or_else(|| StoreError::Corrupt(format!("deadline index names missing task {task_id:?}")))?;
        due.push(task.deadline);
    }
    due.extend(super::approvals::next_due(txn)?);
    Ok(due.into_iter().min())
}

/// How many leases are queued for revocation, and the first one's next
/// attempt (exact: read off the lease, not the millisecond key).
pub(super) fn backlog(txn: &ReadTransaction) -> Result<crate::store::Backlog, StoreError> {
    let queue = open(txn, REVOCATION_QUEUE)?;
    let queued = queue.len().map_err(storage_error)?;
    let earliest_due = match queue.first().map_err(storage_error)? {
        Some((key, _)) => {
            let lease = indexed_lease(&open(txn, LEASES)?, key.value().1)?;
            let revocation = lease.revocation.ok_or_else(|| {
                StoreError::Corrupt(format!("queued lease {} has no revocation record", lease.id))
            })?;
            Some(revocation.next_attempt_at)
        }
        None => None,
    };
    let approvals_open = open(txn, super::tables::OPEN_APPROVALS)?.len().map_err(storage_error)?;
    Ok(crate::store::Backlog { queued, earliest_due, approvals_open })
}

pub(super) fn list_sightings(txn: &ReadTransaction, limit: usize) -> Result<Vec<Sighting>, StoreError> {
    let sightings = open(txn, SIGHTINGS)?;
    let mut found = Vec::new();
    for entry in open(txn, SIGHTINGS_BY_LAST_SEEN)?.iter().map_err(storage_error)?.rev().take(limit) {
        let (key, _) = entry.map_err(storage_error)?;
        let (_, issuer, subject) = key.value();
        let row = sightings
            .get((issuer, subject))
            .map_err(storage_error)?
            .ok_or_else(|| StoreError::Corrupt("sighting index names a missing sighting".into()))?;
        found.push(decode("sighting", row.value())?);
    }
    Ok(found)
}
