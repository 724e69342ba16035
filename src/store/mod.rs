//! Where tasks, leases, agents' runtime state, the revocation queue and
//! sightings are kept.
//!
//! [`LeaseStore`] is the one interface the domain uses; implementations are
//! chosen by configuration ([`open`]) and nothing else branches on them.
//! Every method is one atomic change: either all of it is durable when it
//! returns `Ok`, or none of it happened. The state rules a change depends on
//! (a task is still open, a lease is still pending) are checked inside that
//! same change, so concurrent callers and replicas cannot race past them.
//! In particular nothing is inserted, activated or extended under a closed
//! task or for a suspended agent: [`LeaseStore::insert_pending`],
//! [`LeaseStore::activate`] and [`LeaseStore::extend`] check both, and
//! ending a [`Scope`] ([`LeaseStore::close_scope`]) marks it ended before it
//! moves a single lease.
//!
//! All times come from the caller: the store never reads the clock.

mod approval_rules;
#[doc(hidden)]
pub mod conformance;
mod embedded;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{
    AgentRecord, AgentStatus, Approval, ApprovalState, ApprovalVote, Lease, LeaseState, ProviderStatus,
    RevocationReason, SealedHandle, Sighting, Task,
};

pub use self::redis::{CloseStep, MAX_SHARDS, RedisConfig, RedisStore, Resharded, reshard};
pub use embedded::EmbeddedStore;

/// Why a store operation did not happen. Every variant means nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or written: retry later.
    #[error("lease store unavailable: {0}")]
    Unavailable(String),
    #[error("task {0:?} already exists")]
    TaskExists(String),
    #[error("task {0:?} not found")]
    TaskNotFound(String),
    /// The task is closed, or its deadline has passed.
    #[error("task {0:?} is closed")]
    TaskClosed(String),
    /// The agent is suspended: nothing may be issued to it.
    #[error("agent {0:?} is suspended")]
    AgentSuspended(String),
    /// The agent is not suspended, so there is nothing to resume.
    #[error("agent {0:?} is not suspended")]
    AgentNotSuspended(String),
    /// The provider is suspended: nothing may be issued from it.
    #[error("provider {0:?} is suspended")]
    ProviderSuspended(String),
    #[error("provider {0:?} is not suspended")]
    ProviderNotSuspended(String),
    /// The agent is retired: it is never resumed.
    #[error("agent {0:?} is retired; retirement is final")]
    AgentRetired(String),
    /// An agent by that name is registered already (retired ones too: a
    /// name is never reused).
    #[error("agent {0:?} is registered already")]
    AgentExists(String),
    /// The agent's record is no longer the one the change was made from
    /// (another change landed first), or it is gone.
    #[error("agent {0:?} was changed meanwhile")]
    AgentChanged(String),
    #[error("lease {0} not found")]
    LeaseNotFound(Uuid),
    /// The lease is not in the state the change needs.
    #[error("lease {id} is {}", state.as_str())]
    LeaseState { id: Uuid, state: LeaseState },
    #[error("approval request {0} not found")]
    ApprovalNotFound(Uuid),
    /// The approval request is not in the state the change needs (a
    /// request past its deadline counts as expired, even before a sweep
    /// marks it so).
    #[error("approval request {id} is {}", state.as_str())]
    ApprovalState { id: Uuid, state: ApprovalState },
    /// The approver has decided this request already.
    #[error("{by:?} has already decided approval request {id}")]
    AlreadyVoted { id: Uuid, by: String },
    /// Stored data could not be read back: a bug or a damaged store.
    #[error("lease store data is corrupt: {0}")]
    Corrupt(String),
}

/// Which leases to list.
#[derive(Clone, Debug, Default)]
pub struct LeaseFilter {
    pub agent: Option<String>,
    pub task_id: Option<String>,
    pub state: Option<LeaseState>,
    /// Checked on each lease found through the other filters (no store
    /// indexes leases by provider): set a state or a task with it.
    pub provider: Option<String>,
}

