//! Evidence: an append-only, hash-chained JSON-lines audit log.
//!
//! Every decision, issuance, renewal, release, revocation and task change
//! is one line: who, what, which task, which policies, the outcome. Lines
//! never hold secrets; lease (credential) ids appear only as keyed hashes,
//! so the log can be shared without handing out handles to live
//! credentials, while whoever holds the audit key can still find a lease.
//!
//! Each line carries `prev`, the SHA-256 of the line before it, so any
//! edit, deletion or reordering breaks the chain. With a signing key, the
//! chain's head is signed at an interval and at shutdown ([`checkpoint`]),
//! so a log rewritten from the top or cut short is detected too
//! ([`verify`]).
//!
//! Writes are group-committed by one writer thread: callers wait until their
//! line is on disk (`fdatasync`); under steady load commits are spaced
//! (`COMMIT_SPACING`) so that each carries many lines. If a write fails, the log refuses every
//! later write until Writ restarts, and issuance stops with it (fail closed).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use ring::{digest, hmac};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub mod checkpoint;
pub mod export;
pub mod verify;

pub use checkpoint::{PublicKey, Signer};
pub use verify::{Report, VerifyOptions, verify_file, verify_path};

/// The most lines one commit writes.
const MAX_BATCH: usize = 1024;

/// Under steady load, commits (`fdatasync`) are spaced at least this far
/// apart: a line arriving within this long of the last commit waits for
/// the rest of it, so that one commit carries many lines instead of two or
/// three (each commit costs the kernel a journal write). An idle log, whose
/// last commit is older, commits at once; a batch already this full, or
/// one holding a close, does not wait.
const COMMIT_SPACING: std::time::Duration = std::time::Duration::from_micros(1000);

/// A batch this large commits without waiting for [`COMMIT_SPACING`].
const FULL_ENOUGH: usize = 64;
/// How far back from the end of the file to look for the chain head.
const TAIL_WINDOW: u64 = 64 * 1024;
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AuditError {
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
}

/// One event, before it is stamped, hashed and chained.
#[derive(Clone, Debug, Default)]
pub struct AuditEvent {
    pub event: &'static str,
    pub actor: String,
    pub outcome: &'static str,
    pub agent: Option<String>,
    pub task: Option<String>,
    pub provider: Option<String>,
    pub role: Option<String>,
    pub tool: Option<String>,
    pub lease: Option<Uuid>,
    pub reason: Option<String>,
    pub policies: Vec<String>,
    pub details: Option<Value>,
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    ts: DateTime<Utc>,
    prev: &'a str,
    event: &'a str,
    actor: &'a str,
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    policies: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Value>,
}

struct Job {
    at: DateTime<Utc>,
    work: Work,
    done: oneshot::Sender<Result<(), AuditError>>,
}

// Records are nearly every job and go by value through the channel;
// boxing them would allocate once per record to shrink the rare checkpoint.
#[allow(clippy::large_enum_variant)]
enum Work {
    Record(AuditEvent),
    /// Sign the head, unless it is a checkpoint already.
    Checkpoint,
    /// A final checkpoint; every later write is refused.
    Close,
}

/// Handle to the audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    jobs: mpsc::Sender<Job>,
    key: Arc<hmac::Key>,
    /// Set after the first failed write; every later write is refused.
    broken: Arc<AtomicBool>,
    /// Whether checkpoints are signed.
    signed: bool,
    path: Arc<Path>,
    /// The replica whose log this is.
    replica: Arc<str>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("broken", &self.broken.load(Ordering::Relaxed)).finish()
    }
}

impl AuditLog {
    /// Opens (or creates) the log, finds the chain head and starts the
    /// writer thread. The thread ends when every handle is dropped.
    pub fn open(path: &Path, key: &[u8]) -> Result<Self, AuditError> {
        Self::open_signed(path, key, None, Utc::now())
    }

