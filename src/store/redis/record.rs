//! How a lease is kept in Redis: a compact binary record, about a third of
//! its JSON. The Lua scripts read and rewrite it too (`lua/common.lua`
//! holds their half of the codec); the two must agree byte for byte.
//!
//! Format 1, in order (integers big-endian):
//!
//! | field          | encoding                                                   |
//! |----------------|------------------------------------------------------------|
//! | head           | one byte: the format (1) in the top three bits; bit 4 set if there is a revocation, bit 3 if there is an issued_at; the state in the low three bits (pending 0, active 1, revoking 2, revoked 3, failed 4) |
//! | created_at     | time                                                       |
//! | expires_at     | time                                                       |
//! | issued_at      | time, if bit 3                                             |
//! | revocation     | if bit 4: reason (one byte, see [`REASONS`]), requested_at (time), attempts (u32), next_attempt_at (time), generation (u32), completed_at (optional time), last_error (optional string) |
//! | handle         | key id (string), sealed bytes (string)                     |
//! | agent, task id | string, string                                             |
//! | provider, role | string, string                                             |
//! | scopes         | a count (as a string length), then each a string           |
//! | tool           | the bytes up to the end                                    |
//!
//! A *time* is 8 bytes: nanoseconds since the Unix epoch as an `i64` with
//! its sign bit flipped, so that byte order is time order. Scripts compare
//! and copy times as strings and never do arithmetic on them; schedule
//! entries are the time's bytes followed by the lease id, so they sort by
//! (time, id) exactly. A *string* is its length (one byte below 255, else
//! 255 and a `u32`) and its bytes. An *optional* value is `0`, or `1` and
//! the value. The lease id is not in the record: it is the record's field.
//!
//! Every byte counts: Redis allocates a record in steps (256 bytes, then
//! 320), and a typical lease lands near that line; hence one head byte for
//! format, state and flags, and a tool without a length.
//!
//! A stored value that does not start with format 1 (for example the JSON
//! of earlier versions, whose `{` reads as format 3) is refused as corrupt:
//! there was no deployment to migrate, and a clean break keeps one format
//! to reason about.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{Lease, LeaseState, Revocation, RevocationReason, SealedHandle};
use crate::store::StoreError;

const FORMAT: u8 = 1;
/// Head bits: the lease has a revocation, an issued_at.
const REVOCATION: u8 = 1 << 4;
const ISSUED: u8 = 1 << 3;

const STATES: [LeaseState; 5] =
    [LeaseState::Pending, LeaseState::Active, LeaseState::Revoking, LeaseState::Revoked, LeaseState::Failed];

/// Revocation reasons by their code (the index). `lua/common.lua` knows
/// `mint_failed` by its code.
pub(super) const REASONS: [RevocationReason; 10] = [
    RevocationReason::TaskClosed,
    RevocationReason::DeadlinePassed,
    RevocationReason::Expired,
    RevocationReason::Released,
    RevocationReason::MintFailed,
    RevocationReason::Abandoned,
    RevocationReason::Operator,
    RevocationReason::AgentSuspended,
    RevocationReason::AgentRetired,
    RevocationReason::ProviderSuspended,
];

/// A lease as its record.
pub(super) fn encode(lease: &Lease) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(256);
    let revoking = if lease.revocation.is_some() { REVOCATION } else { 0 };
    let issued = if lease.issued_at.is_some() { ISSUED } else { 0 };
    out.push(FORMAT << 5 | revoking | issued | state_code(lease.state));
    out.extend(time(lease.created_at)?);
    out.extend(time(lease.expires_at)?);
    if let Some(issued_at) = lease.issued_at {
        out.extend(time(issued_at)?);
    }
    if let Some(revocation) = &lease.revocation {
        {
            out.push(reason_code(revocation.reason));
            out.extend(time(revocation.requested_at)?);
            out.extend(revocation.attempts.to_be_bytes());
            out.extend(time(revocation.next_attempt_at)?);
            out.extend(revocation.generation.to_be_bytes());
            optional_time(&mut out, revocation.completed_at)?;
            match &revocation.last_error {
                None => out.push(0),
                Some(error) => {
                    out.push(1);
                    string(&mut out, error.as_bytes())?;
                }
            }
        }
    }
    out.extend(handle(&lease.handle)?);
    for text in [&lease.agent, &lease.task_id, &lease.provider, &lease.role] {
        string(&mut out, text.as_bytes())?;
    }
    length(&mut out, lease.scopes.len())?;
    for scope in &lease.scopes {
        string(&mut out, scope.as_bytes())?;
    }
    out.extend_from_slice(lease.tool.as_bytes());
    Ok(out)
}

