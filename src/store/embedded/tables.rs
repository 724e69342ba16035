//! The redb tables behind [`super::EmbeddedStore`]: their layout, how rows
//! are encoded, and [`WriteTables::apply`], the one place rows are written,
//! so that every index follows every change of a row it is derived from.
//!
//! Rows are JSON; indexes are keys with a `()` value. Times in index keys
//! are milliseconds since the epoch, which orders them but rounds them down:
//! a query that compares against a time re-checks the row's exact value.

use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};
use redb::{Key, ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::model::{
    AgentRecord, AgentStatus, Approval, Lease, LeaseState, ProviderStatus, Sighting, Task, TaskState,
};
use crate::store::StoreError;

/// Every task, by id.
pub(super) const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
/// Open tasks by (deadline, task id): the deadline sweeper's queue. A task
/// leaves it when it closes.
pub(super) const TASK_DEADLINES: TableDefinition<(i64, &str), ()> = TableDefinition::new("task_deadlines");
/// Every lease, by id (a v7 UUID as `u128`, so id order is creation order).
pub(super) const LEASES: TableDefinition<u128, &[u8]> = TableDefinition::new("leases");
/// Leases by (task id, lease id): what closing a task revokes.
pub(super) const LEASES_BY_TASK: TableDefinition<(&str, u128), ()> = TableDefinition::new("leases_by_task");
/// Leases by (agent, lease id): listing, and revoking, an agent's leases.
pub(super) const LEASES_BY_AGENT: TableDefinition<(&str, u128), ()> = TableDefinition::new("leases_by_agent");
/// Leases by (state, lease id): listing by state without reading every lease.
pub(super) const LEASES_BY_STATE: TableDefinition<(u8, u128), ()> = TableDefinition::new("leases_by_state");
/// Active leases by (expires_at, lease id): what the expiry sweep takes.
pub(super) const EXPIRIES: TableDefinition<(i64, u128), ()> = TableDefinition::new("expiries");
/// Pending leases by (created_at, lease id): issues that may have been
/// abandoned mid-way.
pub(super) const PENDING: TableDefinition<(i64, u128), ()> = TableDefinition::new("pending");
/// Revoking leases by (next_attempt_at, lease id): the revocation queue.
pub(super) const REVOCATION_QUEUE: TableDefinition<(i64, u128), ()> =
    TableDefinition::new("revocation_queue");
/// Agents' runtime state (suspensions), by agent name: only agents whose
/// state was ever changed have a row.
pub(super) const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// Providers' states (suspensions), by provider name: only providers whose
/// state was ever changed have a row.
pub(super) const PROVIDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("providers");
/// Registered agents' records (the inventory), by name.
pub(super) const REGISTRY: TableDefinition<&str, &[u8]> = TableDefinition::new("registry");
/// One row, [`REVISION_ROW`]: bumped on every change of [`REGISTRY`].
pub(super) const REGISTRY_REVISION: TableDefinition<&str, u64> = TableDefinition::new("registry_revision");
pub(super) const REVISION_ROW: &str = "revision";
/// Approval requests, by id (a v7 UUID as `u128`: creation order).
pub(super) const APPROVALS: TableDefinition<u128, &[u8]> = TableDefinition::new("approvals");
/// Open (pending or approved) approval requests by (due time, id): what
/// expires them, and what a scope's end cancels. People decide requests,
/// so this stays small.
pub(super) const OPEN_APPROVALS: TableDefinition<(i64, u128), ()> = TableDefinition::new("open_approvals");
/// Sightings by (issuer, subject).
pub(super) const SIGHTINGS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sightings");
/// Sightings by (last_seen, issuer, subject): the most recent first, read
/// backwards.
pub(super) const SIGHTINGS_BY_LAST_SEEN: TableDefinition<(i64, &str, &str), ()> =
    TableDefinition::new("sightings_by_last_seen");

/// Maps a redb error. redb's text names the failure (I/O, lock, corrupted
/// page), never the data, so it is safe to pass on.
pub(super) fn storage_error(error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        redb::Error::Corrupted(detail) => StoreError::Corrupt(detail),
        other => StoreError::Unavailable(other.to_string()),
    }
}

