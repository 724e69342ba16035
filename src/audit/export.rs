//! Reading records back out of an audit log, filtered: what auditors
//! export to a SIEM (`AuditService/ExportAudit`, `writ audit export`) and
//! what reports are computed from.
//!
//! The log is read from the start on a blocking thread, one line at a
//! time, and matching records are handed to the caller through a bounded
//! channel, so a slow reader holds back the scan instead of memory
//! filling up, and a reader that goes away stops it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc;

/// Which records to read; `None` matches any.
#[derive(Clone, Debug, Default)]
pub struct ExportFilter {
    /// At or after (by the record's `ts`).
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// Records about one of these agents.
    pub agents: Option<HashSet<String>>,
    pub task_id: Option<String>,
    pub event: Option<String>,
}

/// One record as read.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportedRecord {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub event: String,
    pub agent: Option<String>,
    pub task: Option<String>,
    /// The line as written.
    pub json: String,
    /// The record, parsed.
    pub value: Value,
}

/// Why a read stopped early.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("the audit log {0} cannot be read: {1}")]
    Unreadable(PathBuf, String),
    #[error("record {0} of the audit log is not a record; check the log with `writ audit verify`")]
    Corrupt(u64),
}

impl ExportFilter {
    fn matches(&self, record: &ExportedRecord) -> bool {
        self.since.is_none_or(|since| record.ts >= since)
            && self.until.is_none_or(|until| record.ts < until)
            && self
                .agents
                .as_ref()
                .is_none_or(|agents| record.agent.as_ref().is_some_and(|a| agents.contains(a)))
            && self.task_id.as_ref().is_none_or(|task| record.task.as_ref() == Some(task))
            && self.event.as_ref().is_none_or(|event| record.event == *event)
    }
}

/// Starts reading `path` on a blocking thread; matching records arrive on
/// the receiver, in log order, then the channel closes (after an error,
/// if the read failed).
pub fn export(path: &Path, filter: ExportFilter) -> mpsc::Receiver<Result<ExportedRecord, ExportError>> {
    let (records, receiver) = mpsc::channel(256);
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        if let Err(error) = scan(&path, &filter, |record| records.blocking_send(Ok(record)).is_ok()) {
            let _ = records.blocking_send(Err(error));
        }
    });
    receiver
}

/// Reads every record of `path` matching `filter` into `each`, which
/// returns false to stop.
pub fn scan(
    path: &Path,
    filter: &ExportFilter,
    mut each: impl FnMut(ExportedRecord) -> bool,
) -> Result<(), ExportError> {
    let unreadable = |error: std::io::Error| ExportError::Unreadable(path.to_path_buf(), error.to_string());
    let file = match File::open(path) {
        Ok(file) => file,
        // A replica that has written nothing yet has nothing to export.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(unreadable(error)),
    };
    let mut reader = BufReader::new(file);
    let mut bytes = Vec::new();
    for number in 1u64.. {
        bytes.clear();
        if reader.read_until(b'\n', &mut bytes).map_err(unreadable)? == 0 {
            break;
        }
        // A last line without its end is one being written: not yet a
        // record.
        if bytes.pop() != Some(b'\n') {
            break;
        }
        let line = String::from_utf8(std::mem::take(&mut bytes)).map_err(|_| ExportError::Corrupt(number))?;
        let record = parse(line).ok_or(ExportError::Corrupt(number))?;
        if filter.matches(&record) && !each(record) {
            return Ok(());
        }
    }
    Ok(())
}

fn parse(json: String) -> Option<ExportedRecord> {
    let value: Value = serde_json::from_str(&json).ok()?;
    let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    Some(ExportedRecord {
        seq: value.get("seq")?.as_u64()?,
        ts: value.get("ts")?.as_str()?.parse().ok()?,
        event: text("event")?,
        agent: text("agent"),
        task: text("task"),
        json,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditLog};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    async fn log(dir: &Path) -> PathBuf {
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path, &[5u8; 32]).unwrap();
        for (second, event, agent, task) in [
            (0, "task_started", "a", "t-1"),
            (10, "issued", "a", "t-1"),
            (20, "issued", "b", "t-2"),
            (30, "task_closed", "a", "t-1"),
        ] {
            let event = AuditEvent {
                event,
                actor: "x".into(),
                outcome: "ok",
                agent: Some(agent.into()),
                task: Some(task.into()),
                ..AuditEvent::default()
            };
            log.record(at(second), event).await.unwrap();
        }
        path
    }

    fn seqs(path: &Path, filter: &ExportFilter) -> Vec<u64> {
        let mut seqs = Vec::new();
        scan(path, filter, |record| {
            seqs.push(record.seq);
            true
        })
        .unwrap();
        seqs
    }

    #[tokio::test]
    async fn filters_by_time_agent_task_and_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(dir.path()).await;
        assert_eq!(seqs(&path, &ExportFilter::default()), [1, 2, 3, 4]);
        let window = ExportFilter { since: Some(at(10)), until: Some(at(30)), ..ExportFilter::default() };
        assert_eq!(seqs(&path, &window), [2, 3], "since inclusive, until exclusive");
        let agents = ExportFilter { agents: Some(["a".to_string()].into()), ..ExportFilter::default() };
        assert_eq!(seqs(&path, &agents), [1, 2, 4]);
        let task = ExportFilter { task_id: Some("t-2".into()), ..ExportFilter::default() };
        assert_eq!(seqs(&path, &task), [3]);
        let event = ExportFilter {
            event: Some("issued".into()),
            agents: Some(["b".to_string()].into()),
            ..ExportFilter::default()
        };
        assert_eq!(seqs(&path, &event), [3]);
        let nobody = ExportFilter { agents: Some(HashSet::new()), ..ExportFilter::default() };
        assert!(seqs(&path, &nobody).is_empty());
    }

    #[tokio::test]
    async fn the_line_is_given_as_written_and_a_reader_can_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(dir.path()).await;
        let first_line = std::fs::read_to_string(&path).unwrap().lines().next().unwrap().to_owned();
        let mut read = Vec::new();
        scan(&path, &ExportFilter::default(), |record| {
            read.push(record);
            false
        })
        .unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].json, first_line);
        let mut streamed = export(&path, ExportFilter::default());
        let mut count = 0;
        while let Some(record) = streamed.recv().await {
            record.unwrap();
            count += 1;
        }
        assert_eq!(count, 4);
    }

    #[tokio::test]
    async fn a_corrupt_record_stops_the_read_and_a_missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = log(dir.path()).await;
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"seq\":5,\"half-writ");
        std::fs::write(&path, &text).unwrap();
        assert!(
            scan(&path, &ExportFilter::default(), |_| true).is_ok(),
            "a line being written is not read yet"
        );
        text.push_str("ten\nnot json\n");
        std::fs::write(&path, text).unwrap();
        let error = scan(&path, &ExportFilter::default(), |_| true).unwrap_err();
        assert_eq!(error, ExportError::Corrupt(5));
        assert!(error.to_string().contains("writ audit verify"));
        assert!(scan(&dir.path().join("none.jsonl"), &ExportFilter::default(), |_| true).is_ok());
    }
}
