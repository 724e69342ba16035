//! The Redis lease store: shared by any number of stateless Writ replicas,
//! on one Redis node or a Redis Cluster.
//!
//! Each operation is one Lua function (`redis/lua/`, loaded as one Redis
//! Function library, `redis/library.rs`) that checks the state rules and
//! then writes the rows and every index entry they move, run atomically by
//! Redis; two replicas cannot both pass a check, and a
//! revocation claimed by one is hidden from the other. All of a namespace's
//! keys share one hash tag (layout in `redis/keys.rs`), so every function
//! stays in one slot. Reads of one row are plain `GET`/`HGET`s; reads that
//! walk an index are functions too, so they see one consistent moment.
//!
//! Leases are compact binary records (`redis/record.rs`) and the large
//! indexes are kept in chunks Redis can store compactly, so a lease costs
//! about half a kilobyte of Redis memory; finished leases, and then closed
//! tasks, are forgotten after [`RedisConfig::finished_retention`], so
//! memory follows the live leases and tasks.
//!
//! Every call is bounded ([`RedisConfig::operation_timeout`]): with Redis
//! down, calls fail `Unavailable` within about that long, and work again
//! once it is back, without a restart. Opening the store loads nothing, so
//! start-up does not grow with the number of leases.
//!
//! What Redis itself must provide: `maxmemory-policy noeviction` (an
//! evicting Redis would silently drop leases), and persistence (AOF) and
//! replication as durable as the deployment needs: "written" here means
//! acknowledged by the primary.
//!
//! One caveat the embedded store does not have: a call that times out may
//! still have been applied by Redis. It is reported `Unavailable` all the
//! same; the operations are safe to retry (a repeated insert is refused
//! with `LeaseState`, repeated revocations and outcomes change nothing).

mod approvals;
mod config;
mod connection;
mod keys;
mod library;
mod record;
mod reply;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::{Cmd, Value};
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub use self::config::RedisConfig;
use self::connection::Connection;
use self::keys::{Keys, lease_id, member};
use self::record::time as at;
use self::reply::{Reply, decode, encode, limit as limit_arg, millis, time};
use super::{
    ApprovalFilter, ClosedScope, Closure, LeaseFilter, LeaseStore, RevocationOutcome, Scope, StoreError,
    Swept, SweptLease,
};
use crate::model::{
    AgentRecord, AgentState, AgentStatus, Approval, ApprovalVote, Lease, ProviderStatus, RevocationReason,
    SealedHandle, Sighting, Task, TaskClosure, TaskState,
};

/// A [`LeaseStore`] in Redis.
pub struct RedisStore {
    /// Multiplexed and self-healing, shared by every call.
    connection: Connection,
    keys: Keys,
    /// How long a finished lease stays readable before a sweep forgets it.
    finished_retention: chrono::Duration,
}

/// How many of a task's leases one call of the close function moves to
/// revoking: about 30 ms of Redis time, so closing a task with a hundred
/// thousand leases never blocks Redis, or outlasts `operation_timeout`, in
/// one go.
const CLOSE_BATCH: usize = 1000;

/// A closed task past its retention that still has leases (retained
/// themselves, or not yet revoked) is looked at again this much later.
const TASK_RECHECK_MS: i64 = 60_000;

/// One call of the close function.
#[doc(hidden)]
#[derive(Debug)]
pub struct CloseStep {
    /// The task as closed, for a task scope.
    pub task: Option<Task>,
    /// The agent's status as suspended, for an agent scope.
    pub agent: Option<AgentStatus>,
    /// The provider's status as suspended, for a provider scope.
    pub provider: Option<ProviderStatus>,
    /// Leases this call moved to revoking.
    pub revoking: Vec<SweptLease>,
    /// The reason they were queued for: the first close's.
    pub reason: RevocationReason,
    /// Whether this call ended the scope.
    pub ended_now: bool,
    /// Whether every lease of the scope has been seen.
    pub done: bool,
}