pub(super) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|error| StoreError::Corrupt(format!("cannot encode {what}: {error}")))
}

/// Decodes a row. The error says where the JSON broke but quotes none of
/// it: a lease row holds a sealed handle.
pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| {
        StoreError::Corrupt(format!(
            "undecodable {what}: {:?} error at line {}, column {}",
            error.classify(),
            error.line(),
            error.column()
        ))
    })
}

pub(super) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// Every key of a (time, lease id) index at or before `at`'s millisecond.
pub(super) fn up_to(at: DateTime<Utc>) -> RangeInclusive<(i64, u128)> {
    (i64::MIN, 0)..=(millis(at), u128::MAX)
}

fn state_code(state: LeaseState) -> u8 {
    match state {
        LeaseState::Pending => 0,
        LeaseState::Active => 1,
        LeaseState::Revoking => 2,
        LeaseState::Revoked => 3,
        LeaseState::Failed => 4,
    }
}

/// The key of [`LEASES_BY_STATE`] for leases in `state`.
pub(super) fn state_key(state: LeaseState, lease: u128) -> (u8, u128) {
    (state_code(state), lease)
}

pub(super) fn get_task(
    tasks: &impl ReadableTable<&'static str, &'static [u8]>,
    task_id: &str,
) -> Result<Option<Task>, StoreError> {
    match tasks.get(task_id).map_err(storage_error)? {
        Some(row) => decode("task", row.value()).map(Some),
        None => Ok(None),
    }
}

pub(super) fn get_agent(
    agents: &impl ReadableTable<&'static str, &'static [u8]>,
    agent: &str,
) -> Result<Option<AgentStatus>, StoreError> {
    match agents.get(agent).map_err(storage_error)? {
        Some(row) => decode("agent status", row.value()).map(Some),
        None => Ok(None),
    }
}

pub(super) fn get_provider(
    providers: &impl ReadableTable<&'static str, &'static [u8]>,
    provider: &str,
) -> Result<Option<ProviderStatus>, StoreError> {
    match providers.get(provider).map_err(storage_error)? {
        Some(row) => decode("provider status", row.value()).map(Some),
        None => Ok(None),
    }
}

pub(super) fn get_approval(
    approvals: &impl ReadableTable<u128, &'static [u8]>,
    id: u128,
) -> Result<Option<Approval>, StoreError> {
    match approvals.get(id).map_err(storage_error)? {
        Some(row) => decode("approval request", row.value()).map(Some),
        None => Ok(None),
    }
}

pub(super) fn get_lease(
    leases: &impl ReadableTable<u128, &'static [u8]>,
    lease_id: u128,
) -> Result<Option<Lease>, StoreError> {
    match leases.get(lease_id).map_err(storage_error)? {
        Some(row) => decode("lease", row.value()).map(Some),
        None => Ok(None),
    }
}

/// A lease an index points at: missing means the index is out of step.
pub(super) fn indexed_lease(
    leases: &impl ReadableTable<u128, &'static [u8]>,
    lease_id: u128,
) -> Result<Lease, StoreError> {
    get_lease(leases, lease_id)?.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "an index names lease {} which does not exist",
            Uuid::from_u128(lease_id)
        ))
    })
}