impl LeaseFilter {
    pub fn matches(&self, lease: &Lease) -> bool {
        self.agent.as_ref().is_none_or(|agent| *agent == lease.agent)
            && self.task_id.as_ref().is_none_or(|task| *task == lease.task_id)
            && self.state.is_none_or(|state| state == lease.state)
            && self.provider.as_ref().is_none_or(|provider| *provider == lease.provider)
    }
}

/// Which approval requests to list.
#[derive(Clone, Debug, Default)]
pub struct ApprovalFilter {
    pub agent: Option<String>,
    pub task_id: Option<String>,
    pub group: Option<String>,
    pub state: Option<ApprovalState>,
}

impl ApprovalFilter {
    pub fn matches(&self, approval: &Approval) -> bool {
        self.agent.as_ref().is_none_or(|agent| *agent == approval.agent)
            && self.task_id.as_ref().is_none_or(|task| *task == approval.task_id)
            && self.group.as_ref().is_none_or(|group| *group == approval.group)
            && self.state.is_none_or(|state| state == approval.state)
    }
}

/// Everything issued under one thing, which [`LeaseStore::close_scope`]
/// ends at once: a task (closing it), an agent or a provider (suspending
/// it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Task(String),
    Agent(String),
    Provider(String),
}

impl Scope {
    /// What the scope is, for messages: `task "t-1"`, `agent "bot"`.
    pub fn describe(&self) -> String {
        match self {
            Self::Task(task_id) => format!("task {task_id:?}"),
            Self::Agent(agent) => format!("agent {agent:?}"),
            Self::Provider(provider) => format!("provider {provider:?}"),
        }
    }
}

/// Who ends a scope, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Closure {
    pub by: String,
    /// Given to every lease the close moves to revoking.
    pub reason: RevocationReason,
    /// In the caller's words (an agent's suspension keeps it).
    pub note: String,
}

/// What [`LeaseStore::close_scope`] did.
#[derive(Clone, Debug)]
pub struct ClosedScope {
    /// The task as closed, for a task scope.
    pub task: Option<Task>,
    /// The agent's status as suspended, for an agent scope.
    pub agent: Option<AgentStatus>,
    /// The provider's status as suspended, for a provider scope.
    pub provider: Option<ProviderStatus>,
    /// Whether this call ended the scope (false: it was ended already, and
    /// the call at most finished moving its leases).
    pub ended_now: bool,
    /// Leases moved to revoking by this call.
    pub revoking: Vec<Uuid>,
}

/// What [`LeaseStore::close_task`] did.
#[derive(Clone, Debug)]
pub struct ClosedTask {
    pub task: Task,
    /// Leases moved to revoking by this close.
    pub revoking: Vec<Uuid>,
}

/// A lease the sweep queued, with the agent and task its evidence names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweptLease {
    pub id: Uuid,
    pub agent: String,
    pub task_id: String,
}

/// Compares by lease id, so a listing of swept leases reads as the ids.
impl PartialEq<Uuid> for SweptLease {
    fn eq(&self, id: &Uuid) -> bool {
        self.id == *id
    }
}

/// Work waiting, as [`LeaseStore::backlog`] reads it for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Leases waiting to be revoked.
    pub queued: u64,
    /// The earliest next attempt among them.
    pub earliest_due: Option<DateTime<Utc>>,
    /// Approval requests pending or approved and not yet collected.
    pub approvals_open: u64,
}

/// What [`LeaseStore::sweep`] queued for revocation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Swept {
    /// Active leases whose expiry passed.
    pub expired: Vec<SweptLease>,
    /// Pending leases older than the cutoff: an issue that never finished.
    pub abandoned: Vec<SweptLease>,
    /// Finished leases whose retention ran out and which the store forgot
    /// (a store that keeps finished leases for good forgets none).
    pub forgotten: usize,
    /// Leases of a closed task that a close stopped half-way (by a crash)
    /// had not moved to revoking yet, now moved, with the close's reason.
    /// A store that closes a task in one step has none.
    pub closed: Vec<(SweptLease, RevocationReason)>,
    /// Closed tasks the store forgot: their retention ran out and no lease
    /// of theirs is left (a store that keeps tasks for good forgets none).
    pub forgotten_tasks: usize,
}

