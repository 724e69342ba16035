//! What goes into the scripts and what comes back: JSON rows, times, and
//! the `{status, ...}` arrays the write scripts answer with.

use chrono::{DateTime, SecondsFormat, Utc};
use redis::Value;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::record;
use crate::model::{Lease, LeaseState, Task};
use crate::store::{StoreError, SweptLease};
use uuid::Uuid;

/// A write script's answer: a status (`ok`, or the check that failed, such
/// as `task_closed`), then what that status carries.
pub(super) struct Reply {
    status: String,
    rest: std::vec::IntoIter<Value>,
}

impl Reply {
    pub(super) fn parse(value: Value) -> Result<Self, StoreError> {
        let mut rest = items(value)?.into_iter();
        let status = String::from_utf8(bytes(rest.next())?).map_err(|_| malformed())?;
        Ok(Self { status, rest })
    }

    pub(super) fn status(&self) -> &str {
        &self.status
    }

    /// The next value, a string.
    pub(super) fn bytes(&mut self) -> Result<Vec<u8>, StoreError> {
        bytes(self.rest.next())
    }

    /// The next value, a list of strings.
    pub(super) fn list(&mut self) -> Result<Vec<Vec<u8>>, StoreError> {
        list(self.rest.next().ok_or_else(malformed)?)
    }

    /// The next value, a count.
    pub(super) fn count(&mut self) -> Result<usize, StoreError> {
        match self.rest.next() {
            Some(Value::Int(count)) => usize::try_from(count).map_err(|_| malformed()),
            _ => Err(malformed()),
        }
    }

    /// The next value, a lease state.
    pub(super) fn state(&mut self) -> Result<LeaseState, StoreError> {
        let text = self.bytes()?;
        decode("lease state", &[b"\"", text.as_slice(), b"\""].concat())
    }

    /// For a status the operation never answers with: scripts and Rust
    /// disagree, a bug.
    pub(super) fn unexpected(&self) -> StoreError {
        StoreError::Corrupt(format!("unexpected store script answer {:?}", self.status))
    }
}

/// A list of strings (a read script's answer).
pub(super) fn list(value: Value) -> Result<Vec<Vec<u8>>, StoreError> {
    items(value)?.into_iter().map(|item| bytes(Some(item))).collect()
}

/// A list whose entries may be missing (`false` in Lua).
pub(super) fn optional_list(value: Value) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    items(value)?
        .into_iter()
        .map(|item| match item {
            // `false` in Lua: nil in RESP2, and in RESP3 too.
            Value::Nil | Value::Boolean(false) => Ok(None),
            other => bytes(Some(other)).map(Some),
        })
        .collect()
}

/// `{lease id, record, ...}` as leases.
pub(super) fn leases(pairs: Vec<Vec<u8>>) -> Result<Vec<Lease>, StoreError> {
    if !pairs.len().is_multiple_of(2) {
        return Err(malformed());
    }
    pairs.chunks_exact(2).map(|pair| record::decode(super::keys::lease_id(&pair[0])?, &pair[1])).collect()
}

/// The earliest time the heads of the three schedules name (see
/// `lua/next_due.lua`): an expiry, a revocation's next attempt (both
/// schedule entries, which start with their time), a deadline (task JSON).
pub(super) fn earliest(heads: Vec<Option<Vec<u8>>>) -> Result<Option<DateTime<Utc>>, StoreError> {
    let [expiry, revocation, deadline] = heads.as_slice() else {
        return Err(malformed());
    };
    let mut due = Vec::with_capacity(3);
    for entry in [expiry, revocation].into_iter().flatten() {
        due.push(record::read_time(entry)?);
    }
    if let Some(row) = deadline {
        due.push(decode::<Task>("task", row)?.deadline);
    }
    Ok(due.into_iter().min())
}

fn items(value: Value) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(malformed()),
    }
}

/// Lease ids with the flat {agent, task, agent, task, …} list a function
/// answered alongside them.
pub(super) fn named(ids: Vec<Uuid>, names: Vec<Vec<u8>>) -> Result<Vec<SweptLease>, StoreError> {
    if names.len() != ids.len() * 2 {
        return Err(malformed());
    }
    let text = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| StoreError::Corrupt("a stored name is not UTF-8".into()))
    };
    ids.into_iter()
        .zip(names.chunks_exact(2))
        .map(|(id, pair)| Ok(SweptLease { id, agent: text(&pair[0])?, task_id: text(&pair[1])? }))
        .collect()
}

fn bytes(value: Option<Value>) -> Result<Vec<u8>, StoreError> {
    match value {
        Some(Value::BulkString(bytes)) => Ok(bytes),
        Some(Value::SimpleString(text)) => Ok(text.into_bytes()),
        _ => Err(malformed()),
    }
}

fn malformed() -> StoreError {
    StoreError::Corrupt("a store script answered in an unexpected shape".into())
}

pub(super) fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|error| StoreError::Corrupt(format!("cannot encode {what}: {error}")))
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

/// A limit as the scripts take it. Lua numbers are doubles, and Redis
/// refuses one written in exponent form, so huge limits ("all of them")
/// are capped at a count no store reaches in one call.
pub(super) fn limit(limit: usize) -> u64 {
    const MOST: u64 = 1_000_000_000;
    u64::try_from(limit).map_or(MOST, |limit| limit.min(MOST))
}

/// A time as the scripts compare it: the text chrono writes into rows.
pub(super) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A time as an index score: milliseconds, which order times but round
/// them down, so scripts re-check the exact time within a millisecond.
pub(super) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;

    #[test]
    fn times_are_written_as_rows_hold_them() {
        let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        for nanos in [0, 5_000_000, 250_000_000, 123_456_000, 1, 999_999_999] {
            let at = base + TimeDelta::nanoseconds(nanos);
            let json = serde_json::to_string(&at).unwrap();
            assert_eq!(json, format!("\"{}\"", time(at)), "{nanos} ns");
        }
    }

    #[test]
    fn statuses_and_states_parse() {
        let value = Value::Array(vec![
            Value::BulkString(b"lease_state".to_vec()),
            Value::BulkString(b"revoking".to_vec()),
        ]);
        let mut reply = Reply::parse(value).unwrap();
        assert_eq!(reply.status(), "lease_state");
        assert_eq!(reply.state().unwrap(), LeaseState::Revoking);
        assert!(reply.bytes().is_err(), "nothing more");
        assert!(Reply::parse(Value::Int(1)).is_err());
    }
}