/// Every lease of a task (from `leases_by_task`) or of an agent (from
/// `leases_by_agent`), in id order.
pub(super) fn task_leases(
    by_task: &impl ReadableTable<(&'static str, u128), ()>,
    leases: &impl ReadableTable<u128, &'static [u8]>,
    task_id: &str,
) -> Result<Vec<Lease>, StoreError> {
    let mut found = Vec::new();
    for entry in by_task.range((task_id, 0)..=(task_id, u128::MAX)).map_err(storage_error)? {
        let (key, _) = entry.map_err(storage_error)?;
        found.push(indexed_lease(leases, key.value().1)?);
    }
    Ok(found)
}

/// Up to `limit` leases from a (time, lease id) index, in key order, whose
/// key time is at or before `at` and that pass `due` (the exact check the
/// millisecond key cannot make).
pub(super) fn due_leases(
    index: &impl ReadableTable<(i64, u128), ()>,
    leases: &impl ReadableTable<u128, &'static [u8]>,
    at: DateTime<Utc>,
    limit: usize,
    due: impl Fn(&Lease) -> bool,
) -> Result<Vec<Lease>, StoreError> {
    let mut found = Vec::new();
    if limit == 0 {
        return Ok(found);
    }
    for entry in index.range(up_to(at)).map_err(storage_error)? {
        let (key, _) = entry.map_err(storage_error)?;
        let lease = indexed_lease(leases, key.value().1)?;
        if due(&lease) {
            found.push(lease);
            if found.len() == limit {
                break;
            }
        }
    }
    Ok(found)
}

/// A row to write, with the row it replaces so its old index keys can go.
/// Encoded when planned, so that the write itself can only fail in redb.
pub(super) enum Change {
    Task {
        old: Option<Task>,
        new: Task,
        row: Vec<u8>,
    },
    Lease {
        old: Option<Lease>,
        new: Lease,
        row: Vec<u8>,
    },
    Sighting {
        old: Option<Sighting>,
        new: Sighting,
        row: Vec<u8>,
    },
    Agent {
        new: AgentStatus,
        row: Vec<u8>,
    },
    Provider {
        name: String,
        row: Vec<u8>,
    },
    /// An agent's record, and the inventory revision it brings.
    Registered {
        name: String,
        row: Vec<u8>,
        revision: u64,
    },
    Approval {
        old: Option<Approval>,
        new: Approval,
        row: Vec<u8>,
    },
}

impl Change {
    pub(super) fn task(old: Option<Task>, new: Task) -> Result<Self, StoreError> {
        let row = encode("task", &new)?;
        Ok(Self::Task { old, new, row })
    }

    pub(super) fn lease(old: Option<Lease>, new: Lease) -> Result<Self, StoreError> {
        let row = encode("lease", &new)?;
        Ok(Self::Lease { old, new, row })
    }

    pub(super) fn agent(new: AgentStatus) -> Result<Self, StoreError> {
        let row = encode("agent status", &new)?;
        Ok(Self::Agent { new, row })
    }

    pub(super) fn provider(status: ProviderStatus) -> Result<Self, StoreError> {
        let row = encode("provider status", &status)?;
        Ok(Self::Provider { name: status.provider, row })
    }

    pub(super) fn registered(record: &AgentRecord, revision: u64) -> Result<Self, StoreError> {
        let row = encode("agent record", record)?;
        Ok(Self::Registered { name: record.name.clone(), row, revision })
    }

    pub(super) fn approval(old: Option<Approval>, new: Approval) -> Result<Self, StoreError> {
        let row = encode("approval request", &new)?;
        Ok(Self::Approval { old, new, row })
    }

    pub(super) fn sighting(old: Option<Sighting>, new: Sighting) -> Result<Self, StoreError> {
        let row = encode("sighting", &new)?;
        Ok(Self::Sighting { old, new, row })
    }
}

/// Every table, open in one write transaction. Opened once per batch:
/// redb allows a table to be open only once at a time in a transaction.
pub(super) struct WriteTables<'txn> {
    pub(super) tasks: Table<'txn, &'static str, &'static [u8]>,
    pub(super) task_deadlines: Table<'txn, (i64, &'static str), ()>,
    pub(super) leases: Table<'txn, u128, &'static [u8]>,
    pub(super) leases_by_task: Table<'txn, (&'static str, u128), ()>,
    pub(super) leases_by_agent: Table<'txn, (&'static str, u128), ()>,
    pub(super) leases_by_state: Table<'txn, (u8, u128), ()>,
    pub(super) expiries: Table<'txn, (i64, u128), ()>,
    pub(super) pending: Table<'txn, (i64, u128), ()>,
    pub(super) revocation_queue: Table<'txn, (i64, u128), ()>,
    pub(super) agents: Table<'txn, &'static str, &'static [u8]>,
    pub(super) providers: Table<'txn, &'static str, &'static [u8]>,
    pub(super) registry: Table<'txn, &'static str, &'static [u8]>,
    pub(super) registry_revision: Table<'txn, &'static str, u64>,
    pub(super) approvals: Table<'txn, u128, &'static [u8]>,
    pub(super) open_approvals: Table<'txn, (i64, u128), ()>,
    pub(super) sightings: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    pub(super) sightings_by_last_seen: Table<'txn, (i64, &'static str, &'static str), ()>,
}