/// The result of one revocation attempt, reported back to the queue.
#[derive(Clone, Debug)]
pub enum RevocationOutcome {
    /// Revoked at the provider: the lease becomes revoked (or failed, for a
    /// mint that failed).
    Done { lease_id: Uuid, generation: u32 },
    /// Not yet: try again at `next_attempt_at`.
    Retry { lease_id: Uuid, generation: u32, next_attempt_at: DateTime<Utc>, error: String },
    /// The provider said this revocation can never succeed: the lease
    /// becomes failed, with `error` as its revocation's last error, for an
    /// operator to see (the credential may live until its expiry).
    GaveUp { lease_id: Uuid, generation: u32, error: String },
}

impl RevocationOutcome {
    pub fn lease_id(&self) -> Uuid {
        match self {
            Self::Done { lease_id, .. } | Self::Retry { lease_id, .. } | Self::GaveUp { lease_id, .. } => {
                *lease_id
            }
        }
    }

    /// The [`crate::model::Revocation::generation`] the attempt was made
    /// for; an outcome for another generation is ignored.
    pub fn generation(&self) -> u32 {
        match self {
            Self::Done { generation, .. }
            | Self::Retry { generation, .. }
            | Self::GaveUp { generation, .. } => *generation,
        }
    }
}

/// The one storage interface of the domain. Object-safe.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Records a new open task. Fails with `TaskExists` if the id is taken.
    async fn create_task(&self, task: Task) -> Result<(), StoreError>;

    async fn get_task(&self, task_id: &str) -> Result<Option<Task>, StoreError>;

    /// Ends a scope, then moves each of its pending and active leases to
    /// revoking (due at `now`) with `closure.reason`: a task is closed, an
    /// agent suspended. From the moment the scope is ended nothing more is
    /// inserted, activated or extended under it, even where (Redis) the
    /// leases are moved in batches; a crash between batches leaves the rest
    /// to [`Self::sweep`]. Ending an ended scope changes nothing but
    /// finishing such a cut-short close, and says so (`ended_now` false).
    /// Fails with `TaskNotFound` for an unknown task; an agent the store
    /// has never seen is suspended all the same (the registry knows it).
    async fn close_scope(
        &self,
        scope: &Scope,
        closure: &Closure,
        now: DateTime<Utc>,
    ) -> Result<ClosedScope, StoreError>;

    /// Closes an open task ([`Self::close_scope`] of [`Scope::Task`]).
    /// Closing a closed task changes nothing and returns it with an empty
    /// `revoking`.
    async fn close_task(
        &self,
        task_id: &str,
        by: &str,
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<ClosedTask, StoreError> {
        let closure = Closure { by: by.to_owned(), reason, note: String::new() };
        let closed = self.close_scope(&Scope::Task(task_id.to_owned()), &closure, now).await?;
        let task = closed.task.ok_or_else(|| StoreError::Corrupt("a task close returned no task".into()))?;
        Ok(ClosedTask { task, revoking: closed.revoking })
    }

    /// An agent's runtime state; `None` for one never suspended (active).
    async fn agent_status(&self, agent: &str) -> Result<Option<AgentStatus>, StoreError>;

    /// Lifts an agent's suspension; the leases it revoked stay revoked.
    /// Fails with `AgentNotSuspended` for an agent that is not suspended,
    /// and with `AgentRetired` for one whose record says it is retired
    /// (retirement is final, whatever replica is asked).
    async fn resume_agent(
        &self,
        agent: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<AgentStatus, StoreError>;

    /// A registered agent's record, retired or not.
    async fn get_agent(&self, name: &str) -> Result<Option<AgentRecord>, StoreError>;

    /// Registered agents' records in name order, starting after `after`.
    async fn list_agents(&self, after: Option<&str>, limit: usize) -> Result<Vec<AgentRecord>, StoreError>;

    /// Writes `record` if the agent's stored record is still at
    /// `expected`'s revision (`None`: no record yet), and bumps
    /// [`Self::agents_revision`]. Fails, changing nothing, with
    /// `AgentExists` when `expected` is `None` and a record exists, and
    /// with `AgentChanged` when the stored record is at another revision
    /// or is missing. Every change must therefore raise the revision.
    async fn put_agent(&self, expected: Option<&AgentRecord>, record: &AgentRecord)
    -> Result<(), StoreError>;

    /// A number that changes whenever any agent's record does (0 before the
    /// first): replicas poll it to know when to read the inventory again.
    async fn agents_revision(&self) -> Result<u64, StoreError>;

    /// A provider's state; `None` for one never suspended (active).
    async fn provider_status(&self, provider: &str) -> Result<Option<ProviderStatus>, StoreError>;

    /// Lifts a provider's suspension; the leases it revoked stay revoked.
    /// Fails with `ProviderNotSuspended` for one that is not suspended.
    async fn resume_provider(
        &self,
        provider: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ProviderStatus, StoreError>;

    /// Open tasks whose deadline is at or before `now`, oldest first.
    async fn overdue_tasks(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Every lease of a task, oldest first.
    async fn task_leases(&self, task_id: &str) -> Result<Vec<Lease>, StoreError>;

    /// Records a pending lease (the intent, before the provider mints). Fails
    /// with `TaskNotFound`, `TaskClosed` if the task is closed or its
    /// deadline is at or before `now`, or `AgentSuspended`.
    async fn insert_pending(&self, lease: Lease, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Marks a pending lease active with its real expiry and handle. If the
    /// lease is no longer pending (its task was closed meanwhile) the handle
    /// is still stored, the revocation is due again at `now` under a new
    /// generation (so an attempt already under way with the old handle does
    /// not count), and the call fails with `LeaseState`: the credential must
    /// not be handed out. Likewise, if the lease is still pending but its
    /// task is no longer open at `now` or its agent is suspended (a close
    /// or suspension still moving leases), the lease goes to revoking with
    /// that reason and the call fails with `TaskClosed` or
    /// `AgentSuspended`.
    async fn activate(
        &self,
        lease_id: Uuid,
        expires_at: DateTime<Utc>,
        handle: SealedHandle,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError>;

    /// Moves an active lease's expiry. Fails with `LeaseState` otherwise,
    /// and with `TaskClosed` or `AgentSuspended` (changing nothing) if its
    /// task is not open at `now` or its agent is suspended.
    async fn extend(
        &self,
        lease_id: Uuid,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError>;

    /// A lease, whatever its state. A finished (revoked or failed) lease
    /// may be forgotten once the store's retention for finished leases has
    /// passed (the Redis store's `finished_retention`; the embedded store
    /// keeps them): the audit log is the lasting record. Listings and
    /// [`Self::task_leases`] show what `get_lease` would find.
    async fn get_lease(&self, lease_id: Uuid) -> Result<Option<Lease>, StoreError>;

    /// Leases matching `filter`, in id order, starting after `after`.
    async fn list_leases(
        &self,
        filter: &LeaseFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError>;

    /// Moves pending or active leases to revoking, due at `now`. Leases in
    /// other states are left alone. Returns the ids it moved.
    async fn request_revocation(
        &self,
        lease_ids: &[Uuid],
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, StoreError>;

    /// Queues for revocation, up to `limit` of each: active leases expiring
    /// at or before `now` (reason `Expired`), and pending leases created
    /// before `pending_before` (reason `Abandoned`). A store that ends a
    /// scope in batches also finishes every close a crash cut short. A store that keeps
    /// finished leases only for a while also forgets up to `limit` whose
    /// retention ran out by `now`, and up to `limit` closed tasks whose
    /// retention ran out and whose leases are all forgotten (after which
    /// the task id may be used again).
    async fn sweep(
        &self,
        now: DateTime<Utc>,
        pending_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Swept, StoreError>;

    /// Claims up to `limit` revoking leases due at or before `now` by moving
    /// their next attempt to `claim_until`, so no other worker takes them
    /// until then; a claim that lapses is taken again. Counts the attempt.
    async fn claim_revocations(
        &self,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError>;

    /// Records the outcomes of claimed revocations. An outcome for a lease
    /// that is no longer revoking, or for an older revocation generation,
    /// is ignored.
    async fn finish_revocations(
        &self,
        outcomes: &[RevocationOutcome],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The earliest time anything falls due: an active lease's expiry, a
    /// revocation's next attempt, an open task's deadline, an open approval
    /// request's [`Approval::due_at`]. `None` if nothing
    /// is scheduled. Lets background workers sleep until there is work.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// How many leases wait to be revoked (state `revoking`, due now or
    /// retrying later), the earliest next attempt among them, and how many
    /// approval requests are open: what the backlog metrics report.
    async fn backlog(&self) -> Result<Backlog, StoreError>;

    /// Records a new pending approval request. Fails like
    /// [`Self::insert_pending`]: `TaskNotFound`, `TaskClosed`, or
    /// `AgentSuspended`.
    async fn create_approval(&self, approval: Approval, now: DateTime<Utc>) -> Result<(), StoreError>;

    async fn get_approval(&self, id: Uuid) -> Result<Option<Approval>, StoreError>;

    /// Approval requests matching `filter`, in id (creation) order,
    /// starting after `after`.
    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError>;

    /// Casts one approver's vote on a pending request, at `vote.at`. A
    /// denial ends the request (denied, `ended` by the approver with the
    /// vote's reason); the approval that brings the distinct approvers to
    /// the quorum approves it (`approved_at`, and `collect_by` that plus
    /// `collect_within_seconds`). Refuses, changing nothing:
    /// `ApprovalNotFound`; `ApprovalState` for a request not pending, or
    /// pending with `expires_at` at or before the vote (as `expired`);
    /// `TaskClosed` or `AgentSuspended` (the request's task or agent);
    /// `AlreadyVoted` for an approver who voted on it before.
    async fn vote_approval(&self, id: Uuid, vote: ApprovalVote) -> Result<Approval, StoreError>;

    /// Marks an approved request of `agent` collected, once. Refuses,
    /// changing nothing: `ApprovalNotFound` (also for another agent's
    /// request); `ApprovalState` for one not approved, or approved with
    /// `collect_by` at or before `now` (as `expired`); `TaskClosed` or
    /// `AgentSuspended`.
    async fn collect_approval(
        &self,
        id: Uuid,
        agent: &str,
        now: DateTime<Utc>,
    ) -> Result<Approval, StoreError>;

    /// Ends up to `limit` open (pending or approved) requests that can no
    /// longer go on, and returns them as ended: those whose task is closed
    /// or past its deadline, or whose agent is suspended, are cancelled
    /// (reason `task_closed`, `deadline_passed` or `agent_suspended`);
    /// those past due ([`Approval::due_at`] at or before `now`) expire
    /// (reason `not_decided` or `not_collected`). `ended` is by `writ`.
    async fn end_approvals(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Approval>, StoreError>;

    /// Counts a call from an identity that matched no principal.
    async fn record_sighting(
        &self,
        issuer: &str,
        subject: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Sightings, most recently seen first.
    async fn list_sightings(&self, limit: usize) -> Result<Vec<Sighting>, StoreError>;

    /// Whether the store can serve reads and writes now.
    async fn health(&self) -> Result<(), StoreError>;
}

/// Store selection, from configuration.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// A redb database file under `path`: durable, one process.
    Embedded { path: std::path::PathBuf },
    /// Redis or Redis Cluster, shared by any number of Writ replicas.
    Redis(RedisConfig),
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::Embedded { path: "writ-data/leases.redb".into() }
    }
}

/// Opens the configured store.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn LeaseStore>, StoreError> {
    match config {
        StoreConfig::Embedded { path } => Ok(Arc::new(EmbeddedStore::open(path).await?)),
        StoreConfig::Redis(config) => Ok(Arc::new(RedisStore::open(config).await?)),
    }
}