    /// [`Self::open`], signing checkpoints with `signer` when given.
    ///
    /// A signed log is read through first: its chain must hold, and its
    /// checkpoints must name this replica. Records after its last
    /// checkpoint (a crash, or records added while Writ was stopped) are
    /// not signed as if this run had written them: a `chain_resumed`
    /// record names them as unproven, and a checkpoint follows at once.
    pub fn open_signed(
        path: &Path,
        key: &[u8],
        signer: Option<Signer>,
        now: DateTime<Utc>,
    ) -> Result<Self, AuditError> {
        if key.len() < 32 {
            return Err(AuditError::Unavailable("the audit key must be at least 32 bytes".into()));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| unavailable(path, e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| unavailable(path, e))?;
        let tail = chain_head(&mut file).map_err(|e| unavailable(path, e))?;
        let unproven = match &signer {
            Some(signer) => unproven_records(path, signer).map_err(|e| unavailable(path, e))?,
            None => None,
        };
        let key = Arc::new(hmac::Key::new(hmac::HMAC_SHA256, key));
        let broken = Arc::new(AtomicBool::new(false));
        let (jobs, receiver) = mpsc::channel(8192);
        let signed = signer.is_some();
        let replica: Arc<str> = signer.as_ref().map_or("", |signer| signer.replica()).into();
        let mut writer = Writer {
            path: path.to_path_buf(),
            file,
            seq: tail.seq,
            head: tail.head,
            head_is_checkpoint: tail.is_checkpoint,
            signer,
            key: key.clone(),
            broken: broken.clone(),
            closed: false,
        };
        if let Some((from, to)) = unproven {
            let replica = writer.signer.as_ref().map(|signer| signer.replica().to_owned());
            let resumed = AuditEvent {
                event: RESUMED,
                actor: "writ".into(),
                outcome: "ok",
                details: Some(serde_json::json!({
                    "replica": replica,
                    "unproven_from": from,
                    "unproven_to": to,
                })),
                ..AuditEvent::default()
            };
            tracing::warn!(
                from,
                to,
                "audit records after the last checkpoint were found unsigned at start (a crash, or records added \
                 while Writ was stopped); they are marked unproven"
            );
            writer.append(&[(now, &Work::Record(resumed)), (now, &Work::Checkpoint)])?;
        }
        std::thread::Builder::new()
            .name("writ-audit-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| unavailable(path, e))?;
        Ok(Self { jobs, key, broken, signed, path: path.into(), replica })
    }

    /// Appends one event and waits until it is durable.
    pub async fn record(&self, at: DateTime<Utc>, event: AuditEvent) -> Result<(), AuditError> {
        let durable = self.enqueue(at, event).await?;
        durable.await.map_err(|_| AuditError::Unavailable("the audit writer stopped".into()))?
    }

    /// Signs the chain's head as a checkpoint record and waits until it is
    /// durable; does nothing without a signing key, or when the last
    /// record is a checkpoint already.
    pub async fn checkpoint(&self, at: DateTime<Utc>) -> Result<(), AuditError> {
        if !self.signed {
            return Ok(());
        }
        let durable = self.submit(at, Work::Checkpoint).await?;
        durable.await.map_err(|_| AuditError::Unavailable("the audit writer stopped".into()))?
    }

    /// Writes a final checkpoint and closes the log: every later write is
    /// refused (Writ is shutting down), so nothing lands after the
    /// checkpoint that covers the run.
    pub async fn close(&self, at: DateTime<Utc>) -> Result<(), AuditError> {
        let durable = self.submit(at, Work::Close).await?;
        durable.await.map_err(|_| AuditError::Unavailable("the audit writer stopped".into()))?
    }

    /// Hands an event to the writer; the receiver says when it is durable.
    async fn enqueue(
        &self,
        at: DateTime<Utc>,
        event: AuditEvent,
    ) -> Result<oneshot::Receiver<Result<(), AuditError>>, AuditError> {
        self.submit(at, Work::Record(event)).await
    }

    async fn submit(
        &self,
        at: DateTime<Utc>,
        work: Work,
    ) -> Result<oneshot::Receiver<Result<(), AuditError>>, AuditError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(AuditError::Unavailable("an earlier write failed".into()));
        }
        let (done, durable) = oneshot::channel();
        self.jobs
            .send(Job { at, work, done })
            .await
            .map_err(|_| AuditError::Unavailable("the audit writer stopped".into()))?;
        Ok(durable)
    }

    /// Appends many events, in order, sharing a commit, and waits until
    /// all are durable; fails if any is not.
    pub async fn record_all(&self, at: DateTime<Utc>, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        let mut waiting = Vec::with_capacity(events.len());
        for event in events {
            waiting.push(self.enqueue(at, event).await?);
        }
        for durable in waiting {
            durable.await.map_err(|_| AuditError::Unavailable("the audit writer stopped".into()))??;
        }
        Ok(())
    }

    /// Appends one event from a background worker: a failure is logged, not
    /// returned, because the work it records (a revocation) must go on.
    pub async fn record_or_log(&self, at: DateTime<Utc>, event: AuditEvent) {
        let name = event.event;
        if let Err(error) = self.record(at, event).await {
            tracing::error!(%error, event = name, "audit record lost");
        }
    }

