//! Verifying audit logs: the hash chain always, and with public keys the
//! signed checkpoints, for one log or a directory of replicas' logs.
//!
//! Every failure names the record (its line number, which is its sequence
//! number in an untouched log) and what is wrong with it:
//! - a record edited in place breaks the chain at the record after it;
//! - a record removed or moved breaks the chain and the sequence there;
//! - a log rewritten from the top (every hash recomputed) fails at the
//!   first checkpoint after the change, whose signature covers a head the
//!   log no longer has, or because no checkpoint verifies at all;
//! - a log cut short ends with records no checkpoint covers, or (cut right
//!   after a checkpoint) holds fewer records than a checkpoint its reader
//!   saw elsewhere (`--at-least`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ring::digest;
use serde_json::Value;

use super::GENESIS;
use super::checkpoint::{self, Checkpoint, PublicKey};

/// What a verification requires beyond an unbroken chain.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Keys whose checkpoints are trusted. With none, checkpoints are not
    /// checked (the chain is).
    pub keys: Vec<PublicKey>,
    /// Accept the records after the last checkpoint (a log still being
    /// written; also an empty log, or one before its first checkpoint).
    /// Otherwise they fail the verification, since nothing proves they
    /// were not added, or the log not cut there, by someone else.
    pub allow_live_tail: bool,
    /// Accept records a restart found unsigned (`chain_resumed`: a crash,
    /// or records added while Writ was stopped).
    pub allow_restarts: bool,
    /// The signed records must reach this sequence number (the last
    /// checkpoint seen elsewhere, such as in a SIEM), and if a hash is
    /// given, that record's line must hash to it. One log only.
    pub at_least: Option<(u64, Option<String>)>,
    /// For a directory: the replicas whose logs must be there.
    pub replicas: Vec<String>,
}

/// What a verified log holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub path: PathBuf,
    pub records: u64,
    pub checkpoints: u64,
    /// The replica the log's checkpoints name.
    pub replica: Option<String>,
    /// The last verified checkpoint (every record up to it is chained
    /// under a signature).
    pub signed_through: u64,
    /// Ranges of records no checkpoint proves: found unsigned at a
    /// restart, or after the last checkpoint.
    pub unproven: Vec<(u64, u64)>,
}

impl Report {
    /// One line for a person.
    pub fn summary(&self, signed: bool) -> String {
        let mut text = format!("{}: {} records, hash chain intact", self.path.display(), self.records);
        if signed && self.checkpoints == 0 {
            text.push_str("; no signed checkpoint yet");
        } else if signed {
            text.push_str(&format!(
                "; {} signed checkpoint{}{}, records 1 to {} signed",
                self.checkpoints,
                if self.checkpoints == 1 { "" } else { "s" },
                self.replica.as_deref().map(|replica| format!(" of replica {replica}")).unwrap_or_default(),
                self.signed_through
            ));
        }
        if signed && !self.unproven.is_empty() {
            let ranges: Vec<String> =
                self.unproven.iter().map(|(from, to)| format!("{from} to {to}")).collect();
            text.push_str(&format!("; records {} are not proven by a checkpoint", ranges.join(", ")));
        }
        text
    }
}

/// What the chain of a log says, checkpoints read but their signatures
/// not checked (Writ reads its own log so at start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainState {
    pub records: u64,
    /// The record number of the last checkpoint; 0 if none.
    pub last_checkpoint: u64,
    pub replica: Option<String>,
}

