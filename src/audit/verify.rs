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
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

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
    /// Accept records after the last checkpoint (a log still being
    /// written); otherwise they fail the verification, since nothing
    /// proves they were not added, or the log not cut, by someone else.
    pub allow_unsigned_tail: bool,
    /// The signed records must reach at least this sequence number (the
    /// last checkpoint seen elsewhere, such as in a SIEM).
    pub at_least: Option<u64>,
}

/// What a verified log holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub path: PathBuf,
    pub records: u64,
    pub checkpoints: u64,
    /// The replica the log's checkpoints name.
    pub replica: Option<String>,
    /// The last record a verified checkpoint covers (the checkpoint
    /// itself, so every record up to it is proven).
    pub signed_through: u64,
    /// Records after the last verified checkpoint.
    pub unsigned_tail: u64,
}

impl Report {
    /// One line for a person.
    pub fn summary(&self, signed: bool) -> String {
        let mut text = format!("{}: {} records, hash chain intact", self.path.display(), self.records);
        if signed {
            text.push_str(&format!(
                "; {} signed checkpoints{}, records 1 to {} signed",
                self.checkpoints,
                self.replica.as_deref().map(|replica| format!(" of replica {replica}")).unwrap_or_default(),
                self.signed_through
            ));
            if self.unsigned_tail > 0 {
                text.push_str(&format!(
                    "; the last {} records are not covered by a checkpoint yet",
                    self.unsigned_tail
                ));
            }
        }
        text
    }
}

/// Verifies one log file (chain only).
pub fn verify_file(path: &Path) -> Result<u64, String> {
    verify_log(path, &VerifyOptions::default()).map(|report| report.records)
}

/// Verifies a log file, or every `*.jsonl` log in a directory (each
/// replica's own), checking that no two logs claim one replica.
pub fn verify_path(path: &Path, options: &VerifyOptions) -> Result<Vec<Report>, String> {
    if !path.is_dir() {
        return Ok(vec![verify_log(path, options)?]);
    }
    let mut logs: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "jsonl"))
        .collect();
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
                "{} and {} both claim replica {replica:?}: every replica writes its own log",
                other.display(),
                log.display()
            ));
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Verifies one log.
pub fn verify_log(path: &Path, options: &VerifyOptions) -> Result<Report, String> {
    let fail = |number: u64, why: String| format!("{}: record {number}: {why}", path.display());
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let signed = !options.keys.is_empty();
    let mut report = Report { path: path.to_path_buf(), ..Report::default() };
    let mut head = GENESIS.to_string();
    // The last verified checkpoint's record number, and the one before.
    let mut last_checkpoint = 0u64;
    for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
        let number = index as u64 + 1;
        let line = line.map_err(|e| fail(number, e.to_string()))?;
        let line = String::from_utf8(line).map_err(|_| fail(number, "not UTF-8 text".into()))?;
        let value: Value = serde_json::from_str(&line)
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
        if signed && value.get("event").and_then(Value::as_str) == Some(checkpoint::EVENT) {
            let checkpoint: Checkpoint = value
                .get("details")
                .cloned()
                .and_then(|details| serde_json::from_value(details).ok())
                .ok_or_else(|| fail(number, "a checkpoint without its signed details".into()))?;
            let key = options.keys.iter().find(|key| key.key_id() == checkpoint.key_id).ok_or_else(|| {
                fail(number, format!("a checkpoint signed by key {}, which was not given", checkpoint.key_id))
            })?;
            if !checkpoint.verify(key) {
                return Err(fail(
                    number,
                    "a checkpoint whose signature does not verify: it was forged or edited".into(),
                ));
            }
            if checkpoint.covers != number - 1 || checkpoint.head != head {
                return Err(fail(
                    number,
                    format!(
                        "the checkpoint signed record {} with another hash: records {} to {} were changed \
                         since it was signed",
                        checkpoint.covers,
                        last_checkpoint + 1,
                        number - 1
                    ),
                ));
            }
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
        head = hex::encode(digest::digest(&digest::SHA256, line.as_bytes()));
        report.records = number;
    }
    if !signed {
        return Ok(report);
    }
    report.signed_through = last_checkpoint;
    report.unsigned_tail = report.records - last_checkpoint;
    if report.records > 0 && report.checkpoints == 0 {
        return Err(format!(
            "{}: no signed checkpoint in {} records: nothing proves the log is the one Writ wrote",
            path.display(),
            report.records
        ));
    }
    if report.unsigned_tail > 0 && !options.allow_unsigned_tail {
        return Err(format!(
            "{}: records {} to {} come after the last checkpoint (record {last_checkpoint}): nothing proves \
             them, or that the log was not cut there (a log still being written: --allow-unsigned-tail)",
            path.display(),
            last_checkpoint + 1,
            report.records
        ));
    }
    if let Some(at_least) = options.at_least
        && report.signed_through < at_least
    {
        return Err(format!(
            "{}: signed records end at {}, before record {at_least}: the log was cut short",
            path.display(),
            report.signed_through
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