impl<'txn> WriteTables<'txn> {
    /// Opens (creating on first use) every table.
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            tasks: txn.open_table(TASKS).map_err(storage_error)?,
            task_deadlines: txn.open_table(TASK_DEADLINES).map_err(storage_error)?,
            leases: txn.open_table(LEASES).map_err(storage_error)?,
            leases_by_task: txn.open_table(LEASES_BY_TASK).map_err(storage_error)?,
            leases_by_agent: txn.open_table(LEASES_BY_AGENT).map_err(storage_error)?,
            leases_by_state: txn.open_table(LEASES_BY_STATE).map_err(storage_error)?,
            expiries: txn.open_table(EXPIRIES).map_err(storage_error)?,
            pending: txn.open_table(PENDING).map_err(storage_error)?,
            revocation_queue: txn.open_table(REVOCATION_QUEUE).map_err(storage_error)?,
            agents: txn.open_table(AGENTS).map_err(storage_error)?,
            providers: txn.open_table(PROVIDERS).map_err(storage_error)?,
            registry: txn.open_table(REGISTRY).map_err(storage_error)?,
            registry_revision: txn.open_table(REGISTRY_REVISION).map_err(storage_error)?,
            approvals: txn.open_table(APPROVALS).map_err(storage_error)?,
            open_approvals: txn.open_table(OPEN_APPROVALS).map_err(storage_error)?,
            sightings: txn.open_table(SIGHTINGS).map_err(storage_error)?,
            sightings_by_last_seen: txn.open_table(SIGHTINGS_BY_LAST_SEEN).map_err(storage_error)?,
        })
    }

    /// Writes a row and moves its index entries from the old row's keys to
    /// the new row's. Fails only in redb, after which the batch is abandoned.
    pub(super) fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        match change {
            Change::Task { old, new, row } => self.apply_task(old.as_ref(), new, row),
            Change::Lease { old, new, row } => self.apply_lease(old.as_ref(), new, row),
            Change::Sighting { old, new, row } => self.apply_sighting(old.as_ref(), new, row),
            Change::Agent { new, row } => {
                self.agents.insert(new.agent.as_str(), row.as_slice()).map_err(storage_error).map(drop)
            }
            Change::Provider { name, row } => {
                self.providers.insert(name.as_str(), row.as_slice()).map_err(storage_error).map(drop)
            }
            Change::Registered { name, row, revision } => {
                self.registry.insert(name.as_str(), row.as_slice()).map_err(storage_error)?;
                self.registry_revision.insert(REVISION_ROW, *revision).map_err(storage_error).map(drop)
            }
            Change::Approval { old, new, row } => {
                self.approvals.insert(new.id.as_u128(), row.as_slice()).map_err(storage_error)?;
                reindex(&mut self.open_approvals, old.as_ref().and_then(due_key), due_key(new))
            }
        }
    }

    fn apply_task(&mut self, old: Option<&Task>, new: &Task, row: &[u8]) -> Result<(), StoreError> {
        self.tasks.insert(new.id.as_str(), row).map_err(storage_error)?;
        reindex(&mut self.task_deadlines, old.and_then(deadline_key), deadline_key(new))
    }

    fn apply_lease(&mut self, old: Option<&Lease>, new: &Lease, row: &[u8]) -> Result<(), StoreError> {
        self.leases.insert(new.id.as_u128(), row).map_err(storage_error)?;
        reindex(&mut self.leases_by_task, old.map(task_key), Some(task_key(new)))?;
        reindex(&mut self.leases_by_agent, old.map(agent_key), Some(agent_key(new)))?;
        let by_state = |lease: &Lease| state_key(lease.state, lease.id.as_u128());
        reindex(&mut self.leases_by_state, old.map(by_state), Some(by_state(new)))?;
        reindex(&mut self.expiries, old.and_then(expiry_key), expiry_key(new))?;
        reindex(&mut self.pending, old.and_then(pending_key), pending_key(new))?;
        reindex(&mut self.revocation_queue, old.and_then(queue_key), queue_key(new))
    }

    fn apply_sighting(
        &mut self,
        old: Option<&Sighting>,
        new: &Sighting,
        row: &[u8],
    ) -> Result<(), StoreError> {
        self.sightings.insert((new.issuer.as_str(), new.subject.as_str()), row).map_err(storage_error)?;
        reindex(&mut self.sightings_by_last_seen, old.map(recency_key), Some(recency_key(new)))
    }
}

