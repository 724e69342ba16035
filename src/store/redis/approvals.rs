//! Approval requests in Redis. A request is one JSON string; each change
//! is worked out in Rust by the rules every store shares
//! (`store/approval_rules.rs`) from the JSON as read, and written by the
//! `put_approval` function only if the request is still exactly that JSON,
//! together with the check that its task is open and its agent active. Of
//! two concurrent changes (two collections, two votes) one wins; the other
//! reads again and is decided against the winner's result.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::RedisStore;
use super::keys::Keys;
use super::reply::{Reply, decode, encode, millis, time};
use crate::model::{Approval, ApprovalVote};
use crate::store::approval_rules as rules;
use crate::store::{ApprovalFilter, LeaseStore, StoreError};

/// How often a change is tried again after losing a race before the call
/// reports the store unavailable (a request that busy is not being voted
/// on by people).
const ATTEMPTS: usize = 32;

/// Requests read per call when listing.
const PAGE: usize = 500;

/// The most open requests one end pass looks at.
const OPEN_SCAN: usize = 10_000;

/// What `put_approval` answered.
enum Put {
    Done,
    /// The request changed since it was read.
    Conflict,
}

impl RedisStore {
    /// A request and the JSON it was read from.
    /// It is in the shard of its task, which its id names (one made before
    /// shards may be in another).
    async fn read_approval(&self, id: Uuid) -> Result<Option<(Approval, Vec<u8>)>, StoreError> {
        for keys in std::iter::once(self.layout.of_id(id)).chain(self.layout.others(id)) {
            if let Some(raw) = self.connection.get(keys.approval(id)).await? {
                return Ok(Some((decode("approval request", &raw)?, raw)));
            }
        }
        Ok(None)
    }

    async fn put_approval(
        &self,
        expected: Option<&[u8]>,
        approval: &Approval,
        check: bool,
        now: DateTime<Utc>,
    ) -> Result<Put, StoreError> {
        let json = encode("approval request", approval)?;
        let due = approval.due_at().map(|due| millis(due).to_string()).unwrap_or_default();
        let mut call = self.function(self.layout.of_task(&approval.task_id), "put_approval");
        call.arg(approval.id.to_string())
            .arg(expected.unwrap_or_default())
            .arg(json)
            .arg(&approval.task_id)
            .arg(&approval.agent)
            .arg(if check { "1" } else { "0" })
            .arg(time(now))
            .arg(millis(now))
            .arg(due);
        let reply = Reply::parse(self.invoke(&call).await?)?;
        match reply.status() {
            "ok" => Ok(Put::Done),
            "conflict" => Ok(Put::Conflict),
            "exists" => {
                let state = self.read_approval(approval.id).await?.map_or(approval.state, |(a, _)| a.state);
                Err(StoreError::ApprovalState { id: approval.id, state })
            }
            "task_not_found" => Err(StoreError::TaskNotFound(approval.task_id.clone())),
            "task_closed" => Err(StoreError::TaskClosed(approval.task_id.clone())),
            "agent_suspended" => Err(StoreError::AgentSuspended(approval.agent.clone())),
            _ => Err(reply.unexpected()),
        }
    }

    /// Reads the request, applies `change` and writes the result with the
    /// scope check, again after each lost race.
    async fn change_approval(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
        change: impl Fn(&Approval) -> Result<Approval, StoreError>,
    ) -> Result<Approval, StoreError> {
        for _ in 0..ATTEMPTS {
            let (approval, raw) = self.read_approval(id).await?.ok_or(StoreError::ApprovalNotFound(id))?;
            let updated = change(&approval)?;
            match self.put_approval(Some(&raw), &updated, true, now).await? {
                Put::Done => return Ok(updated),
                Put::Conflict => continue,
            }
        }
        Err(StoreError::Unavailable(format!(
            "approval request {id} changed {ATTEMPTS} times while being changed"
        )))
    }

