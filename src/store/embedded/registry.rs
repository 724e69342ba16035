//! The agent inventory in the embedded store: records by name, and one
//! revision counter that every change bumps.

use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable};

use super::plans::Planned;
use super::tables::{Change, REGISTRY, REGISTRY_REVISION, REVISION_ROW, WriteTables, decode, storage_error};
use crate::model::AgentRecord;
use crate::store::StoreError;

fn stored(
    registry: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<AgentRecord>, StoreError> {
    match registry.get(name).map_err(storage_error)? {
        Some(row) => decode("agent record", row.value()).map(Some),
        None => Ok(None),
    }
}

fn revision(table: &impl ReadableTable<&'static str, u64>) -> Result<u64, StoreError> {
    Ok(table.get(REVISION_ROW).map_err(storage_error)?.map_or(0, |row| row.value()))
}

/// Whether the agent's record says it is retired.
pub(super) fn is_retired(
    registry: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<bool, StoreError> {
    Ok(stored(registry, name)?.is_some_and(|record| record.retired.is_some()))
}

pub(super) fn put(
    tables: &WriteTables<'_>,
    expected: Option<AgentRecord>,
    record: AgentRecord,
) -> Result<Planned<()>, StoreError> {
    let current = stored(&tables.registry, &record.name)?;
    match (&expected, &current) {
        (None, Some(_)) => return Err(StoreError::AgentExists(record.name)),
        (None, None) => {}
        // By revision, not by content: a record another version wrote
        // (with fields this one does not know) still compares.
        (Some(expected), current)
            if current.as_ref().map(|current| current.revision) != Some(expected.revision) =>
        {
            return Err(StoreError::AgentChanged(record.name));
        }
        (Some(_), _) => {}
    }
    let next = revision(&tables.registry_revision)? + 1;
    Planned::done((), vec![Change::registered(&record, next)?])
}

pub(super) fn get(txn: &ReadTransaction, name: &str) -> Result<Option<AgentRecord>, StoreError> {
    stored(&txn.open_table(REGISTRY).map_err(storage_error)?, name)
}

pub(super) fn list(
    txn: &ReadTransaction,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<AgentRecord>, StoreError> {
    let registry = txn.open_table(REGISTRY).map_err(storage_error)?;
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut found = Vec::new();
    for entry in registry.range::<&str>((start, Bound::Unbounded)).map_err(storage_error)? {
        if found.len() == limit {
            break;
        }
        let (_, row) = entry.map_err(storage_error)?;
        found.push(decode("agent record", row.value())?);
    }
    Ok(found)
}

pub(super) fn current_revision(txn: &ReadTransaction) -> Result<u64, StoreError> {
    revision(&txn.open_table(REGISTRY_REVISION).map_err(storage_error)?)
}
