//! The embedded lease store: one redb file, durable, for one process.
//!
//! Writes go to a single writer thread ([`writer`]) that commits them in
//! batches, each commit durable (`Durability::Immediate`) before any caller
//! in the batch hears back. Reads run on tokio's blocking pool, each in its
//! own redb read transaction, beside the writer. Everything the background
//! workers look for has an index ([`tables`]), and nothing is loaded at
//! start, so opening the store and its memory use do not grow with the
//! number of leases.

mod approvals;
mod plans;
mod reads;
mod registry;
mod tables;
mod writer;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{Database, ReadTransaction, ReadableDatabase};
use uuid::Uuid;

use self::plans::Planned;
use self::tables::{WriteTables, storage_error};
use self::writer::Writer;
use super::{
    ApprovalFilter, ClosedScope, Closure, LeaseFilter, LeaseStore, RevocationOutcome, Scope, StoreError,
    Swept,
};
use crate::model::{
    AgentRecord, AgentStatus, Approval, ApprovalVote, Lease, ProviderStatus, RevocationReason, SealedHandle,
    Sighting, Task,
};

/// redb's page cache. Bounded, so memory stays flat however many leases
/// the file holds; the hot pages (indexes, recent leases) fit easily.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A [`LeaseStore`] in a redb database file.
pub struct EmbeddedStore {
    /// The thread that owns every write transaction. Declared first so that
    /// it is stopped (and lets go of the database) before `db` is dropped.
    writer: Writer,
    /// Shared with the writer; read transactions are opened on it directly.
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens the database at `path`, creating it and its parent
    /// directories if missing. Fails with `Unavailable` if another store
    /// (in this process or another) has it open.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let db = tokio::task::spawn_blocking(move || open_database(&path)).await.map_err(|error| {
            StoreError::Unavailable(format!("opening the store did not finish: {error}"))
        })??;
        let db = Arc::new(db);
        Ok(Self { writer: Writer::spawn(Arc::clone(&db))?, db })
    }

    async fn read<T, Q>(&self, query: Q) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Q: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(storage_error)?;
            query(&txn)
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("store read did not finish: {error}")))?
    }

    /// A point lookup, run on the calling task: it touches a handful of
    /// (almost always cached) pages, which costs less than the thread
    /// hand-off of `spawn_blocking`. Scans use [`Self::read`].
    fn lookup<T>(
        &self,
        query: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(storage_error)?;
        query(&txn)
    }

    async fn write<T, P>(&self, plan: P) -> Result<T, StoreError>
    where
        T: Send + 'static,
        P: FnOnce(&WriteTables<'_>) -> Result<Planned<T>, StoreError> + Send + 'static,
    {
        self.writer.submit(plan).await
    }
}

fn open_database(path: &Path) -> Result<Database, StoreError> {
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|error| {
            StoreError::Unavailable(format!("cannot create {}: {error}", parent.display()))
        })?;
    }
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|error| StoreError::Unavailable(format!("cannot open {}: {error}", path.display())))?;
    // Create every table up front, so that reads of a new store find them.
    let mut txn = db.begin_write().map_err(storage_error)?;
    txn.set_quick_repair(true);
    drop(WriteTables::open(&txn)?);
    txn.commit().map_err(storage_error)?;
    Ok(db)
}

#[async_trait]
impl LeaseStore for EmbeddedStore {
    async fn create_task(&self, task: Task) -> Result<(), StoreError> {
        self.write(move |tables| plans::create_task(tables, task)).await
    }

    async fn get_task(&self, task_id: &str) -> Result<Option<Task>, StoreError> {
        self.lookup(|txn| reads::get_task(txn, task_id))
    }

    async fn close_scope(
        &self,
        scope: &Scope,
        closure: &Closure,
        now: DateTime<Utc>,
    ) -> Result<ClosedScope, StoreError> {
        let (scope, closure) = (scope.clone(), closure.clone());
        self.write(move |tables| plans::close_scope(tables, &scope, &closure, now)).await
    }

    async fn agent_status(&self, agent: &str) -> Result<Option<AgentStatus>, StoreError> {
        self.lookup(|txn| reads::agent_status(txn, agent))
    }

