//! The Redis lease store: shared by any number of stateless Writ replicas,
//! on one Redis node or a Redis Cluster.
//!
//! Each operation is one Lua function (`redis/lua/`, loaded as one Redis
//! Function library, `redis/library.rs`) that checks the state rules and
//! then writes the rows and every index entry they move, run atomically by
//! Redis; two replicas cannot both pass a check, and a
//! revocation claimed by one is hidden from the other. Every function
//! stays in one hash slot: a namespace is one hash tag, or with
//! [`RedisConfig::shards`] a home plus several shards, each holding whole
//! tasks with their leases and approval requests, so that the writes
//! spread over a cluster's primaries (layout in `redis/keys.rs`, ADR 0017).
//! Calls on one task, lease or approval go to its shard; the sweep, the
//! revocation queue, listings and suspensions go to every shard. Reads of
//! one row are plain `GET`/`HGET`s; reads that walk an index are functions
//! too, so they see one consistent moment (of one shard).
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
mod closes;
mod config;
mod connection;
mod fanout;
mod keys;
mod library;
mod record;
mod reply;
mod reshard;
mod shard_count;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use redis::{Cmd, Value};
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub use self::closes::CloseStep;
pub use self::config::{MAX_SHARDS, RedisConfig};
use self::connection::Connection;
use self::fanout::merged;
use self::keys::{Keys, Layout, member};
use self::record::time as at;
use self::reply::{Reply, decode, encode, limit as limit_arg, millis, time};
pub use self::reshard::{Resharded, reshard};
use super::{
    ApprovalFilter, ClosedScope, Closure, LeaseFilter, LeaseStore, RevocationOutcome, Scope, StoreError,
    Swept,
};
use crate::model::{
    AgentRecord, AgentState, AgentStatus, Approval, ApprovalVote, Lease, ProviderStatus, RevocationReason,
    SealedHandle, Sighting, Task, TaskClosure, TaskState,
};

/// A [`LeaseStore`] in Redis.
pub struct RedisStore {
    /// Multiplexed and self-healing, shared by every call.
    connection: Connection,
    /// The namespace's home and shards.
    layout: Layout,
    /// How long a finished lease stays readable before a sweep forgets it.
    finished_retention: chrono::Duration,
    /// The shard the next sweep starts with: each sweep starts one further,
    /// so that a busy shard cannot take every sweep's whole batch.
    next_sweep: std::sync::atomic::AtomicUsize,
}

/// How many of a task's leases one call of the close function moves to
/// revoking: about 30 ms of Redis time, so closing a task with a hundred
/// thousand leases never blocks Redis, or outlasts `operation_timeout`, in
/// one go.
const CLOSE_BATCH: usize = 1000;

/// A closed task past its retention that still has leases (retained
/// themselves, or not yet revoked) is looked at again this much later.
const TASK_RECHECK_MS: i64 = 60_000;