/// How checkpoints are checked.
enum Mode<'a> {
    /// Not at all: the hash chain only.
    Chain,
    /// Read and matched to the chain; the signatures of those made with
    /// this key checked (Writ's own, at start), others' not (keys retired
    /// by a rotation).
    Own(&'a PublicKey),
    /// Read, matched, and each signature verified with one of these keys.
    Signed(&'a [PublicKey]),
}

/// Verifies one log file (chain only).
pub fn verify_file(path: &Path) -> Result<u64, String> {
    verify_log(path, &VerifyOptions::default()).map(|report| report.records)
}

/// Reads a log's chain and checkpoints, checking the signatures of the
/// checkpoints `own` made (those of other keys are taken as they are).
pub fn scan_chain(path: &Path, own: &PublicKey) -> Result<ChainState, String> {
    let report = walk(path, &Mode::Own(own))?;
    Ok(ChainState {
        records: report.records,
        last_checkpoint: report.signed_through,
        replica: report.replica,
    })
}

/// Verifies a log file, or every `*.jsonl` log in a directory (each
/// replica's own), checking that no two logs claim one replica and that
/// every replica expected is there.
pub fn verify_path(path: &Path, options: &VerifyOptions) -> Result<Vec<Report>, String> {
    if !path.is_dir() {
        if !options.replicas.is_empty() {
            return Err("--replica is for a directory of logs".into());
        }
        return Ok(vec![verify_log(path, options)?]);
    }
    if options.at_least.is_some() {
        return Err("--at-least is for one log: each replica's log has its own sequence".into());
    }
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
        if entry.path().extension().is_some_and(|extension| extension == "jsonl") {
            logs.push(entry.path());
        }
    }
    logs.sort();
    if logs.is_empty() {
        return Err(format!("{}: no audit logs (*.jsonl) in this directory", path.display()));
    }
    let mut reports = Vec::new();
    let mut replicas: BTreeMap<String, PathBuf> = BTreeMap::new();
    for log in logs {
        let report = verify_log(&log, options)?;
        if let Some(replica) = &report.replica
            && let Some(other) = replicas.insert(replica.clone(), log.clone())
        {
            return Err(format!(
                "{} and {} both claim replica {replica:?}: every replica writes its own log (verify rotated \
                 files one by one)",
                other.display(),
                log.display()
            ));
        }
        reports.push(report);
    }
    if let Some(missing) = options.replicas.iter().find(|replica| !replicas.contains_key(*replica)) {
        return Err(format!("{}: no log of replica {missing:?}", path.display()));
    }
    Ok(reports)
}

/// Verifies one log.
pub fn verify_log(path: &Path, options: &VerifyOptions) -> Result<Report, String> {
    if options.keys.is_empty() {
        return walk(path, &Mode::Chain);
    }
    let mut report = walk(path, &Mode::Signed(&options.keys))?;
    if report.records > report.signed_through {
        report.unproven.push((report.signed_through + 1, report.records));
    }
    let display = path.display();
    if let Some((at_least, hash)) = &options.at_least {
        if report.signed_through < *at_least {
            return Err(format!(
                "{display}: signed records end at {}, before record {at_least}: the log was cut short",
                report.signed_through
            ));
        }
        if let Some(hash) = hash
            && line_hash(path, *at_least)?.as_deref() != Some(hash.as_str())
        {
            return Err(format!(
                "{display}: record {at_least} does not hash to {hash}: the log is not the one that checkpoint \
                 was taken from"
            ));
        }
    }
    let live = options.allow_live_tail;
    if report.records == 0 && !live {
        return Err(format!("{display}: the log is empty: nothing is signed (--allow-live-tail accepts it)"));
    }
    if report.records > 0 && report.checkpoints == 0 && !live {
        return Err(format!(
            "{display}: no signed checkpoint in {} records: nothing proves the log is the one Writ wrote",
            report.records
        ));
    }
    for &(from, to) in &report.unproven {
        let tail = to == report.records;
        if tail && !live {
            return Err(format!(
                "{display}: records {from} to {to} come after the last checkpoint (record {}): nothing proves \
                 them, or that the log was not cut there (a log still being written: --allow-live-tail)",
                report.signed_through
            ));
        }
        if !tail && !options.allow_restarts {
            return Err(format!(
                "{display}: records {from} to {to} were found unsigned when Writ restarted (a crash, or records \
                 added while it was stopped): nothing proves them (--allow-restarts accepts them)"
            ));
        }
    }
    Ok(report)
}

/// The SHA-256 of record `number`'s line.
fn line_hash(path: &Path, number: u64) -> Result<Option<String>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let line = BufReader::new(file)
        .split(b'\n')
        .nth(usize::try_from(number.saturating_sub(1)).unwrap_or(usize::MAX));
    match line {
        Some(line) => {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Some(hex::encode(digest::digest(&digest::SHA256, &line))))
        }
        None => Ok(None),
    }
}