    async fn resume_agent(
        &self,
        agent: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<AgentStatus, StoreError> {
        let (agent, by, reason) = (agent.to_owned(), by.to_owned(), reason.to_owned());
        self.write(move |tables| plans::resume_agent(tables, &agent, &by, &reason, now)).await
    }

    async fn provider_status(&self, provider: &str) -> Result<Option<ProviderStatus>, StoreError> {
        self.lookup(|txn| reads::provider_status(txn, provider))
    }

    async fn resume_provider(
        &self,
        provider: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ProviderStatus, StoreError> {
        let (provider, by, reason) = (provider.to_owned(), by.to_owned(), reason.to_owned());
        self.write(move |tables| plans::resume_provider(tables, &provider, &by, &reason, now)).await
    }

    async fn get_agent(&self, name: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.lookup(|txn| registry::get(txn, name))
    }

    async fn list_agents(&self, after: Option<&str>, limit: usize) -> Result<Vec<AgentRecord>, StoreError> {
        let after = after.map(str::to_owned);
        self.read(move |txn| registry::list(txn, after.as_deref(), limit)).await
    }

    async fn put_agent(
        &self,
        expected: Option<&AgentRecord>,
        record: &AgentRecord,
    ) -> Result<(), StoreError> {
        let (expected, record) = (expected.cloned(), record.clone());
        self.write(move |tables| registry::put(tables, expected, record)).await
    }

    async fn agents_revision(&self) -> Result<u64, StoreError> {
        self.lookup(registry::current_revision)
    }

    async fn overdue_tasks(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read(move |txn| reads::overdue_tasks(txn, now, limit)).await
    }

    async fn task_leases(&self, task_id: &str) -> Result<Vec<Lease>, StoreError> {
        let task_id = task_id.to_owned();
        self.read(move |txn| reads::task_leases(txn, &task_id)).await
    }

    async fn insert_pending(&self, lease: Lease, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(move |tables| plans::insert_pending(tables, lease, now)).await
    }

    async fn activate(
        &self,
        lease_id: Uuid,
        expires_at: DateTime<Utc>,
        handle: SealedHandle,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.write(move |tables| plans::activate(tables, lease_id, expires_at, handle, now)).await
    }

    async fn extend(
        &self,
        lease_id: Uuid,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.write(move |tables| plans::extend(tables, lease_id, expires_at, now)).await
    }

    async fn get_lease(&self, lease_id: Uuid) -> Result<Option<Lease>, StoreError> {
        self.lookup(|txn| reads::get_lease(txn, lease_id))
    }

    async fn list_leases(
        &self,
        filter: &LeaseFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        let filter = filter.clone();
        self.read(move |txn| reads::list_leases(txn, &filter, after, limit)).await
    }

    async fn request_revocation(
        &self,
        lease_ids: &[Uuid],
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, StoreError> {
        let lease_ids = lease_ids.to_vec();
        self.write(move |tables| plans::request_revocation(tables, &lease_ids, reason, now)).await
    }

    async fn sweep(
        &self,
        now: DateTime<Utc>,
        pending_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Swept, StoreError> {
        self.write(move |tables| plans::sweep(tables, now, pending_before, limit)).await
    }

    async fn claim_revocations(
        &self,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.write(move |tables| plans::claim_revocations(tables, now, claim_until, limit)).await
    }

    async fn finish_revocations(
        &self,
        outcomes: &[RevocationOutcome],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let outcomes = outcomes.to_vec();
        self.write(move |tables| plans::finish_revocations(tables, &outcomes, now)).await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(reads::next_due).await
    }

    async fn backlog(&self) -> Result<super::Backlog, StoreError> {
        self.read(reads::backlog).await
    }

    async fn record_sighting(
        &self,
        issuer: &str,
        subject: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (issuer, subject) = (issuer.to_owned(), subject.to_owned());
        self.write(move |tables| plans::record_sighting(tables, &issuer, &subject, now)).await
    }

    async fn create_approval(&self, approval: Approval, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(move |tables| approvals::create(tables, approval, now)).await
    }

    async fn get_approval(&self, id: Uuid) -> Result<Option<Approval>, StoreError> {
        self.lookup(|txn| approvals::get(txn, id))
    }

    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        let filter = filter.clone();
        self.read(move |txn| approvals::list(txn, &filter, after, limit)).await
    }

    async fn vote_approval(&self, id: Uuid, vote: ApprovalVote) -> Result<Approval, StoreError> {
        self.write(move |tables| approvals::vote(tables, id, vote)).await
    }

    async fn collect_approval(
        &self,
        id: Uuid,
        agent: &str,
        now: DateTime<Utc>,
    ) -> Result<Approval, StoreError> {
        let agent = agent.to_owned();
        self.write(move |tables| approvals::collect(tables, id, &agent, now)).await
    }

    async fn end_approvals(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Approval>, StoreError> {
        self.write(move |tables| approvals::end(tables, now, limit)).await
    }

    async fn list_sightings(&self, limit: usize) -> Result<Vec<Sighting>, StoreError> {
        self.read(move |txn| reads::list_sightings(txn, limit)).await
    }

    /// A read, then an empty write through the writer: both paths work, and
    /// the disk still takes commits.
    async fn health(&self) -> Result<(), StoreError> {
        self.read(reads::check).await?;
        self.write(|_| Planned::done((), Vec::new())).await
    }
}