/// The record of lease `id`, read back.
pub(super) fn decode(id: Uuid, record: &[u8]) -> Result<Lease, StoreError> {
    let mut reader = Reader { rest: record, id };
    let head = reader.byte()?;
    if head >> 5 != FORMAT {
        return Err(reader.corrupt("is not in record format 1"));
    }
    let state = *STATES.get(usize::from(head & 7)).ok_or_else(|| reader.corrupt("has no valid state"))?;
    let created_at = reader.time()?;
    let expires_at = reader.time()?;
    let issued_at = if head & ISSUED != 0 { Some(reader.time()?) } else { None };
    let revocation = reader.flagged(head & REVOCATION != 0, |reader| {
        let reason =
            *REASONS.get(usize::from(reader.byte()?)).ok_or_else(|| reader.corrupt("has no valid reason"))?;
        Ok(Revocation {
            reason,
            requested_at: reader.time()?,
            attempts: reader.u32()?,
            next_attempt_at: reader.time()?,
            generation: reader.u32()?,
            completed_at: reader.optional(Reader::time)?,
            last_error: reader.optional(Reader::text)?,
        })
    })?;
    let handle = SealedHandle { key_id: reader.text()?, sealed: reader.bytes()?.to_vec() };
    let (agent, task_id, provider, role) = (reader.text()?, reader.text()?, reader.text()?, reader.text()?);
    let count = reader.length()?;
    let scopes = (0..count).map(|_| reader.text()).collect::<Result<_, _>>()?;
    let tool = String::from_utf8(reader.rest.to_vec())
        .map_err(|_| reader.corrupt("has a tool that is not UTF-8"))?;
    Ok(Lease {
        id,
        agent,
        task_id,
        provider,
        role,
        scopes,
        tool,
        state,
        created_at,
        issued_at,
        expires_at,
        handle,
        revocation,
    })
}

/// A sealed handle as a record holds it; `activate` passes it to the script
/// in this form, which stores it as is.
pub(super) fn handle(handle: &SealedHandle) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(handle.key_id.len() + handle.sealed.len() + 2);
    string(&mut out, handle.key_id.as_bytes())?;
    string(&mut out, &handle.sealed)?;
    Ok(out)
}

/// A time as records and schedules hold it: byte order is time order.
pub(super) fn time(at: DateTime<Utc>) -> Result<[u8; 8], StoreError> {
    let nanos = at.timestamp_nanos_opt().ok_or_else(|| {
        StoreError::Corrupt(format!("time {at} is outside what the Redis store can hold (1677 to 2262)"))
    })?;
    Ok(flip(nanos).to_be_bytes())
}

/// A time a script answered with (the head of a schedule entry).
pub(super) fn read_time(bytes: &[u8]) -> Result<DateTime<Utc>, StoreError> {
    let raw: [u8; 8] = bytes
        .get(..8)
        .and_then(|head| head.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("a schedule entry without a time".into()))?;
    Ok(DateTime::from_timestamp_nanos(unflip(u64::from_be_bytes(raw))))
}

pub(super) fn state_code(state: LeaseState) -> u8 {
    STATES.iter().position(|known| *known == state).and_then(|code| u8::try_from(code).ok()).unwrap_or(0)
}

pub(super) fn reason_code(reason: RevocationReason) -> u8 {
    REASONS.iter().position(|known| *known == reason).and_then(|code| u8::try_from(code).ok()).unwrap_or(0)
}

fn flip(nanos: i64) -> u64 {
    u64::from_ne_bytes(nanos.to_ne_bytes()) ^ (1 << 63)
}

fn unflip(raw: u64) -> i64 {
    i64::from_ne_bytes((raw ^ (1 << 63)).to_ne_bytes())
}

fn optional_time(out: &mut Vec<u8>, at: Option<DateTime<Utc>>) -> Result<(), StoreError> {
    match at {
        None => out.push(0),
        Some(at) => {
            out.push(1);
            out.extend(time(at)?);
        }
    }
    Ok(())
}