// The index keys of a row: `None` where the row is not in that index.

fn deadline_key(task: &Task) -> Option<(i64, &str)> {
    (task.state == TaskState::Open).then(|| (millis(task.deadline), task.id.as_str()))
}

fn task_key(lease: &Lease) -> (&str, u128) {
    (lease.task_id.as_str(), lease.id.as_u128())
}

fn agent_key(lease: &Lease) -> (&str, u128) {
    (lease.agent.as_str(), lease.id.as_u128())
}

fn expiry_key(lease: &Lease) -> Option<(i64, u128)> {
    (lease.state == LeaseState::Active).then(|| (millis(lease.expires_at), lease.id.as_u128()))
}

fn pending_key(lease: &Lease) -> Option<(i64, u128)> {
    (lease.state == LeaseState::Pending).then(|| (millis(lease.created_at), lease.id.as_u128()))
}

fn queue_key(lease: &Lease) -> Option<(i64, u128)> {
    match (&lease.revocation, lease.state) {
        (Some(revocation), LeaseState::Revoking) => {
            Some((millis(revocation.next_attempt_at), lease.id.as_u128()))
        }
        _ => None,
    }
}

/// The key of [`OPEN_APPROVALS`] for an open request.
pub(super) fn due_key(approval: &Approval) -> Option<(i64, u128)> {
    approval.due_at().map(|due| (millis(due), approval.id.as_u128()))
}

fn recency_key(sighting: &Sighting) -> (i64, &str, &str) {
    (millis(sighting.last_seen), sighting.issuer.as_str(), sighting.subject.as_str())
}

/// Replaces one index entry: removes `old`, inserts `new`, skipping both
/// when the key did not change.
fn reindex<'k, K: Key + 'static>(
    index: &mut Table<'_, K, ()>,
    old: Option<K::SelfType<'k>>,
    new: Option<K::SelfType<'k>>,
) -> Result<(), StoreError>
where
    K::SelfType<'k>: PartialEq,
{
    if old == new {
        return Ok(());
    }
    if let Some(key) = old {
        index.remove(key).map_err(storage_error)?;
    }
    if let Some(key) = new {
        index.insert(key, ()).map_err(storage_error)?;
    }
    Ok(())
}
