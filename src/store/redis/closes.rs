//! Ending scopes in Redis: closing a task, suspending an agent or a
//! provider, a batch of leases per function call (ADR 0007), and, with
//! shards, carrying a suspension to every shard (ADR 0017).
//!
//! A task lives in one shard, so its close is that shard's business. An
//! agent or a provider has leases in every shard. Its suspension or resume
//! holds a lock in the home (one at a time per agent or provider, so a
//! resume and a suspension never interleave), marks it `spreading`, changes
//! the home (the status operators read), then makes every shard's own copy
//! match the home (each shard's copy of the suspended set is what its
//! inserts check), going on past a shard that fails, and drops the mark
//! once every shard has it. A caller that dies on the way, or a shard that
//! was down, leaves the mark, and the next sweep that can take the lock
//! makes the shards match the home.

use chrono::{DateTime, Utc};

use super::keys::{self, Keys};
use super::record::{self, time as at};
use super::reply::{Reply, decode, encode, limit as limit_arg, millis};
use super::{CLOSE_BATCH, RedisStore};
use crate::model::{AgentState, AgentStatus, ProviderStatus, RevocationReason};
use crate::store::{ClosedScope, Scope, StoreError, SweptLease};

/// How long a suspension's or resume's lock lasts unless its holder
/// refreshes it (after each shard).
const LOCK_MS: u64 = 30_000;

/// How long a suspension or resume waits for another of the same agent or
/// provider to finish.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// One call of the close function.
#[doc(hidden)]
#[derive(Debug)]
pub struct CloseStep {
    /// The task as closed, for a task scope.
    pub task: Option<crate::model::Task>,
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

/// What [`RedisStore::close_all`] did in one shard (or the home).
pub(super) struct Closed {
    pub(super) scope: ClosedScope,
    pub(super) moved: Vec<SweptLease>,
    pub(super) reason: RevocationReason,
}

fn kind_and_id(scope: &Scope) -> (&'static str, &str) {
    match scope {
        Scope::Task(task_id) => ("task", task_id),
        Scope::Agent(agent) => ("agent", agent),
        Scope::Provider(provider) => ("provider", provider),
    }
}

impl RedisStore {
    /// One step of ending a scope in the shard (or home) `keys`: ends it
    /// (closes the task, suspends the agent, writing `ending`) if it is
    /// not ended, then moves up to `limit` more of its leases to revoking.
    /// An empty `ending` only goes on with a close under way, and answers
    /// `None` if there is none. With `takeover` (the sweep finishing a
    /// close someone else began), a close whose last batch is less than a
    /// second old is left to whoever is moving it (`None`), so that its
    /// caller hears of every lease it ends.
    pub(super) async fn close_step(
        &self,
        keys: &Keys,
        scope: &Scope,
        ending: &[u8],
        reason: RevocationReason,
        now: DateTime<Utc>,
        (limit, takeover): (usize, bool),
    ) -> Result<Option<CloseStep>, StoreError> {
        let (kind, id) = kind_and_id(scope);
        let mut call = self.function(keys, "close_scope");
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
            "task_not_found" => return Err(StoreError::TaskNotFound(id.to_owned())),
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
        let revoking = super::reply::named(ids, reply.list()?)?;
        Ok(Some(CloseStep { task, agent, provider, revoking, reason, ended_now, done }))
    }

    /// Ends a scope in one shard (or the home) and moves all its leases
    /// there, a batch per call. `None` when `ending` is empty and no close
    /// was under way.
    pub(super) async fn close_all(
        &self,
        keys: &Keys,
        scope: &Scope,
        ending: &[u8],
        reason: RevocationReason,
        now: DateTime<Utc>,
        takeover: bool,
    ) -> Result<Option<Closed>, StoreError> {
        let mut moved = Vec::new();
        let mut ended_now = None;
        // Only the first step asks whether someone else is moving the
        // close: once the sweep has taken it over, its own batches mark it
        // touched and must not make it step back.
        let mut takeover = takeover;
        loop {
            let step = self.close_step(keys, scope, ending, reason, now, (CLOSE_BATCH, takeover)).await?;
            takeover = false;
            let Some(step) = step else {
                // Another caller finished it between our calls.
                if moved.is_empty() {
                    return Ok(None);
                }
                let revoking = moved.iter().map(|lease: &SweptLease| lease.id).collect();
                let scope =
                    ClosedScope { task: None, agent: None, provider: None, ended_now: false, revoking };
                return Ok(Some(Closed { scope, moved, reason }));
            };
            moved.extend(step.revoking);
            let ended_now = *ended_now.get_or_insert(step.ended_now);
            if step.done {
                let revoking = moved.iter().map(|lease| lease.id).collect();
                let scope = ClosedScope {
                    task: step.task,
                    agent: step.agent,
                    provider: step.provider,
                    ended_now,
                    revoking,
                };
                return Ok(Some(Closed { scope, moved, reason: step.reason }));
            }
        }
    }

