//! Ending scopes in Redis: closing a task, suspending an agent or a
//! provider, a batch of leases per function call (ADR 0007), and, with
//! shards, carrying a suspension to every shard (ADR 0017).
//!
//! A task lives in one shard, so its close is that shard's business. An
//! agent or a provider has leases in every shard: its suspension is first
//! recorded in the home (the status operators read, marked in `spreading`
//! before anything else is written), then ended in each shard (each
//! shard's own copy of the suspended set is what its inserts check), and
//! the mark is dropped last. A caller that dies on the way leaves the mark,
//! and the sweep carries the suspension to the remaining shards once the
//! mark has been quiet for a second.

use chrono::{DateTime, Utc};

use super::keys::{self, Keys};
use super::record::{self, time as at};
use super::reply::{Reply, decode, encode, limit as limit_arg, millis};
use super::{CLOSE_BATCH, RedisStore};
use crate::model::{AgentState, AgentStatus, ProviderStatus, RevocationReason};
use crate::store::{ClosedScope, Scope, StoreError, SweptLease};

/// A close's caller is left to move it alone for this long after it last
/// moved a batch (as `TAKEOVER_MS` in `close_scope.lua`).
const TAKEOVER_MS: i64 = 1000;

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
                self.mark_spreading(scope, reason, now).await?;
                let home = self.layout.home();
                let mut closed =
                    self.close_all(home, scope, ending, reason, now, false).await?.ok_or_else(nothing)?;
                // Every shard is given the status as the home holds it (the
                // first suspension's, if this one came second).
                let status = match (&closed.scope.agent, &closed.scope.provider) {
                    (Some(agent), _) => encode("agent status", agent)?,
                    (_, Some(provider)) => encode("provider status", provider)?,
                    _ => return Err(nothing()),
                };
                let (moved, _) = self.spread(scope, status.as_bytes(), closed.reason, now).await?;
                closed.scope.revoking.extend(moved.iter().map(|lease| lease.id));
                closed.moved.extend(moved);
                self.connection
                    .query::<()>(hdel(&self.layout.home().spreading(), &spreading_field(scope)))
                    .await?;
                Ok(closed)
            }
        }
    }

    /// Ends `scope` with `status` in every shard, and moves its leases
    /// there; touches the `spreading` mark after each shard. Returns the
    /// leases moved and the reason each shard gave them.
    async fn spread(
        &self,
        scope: &Scope,
        status: &[u8],
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<(Vec<SweptLease>, RevocationReason), StoreError> {
        let mut moved = Vec::new();
        for keys in self.layout.shards() {
            if let Some(closed) = self.close_all(keys, scope, status, reason, now, false).await? {
                moved.extend(closed.moved);
            }
            self.mark_spreading(scope, reason, now).await?;
        }
        Ok((moved, reason))
    }

    async fn mark_spreading(
        &self,
        scope: &Scope,
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut command = redis::cmd("HSET");
        command.arg(self.layout.home().spreading()).arg(spreading_field(scope)).arg(format!(
            "{}:{}",
            record::reason_code(reason),
            millis(now)
        ));
        self.connection.query::<()>(command).await
    }

    /// Carries a suspension a caller left half-way to the shards it did
    /// not reach: with `takeover` only one whose mark has been quiet for
    /// [`TAKEOVER_MS`]. `None` if there was nothing to carry (or someone
    /// is carrying it).
    pub(super) async fn finish_spreading(
        &self,
        scope: &Scope,
        now: DateTime<Utc>,
        takeover: bool,
    ) -> Result<Option<Vec<(SweptLease, RevocationReason)>>, StoreError> {
        let home = self.layout.home();
        let field = spreading_field(scope);
        let Some(mark) = self.connection.hget(&home.spreading(), field.as_bytes()).await? else {
            return Ok(None);
        };
        let (reason, touched) = parse_mark(&mark)?;
        if takeover && millis(now) - touched < TAKEOVER_MS {
            return Ok(None);
        }
        // The status the home holds: a suspension that reached the home is
        // carried on; one that did not (its caller died before) is dropped.
        let status = match scope {
            Scope::Agent(agent) => self
                .agent_status_in(home, agent)
                .await?
                .filter(|status| status.state == AgentState::Suspended)
                .map(|status| encode("agent status", &status))
                .transpose()?,
            Scope::Provider(provider) => self
                .provider_status_in(home, provider)
                .await?
                .filter(|status| status.state == AgentState::Suspended)
                .map(|status| encode("provider status", &status))
                .transpose()?,
            Scope::Task(_) => None,
        };
        let moved = match status {
            Some(status) => {
                let (moved, reason) = self.spread(scope, status.as_bytes(), reason, now).await?;
                moved.into_iter().map(|lease| (lease, reason)).collect()
            }
            None => Vec::new(),
        };
        self.connection.query::<()>(hdel(&home.spreading(), &field)).await?;
        Ok(Some(moved))
    }

    /// Finishes closes that stopped half-way (the closer crashed, or lost
    /// Redis): every task, agent and provider still in a shard's
    /// `closing`, `closing-agents` or `closing-providers`, and every
    /// suspension still marked `spreading` in the home, until all its
    /// leases are revoking. Returns the leases moved, with their reason. A
    /// scope that cannot be finished now is logged and left for the next
    /// sweep; it does not hold up the others, nor the rest of the sweep.
    pub(super) async fn finish_closes(&self, now: DateTime<Utc>) -> Vec<(SweptLease, RevocationReason)> {
        let mut moved = Vec::new();
        if self.layout.sharded() {
            match self.connection.hkeys(&self.layout.home().spreading()).await {
                Ok(fields) => {
                    for field in fields {
                        let Some(scope) = scope_of_field(&field) else {
                            tracing::error!(
                                "a spreading suspension's name is unreadable; it is left as it is"
                            );
                            continue;
                        };
                        match self.finish_spreading(&scope, now, true).await {
                            Ok(Some(leases)) => moved.extend(leases),
                            Ok(None) => {}
                            Err(error) => {
                                tracing::warn!(scope = %scope.describe(), %error, "cannot carry a suspension to every shard; the next sweep tries again");
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot list suspensions under way; the next sweep tries again")
                }
            }
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

    /// Lifts a suspension (`operation` is `resume_agent` or
    /// `resume_provider`), finishing first any close of it still under
    /// way: in the home, then, with shards, in every shard. The home goes
    /// first, so a resume cut short leaves some shards refusing (closed),
    /// never the other way; calling again finishes it.
    pub(super) async fn lift(
        &self,
        scope: &Scope,
        operation: &str,
        status: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (_, name) = kind_and_id(scope);
        if self.layout.sharded() {
            self.finish_spreading(scope, now, false).await?;
        }
        let home = self.layout.home();
        match self.lift_in(home, scope, operation, status, now).await {
            Ok(()) => {}
            Err(not @ (StoreError::AgentNotSuspended(_) | StoreError::ProviderNotSuspended(_)))
                if self.layout.sharded() =>
            {
                // Resumed in the home already: a resume cut short, if some
                // shard still holds the suspension.
                if !self.suspended_in_a_shard(scope).await? {
                    return Err(not);
                }
            }
            Err(error) => return Err(error),
        }
        if self.layout.sharded() {
            for keys in self.layout.shards() {
                match self.lift_in(keys, scope, operation, status, now).await {
                    Ok(()) | Err(StoreError::AgentNotSuspended(_) | StoreError::ProviderNotSuspended(_)) => {}
                    Err(error) => {
                        return Err(StoreError::Unavailable(format!(
                            "{} is resumed, but not yet in every shard ({error}); call again to finish",
                            scope.describe()
                        )));
                    }
                }
            }
        }
        tracing::trace!(name, "suspension lifted");
        Ok(())
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

fn hdel(key: &str, field: &str) -> redis::Cmd {
    let mut command = redis::cmd("HDEL");
    command.arg(key).arg(field);
    command
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

/// A `spreading` mark: the reason, and when its caller last touched it.
fn parse_mark(mark: &[u8]) -> Result<(RevocationReason, i64), StoreError> {
    let corrupt = || StoreError::Corrupt("a spreading suspension's mark is unreadable".into());
    let text = std::str::from_utf8(mark).map_err(|_| corrupt())?;
    let (reason, touched) = text.split_once(':').ok_or_else(corrupt)?;
    let reason: usize = reason.parse().map_err(|_| corrupt())?;
    let reason = record::REASONS.get(reason).copied().ok_or_else(corrupt)?;
    Ok((reason, touched.parse().map_err(|_| corrupt())?))
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
        let (reason, at) = parse_mark(format!("{code}:1234").as_bytes()).unwrap();
        assert_eq!((reason, at), (RevocationReason::AgentSuspended, 1234));
        assert!(parse_mark(b"x").is_err());
    }
}