impl RedisStore {
    /// One step of ending a scope: ends it (closes the task, suspends the
    /// agent, writing `ending`) if it is not ended, then moves up to
    /// `limit` more of its leases to revoking (the store uses
    /// `CLOSE_BATCH`). An empty `ending` only goes on with a close under
    /// way, and answers `None` if there is none. Exposed for tests, which
    /// stop a close half-way as a crash would.
    #[doc(hidden)]
    pub async fn close_step_of(
        &self,
        scope: &Scope,
        ending: &[u8],
        reason: RevocationReason,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Option<CloseStep>, StoreError> {
        self.close_step(scope, ending, reason, now, limit, false).await
    }

    /// [`Self::close_step_of`]; with `takeover` (the sweep finishing a close
    /// someone else began), a close whose last batch is less than a second
    /// old is left to whoever is moving it (`None`), so that its caller
    /// hears of every lease it ends.
    async fn close_step(
        &self,
        scope: &Scope,
        ending: &[u8],
        reason: RevocationReason,
        now: DateTime<Utc>,
        limit: usize,
        takeover: bool,
    ) -> Result<Option<CloseStep>, StoreError> {
        let (kind, id) = match scope {
            Scope::Task(task_id) => ("task", task_id),
            Scope::Agent(agent) => ("agent", agent),
            Scope::Provider(provider) => ("provider", provider),
        };
        let mut call = self.function("close_scope");
        call.arg(kind)
            .arg(id)
            .arg(ending)
            .arg(record::reason_code(reason))
            .arg(&at(now)?[..])
            .arg(limit_arg(limit))
            .arg(millis(now))
            .arg(if takeover { "takeover" } else { "" });
        let mut reply = Reply::parse(self.invoke(&call).await?)?;
        let done = match reply.status() {
            "ok" => true,
            "more" => false,
            "task_not_found" => return Err(StoreError::TaskNotFound(id.clone())),
            "idle" | "busy" => return Ok(None),
            _ => return Err(reply.unexpected()),
        };
        let row = reply.bytes()?;
        let (task, agent, provider) = match scope {
            Scope::Task(_) => (Some(decode("task", &row)?), None, None),
            Scope::Agent(_) => (None, Some(decode("agent status", &row)?), None),
            Scope::Provider(_) => (None, None, Some(decode("provider status", &row)?)),
        };
        let ids = keys::lease_ids(reply.list()?)?;
        let reason = record::REASONS.get(reply.count()?).copied().ok_or_else(|| reply.unexpected())?;
        let ended_now = reply.bytes()? == b"new";
        let revoking = reply::named(ids, reply.list()?)?;
        Ok(Some(CloseStep { task, agent, provider, revoking, reason, ended_now, done }))
    }

    /// Ends a scope and moves all its leases, a batch per call. Returns
    /// what it did and the leases it moved, with their agent and task;
    /// `None` when `ending` is empty and no close was under way.
    async fn close_all(
        &self,
        scope: &Scope,
        ending: &[u8],
        reason: RevocationReason,
        now: DateTime<Utc>,
        takeover: bool,
    ) -> Result<Option<(ClosedScope, Vec<SweptLease>, RevocationReason)>, StoreError> {
        let mut moved = Vec::new();
        let mut ended_now = None;
        // Only the first step asks whether someone else is moving the
        // close: once the sweep has taken it over, its own batches mark it
        // touched and must not make it step back.
        let mut takeover = takeover;
        loop {
            let step = self.close_step(scope, ending, reason, now, CLOSE_BATCH, takeover).await?;
            takeover = false;
            let Some(step) = step else {
                // Another caller finished it between our calls.
                if moved.is_empty() {
                    return Ok(None);
                }
                let revoking = moved.iter().map(|lease: &SweptLease| lease.id).collect();
                let closed =
                    ClosedScope { task: None, agent: None, provider: None, ended_now: false, revoking };
                return Ok(Some((closed, moved, reason)));
            };
            moved.extend(step.revoking);
            let ended_now = *ended_now.get_or_insert(step.ended_now);
            if step.done {
                let revoking = moved.iter().map(|lease| lease.id).collect();
                let closed = ClosedScope {
                    task: step.task,
                    agent: step.agent,
                    provider: step.provider,
                    ended_now,
                    revoking,
                };
                return Ok(Some((closed, moved, step.reason)));
            }
        }
    }

    /// Finishes closes that stopped half-way (the closer crashed, or lost
    /// Redis): every task and agent still in `closing` or `closing-agents`,
    /// until all its leases are revoking. Returns the leases moved, with
    /// their reason. A scope that cannot be finished now is logged and left
    /// for the next sweep; it does not hold up the others, nor the rest of
    /// the sweep.
    async fn finish_closes(&self, now: DateTime<Utc>) -> Vec<(SweptLease, RevocationReason)> {
        let mut moved = Vec::new();
        type ScopeOf = fn(String) -> Scope;
        let unfinished: [(String, ScopeOf); 3] = [
            (self.keys.closing(), Scope::Task),
            (self.keys.closing_agents(), Scope::Agent),
            (self.keys.closing_providers(), Scope::Provider),
        ];
        for (closing, scope_of) in unfinished {
            let ids = match self.connection.hkeys(&closing).await {
                Ok(ids) => ids,
                Err(error) => {
                    tracing::warn!(%error, "cannot list closes under way; the next sweep tries again");
                    continue;
                }
            };
            for id in ids {
                let Ok(id) = String::from_utf8(id) else {
                    tracing::error!("a closing scope's id is not UTF-8; it is left as it is");
                    continue;
                };
                let scope = scope_of(id);
                // Only goes on with a close under way; the function answers
                // with the reason that close was given.
                match self.close_all(&scope, b"", RevocationReason::TaskClosed, now, true).await {
                    Ok(Some((_, leases, reason))) => {
                        moved.extend(leases.into_iter().map(|lease| (lease, reason)))
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(scope = %scope.describe(), %error, "cannot finish a close under way; the next sweep tries again");
                    }
                }
            }
        }
        moved
    }

    /// Connects and checks that the namespace's node takes writes
    /// ([`LeaseStore::health`]). Fails `Unavailable` if the configuration
    /// is invalid or Redis cannot be used now.
    pub async fn open(config: &RedisConfig) -> Result<Self, StoreError> {
        config.validate().map_err(|message| StoreError::Unavailable(format!("redis store: {message}")))?;
        let store = Self {
            connection: Connection::open(config).await?,
            keys: Keys::new(&config.namespace),
            finished_retention: chrono::Duration::from_std(config.finished_retention)
                .map_err(|_| StoreError::Unavailable("redis store: finished_retention is too long".into()))?,
        };
        store.health().await?;
        Ok(store)
    }

    /// A call of the library's function for `operation` in this
    /// namespace; the caller adds the arguments.
    fn function(&self, operation: &str) -> Cmd {
        self.connection.function(operation, self.keys.prefix())
    }

    async fn invoke(&self, call: &Cmd) -> Result<Value, StoreError> {
        self.connection.call(call).await
    }

    /// Runs `activate` or `extend`: the lease as changed, or why not.
    async fn lease_answer(&self, lease_id: Uuid, call: &Cmd) -> Result<Lease, StoreError> {
        let mut reply = Reply::parse(self.invoke(call).await?)?;
        match reply.status() {
            "ok" => record::decode(lease_id, &reply.bytes()?),
            "lease_not_found" => Err(StoreError::LeaseNotFound(lease_id)),
            // The lease names its task and agent; the store reads them back.
            "task_closed" | "agent_suspended" | "provider_suspended" => {
                let status = reply.status().to_owned();
                let lease = self.get_lease(lease_id).await?.ok_or(StoreError::LeaseNotFound(lease_id))?;
                Err(match status.as_str() {
                    "task_closed" => StoreError::TaskClosed(lease.task_id),
                    "agent_suspended" => StoreError::AgentSuspended(lease.agent),
                    _ => StoreError::ProviderSuspended(lease.provider),
                })
            }
            "lease_state" => Err(StoreError::LeaseState { id: lease_id, state: reply.state()? }),
            _ => Err(reply.unexpected()),
        }
    }

    /// Runs a function that answers with `{lease id, record, ...}`.
    async fn leases(&self, call: &Cmd) -> Result<Vec<Lease>, StoreError> {
        reply::leases(reply::list(self.invoke(call).await?)?)
    }

    /// Runs a read function that answers with a list of JSON rows.
    async fn rows<T: DeserializeOwned>(&self, what: &str, call: &Cmd) -> Result<Vec<T>, StoreError> {
        reply::list(self.invoke(call).await?)?.iter().map(|row| decode(what, row)).collect()
    }
}

#[async_trait]
impl LeaseStore for RedisStore {
    async fn create_task(&self, task: Task) -> Result<(), StoreError> {
        let json = encode("task", &task)?;
        let open = if task.state == TaskState::Open { "1" } else { "0" };
        let mut call = self.function("create_task");
        call.arg(&task.id).arg(json).arg(millis(task.deadline)).arg(open);
        let reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => Ok(()),
            "task_exists" => Err(StoreError::TaskExists(task.id)),
            _ => Err(reply.unexpected()),
        }
    }