    /// Ends a scope wherever it has leases: a task in its shard; an agent
    /// or a provider in the home and then in every shard.
    pub(super) async fn end_scope(
        &self,
        scope: &Scope,
        ending: &[u8],
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<Closed, StoreError> {
        let nothing = || StoreError::Corrupt("ending a scope answered that there was nothing to end".into());
        match scope {
            Scope::Task(task_id) => {
                let keys = self.layout.of_task(task_id);
                self.close_all(keys, scope, ending, reason, now, false).await?.ok_or_else(nothing)
            }
            Scope::Agent(_) | Scope::Provider(_) if !self.layout.sharded() => {
                let home = self.layout.home();
                self.close_all(home, scope, ending, reason, now, false).await?.ok_or_else(nothing)
            }
            Scope::Agent(_) | Scope::Provider(_) => {
                let lock = self.lock(scope).await?;
                let result = async {
                    // The mark first: if this caller dies after the home's
                    // step, the sweep carries it to the shards.
                    self.mark_spreading(scope, record::reason_code(reason).to_string()).await?;
                    let home = self.layout.home();
                    let mut closed =
                        self.close_all(home, scope, ending, reason, now, false).await?.ok_or_else(nothing)?;
                    let moved = self.sync_shards(scope, &lock, now).await?;
                    closed.scope.revoking.extend(moved.iter().map(|(lease, _)| lease.id));
                    closed.moved.extend(moved.into_iter().map(|(lease, _)| lease));
                    Ok(closed)
                }
                .await;
                self.unlock(scope, &lock).await;
                result
            }
        }
    }

    /// Lifts a suspension (`operation` is `resume_agent` or
    /// `resume_provider`), finishing first any close of it still under
    /// way: in the home, then, with shards, in every shard.
    pub(super) async fn lift(
        &self,
        scope: &Scope,
        operation: &str,
        status: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let home = self.layout.home();
        if !self.layout.sharded() {
            return self.lift_in(home, scope, operation, status, now).await;
        }
        let lock = self.lock(scope).await?;
        let result = async {
            self.mark_spreading(scope, String::new()).await?;
            match self.lift_in(home, scope, operation, status, now).await {
                Ok(()) => {}
                // Lifted in the home already: a resume cut short, if some
                // shard still holds the suspension; it is finished below.
                Err(not @ (StoreError::AgentNotSuspended(_) | StoreError::ProviderNotSuspended(_))) => {
                    if !self.suspended_in_a_shard(scope).await? {
                        self.unmark_spreading(scope).await?;
                        return Err(not);
                    }
                }
                Err(error) => {
                    self.unmark_spreading(scope).await?;
                    return Err(error);
                }
            }
            self.sync_shards(scope, &lock, now).await.map(drop)
        }
        .await;
        self.unlock(scope, &lock).await;
        result
    }

    /// Makes every shard's copy of `scope`'s state what the home holds
    /// (suspended: ended there too, its leases moved; active: lifted),
    /// holding `lock`. Goes on past a shard that fails; if every shard
    /// took it, drops the `spreading` mark, else leaves it for the sweep
    /// and logs which shards are left. Returns the leases moved.
    async fn sync_shards(
        &self,
        scope: &Scope,
        lock: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(SweptLease, RevocationReason)>, StoreError> {
        let home = self.layout.home();
        let field = spreading_field(scope);
        let mark = self.connection.hget(&home.spreading(), field.as_bytes()).await?;
        let (status, suspended, operation, fallback) = match scope {
            Scope::Agent(agent) => {
                let status = self.agent_status_in(home, agent).await?;
                let suspended = status.as_ref().is_some_and(|status| status.state == AgentState::Suspended);
                (
                    status.map(|s| encode("agent status", &s)).transpose()?,
                    suspended,
                    "resume_agent",
                    RevocationReason::AgentSuspended,
                )
            }
            Scope::Provider(provider) => {
                let status = self.provider_status_in(home, provider).await?;
                let suspended = status.as_ref().is_some_and(|status| status.state == AgentState::Suspended);
                (
                    status.map(|s| encode("provider status", &s)).transpose()?,
                    suspended,
                    "resume_provider",
                    RevocationReason::ProviderSuspended,
                )
            }
            Scope::Task(_) => return Ok(Vec::new()),
        };
        let reason = mark.as_deref().and_then(parse_mark).unwrap_or(fallback);
        let status = status.unwrap_or_default();
        let mut moved = Vec::new();
        let mut left = Vec::new();
        for keys in self.layout.shards() {
            let step = if suspended {
                match self.close_all(keys, scope, status.as_bytes(), reason, now, false).await {
                    Ok(closed) => {
                        moved.extend(closed.into_iter().flat_map(|closed| {
                            let reason = closed.reason;
                            closed.moved.into_iter().map(move |lease| (lease, reason))
                        }));
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            } else {
                match self.lift_in(keys, scope, operation, status.as_bytes(), now).await {
                    Ok(()) | Err(StoreError::AgentNotSuspended(_) | StoreError::ProviderNotSuspended(_)) => {
                        Ok(())
                    }
                    Err(error) => Err(error),
                }
            };
            if let Err(error) = step {
                tracing::warn!(scope = %scope.describe(), shard = keys.prefix(), %error, "a shard did not take a suspension or resume; the sweep tries again");
                left.push(keys.prefix().to_owned());
            }
            self.refresh(scope, lock).await;
        }
        if left.is_empty() {
            self.unmark_spreading(scope).await?;
        }
        Ok(moved)
    }

    /// Marks `scope` as being carried to the shards: `value` is the
    /// suspension's reason code, or empty for a resume.
    async fn mark_spreading(&self, scope: &Scope, value: String) -> Result<(), StoreError> {
        let mut command = redis::cmd("HSET");
        command.arg(self.layout.home().spreading()).arg(spreading_field(scope)).arg(value);
        self.connection.query::<()>(command).await
    }

    async fn unmark_spreading(&self, scope: &Scope) -> Result<(), StoreError> {
        let mut command = redis::cmd("HDEL");
        command.arg(self.layout.home().spreading()).arg(spreading_field(scope));
        self.connection.query::<()>(command).await
    }

    /// Takes the lock that one suspension or resume of `scope` holds while
    /// it changes the home and the shards, waiting up to [`LOCK_WAIT`] for
    /// another to finish. The lock lapses after [`LOCK_MS`] unless
    /// refreshed, so a dead holder does not keep it.
    async fn lock(&self, scope: &Scope) -> Result<String, StoreError> {
        let started = std::time::Instant::now();
        loop {
            if let Some(token) = self.try_lock(scope).await? {
                return Ok(token);
            }
            if started.elapsed() > LOCK_WAIT {
                return Err(StoreError::Unavailable(format!(
                    "another suspension or resume of {} is under way; try again",
                    scope.describe()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn try_lock(&self, scope: &Scope) -> Result<Option<String>, StoreError> {
        let token = uuid::Uuid::now_v7().to_string();
        let mut command = redis::cmd("SET");
        command.arg(self.lock_key(scope)).arg(&token).arg("NX").arg("PX").arg(LOCK_MS);
        let taken: Option<String> = self.connection.query(command).await?;
        Ok(taken.map(|_| token))
    }

    async fn refresh(&self, scope: &Scope, token: &str) {
        let mut call = self.function(self.layout.home(), "lock");
        call.arg(self.lock_name(scope)).arg(token).arg("refresh").arg(LOCK_MS);
        if let Err(error) = self.invoke(&call).await {
            tracing::warn!(scope = %scope.describe(), %error, "cannot refresh a suspension's lock");
        }
    }

    async fn unlock(&self, scope: &Scope, token: &str) {
        let mut call = self.function(self.layout.home(), "lock");
        call.arg(self.lock_name(scope)).arg(token).arg("release").arg(0);
        if let Err(error) = self.invoke(&call).await {
            tracing::warn!(scope = %scope.describe(), %error, "cannot release a suspension's lock; it lapses by itself");
        }
    }

    fn lock_name(&self, scope: &Scope) -> String {
        format!("lock:{}", spreading_field(scope))
    }

    fn lock_key(&self, scope: &Scope) -> String {
        format!("{}{}", self.layout.home().prefix(), self.lock_name(scope))
    }

    /// Carries to the shards every suspension or resume a caller left
    /// half-way (its `spreading` mark), unless a live caller holds it.
    async fn finish_spreading(&self, now: DateTime<Utc>) -> Vec<(SweptLease, RevocationReason)> {
        let mut moved = Vec::new();
        let fields = match self.connection.hkeys(&self.layout.home().spreading()).await {
            Ok(fields) => fields,
            Err(error) => {
                tracing::warn!(%error, "cannot list suspensions under way; the next sweep tries again");
                return moved;
            }
        };
        for field in fields {
            let Some(scope) = scope_of_field(&field) else {
                tracing::error!("a spreading suspension's name is unreadable; it is left as it is");
                continue;
            };
            let lock = match self.try_lock(&scope).await {
                Ok(Some(lock)) => lock,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, "cannot lock a suspension under way; the next sweep tries again");
                    continue;
                }
            };
            match self.sync_shards(&scope, &lock, now).await {
                Ok(leases) => moved.extend(leases),
                Err(error) => {
                    tracing::warn!(scope = %scope.describe(), %error, "cannot carry a suspension to every shard; the next sweep tries again");
                }
            }
            self.unlock(&scope, &lock).await;
        }
        moved
    }

    /// Finishes closes that stopped half-way (the closer crashed, or lost
    /// Redis): every suspension or resume still marked `spreading` in the
    /// home, and every task, agent and provider still in a shard's
    /// `closing`, `closing-agents` or `closing-providers`, until all its
    /// leases are revoking. Returns the leases moved, with their reason. A
    /// scope that cannot be finished now is logged and left for the next
    /// sweep; it does not hold up the others, nor the rest of the sweep.
    pub(super) async fn finish_closes(&self, now: DateTime<Utc>) -> Vec<(SweptLease, RevocationReason)> {
        let mut moved = Vec::new();
        if self.layout.sharded() {
            moved.extend(self.finish_spreading(now).await);
        }
        for keys in self.layout.shards() {
            moved.extend(self.finish_closes_in(keys, now).await);
        }
        moved
    }

    async fn finish_closes_in(&self, keys: &Keys, now: DateTime<Utc>) -> Vec<(SweptLease, RevocationReason)> {
        let mut moved = Vec::new();
        type ScopeOf = fn(String) -> Scope;
        let unfinished: [(String, ScopeOf); 3] = [
            (keys.closing(), Scope::Task),
            (keys.closing_agents(), Scope::Agent),
            (keys.closing_providers(), Scope::Provider),
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
                match self.close_all(keys, &scope, b"", RevocationReason::TaskClosed, now, true).await {
                    Ok(Some(closed)) => {
                        moved.extend(closed.moved.into_iter().map(|lease| (lease, closed.reason)))
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

    async fn lift_in(
        &self,
        keys: &Keys,
        scope: &Scope,
        operation: &str,
        status: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (_, name) = kind_and_id(scope);
        let mut call = self.function(keys, operation);
        call.arg(name).arg(status);
        // A suspension still moving leases is finished first (at most twice:
        // the suspension cannot start again while it is being lifted).
        for _ in 0..2 {
            let reply = Reply::parse(self.invoke(&call).await?)?;
            match reply.status() {
                "ok" => return Ok(()),
                "not_suspended" => {
                    return Err(match scope {
                        Scope::Provider(_) => StoreError::ProviderNotSuspended(name.to_owned()),
                        _ => StoreError::AgentNotSuspended(name.to_owned()),
                    });
                }
                "retired" => return Err(StoreError::AgentRetired(name.to_owned())),
                "closing" => {
                    let reason = match scope {
                        Scope::Provider(_) => RevocationReason::ProviderSuspended,
                        _ => RevocationReason::AgentSuspended,
                    };
                    self.close_all(keys, scope, b"", reason, now, false).await?;
                }
                _ => return Err(reply.unexpected()),
            }
        }
        Err(StoreError::Unavailable(format!(
            "the suspension of {} is still being finished; try again",
            scope.describe()
        )))
    }

    async fn suspended_in_a_shard(&self, scope: &Scope) -> Result<bool, StoreError> {
        let (_, name) = kind_and_id(scope);
        for keys in self.layout.shards() {
            let set = match scope {
                Scope::Provider(_) => keys.suspended_providers(),
                _ => keys.suspended(),
            };
            let mut command = redis::cmd("SISMEMBER");
            command.arg(set).arg(name);
            if self.connection.query::<bool>(command).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn spreading_field(scope: &Scope) -> String {
    let (kind, id) = kind_and_id(scope);
    format!("{kind}:{id}")
}

fn scope_of_field(field: &[u8]) -> Option<Scope> {
    let field = std::str::from_utf8(field).ok()?;
    let (kind, id) = field.split_once(':')?;
    match kind {
        "agent" => Some(Scope::Agent(id.to_owned())),
        "provider" => Some(Scope::Provider(id.to_owned())),
        _ => None,
    }
}

/// A `spreading` mark's reason: a suspension's code (a resume's mark is
/// empty).
fn parse_mark(mark: &[u8]) -> Option<RevocationReason> {
    let code: usize = std::str::from_utf8(mark).ok()?.parse().ok()?;
    record::REASONS.get(code).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreading_marks_read_back() {
        let scope = Scope::Agent("a:b".into());
        assert_eq!(spreading_field(&scope), "agent:a:b");
        assert_eq!(scope_of_field(b"agent:a:b"), Some(scope));
        assert_eq!(scope_of_field(b"provider:p"), Some(Scope::Provider("p".into())));
        assert_eq!(scope_of_field(b"task:t"), None);
        let code = record::reason_code(RevocationReason::AgentSuspended);
        assert_eq!(parse_mark(code.to_string().as_bytes()), Some(RevocationReason::AgentSuspended));
        assert_eq!(parse_mark(b""), None, "a resume's mark");
        assert_eq!(parse_mark(b"x"), None);
    }
}