impl RedisStore {
    /// One step of ending a scope ([`CloseStep`]) in the shard that holds
    /// it (a task) or, for an agent or a provider, in the home of an
    /// unsharded namespace. Exposed for tests, which stop a close half-way
    /// as a crash would.
    #[doc(hidden)]
    pub async fn close_step_of(
        &self,
        scope: &Scope,
        ending: &[u8],
        reason: RevocationReason,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Option<CloseStep>, StoreError> {
        let keys = match scope {
            Scope::Task(task_id) => self.layout.of_task(task_id),
            Scope::Agent(_) | Scope::Provider(_) => self.layout.home(),
        };
        self.close_step(keys, scope, ending, reason, now, (limit, false)).await
    }

    /// Connects, checks that the namespace is laid out in the configured
    /// number of shards, and that its nodes take writes
    /// ([`LeaseStore::health`]). Fails `Unavailable` if the configuration
    /// is invalid or Redis cannot be used now.
    pub async fn open(config: &RedisConfig) -> Result<Self, StoreError> {
        let store = Self::connect(config).await?;
        store.check_shard_count(&config.namespace).await?;
        store.health().await?;
        Ok(store)
    }

    /// Connects without checking the layout (for `reshard`).
    async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        config.validate().map_err(|message| StoreError::Unavailable(format!("redis store: {message}")))?;
        Ok(Self {
            connection: Connection::open(config).await?,
            layout: Layout::new(&config.namespace, config.shards),
            finished_retention: chrono::Duration::from_std(config.finished_retention)
                .map_err(|_| StoreError::Unavailable("redis store: finished_retention is too long".into()))?,
            next_sweep: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A call of the library's function for `operation` in the shard (or
    /// home) `keys`; the caller adds the arguments.
    fn function(&self, keys: &Keys, operation: &str) -> Cmd {
        self.connection.function(operation, keys.prefix())
    }

    async fn invoke(&self, call: &Cmd) -> Result<Value, StoreError> {
        self.connection.call(call).await
    }

    /// Runs `activate` or `extend` (made by `call` for a shard) in the
    /// lease's shard: the lease as changed, or why not.
    async fn lease_answer(&self, lease_id: Uuid, call: impl Fn(&Keys) -> Cmd) -> Result<Lease, StoreError> {
        let shards = std::iter::once(self.layout.of_id(lease_id)).chain(self.layout.others(lease_id));
        for keys in shards {
            let mut reply = Reply::parse(self.invoke(&call(keys)).await?)?;
            return match reply.status() {
                "ok" => record::decode(lease_id, &reply.bytes()?),
                // An id made before shards may be in another shard.
                "lease_not_found" => continue,
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
            };
        }
        Err(StoreError::LeaseNotFound(lease_id))
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
        let mut call = self.function(self.layout.of_task(&task.id), "create_task");
        call.arg(&task.id).arg(json).arg(millis(task.deadline)).arg(open);
        let reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => Ok(()),
            "task_exists" => Err(StoreError::TaskExists(task.id)),
            _ => Err(reply.unexpected()),
        }
    }

    async fn get_task(&self, task_id: &str) -> Result<Option<Task>, StoreError> {
        let row = self.connection.get(self.layout.of_task(task_id).task(task_id)).await?;
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
        Ok(self.end_scope(scope, ending.as_bytes(), closure.reason, now).await?.scope)
    }

    async fn agent_status(&self, agent: &str) -> Result<Option<AgentStatus>, StoreError> {
        self.agent_status_in(self.layout.home(), agent).await
    }

    async fn provider_status(&self, provider: &str) -> Result<Option<ProviderStatus>, StoreError> {
        self.provider_status_in(self.layout.home(), provider).await
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
        let json = encode("provider status", &status)?;
        self.lift(&Scope::Provider(provider.to_owned()), "resume_provider", json.as_bytes(), now).await?;
        Ok(status)
    }

    async fn get_agent(&self, name: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = self.connection.hget(&self.layout.home().registry(), name.as_bytes()).await?;
        row.map(|row| decode("agent record", &row)).transpose()
    }

    async fn list_agents(&self, after: Option<&str>, limit: usize) -> Result<Vec<AgentRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut call = self.function(self.layout.home(), "list_agents");
        call.arg(after.unwrap_or("")).arg(limit_arg(limit));
        self.rows("agent record", &call).await
    }

    async fn put_agent(
        &self,
        expected: Option<&AgentRecord>,
        record: &AgentRecord,
    ) -> Result<(), StoreError> {
        let expected = expected.map(|expected| expected.revision.to_string());
        let mut call = self.function(self.layout.home(), "put_agent");
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
        let Some(raw) = self.connection.get(self.layout.home().registry_revision()).await? else {
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
        self.lift(&Scope::Agent(agent.to_owned()), "resume_agent", json.as_bytes(), now).await?;
        Ok(status)
    }

    async fn overdue_tasks(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Up to `limit` from each shard, merged oldest first.
        let parts = self
            .in_live_shards("overdue tasks", |keys| async move {
                let mut call = self.function(keys, "overdue_tasks");
                call.arg(time(now)).arg(millis(now)).arg(limit_arg(limit));
                reply::list(self.invoke(&call).await?)
            })
            .await?;
        let mut overdue = Vec::new();
        for part in parts {
            for pair in part.chunks(2) {
                let [id, deadline] = pair else {
                    return Err(StoreError::Corrupt("overdue tasks came unpaired".into()));
                };
                let id = String::from_utf8(id.clone())
                    .map_err(|_| StoreError::Corrupt("a task id is not UTF-8".into()))?;
                let deadline: f64 = std::str::from_utf8(deadline)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt("a task deadline is not a number".into()))?;
                overdue.push((deadline, id));
            }
        }
        overdue.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        overdue.truncate(limit);
        Ok(overdue.into_iter().map(|(_, id)| id).collect())
    }

    async fn task_leases(&self, task_id: &str) -> Result<Vec<Lease>, StoreError> {
        let mut call = self.function(self.layout.of_task(task_id), "task_leases");
        call.arg(task_id);
        let mut leases = self.leases(&call).await?;
        leases.sort_by_key(|lease| (lease.created_at, lease.id));
        Ok(leases)
    }

    async fn insert_pending(&self, lease: Lease, now: DateTime<Utc>) -> Result<(), StoreError> {
        let row = record::encode(&lease)?;
        let mut call = self.function(self.layout.of_task(&lease.task_id), "insert_pending");
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
        let (expires_at, at_now) = (at(expires_at)?, at(now)?);
        self.lease_answer(lease_id, |keys| {
            let mut call = self.function(keys, "activate");
            call.arg(&member(lease_id)[..])
                .arg(&expires_at[..])
                .arg(&handle)
                .arg(&at_now[..])
                .arg(time(now))
                .arg(millis(now));
            call
        })
        .await
    }

    async fn extend(
        &self,
        lease_id: Uuid,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        let expires_at = at(expires_at)?;
        self.lease_answer(lease_id, |keys| {
            let mut call = self.function(keys, "extend");
            call.arg(&member(lease_id)[..]).arg(&expires_at[..]).arg(time(now)).arg(millis(now));
            call
        })
        .await
    }

    async fn get_lease(&self, lease_id: Uuid) -> Result<Option<Lease>, StoreError> {
        Ok(self.find_lease(lease_id).await?.map(|(_, lease)| lease))
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
        let list = |keys: &Keys| {
            let mut call = self.function(keys, "list_leases");
            call.arg(filter_arg(filter.task_id.as_deref()))
                .arg(filter_arg(filter.agent.as_deref()))
                .arg(filter.state.map_or("", |state| state.as_str()))
                .arg(&after)
                .arg(limit_arg(limit))
                .arg(filter_arg(filter.provider.as_deref()));
            call
        };
        // A task's leases are all in its shard.
        if let Some(task_id) = &filter.task_id {
            return self.leases(&list(self.layout.of_task(task_id))).await;
        }
        let parts = self.in_every_shard(|keys| async move { self.leases(&list(keys)).await }).await?;
        Ok(merged(parts, |lease| lease.id, limit))
    }

    /// With shards, atomic per shard: a call that fails may have moved the
    /// leases of some shards (calling again moves the rest).
    async fn request_revocation(
        &self,
        lease_ids: &[Uuid],
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, StoreError> {
        if lease_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_shard: Vec<Vec<Uuid>> = vec![Vec::new(); self.layout.shards().len()];
        for id in lease_ids {
            let keys = self.layout.of_id(*id);
            let index = self.layout.shards().iter().position(|shard| shard.prefix() == keys.prefix());
            by_shard[index.unwrap_or(0)].push(*id);
        }
        let mut moved = Vec::new();
        let mut unknown = Vec::new();
        for (keys, ids) in self.layout.shards().iter().zip(&by_shard) {
            if !ids.is_empty() {
                let (done, missing) = self.request_revocation_in(keys, ids, reason, now).await?;
                moved.extend(done);
                unknown.extend(missing);
            }
        }
        // Ids made before shards may sit in another shard than they name.
        for id in unknown {
            for keys in self.layout.others(id) {
                let (done, missing) = self.request_revocation_in(keys, &[id], reason, now).await?;
                moved.extend(done);
                if missing.is_empty() {
                    break;
                }
            }
        }
        Ok(moved)
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
        // Shard after shard, from a different one each time, each taking
        // what the batch has room left for: up to `limit` of each kind in
        // all. A shard that does not answer is left for the next sweep.
        let shards = self.layout.shards();
        let start = self.next_sweep.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut swept = Swept::default();
        let (mut answered, mut failed) = (0, None);
        for offset in 0..shards.len() {
            let keys = &shards[(start + offset) % shards.len()];
            let taken = [swept.expired.len(), swept.abandoned.len(), swept.forgotten, swept.forgotten_tasks];
            let room = limit - taken.into_iter().max().unwrap_or(0);
            if room == 0 {
                break;
            }
            match self.sweep_in(keys, now, pending_before, room).await {
                Ok(part) => {
                    answered += 1;
                    swept.expired.extend(part.expired);
                    swept.abandoned.extend(part.abandoned);
                    swept.forgotten += part.forgotten;
                    swept.forgotten_tasks += part.forgotten_tasks;
                }
                Err(error) => {
                    tracing::warn!(shard = keys.prefix(), %error, "sweep: a shard did not answer; the others went on");
                    failed = Some(error);
                }
            }
        }
        if let Some(error) = failed.filter(|_| answered == 0) {
            return Err(error);
        }
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
        // An equal share from every shard at once, so that no shard's
        // backlog starves another's; then what is left of the batch from
        // the shards that filled their share.
        let (now, claim_until) = (at(now)?, at(claim_until)?);
        let shares =
            self.layout.shares(limit, self.next_sweep.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let claim = |keys: &Keys, limit: usize| {
            let mut call = self.function(keys, "claim_revocations");
            call.arg(&now[..]).arg(&claim_until[..]).arg(limit_arg(limit));
            async move {
                if limit == 0 {
                    return Ok(Vec::new());
                }
                let mut reply = Reply::parse(self.invoke(&call).await?)?;
                match reply.status() {
                    "ok" => reply::leases(reply.list()?),
                    _ => Err(reply.unexpected()),
                }
            }
        };
        let shares = &shares;
        let parts = self
            .in_live_shards("claiming revocations", |keys| async move {
                let share =
                    shares.iter().find(|(shard, _)| shard.prefix() == keys.prefix()).map_or(0, |(_, n)| *n);
                Ok((keys, share, claim(keys, share).await?))
            })
            .await?;
        // Shards that may have more: those that filled their share, and
        // those whose share was nothing (a batch smaller than the shards).
        let full: Vec<&Keys> = parts
            .iter()
            .filter(|(_, share, claimed)| claimed.len() == *share)
            .map(|(keys, _, _)| *keys)
            .collect();
        let mut claimed: Vec<Lease> = parts.into_iter().flat_map(|(_, _, claimed)| claimed).collect();
        for keys in full {
            if claimed.len() >= limit {
                break;
            }
            // What is claimed already stays claimed: a shard failing now
            // leaves its share for the next claim.
            match claim(keys, limit - claimed.len()).await {
                Ok(more) => claimed.extend(more),
                Err(error) => {
                    tracing::warn!(shard = keys.prefix(), %error, "claiming revocations: a shard did not answer");
                    break;
                }
            }
        }
        Ok(claimed)
    }

    /// With shards, atomic per shard, like [`Self::request_revocation`].
    async fn finish_revocations(
        &self,
        outcomes: &[RevocationOutcome],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        // Each outcome goes to the shard its lease id names; one the shard
        // does not hold (an id made before shards) is looked for in the
        // others.
        let mut pending: Vec<(&Keys, Vec<&RevocationOutcome>)> = Vec::new();
        for outcome in outcomes {
            let keys = self.layout.of_id(outcome.lease_id());
            match pending.iter_mut().find(|(shard, _)| shard.prefix() == keys.prefix()) {
                Some((_, group)) => group.push(outcome),
                None => pending.push((keys, vec![outcome])),
            }
        }
        // A shard that fails does not keep the others' outcomes from being
        // recorded; the call reports the first failure at the end.
        let mut failed = None;
        while let Some((keys, group)) = pending.pop() {
            let missing = match self.finish_revocations_in(keys, &group, now).await {
                Ok(None) => continue,
                Ok(Some(missing)) => missing,
                Err(error) => {
                    failed = Some(error);
                    continue;
                }
            };
            let Some((found, _)) = self.find_lease(missing).await? else {
                return Err(StoreError::LeaseNotFound(missing));
            };
            if found.prefix() == keys.prefix() {
                return Err(StoreError::LeaseNotFound(missing));
            }
            let (moving, staying): (Vec<_>, Vec<_>) =
                group.into_iter().partition(|outcome| outcome.lease_id() == missing);
            pending.push((keys, staying));
            pending.push((found, moving));
            pending.retain(|(_, group)| !group.is_empty());
        }
        failed.map_or(Ok(()), Err)
    }

    async fn backlog(&self) -> Result<super::Backlog, StoreError> {
        // `queue` is one sorted set per shard (a passing state's schedule,
        // never chunked): its size, and its first member's due time. Reads
        // of several keys, not one moment: good enough for a gauge.
        let parts = self
            .in_every_shard(|keys| async move {
                let queue = format!("{}queue", keys.prefix());
                let queued: u64 = self.connection.zcard(&queue).await?;
                let first = self.connection.zfirst(&queue).await?;
                let earliest_due = first.map(|member| record::read_time(&member)).transpose()?;
                let approvals_open =
                    self.connection.zcard(&format!("{}approvals-open", keys.prefix())).await?;
                Ok(super::Backlog { queued, earliest_due, approvals_open })
            })
            .await?;
        Ok(parts.into_iter().fold(super::Backlog::default(), |sum, part| super::Backlog {
            queued: sum.queued + part.queued,
            earliest_due: sum.earliest_due.into_iter().chain(part.earliest_due).min(),
            approvals_open: sum.approvals_open + part.approvals_open,
        }))
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let parts = self
            .in_live_shards("next due", |keys| async move {
                let call = self.function(keys, "next_due");
                let leases_and_tasks = reply::earliest(reply::optional_list(self.invoke(&call).await?)?)?;
                let approvals = self.approvals_due(keys).await?;
                Ok(leases_and_tasks.into_iter().chain(approvals).min())
            })
            .await?;
        Ok(parts.into_iter().flatten().min())
    }

    async fn record_sighting(
        &self,
        issuer: &str,
        subject: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut call = self.function(self.layout.home(), "record_sighting");
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
        let mut call = self.function(self.layout.home(), "list_sightings");
        call.arg(limit_arg(limit));
        self.rows("sighting", &call).await
    }

    /// A write to the home's node and to every shard's: see
    /// `lua/health.lua`. Like every call, it fails if the namespace is in
    /// another layout (`begin` in `lua/common.lua`).
    async fn health(&self) -> Result<(), StoreError> {
        let homes = std::iter::once(self.layout.home()).filter(|_| self.layout.sharded());
        try_join_all(homes.chain(self.layout.shards()).map(|keys| async move {
            let reply = Reply::parse(self.invoke(&self.function(keys, "health")).await?)?;
            match reply.status() {
                "ok" => Ok(()),
                _ => Err(reply.unexpected()),
            }
        }))
        .await?;
        Ok(())
    }
}