fn length(out: &mut Vec<u8>, length: usize) -> Result<(), StoreError> {
    match u8::try_from(length) {
        Ok(short) if short < u8::MAX => out.push(short),
        _ => {
            let long = u32::try_from(length)
                .map_err(|_| StoreError::Corrupt(format!("a lease field of {length} bytes is too long")))?;
            out.push(u8::MAX);
            out.extend(long.to_be_bytes());
        }
    }
    Ok(())
}

fn string(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), StoreError> {
    length(out, bytes.len())?;
    out.extend_from_slice(bytes);
    Ok(())
}

/// Reads a record front to back. Errors name the lease and what was wrong,
/// never a value: a record holds a sealed handle.
struct Reader<'a> {
    rest: &'a [u8],
    id: Uuid,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, what: &str) -> StoreError {
        StoreError::Corrupt(format!("the record of lease {} {what}", self.id))
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], StoreError> {
        if self.rest.len() < count {
            return Err(self.corrupt("is cut short"));
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let raw = self.take(4)?;
        Ok(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
    }

    fn time(&mut self) -> Result<DateTime<Utc>, StoreError> {
        read_time(self.take(8)?)
    }

    fn length(&mut self) -> Result<usize, StoreError> {
        match self.byte()? {
            u8::MAX => usize::try_from(self.u32()?).map_err(|_| self.corrupt("has an impossible length")),
            short => Ok(usize::from(short)),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let length = self.length()?;
        self.take(length)
    }

    fn text(&mut self) -> Result<String, StoreError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("has a text field that is not UTF-8"))
    }

    fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match self.byte()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(self.corrupt("has an invalid presence flag")),
        }
    }

    fn flagged<T>(
        &mut self,
        present: bool,
        read: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        if present { read(self).map(Some) } else { Ok(None) }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;

    fn lease() -> Lease {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::nanoseconds(123_456_789);
        Lease {
            id: Uuid::from_u128(7),
            agent: "agent-ü".into(),
            task_id: "t".repeat(300),
            provider: "postgres".into(),
            role: String::new(),
            scopes: vec!["a".into(), String::new(), "c".repeat(255)],
            tool: "tool".into(),
            state: LeaseState::Revoking,
            created_at: at,
            issued_at: Some(at + TimeDelta::seconds(1)),
            expires_at: at + TimeDelta::seconds(900),
            handle: SealedHandle { key_id: "k".into(), sealed: (0..=255).collect() },
            revocation: Some(Revocation {
                reason: RevocationReason::MintFailed,
                requested_at: at - TimeDelta::days(20_000),
                attempts: u32::MAX,
                next_attempt_at: at,
                last_error: Some("provider \"down\"".into()),
                completed_at: None,
                generation: 3,
            }),
        }
    }

    #[test]
    fn leases_read_back_whole() {
        let original = lease();
        assert_eq!(decode(original.id, &encode(&original).unwrap()).unwrap(), original);
        let plain = Lease { revocation: None, issued_at: None, scopes: vec![], ..lease() };
        assert_eq!(decode(plain.id, &encode(&plain).unwrap()).unwrap(), plain);
    }

    #[test]
    fn time_bytes_sort_as_times() {
        let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let times = [
            base - TimeDelta::days(365 * 60),
            base - TimeDelta::nanoseconds(1),
            base,
            base + TimeDelta::nanoseconds(1),
            base + TimeDelta::days(365 * 200),
        ];
        let encoded: Vec<[u8; 8]> = times.iter().map(|at| time(*at).unwrap()).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(sorted, encoded);
        for (at, bytes) in times.iter().zip(&encoded) {
            assert_eq!(read_time(bytes).unwrap(), *at);
        }
        let far = Utc.with_ymd_and_hms(2300, 1, 1, 0, 0, 0).unwrap();
        assert!(time(far).is_err(), "out of range is refused, not wrapped");
    }

    #[test]
    fn damaged_records_are_corrupt() {
        let record = encode(&lease()).unwrap();
        let tool_at = record.len() - "tool".len();
        for cut in [0, 1, 10, tool_at - 1] {
            assert!(decode(Uuid::nil(), &record[..cut]).is_err(), "cut at {cut}");
        }
        let json = serde_json::to_vec(&lease()).unwrap();
        let error = decode(Uuid::nil(), &json).unwrap_err();
        assert!(error.to_string().contains("format 1"), "{error}");
    }
}