    /// Appends many events from a background worker, in order, and waits
    /// until all are durable. They are queued together, so they share a
    /// commit instead of waiting for one each. Failures are logged.
    pub async fn record_all_or_log(&self, at: DateTime<Utc>, events: Vec<AuditEvent>) {
        let mut waiting = Vec::with_capacity(events.len());
        for event in events {
            let name = event.event;
            match self.enqueue(at, event).await {
                Ok(durable) => waiting.push((name, durable)),
                Err(error) => tracing::error!(%error, event = name, "audit record lost"),
            }
        }
        for (name, durable) in waiting {
            let written = durable
                .await
                .unwrap_or_else(|_| Err(AuditError::Unavailable("the audit writer stopped".into())));
            if let Err(error) = written {
                tracing::error!(%error, event = name, "audit record lost");
            }
        }
    }

    /// Names the replica whose log this is (a signed log has its signer's
    /// name already).
    pub fn for_replica(mut self, replica: &str) -> Self {
        self.replica = replica.into();
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether the log accepts writes.
    pub fn is_healthy(&self) -> bool {
        !self.broken.load(Ordering::Acquire) && !self.jobs.is_closed()
    }

    /// The keyed hash that stands for a lease id in the log.
    pub fn lease_hash(&self, lease_id: Uuid) -> String {
        lease_hash(&self.key, lease_id)
    }
}

fn lease_hash(key: &hmac::Key, lease_id: Uuid) -> String {
    let tag = hmac::sign(key, lease_id.as_bytes());
    format!("hmac-sha256:{}", hex::encode(&tag.as_ref()[..16]))
}

fn unavailable(path: &Path, error: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable(format!("{}: {error}", path.display()))
}

struct Writer {
    path: PathBuf,
    file: File,
    seq: u64,
    head: String,
    /// Whether the last record is a checkpoint (nothing new to sign).
    head_is_checkpoint: bool,
    signer: Option<Signer>,
    key: Arc<hmac::Key>,
    broken: Arc<AtomicBool>,
    /// After [`Work::Close`]: every later write is refused.
    closed: bool,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut last_commit: Option<std::time::Instant> = None;
        while let Some(first) = receiver.blocking_recv() {
            batch.push(first);
            let take = |batch: &mut Vec<Job>, receiver: &mut mpsc::Receiver<Job>| {
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
            };
            take(&mut batch, &mut receiver);
            let closing = batch.iter().any(|job| matches!(job.work, Work::Close));
            if let Some(wait) = last_commit
                .map(|at| COMMIT_SPACING.saturating_sub(at.elapsed()))
                .filter(|wait| !wait.is_zero() && batch.len() < FULL_ENOUGH && !closing)
            {
                std::thread::sleep(wait);
                take(&mut batch, &mut receiver);
            }
            last_commit = Some(std::time::Instant::now());
            // Nothing after a close is written, in this batch or later.
            let open = match batch.iter().position(|job| matches!(job.work, Work::Close)) {
                _ if self.closed => 0,
                Some(close) => close + 1,
                None => batch.len(),
            };
            let items: Vec<(DateTime<Utc>, &Work)> =
                batch[..open].iter().map(|job| (job.at, &job.work)).collect();
            let outcome = self.append(&items);
            if outcome.is_err() {
                self.broken.store(true, Ordering::Release);
            }
            self.closed |=
                open < batch.len() || batch[..open].iter().any(|job| matches!(job.work, Work::Close));
            for (index, job) in batch.drain(..).enumerate() {
                let outcome = if index < open {
                    outcome.clone()
                } else {
                    Err(AuditError::Unavailable("the audit log is closed: Writ is shutting down".into()))
                };
                let _ = job.done.send(outcome);
            }
        }
    }

    fn append(&mut self, batch: &[(DateTime<Utc>, &Work)]) -> Result<(), AuditError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(AuditError::Unavailable("an earlier write failed".into()));
        }
        let (mut seq, mut head, mut head_is_checkpoint) =
            (self.seq, self.head.clone(), self.head_is_checkpoint);
        let mut buffer = Vec::with_capacity(batch.len() * 256);
        for &(at, work) in batch {
            let checkpoint;
            let event = match work {
                Work::Record(event) => event,
                // Nothing to sign in an empty log: a checkpoint of no
                // record would fit the start of any log of this replica.
                Work::Checkpoint | Work::Close => match &self.signer {
                    Some(signer) if !head_is_checkpoint && seq > 0 => {
                        checkpoint = checkpoint_event(signer.sign(seq, &head, at));
                        &checkpoint
                    }
                    _ => continue,
                },
            };
            seq += 1;
            let line = Line {
                seq,
                ts: at,
                prev: &head,
                event: event.event,
                actor: &event.actor,
                outcome: event.outcome,
                agent: event.agent.as_deref(),
                task: event.task.as_deref(),
                provider: event.provider.as_deref(),
                role: event.role.as_deref(),
                tool: event.tool.as_deref(),
                lease: event.lease.map(|id| lease_hash(&self.key, id)),
                reason: event.reason.as_deref(),
                policies: &event.policies,
                details: event.details.as_ref(),
            };
            let text = serde_json::to_string(&line).map_err(|e| unavailable(&self.path, e))?;
            head = hex::encode(digest::digest(&digest::SHA256, text.as_bytes()));
            head_is_checkpoint = !matches!(work, Work::Record(_));
            buffer.extend_from_slice(text.as_bytes());
            buffer.push(b'\n');
        }
        if buffer.is_empty() {
            return Ok(());
        }
        self.file.write_all(&buffer).map_err(|e| unavailable(&self.path, e))?;
        self.file.sync_data().map_err(|e| unavailable(&self.path, e))?;
        self.seq = seq;
        self.head = head;
        self.head_is_checkpoint = head_is_checkpoint;
        Ok(())
    }
}