    /// Rows of `list_approvals`, with the JSON each was read from.
    async fn approval_rows(
        &self,
        keys: &Keys,
        which: &str,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<(Approval, Vec<u8>)>, StoreError> {
        let mut call = self.function(keys, "list_approvals");
        call.arg(which).arg(after.map(|id| id.to_string()).unwrap_or_default()).arg(limit);
        let rows = super::reply::list(self.invoke(&call).await?)?;
        rows.into_iter().map(|raw| Ok((decode("approval request", &raw)?, raw))).collect()
    }

    pub(super) async fn create_approval_in(
        &self,
        approval: Approval,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if approval.state != crate::model::ApprovalState::Pending {
            return Err(StoreError::ApprovalState { id: approval.id, state: approval.state });
        }
        match self.put_approval(None, &approval, true, now).await? {
            Put::Done => Ok(()),
            Put::Conflict => Err(StoreError::Corrupt("a new approval request answered a conflict".into())),
        }
    }

    pub(super) async fn get_approval_in(&self, id: Uuid) -> Result<Option<Approval>, StoreError> {
        Ok(self.read_approval(id).await?.map(|(approval, _)| approval))
    }

    /// Pages through every request in id order, keeping those the filter
    /// matches: in the task's shard, or in every shard, merged. Requests
    /// are human-scale, so a scan is cheap.
    pub(super) async fn list_approvals_in(
        &self,
        filter: &ApprovalFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        if let Some(task_id) = &filter.task_id {
            return self.list_approvals_of(self.layout.of_task(task_id), filter, after, limit).await;
        }
        let parts = self.in_every_shard(|keys| self.list_approvals_of(keys, filter, after, limit)).await?;
        Ok(super::fanout::merged(parts, |approval| approval.id, limit))
    }

    async fn list_approvals_of(
        &self,
        keys: &Keys,
        filter: &ApprovalFilter,
        mut after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        let mut found = Vec::new();
        while found.len() < limit {
            let page = self.approval_rows(keys, "all", after, PAGE).await?;
            let full = page.len() == PAGE;
            for (approval, _) in page {
                after = Some(approval.id);
                if filter.matches(&approval) && found.len() < limit {
                    found.push(approval);
                }
            }
            if !full {
                break;
            }
        }
        Ok(found)
    }

    pub(super) async fn vote_approval_in(
        &self,
        id: Uuid,
        vote: ApprovalVote,
    ) -> Result<Approval, StoreError> {
        let at = vote.at;
        self.change_approval(id, at, |approval| rules::voted(approval, vote.clone())).await
    }

    pub(super) async fn collect_approval_in(
        &self,
        id: Uuid,
        agent: &str,
        now: DateTime<Utc>,
    ) -> Result<Approval, StoreError> {
        self.change_approval(id, now, |approval| rules::collected(approval, agent, now)).await
    }

    /// Looks at every open request, shard by shard: those whose task or
    /// agent ended it are cancelled, those past due expire. A request
    /// changed meanwhile by someone else is left for the next pass.
    pub(super) async fn end_approvals_in(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        // A shard that does not answer is left for the next pass; the
        // others go on.
        let mut ended = Vec::new();
        let (mut answered, mut failed) = (0, None);
        for keys in self.layout.shards() {
            if ended.len() == limit {
                break;
            }
            match self.end_approvals_of(keys, now, limit - ended.len()).await {
                Ok(part) => {
                    answered += 1;
                    ended.extend(part);
                }
                Err(error) => {
                    tracing::warn!(shard = keys.prefix(), %error, "ending approval requests: a shard did not answer");
                    failed = Some(error);
                }
            }
        }
        match failed {
            Some(error) if answered == 0 => Err(error),
            _ => Ok(ended),
        }
    }

    async fn end_approvals_of(
        &self,
        keys: &Keys,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        let open = self.approval_rows(keys, "open", None, OPEN_SCAN).await?;
        let mut tasks: HashMap<String, Option<crate::model::Task>> = HashMap::new();
        let mut suspended: HashMap<String, bool> = HashMap::new();
        let mut ended = Vec::new();
        for (approval, raw) in open {
            if ended.len() == limit {
                break;
            }
            if !tasks.contains_key(&approval.task_id) {
                let task = self.get_task(&approval.task_id).await?;
                tasks.insert(approval.task_id.clone(), task);
            }
            if !suspended.contains_key(&approval.agent) {
                let status = self.agent_status(&approval.agent).await?;
                let is = status.is_some_and(|status| status.state == crate::model::AgentState::Suspended);
                suspended.insert(approval.agent.clone(), is);
            }
            let task = tasks.get(&approval.task_id).and_then(Option::as_ref);
            let cancelled = match task {
                None => Some("task_closed"),
                Some(task) if task.state != crate::model::TaskState::Open => {
                    Some(task.closed.as_ref().map_or("task_closed", |closure| closure.reason.as_str()))
                }
                Some(task) if task.deadline <= now => Some("deadline_passed"),
                Some(_) if suspended.get(&approval.agent).copied().unwrap_or(false) => {
                    Some("agent_suspended")
                }
                Some(_) => None,
            };
            let Some(updated) = rules::ended(&approval, cancelled, now) else { continue };
            if let Put::Done = self.put_approval(Some(&raw), &updated, false, now).await? {
                ended.push(updated);
            }
        }
        Ok(ended)
    }

    /// When the first open request of a shard falls due.
    pub(super) async fn approvals_due(&self, keys: &Keys) -> Result<Option<DateTime<Utc>>, StoreError> {
        let first = self.approval_rows(keys, "open", None, 1).await?;
        Ok(first.first().and_then(|(approval, _)| approval.due_at()))
    }
}