    async fn get_task(&self, task_id: &str) -> Result<Option<Task>, StoreError> {
        let row = self.connection.get(self.keys.task(task_id)).await?;
        row.map(|row| decode("task", &row)).transpose()
    }

    async fn close_scope(
        &self,
        scope: &Scope,
        closure: &Closure,
        now: DateTime<Utc>,
    ) -> Result<ClosedScope, StoreError> {
        let ending = match scope {
            Scope::Task(_) => encode(
                "task closure",
                &TaskClosure { at: now, by: closure.by.clone(), reason: closure.reason },
            )?,
            Scope::Agent(agent) => encode(
                "agent status",
                &AgentStatus {
                    agent: agent.clone(),
                    state: AgentState::Suspended,
                    changed_at: now,
                    changed_by: closure.by.clone(),
                    reason: closure.note.clone(),
                },
            )?,
            Scope::Provider(provider) => encode(
                "provider status",
                &ProviderStatus {
                    provider: provider.clone(),
                    state: AgentState::Suspended,
                    changed_at: now,
                    changed_by: closure.by.clone(),
                    reason: closure.note.clone(),
                },
            )?,
        };
        let (closed, _, _) =
            self.close_all(scope, ending.as_bytes(), closure.reason, now, false).await?.ok_or_else(|| {
                StoreError::Corrupt("ending a scope answered that there was nothing to end".into())
            })?;
        Ok(closed)
    }