fn walk(path: &Path, mode: &Mode) -> Result<Report, String> {
    let fail = |number: u64, why: String| format!("{}: record {number}: {why}", path.display());
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut report = Report { path: path.to_path_buf(), ..Report::default() };
    let mut head = GENESIS.to_string();
    let mut last_checkpoint = 0u64;
    let mut bytes = Vec::new();
    for number in 1u64.. {
        bytes.clear();
        let read = reader.read_until(b'\n', &mut bytes).map_err(|e| fail(number, e.to_string()))?;
        if read == 0 {
            break;
        }
        if bytes.pop() != Some(b'\n') {
            return Err(fail(
                number,
                "the last line has no end: it was cut short or is being written".into(),
            ));
        }
        let line = std::str::from_utf8(&bytes).map_err(|_| fail(number, "not UTF-8 text".into()))?;
        let value: Value = serde_json::from_str(line)
            .map_err(|e| fail(number, format!("not a JSON record ({e}): cut short or edited")))?;
        if value.get("seq").and_then(Value::as_u64) != Some(number) {
            return Err(fail(
                number,
                format!(
                    "sequence number {} where {number} belongs: a record before it was removed, or records \
                     were reordered",
                    value.get("seq").map_or("missing".into(), Value::to_string)
                ),
            ));
        }
        if value.get("prev").and_then(Value::as_str) != Some(head.as_str()) {
            return Err(fail(
                number,
                format!(
                    "its prev is not the hash of record {}: record {} was changed, or removed",
                    number - 1,
                    number - 1
                ),
            ));
        }
        let event = value.get("event").and_then(Value::as_str);
        if !matches!(mode, Mode::Chain) && event == Some(checkpoint::EVENT) {
            let checkpoint = checked_checkpoint(&value, line, number, &head, last_checkpoint, mode)
                .map_err(|why| fail(number, why))?;
            match &report.replica {
                Some(replica) if *replica != checkpoint.replica => {
                    return Err(fail(
                        number,
                        format!(
                            "a checkpoint of replica {:?} in the log of replica {replica:?}",
                            checkpoint.replica
                        ),
                    ));
                }
                _ => report.replica = Some(checkpoint.replica),
            }
            report.checkpoints += 1;
            last_checkpoint = number;
        }
        if !matches!(mode, Mode::Chain) && event == Some(super::RESUMED) {
            let range = (
                value.pointer("/details/unproven_from").and_then(Value::as_u64),
                value.pointer("/details/unproven_to").and_then(Value::as_u64),
            );
            match range {
                (Some(from), Some(to)) if from == last_checkpoint + 1 && to + 1 == number => {
                    report.unproven.push((from, to));
                }
                _ => {
                    return Err(fail(
                        number,
                        format!(
                            "a {} record that does not name the records since the last checkpoint",
                            super::RESUMED
                        ),
                    ));
                }
            }
        }
        head = hex::encode(digest::digest(&digest::SHA256, &bytes));
        report.records = number;
    }
    report.signed_through = last_checkpoint;
    Ok(report)
}

/// A checkpoint record, checked: written exactly as Writ writes one (so
/// no field of its line is unprotected, though no later record covers
/// it), over the record before it, and (signed mode) signed by a key
/// given.
fn checked_checkpoint(
    value: &Value,
    line: &str,
    number: u64,
    head: &str,
    last_checkpoint: u64,
    mode: &Mode,
) -> Result<Checkpoint, String> {
    let checkpoint: Checkpoint = value
        .get("details")
        .cloned()
        .and_then(|details| serde_json::from_value(details).ok())
        .ok_or_else(|| "a checkpoint without its signed details".to_string())?;
    let key = match mode {
        Mode::Signed(keys) => {
            Some(keys.iter().find(|key| key.key_id() == checkpoint.key_id).ok_or_else(|| {
                format!("a checkpoint signed by key {:?}, which was not given", checkpoint.key_id)
            })?)
        }
        Mode::Own(key) => Some(*key).filter(|key| key.key_id() == checkpoint.key_id),
        Mode::Chain => None,
    };
    if key.is_some_and(|key| !checkpoint.verify(key)) {
        return Err("a checkpoint whose signature does not verify: it was forged or edited".into());
    }
    if checkpoint.covers != number - 1 || checkpoint.head != head {
        return Err(format!(
            "the checkpoint signed record {} with another hash: records {} to {} were changed since it was signed",
            checkpoint.covers,
            last_checkpoint + 1,
            number - 1
        ));
    }
    let ts = value.get("ts").and_then(Value::as_str).and_then(|ts| ts.parse::<DateTime<Utc>>().ok());
    let canonical = ts
        .filter(|ts| checkpoint.at.parse::<DateTime<Utc>>().ok() == Some(*ts))
        .and_then(|ts| super::checkpoint_line(number, ts, head, checkpoint.clone()));
    if canonical.as_deref() != Some(line) {
        return Err("a checkpoint record with fields its signature does not cover: it was edited".into());
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests;
