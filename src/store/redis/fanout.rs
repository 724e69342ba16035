//! Calls over shards: the same call in every shard (or in those that
//! answer), a lease found wherever it is, and the per-shard halves of the
//! calls that fan out.

use chrono::{DateTime, Utc};
use futures_util::future::{join_all, try_join_all};
use uuid::Uuid;

use super::keys::{self, Keys, lease_id, member};
use super::record::{self, time as at};
use super::reply::{self, Reply, decode, limit as limit_arg, millis};
use super::{RedisStore, TASK_RECHECK_MS};
use crate::model::{AgentStatus, Lease, ProviderStatus, RevocationReason};
use crate::store::{RevocationOutcome, StoreError, Swept};

impl RedisStore {
    /// Runs `call` (made for one shard) in every shard at once, in shard order.
    pub(super) async fn in_every_shard<'a, T, F>(
        &'a self,
        call: impl Fn(&'a Keys) -> F,
    ) -> Result<Vec<T>, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        try_join_all(self.layout.shards().iter().map(call)).await
    }

    /// Runs `call` in every shard at once and keeps what the shards that
    /// answered gave: the background work (the sweep, revocation claims)
    /// goes on in the shards that are up while a cluster node is down.
    /// Fails only if no shard answered.
    pub(super) async fn in_live_shards<'a, T, F>(
        &'a self,
        work: &str,
        call: impl Fn(&'a Keys) -> F,
    ) -> Result<Vec<T>, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let answers = join_all(self.layout.shards().iter().map(call)).await;
        let mut live = Vec::new();
        let mut failed = None;
        for (keys, answer) in self.layout.shards().iter().zip(answers) {
            match answer {
                Ok(answer) => live.push(answer),
                Err(error) => {
                    tracing::warn!(shard = keys.prefix(), %error, "{work}: a shard did not answer; the others went on");
                    failed = Some(error);
                }
            }
        }
        match failed {
            Some(error) if live.is_empty() => Err(error),
            _ => Ok(live),
        }
    }

    pub(super) async fn agent_status_in(
        &self,
        keys: &Keys,
        agent: &str,
    ) -> Result<Option<AgentStatus>, StoreError> {
        let row = self.connection.hget(&keys.agents(), agent.as_bytes()).await?;
        row.map(|row| decode("agent status", &row)).transpose()
    }

    pub(super) async fn provider_status_in(
        &self,
        keys: &Keys,
        provider: &str,
    ) -> Result<Option<ProviderStatus>, StoreError> {
        let row = self.connection.hget(&keys.providers(), provider.as_bytes()).await?;
        row.map(|row| decode("provider status", &row)).transpose()
    }

    /// A lease's record and the shard it was found in.
    pub(super) async fn find_lease(&self, lease_id: Uuid) -> Result<Option<(&Keys, Lease)>, StoreError> {
        let shards = std::iter::once(self.layout.of_id(lease_id)).chain(self.layout.others(lease_id));
        // A shard that fails does not hide the lease in another; "not
        // found" is said only if every shard answered.
        let mut failed = None;
        for keys in shards {
            match self.connection.hget(&keys.leases(), &member(lease_id)).await {
                Ok(Some(row)) => return Ok(Some((keys, record::decode(lease_id, &row)?))),
                Ok(None) => {}
                Err(error) => failed = Some(error),
            }
        }
        failed.map_or(Ok(None), Err)
    }

    pub(super) async fn sweep_in(
        &self,
        keys: &Keys,
        now: DateTime<Utc>,
        pending_before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Swept, StoreError> {
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
        let mut call = self.function(keys, "sweep");
        call.arg(&at(now)?[..])
            .arg(&at(pending_before)?[..])
            .arg(&forget_before[..])
            .arg(limit_arg(limit))
            .arg(forget_tasks_before)
            .arg(recheck);
        let mut reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => {
                let expired = keys::lease_ids(reply.list()?)?;
                let abandoned = keys::lease_ids(reply.list()?)?;
                let (forgotten, forgotten_tasks) = (reply.count()?, reply.count()?);
                let mut leases = reply::named([expired.as_slice(), &abandoned].concat(), reply.list()?)?;
                let abandoned = leases.split_off(expired.len());
                Ok(Swept { expired: leases, abandoned, forgotten, closed: Vec::new(), forgotten_tasks })
            }
            _ => Err(reply.unexpected()),
        }
    }

    /// `request_revocation` in one shard: the ids it moved, and those it
    /// does not hold.
    pub(super) async fn request_revocation_in(
        &self,
        keys: &Keys,
        lease_ids: &[Uuid],
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<(Vec<Uuid>, Vec<Uuid>), StoreError> {
        let mut call = self.function(keys, "request_revocation");
        call.arg(record::reason_code(reason)).arg(&at(now)?[..]);
        for id in lease_ids {
            call.arg(&member(*id)[..]);
        }
        let mut reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => Ok((keys::lease_ids(reply.list()?)?, keys::lease_ids(reply.list()?)?)),
            _ => Err(reply.unexpected()),
        }
    }

    /// `finish_revocations` in one shard: `Some(id)` if it does not hold
    /// the lease `id` (and so changed nothing).
    pub(super) async fn finish_revocations_in(
        &self,
        keys: &Keys,
        outcomes: &[&RevocationOutcome],
        now: DateTime<Utc>,
    ) -> Result<Option<Uuid>, StoreError> {
        let mut call = self.function(keys, "finish_revocations");
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
            "ok" => Ok(None),
            "lease_not_found" => Ok(Some(lease_id(&reply.bytes()?)?)),
            _ => Err(reply.unexpected()),
        }
    }
}

/// Merges listings of several shards, each in id order, into the first
/// `limit` in id order.
pub(super) fn merged<T>(parts: Vec<Vec<T>>, id: impl Fn(&T) -> Uuid, limit: usize) -> Vec<T> {
    let mut all: Vec<T> = parts.into_iter().flatten().collect();
    all.sort_by_key(|item| id(item));
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_of_shards_merge_in_id_order() {
        let parts = vec![vec![1u128, 4, 9], vec![2, 3], vec![], vec![5]];
        let ids = |part: Vec<u128>| part.into_iter().map(Uuid::from_u128).collect::<Vec<_>>();
        let merged = merged(parts.into_iter().map(ids).collect(), |id| *id, 4);
        assert_eq!(merged, ids(vec![1, 2, 3, 4]));
    }
}