    async fn agent_status(&self, agent: &str) -> Result<Option<AgentStatus>, StoreError> {
        let row = self.connection.hget(&self.keys.agents(), agent.as_bytes()).await?;
        row.map(|row| decode("agent status", &row)).transpose()
    }

    async fn provider_status(&self, provider: &str) -> Result<Option<ProviderStatus>, StoreError> {
        let row = self.connection.hget(&self.keys.providers(), provider.as_bytes()).await?;
        row.map(|row| decode("provider status", &row)).transpose()
    }

    async fn resume_provider(
        &self,
        provider: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ProviderStatus, StoreError> {
        let status = ProviderStatus {
            provider: provider.to_owned(),
            state: AgentState::Active,
            changed_at: now,
            changed_by: by.to_owned(),
            reason: reason.to_owned(),
        };
        let mut call = self.function("resume_provider");
        call.arg(provider).arg(encode("provider status", &status)?);
        for _ in 0..2 {
            let reply = Reply::parse(self.invoke(&call).await?)?;
            match reply.status() {
                "ok" => return Ok(status),
                "not_suspended" => return Err(StoreError::ProviderNotSuspended(provider.to_owned())),
                "closing" => {
                    let scope = Scope::Provider(provider.to_owned());
                    self.close_all(&scope, b"", RevocationReason::ProviderSuspended, now, false).await?;
                }
                _ => return Err(reply.unexpected()),
            }
        }
        Err(StoreError::Unavailable(format!(
            "the suspension of provider {provider:?} is still being finished; try again"
        )))
    }

    async fn get_agent(&self, name: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = self.connection.hget(&self.keys.registry(), name.as_bytes()).await?;
        row.map(|row| decode("agent record", &row)).transpose()
    }

    async fn list_agents(&self, after: Option<&str>, limit: usize) -> Result<Vec<AgentRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut call = self.function("list_agents");
        call.arg(after.unwrap_or("")).arg(limit_arg(limit));
        self.rows("agent record", &call).await
    }