/// The event of a record naming records found unsigned at start.
pub const RESUMED: &str = "chain_resumed";

/// The records of a signed log that no checkpoint covers (first, last),
/// read through the whole log: fails if its chain is broken or its
/// checkpoints name another replica.
fn unproven_records(path: &Path, signer: &Signer) -> Result<Option<(u64, u64)>, String> {
    let state = verify::scan_chain(path, &signer.public_key()).map_err(|error| {
        format!(
            "{error}; Writ does not sign over a broken chain or a forged checkpoint: check it with `writ audit verify`, \
             and move it away to start a new log"
        )
    })?;
    if let Some(replica) = &state.replica
        && replica != signer.replica()
    {
        return Err(format!(
            "the log's checkpoints name replica {replica:?}, but this replica is {:?}: set audit.replica to \
             {replica:?}, or give this replica a log of its own",
            signer.replica()
        ));
    }
    Ok((state.records > state.last_checkpoint).then_some((state.last_checkpoint + 1, state.records)))
}

/// The record a checkpoint is written as.
pub(crate) fn checkpoint_event(checkpoint: checkpoint::Checkpoint) -> AuditEvent {
    AuditEvent {
        event: checkpoint::EVENT,
        actor: "writ".into(),
        outcome: "ok",
        details: serde_json::to_value(checkpoint).ok(),
        ..AuditEvent::default()
    }
}

/// The line a checkpoint record is written as, byte for byte.
pub(crate) fn checkpoint_line(
    seq: u64,
    ts: DateTime<Utc>,
    prev: &str,
    checkpoint: checkpoint::Checkpoint,
) -> Option<String> {
    let event = checkpoint_event(checkpoint);
    let line = Line {
        seq,
        ts,
        prev,
        event: event.event,
        actor: &event.actor,
        outcome: event.outcome,
        agent: None,
        task: None,
        provider: None,
        role: None,
        tool: None,
        lease: None,
        reason: None,
        policies: &[],
        details: event.details.as_ref(),
    };
    serde_json::to_string(&line).ok()
}

/// Where an existing log ends.
struct Tail {
    seq: u64,
    head: String,
    is_checkpoint: bool,
}

/// The sequence number and hash of the last line, reading only the tail.
fn chain_head(file: &mut File) -> std::io::Result<Tail> {
    let length = file.seek(SeekFrom::End(0))?;
    if length == 0 {
        return Ok(Tail { seq: 0, head: GENESIS.to_string(), is_checkpoint: false });
    }
    // Read bytes, not text: the window may start inside a multi-byte
    // character of an earlier line. Only the last line is decoded.
    let start = length.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    if tail.last() != Some(&b'\n') {
        return Err(std::io::Error::other("the last audit line is incomplete; repair the log"));
    }
    let body = &tail[..tail.len() - 1];
    let last = match body.iter().rposition(|byte| *byte == b'\n') {
        Some(newline) => &body[newline + 1..],
        None if start == 0 => body,
        None => return Err(std::io::Error::other("the last audit line is longer than the tail window")),
    };
    let last =
        std::str::from_utf8(last).map_err(|_| std::io::Error::other("the last audit line is not UTF-8"))?;
    let value = serde_json::from_str::<Value>(last)
        .map_err(|_| std::io::Error::other("the last audit line is not a record"))?;
    let seq = value
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| std::io::Error::other("the last audit line is not a record"))?;
    Ok(Tail {
        seq,
        head: hex::encode(digest::digest(&digest::SHA256, last.as_bytes())),
        is_checkpoint: value.get("event").and_then(Value::as_str) == Some(checkpoint::EVENT),
    })
}

#[cfg(test)]
mod tests;
