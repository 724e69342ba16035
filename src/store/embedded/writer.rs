//! Group commit: one thread owns every write transaction.
//!
//! A durable commit costs an fsync, and redb runs one write transaction at a
//! time, so committing each operation alone would cap throughput at the
//! disk's fsync rate. Instead callers queue their operation and wait on a
//! oneshot; the writer takes the first operation, drains whatever else is
//! queued (up to [`MAX_BATCH`]), applies them in order in one transaction,
//! commits once and then answers each. An operation that fails its checks
//! writes nothing and fails alone; a redb failure abandons the whole batch
//! and every operation in it is answered `Unavailable`.
//!
//! Every commit also saves redb's allocator state ("quick repair"), so that
//! reopening after a crash does not walk the whole file: start-up stays
//! flat as the store grows. Batching hides its cost.

use std::sync::Arc;
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::plans::Planned;
use super::tables::{WriteTables, storage_error};
use crate::store::StoreError;

/// The most operations one transaction takes: bounds the latency a batch
/// adds to the operations that queued early in it.
const MAX_BATCH: usize = 512;

/// Operations that may wait for the writer before callers wait to queue.
const QUEUE_DEPTH: usize = 4 * MAX_BATCH;

/// The handle to the writer thread. Dropping it stops the thread, after it
/// has committed what was queued, and waits for it, so that the database
/// file is closed (and its lock released) when the store is gone.
pub(super) struct Writer {
    /// `None` only while dropping: the sender must go first, to end the
    /// writer's loop, before the thread is joined.
    jobs_tx: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn spawn(db: Arc<Database>) -> Result<Self, StoreError> {
        let (jobs_tx, jobs_rx) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("writ-store-writer".into())
            .spawn(move || run(&db, jobs_rx))
            .map_err(|error| StoreError::Unavailable(format!("cannot start the store writer: {error}")))?;
        Ok(Self { jobs_tx: Some(jobs_tx), thread: Some(thread) })
    }

    /// Queues a write and waits until it is committed (or has failed).
    pub(super) async fn submit<T, P>(&self, plan: P) -> Result<T, StoreError>
    where
        T: Send + 'static,
        P: FnOnce(&WriteTables<'_>) -> Result<Planned<T>, StoreError> + Send + 'static,
    {
        let stopped = || StoreError::Unavailable("the store writer has stopped".into());
        let jobs_tx = self.jobs_tx.as_ref().ok_or_else(stopped)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        jobs_tx.send(Box::new(PlanJob { plan, reply_tx })).await.map_err(|_| stopped())?;
        reply_rx.await.map_err(|_| stopped())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs_tx.take());
        if let Some(thread) = self.thread.take() {
            // Blocks for at most the batch in flight. A panicked writer has
            // nothing left to clean up, so its panic is not passed on.
            let _ = thread.join();
        }
    }
}

/// The writer thread: one batch per iteration until every sender is gone.
fn run(db: &Database, mut jobs_rx: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs_rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs_rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(db, batch.drain(..));
    }
}

fn commit_batch(db: &Database, mut jobs: impl Iterator<Item = Box<dyn Job>>) {
    let mut answers = Vec::new();
    let outcome = match db.begin_write() {
        Ok(mut txn) => {
            // Durability stays redb's default, Immediate: the commit is on
            // disk before anyone is answered.
            txn.set_quick_repair(true);
            let applied = WriteTables::open(&txn).and_then(|mut tables| {
                for job in jobs.by_ref() {
                    let (answer, abandon) = job.execute(&mut tables);
                    answers.push(answer);
                    if let Some(error) = abandon {
                        return Err(error);
                    }
                }
                Ok(())
            });
            match applied {
                Ok(()) => txn.commit().map_err(storage_error),
                Err(error) => {
                    // The transaction is being thrown away; if even that
                    // fails, redb refuses further writes, which later batches
                    // report themselves.
                    let _ = txn.abort();
                    Err(error)
                }
            }
        }
        Err(error) => Err(storage_error(error)),
    };
    let failure = outcome
        .err()
        .map(|error| StoreError::Unavailable(format!("write batch not committed: {}", detail(&error))));
    for answer in answers {
        answer.send(failure.as_ref());
    }
    if let Some(failure) = &failure {
        for job in jobs {
            job.fail(failure);
        }
    }
}

fn detail(error: &StoreError) -> String {
    match error {
        StoreError::Unavailable(detail) | StoreError::Corrupt(detail) => detail.clone(),
        other => other.to_string(),
    }
}

/// One queued write, type-erased so the writer needs no list of operations.
trait Job: Send {
    /// Plans and applies the write. Returns its answer, to be sent once the
    /// batch's fate is known, and an error if the batch must be abandoned.
    fn execute(self: Box<Self>, tables: &mut WriteTables<'_>) -> (Box<dyn Answer>, Option<StoreError>);

    /// Answers without running: the batch was abandoned before this job.
    fn fail(self: Box<Self>, error: &StoreError);
}

trait Answer {
    /// Sends the job's own result, or `failure` if the batch did not commit.
    fn send(self: Box<Self>, failure: Option<&StoreError>);
}

struct PlanJob<T, P> {
    plan: P,
    reply_tx: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, P> Job for PlanJob<T, P>
where
    T: Send + 'static,
    P: FnOnce(&WriteTables<'_>) -> Result<Planned<T>, StoreError> + Send + 'static,
{
    fn execute(self: Box<Self>, tables: &mut WriteTables<'_>) -> (Box<dyn Answer>, Option<StoreError>) {
        let (result, abandon) = match (self.plan)(tables) {
            Ok(planned) => match planned.changes.iter().try_for_each(|change| tables.apply(change)) {
                Ok(()) => (planned.reply, None),
                // Part of this job may be written: only abandoning the batch
                // undoes it.
                Err(error) => (Err(error.clone()), Some(error)),
            },
            // redb failed while reading: the transaction is suspect.
            Err(error @ StoreError::Unavailable(_)) => (Err(error.clone()), Some(error)),
            // The job's own checks failed before it wrote anything.
            Err(error) => (Err(error), None),
        };
        (Box::new(Answered { result, reply_tx: self.reply_tx }), abandon)
    }

    fn fail(self: Box<Self>, error: &StoreError) {
        // The caller may have given up waiting; nobody is left to tell.
        let _ = self.reply_tx.send(Err(error.clone()));
    }
}

struct Answered<T> {
    result: Result<T, StoreError>,
    reply_tx: oneshot::Sender<Result<T, StoreError>>,
}

impl<T> Answer for Answered<T> {
    fn send(self: Box<Self>, failure: Option<&StoreError>) {
        let result = match failure {
            Some(failure) => Err(failure.clone()),
            None => self.result,
        };
        let _ = self.reply_tx.send(result);
    }
}