    async fn put_agent(
        &self,
        expected: Option<&AgentRecord>,
        record: &AgentRecord,
    ) -> Result<(), StoreError> {
        let expected = expected.map(|expected| expected.revision.to_string());
        let mut call = self.function("put_agent");
        call.arg(&record.name).arg(expected.unwrap_or_default()).arg(encode("agent record", record)?);
        let reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => Ok(()),
            "exists" => Err(StoreError::AgentExists(record.name.clone())),
            "changed" => Err(StoreError::AgentChanged(record.name.clone())),
            _ => Err(reply.unexpected()),
        }
    }

    async fn agents_revision(&self) -> Result<u64, StoreError> {
        let Some(raw) = self.connection.get(self.keys.registry_revision()).await? else {
            return Ok(0);
        };
        std::str::from_utf8(&raw)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("the agent inventory revision is not a number".into()))
    }

    async fn resume_agent(
        &self,
        agent: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<AgentStatus, StoreError> {
        let status = AgentStatus {
            agent: agent.to_owned(),
            state: AgentState::Active,
            changed_at: now,
            changed_by: by.to_owned(),
            reason: reason.to_owned(),
        };
        let json = encode("agent status", &status)?;
        let mut call = self.function("resume_agent");
        call.arg(agent).arg(json);
        // A suspension still moving leases is finished first (at most twice:
        // the suspension cannot start again while it is being lifted).
        for _ in 0..2 {
            let reply = Reply::parse(self.invoke(&call).await?)?;
            match reply.status() {
                "ok" => return Ok(status),
                "not_suspended" => return Err(StoreError::AgentNotSuspended(agent.to_owned())),
                "retired" => return Err(StoreError::AgentRetired(agent.to_owned())),
                "closing" => {
                    let scope = Scope::Agent(agent.to_owned());
                    self.close_all(&scope, b"", RevocationReason::AgentSuspended, now, false).await?;
                }
                _ => return Err(reply.unexpected()),
            }
        }
        Err(StoreError::Unavailable(format!(
            "the suspension of agent {agent:?} is still being finished; try again"
        )))
    }

    async fn overdue_tasks(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut call = self.function("overdue_tasks");
        call.arg(time(now)).arg(millis(now)).arg(limit_arg(limit));
        let ids = reply::list(self.invoke(&call).await?)?;
        ids.into_iter()
            .map(|id| String::from_utf8(id).map_err(|_| StoreError::Corrupt("a task id is not UTF-8".into())))
            .collect()
    }

    async fn task_leases(&self, task_id: &str) -> Result<Vec<Lease>, StoreError> {
        let mut call = self.function("task_leases");
        call.arg(task_id);
        let mut leases = self.leases(&call).await?;
        leases.sort_by_key(|lease| (lease.created_at, lease.id));
        Ok(leases)
    }

    async fn insert_pending(&self, lease: Lease, now: DateTime<Utc>) -> Result<(), StoreError> {
        let row = record::encode(&lease)?;
        let mut call = self.function("insert_pending");
        call.arg(&member(lease.id)[..]).arg(row).arg(time(now)).arg(millis(now));
        let mut reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => Ok(()),
            "task_not_found" => Err(StoreError::TaskNotFound(lease.task_id)),
            "task_closed" => Err(StoreError::TaskClosed(lease.task_id)),
            "agent_suspended" => Err(StoreError::AgentSuspended(lease.agent)),
            "provider_suspended" => Err(StoreError::ProviderSuspended(lease.provider)),
            "lease_state" => Err(StoreError::LeaseState { id: lease.id, state: reply.state()? }),
            _ => Err(reply.unexpected()),
        }
    }

    async fn activate(
        &self,
        lease_id: Uuid,
        expires_at: DateTime<Utc>,
        handle: SealedHandle,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let handle = record::handle(&handle)?;
        let mut call = self.function("activate");
        call.arg(&member(lease_id)[..])
            .arg(&at(expires_at)?[..])
            .arg(handle)
            .arg(&at(now)?[..])
            .arg(time(now))
            .arg(millis(now));
        self.lease_answer(lease_id, &call).await
    }

    async fn extend(
        &self,
        lease_id: Uuid,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let mut call = self.function("extend");
        call.arg(&member(lease_id)[..]).arg(&at(expires_at)?[..]).arg(time(now)).arg(millis(now));
        self.lease_answer(lease_id, &call).await
    }

    async fn get_lease(&self, lease_id: Uuid) -> Result<Option<Lease>, StoreError> {
        let row = self.connection.hget(&self.keys.leases(), &member(lease_id)).await?;
        row.map(|row| record::decode(lease_id, &row)).transpose()
    }

    async fn list_leases(
        &self,
        filter: &LeaseFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // "" for no filter; a set filter is prefixed, so that filtering on
        // the empty string stays possible.
        let filter_arg = |value: Option<&str>| value.map_or(String::new(), |value| format!("={value}"));
        let after = after.map(|id| member(id).to_vec()).unwrap_or_default();
        let mut call = self.function("list_leases");
        call.arg(filter_arg(filter.task_id.as_deref()))
            .arg(filter_arg(filter.agent.as_deref()))
            .arg(filter.state.map_or("", |state| state.as_str()))
            .arg(after)
            .arg(limit_arg(limit))
            .arg(filter_arg(filter.provider.as_deref()));
        self.leases(&call).await
    }

    async fn request_revocation(
        &self,
        lease_ids: &[Uuid],
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, StoreError> {
        if lease_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.function("request_revocation");
        call.arg(record::reason_code(reason)).arg(&at(now)?[..]);
        for id in lease_ids {
            call.arg(&member(*id)[..]);
        }
        let mut reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => keys::lease_ids(reply.list()?),
            _ => Err(reply.unexpected()),
        }
    }

    async fn sweep(
        &self,
        now: DateTime<Utc>,
        pending_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Swept, StoreError> {
        if limit == 0 {
            return Ok(Swept::default());
        }
        // A retention reaching back past what a record can hold forgets nothing.
        let retained_since = now.checked_sub_signed(self.finished_retention);
        let forget_before = retained_since.and_then(|before| at(before).ok()).unwrap_or([0; 8]);
        // Closed tasks are kept by when they closed: one closed before
        // `retained_since` is due, and one looked at again is due
        // TASK_RECHECK_MS after this sweep.
        let (forget_tasks_before, recheck) = match retained_since {
            Some(before) => (millis(before).to_string(), millis(before).saturating_add(TASK_RECHECK_MS)),
            None => ("-inf".to_owned(), 0),
        };
        let mut call = self.function("sweep");
        call.arg(&at(now)?[..])
            .arg(&at(pending_before)?[..])
            .arg(&forget_before[..])
            .arg(limit_arg(limit))
            .arg(forget_tasks_before)
            .arg(recheck);
        let mut reply = Reply::parse(self.invoke(&call).await?)?;
        let mut swept = match reply.status() {
            "ok" => {
                let expired = keys::lease_ids(reply.list()?)?;
                let abandoned = keys::lease_ids(reply.list()?)?;
                let (forgotten, forgotten_tasks) = (reply.count()?, reply.count()?);
                let mut leases = reply::named([expired.as_slice(), &abandoned].concat(), reply.list()?)?;
                let abandoned = leases.split_off(expired.len());
                Swept { expired: leases, abandoned, forgotten, closed: Vec::new(), forgotten_tasks }
            }
            _ => return Err(reply.unexpected()),
        };
        swept.closed = self.finish_closes(now).await;
        Ok(swept)
    }

    async fn claim_revocations(
        &self,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut call = self.function("claim_revocations");
        call.arg(&at(now)?[..]).arg(&at(claim_until)?[..]).arg(limit_arg(limit));
        let mut reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => reply::leases(reply.list()?),
            _ => Err(reply.unexpected()),
        }
    }

    async fn finish_revocations(
        &self,
        outcomes: &[RevocationOutcome],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut call = self.function("finish_revocations");
        call.arg(&at(now)?[..]);
        for outcome in outcomes {
            call.arg(&member(outcome.lease_id())[..]);
            match outcome {
                RevocationOutcome::Done { generation, .. } => {
                    call.arg("done").arg(generation).arg("").arg("");
                }
                RevocationOutcome::Retry { generation, next_attempt_at, error, .. } => {
                    call.arg("retry").arg(generation).arg(&at(*next_attempt_at)?[..]).arg(error);
                }
                RevocationOutcome::GaveUp { generation, error, .. } => {
                    call.arg("gave_up").arg(generation).arg("").arg(error);
                }
            }
        }
        let mut reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => Ok(()),
            "lease_not_found" => Err(StoreError::LeaseNotFound(lease_id(&reply.bytes()?)?)),
            _ => Err(reply.unexpected()),
        }
    }

    async fn backlog(&self) -> Result<super::Backlog, StoreError> {
        // `queue` is one sorted set (a passing state's schedule, never
        // chunked): its size, and its first member's due time. Two reads,
        // not one moment: good enough for a gauge.
        let queue = format!("{}queue", self.keys.prefix());
        let queued: u64 = self.connection.zcard(&queue).await?;
        let first = self.connection.zfirst(&queue).await?;
        let earliest_due = first.map(|member| record::read_time(&member)).transpose()?;
        let approvals_open = self.connection.zcard(&format!("{}approvals-open", self.keys.prefix())).await?;
        Ok(super::Backlog { queued, earliest_due, approvals_open })
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let call = self.function("next_due");
        let leases_and_tasks = reply::earliest(reply::optional_list(self.invoke(&call).await?)?)?;
        let approvals = self.approvals_due().await?;
        Ok(leases_and_tasks.into_iter().chain(approvals).min())
    }

    async fn record_sighting(
        &self,
        issuer: &str,
        subject: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut call = self.function("record_sighting");
        call.arg(keys::sighting(issuer, subject)).arg(issuer).arg(subject).arg(time(now)).arg(millis(now));
        let reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => Ok(()),
            _ => Err(reply.unexpected()),
        }
    }

    async fn create_approval(&self, approval: Approval, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.create_approval_in(approval, now).await
    }

    async fn get_approval(&self, id: Uuid) -> Result<Option<Approval>, StoreError> {
        self.get_approval_in(id).await
    }

    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        self.list_approvals_in(filter, after, limit).await
    }

    async fn vote_approval(&self, id: Uuid, vote: ApprovalVote) -> Result<Approval, StoreError> {
        self.vote_approval_in(id, vote).await
    }

    async fn collect_approval(
        &self,
        id: Uuid,
        agent: &str,
        now: DateTime<Utc>,
    ) -> Result<Approval, StoreError> {
        self.collect_approval_in(id, agent, now).await
    }

    async fn end_approvals(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Approval>, StoreError> {
        self.end_approvals_in(now, limit).await
    }

    async fn list_sightings(&self, limit: usize) -> Result<Vec<Sighting>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut call = self.function("list_sightings");
        call.arg(limit_arg(limit));
        self.rows("sighting", &call).await
    }

    /// A write to the namespace's node: see `lua/health.lua`. Like every
    /// call, it fails if the namespace is in another layout (`begin` in
    /// `lua/common.lua`).
    async fn health(&self) -> Result<(), StoreError> {
        let call = self.function("health");
        let reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => Ok(()),
            _ => Err(reply.unexpected()),
        }
    }
}
