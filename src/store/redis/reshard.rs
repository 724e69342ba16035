//! Moving a namespace to another shard count (`writ store reshard`), while
//! no replica runs. A replica refuses a namespace whose recorded count is
//! not its own, or one being moved, so a count never changes silently.
//!
//! Every task, with its leases and approval requests, is copied to the
//! shard the new count gives it and then removed from the old one. The
//! copy keeps what is there already, so a move cut short (a crash, Redis
//! lost for a moment) is finished by running the command again: the
//! namespace stays marked `resharding` until then, and no replica opens
//! it meanwhile. Suspensions are copied into every new shard before any
//! task, so nothing is ever issued to a suspended agent or provider.

use super::keys::Keys;
use super::reply::{self, Reply, decode};
use super::{RedisConfig, RedisStore};
use crate::model::Approval;
use crate::store::LeaseStore as _;
use crate::store::StoreError;

/// Leases written per call while copying.
const COPY_BATCH: usize = 500;

/// What [`reshard`] moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resharded {
    pub from: u16,
    pub to: u16,
    pub tasks: usize,
    pub leases: usize,
    pub approvals: usize,
}

/// Moves the namespace of `config` to `to` shards. Run it with every
/// replica stopped; see the module's docs.
pub async fn reshard(config: &RedisConfig, to: u16) -> Result<Resharded, StoreError> {
    let target_config = RedisConfig { shards: to, ..config.clone() };
    let target = RedisStore::connect(&target_config).await?;
    let home = target.layout.home().clone();
    // A move cut short is finished from where it came from (the count may
    // be recorded already, if it was cut short at the very end).
    let (from, under_way) = match target.connection.get(home.resharding()).await? {
        Some(plan) => {
            let plan = String::from_utf8_lossy(&plan).into_owned();
            let counts = plan
                .split_once(':')
                .and_then(|(from, to)| Some((from.parse::<u16>().ok()?, to.parse::<u16>().ok()?)));
            match counts {
                Some((from, planned)) if planned == to => (from, true),
                Some((from, planned)) => {
                    return Err(StoreError::Unavailable(format!(
                        "a move of this namespace from {from} to {planned} shards was cut short; finish it \
                         first with --shards {planned}"
                    )));
                }
                None => {
                    return Err(StoreError::Corrupt(format!(
                        "the namespace's move mark {plan:?} is unreadable"
                    )));
                }
            }
        }
        None => (target.stored_shard_count().await?.unwrap_or(1), false),
    };
    if from == to && !under_way {
        return Ok(Resharded { from, to, ..Resharded::default() });
    }
    let plan = format!("{from}:{to}");
    let source = RedisStore::connect(&RedisConfig { shards: from, ..config.clone() }).await?;
    let under_way = source.closes_under_way().await?;
    if !under_way.is_empty() {
        return Err(StoreError::Unavailable(format!(
            "{} close(s) under way ({}): start Writ with shards = {from} until its sweep has finished \
             them, stop it, and run this again",
            under_way.len(),
            under_way.join(", ")
        )));
    }
    let mut mark = redis::cmd("SET");
    mark.arg(home.resharding()).arg(&plan);
    target.connection.query::<()>(mark).await?;
    // Marks each new shard with the layout, so its functions accept it.
    target.health().await?;
    target.copy_suspensions(&home).await?;
    let mut moved = Resharded { from, to, ..Resharded::default() };
    for keys in source.layout.shards() {
        for (task_id, deadline, closed) in source.tasks_in(keys).await? {
            let destination = target.layout.of_task(&task_id);
            if destination.prefix() == keys.prefix() {
                continue;
            }
            moved.leases +=
                move_task(&source, keys, &target, destination, &task_id, &deadline, &closed).await?;
            moved.tasks += 1;
        }
        // Approval requests on their own: those of a task the sweep has
        // forgotten stay readable after a move too.
        for (approval, raw) in source.approvals_in(keys).await? {
            let destination = target.layout.of_task(&approval.task_id);
            if destination.prefix() != keys.prefix() {
                move_approval(&source, keys, &target, destination, &approval, &raw).await?;
                moved.approvals += 1;
            }
        }
    }
    // What the old shards keep besides tasks: their copies of the
    // suspensions, their layout marks.
    for keys in source.layout.shards() {
        if keys.prefix() != home.prefix()
            && !target.layout.shards().iter().any(|t| t.prefix() == keys.prefix())
        {
            let mut forget = redis::cmd("DEL");
            for name in ["agents", "suspended", "providers", "suspended-providers", "layout", "health"] {
                forget.arg(format!("{}{name}", keys.prefix()));
            }
            // One slot per call: these keys share the shard's tag.
            target.connection.query::<()>(forget).await?;
        }
    }
    let mut count = redis::cmd("SET");
    count.arg(home.shard_count()).arg(to);
    target.connection.query::<()>(count).await?;
    target.mark_home().await?;
    let mut done = redis::cmd("DEL");
    done.arg(home.resharding());
    target.connection.query::<()>(done).await?;
    Ok(moved)
}

async fn move_task(
    source: &RedisStore,
    from: &Keys,
    target: &RedisStore,
    to: &Keys,
    task_id: &str,
    deadline: &str,
    closed: &str,
) -> Result<usize, StoreError> {
    let Some(task) = source.connection.get(from.task(task_id)).await? else {
        return Ok(0);
    };
    let mut call = target.function(to, "import_task");
    call.arg(task_id).arg(task).arg(deadline).arg(closed);
    expect_ok(Reply::parse(target.invoke(&call).await?)?)?;
    let mut listing = source.function(from, "task_leases");
    listing.arg(task_id);
    let pairs = reply::list(source.invoke(&listing).await?)?;
    for batch in pairs.chunks(2 * COPY_BATCH) {
        let mut call = target.function(to, "import_leases");
        for part in batch {
            call.arg(part);
        }
        expect_ok(Reply::parse(target.invoke(&call).await?)?)?;
    }
    // Copied whole: now the old shard forgets it, a batch at a time.
    loop {
        let mut drop = source.function(from, "drop_task");
        drop.arg(task_id).arg(COPY_BATCH);
        let reply = Reply::parse(source.invoke(&drop).await?)?;
        match reply.status() {
            "ok" => break,
            "more" => continue,
            _ => return Err(reply.unexpected()),
        }
    }
    Ok(pairs.len() / 2)
}

/// Copies an approval request (`import_task` with no task), then removes
/// it from the old shard (`drop_task` of no task).
async fn move_approval(
    source: &RedisStore,
    from: &Keys,
    target: &RedisStore,
    to: &Keys,
    approval: &Approval,
    raw: &[u8],
) -> Result<(), StoreError> {
    let due = approval.due_at().map(|due| reply::millis(due).to_string()).unwrap_or_default();
    let mut call = target.function(to, "import_task");
    call.arg("").arg("").arg("").arg("").arg(approval.id.to_string()).arg(raw).arg(due);
    expect_ok(Reply::parse(target.invoke(&call).await?)?)?;
    let mut drop = source.function(from, "drop_task");
    drop.arg("").arg(COPY_BATCH).arg(approval.id.to_string());
    expect_ok(Reply::parse(source.invoke(&drop).await?)?)
}

fn expect_ok(reply: Reply) -> Result<(), StoreError> {
    match reply.status() {
        "ok" => Ok(()),
        _ => Err(reply.unexpected()),
    }
}

impl RedisStore {
    /// Every task of a shard: its id, its deadline (ms) if open, when its
    /// close finished (ms) if closed.
    async fn tasks_in(&self, keys: &Keys) -> Result<Vec<(String, String, String)>, StoreError> {
        let mut tasks = Vec::new();
        for (name, open) in [("deadlines", true), ("closed-tasks", false)] {
            let mut range = redis::cmd("ZRANGE");
            range.arg(format!("{}{name}", keys.prefix())).arg(0).arg(-1).arg("WITHSCORES");
            let scored: Vec<(Vec<u8>, String)> = self.connection.query(range).await?;
            for (id, score) in scored {
                let id = String::from_utf8(id)
                    .map_err(|_| StoreError::Corrupt("a task id is not UTF-8".into()))?;
                tasks.push(if open { (id, score, String::new()) } else { (id, String::new(), score) });
            }
        }
        Ok(tasks)
    }

    /// Scopes whose close is still moving leases, in any shard or the home.
    async fn closes_under_way(&self) -> Result<Vec<String>, StoreError> {
        let mut found = Vec::new();
        let homes = std::iter::once(self.layout.home());
        for keys in homes.chain(self.layout.shards()) {
            for (key, kind) in [
                (keys.closing(), "task"),
                (keys.closing_agents(), "agent"),
                (keys.closing_providers(), "provider"),
                (keys.spreading(), ""),
            ] {
                for field in self.connection.hkeys(&key).await? {
                    let name = String::from_utf8_lossy(&field).into_owned();
                    found.push(if kind.is_empty() { name } else { format!("{kind}:{name}") });
                }
            }
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// Copies every suspension the home records into each shard's own set.
    pub(super) async fn copy_suspensions(&self, home: &Keys) -> Result<(), StoreError> {
        for (set, statuses) in
            [(home.suspended(), home.agents()), (home.suspended_providers(), home.providers())]
        {
            let mut members = redis::cmd("SMEMBERS");
            members.arg(&set);
            let names: Vec<Vec<u8>> = self.connection.query(members).await?;
            for name in names {
                let Some(status) = self.connection.hget(&statuses, &name).await? else {
                    return Err(StoreError::Corrupt("a suspended name has no status".into()));
                };
                let (shard_set, shard_statuses) =
                    (set.trim_start_matches(home.prefix()), statuses.trim_start_matches(home.prefix()));
                for keys in self.layout.shards().iter().filter(|keys| keys.prefix() != home.prefix()) {
                    let mut add = redis::cmd("SADD");
                    add.arg(format!("{}{shard_set}", keys.prefix())).arg(&name);
                    self.connection.query::<()>(add).await?;
                    let mut put = redis::cmd("HSET");
                    put.arg(format!("{}{shard_statuses}", keys.prefix())).arg(&name).arg(&status);
                    self.connection.query::<()>(put).await?;
                }
            }
        }
        Ok(())
    }
}

impl RedisStore {
    /// Every approval request of a shard, with the JSON each was read from
    /// (human-scale).
    async fn approvals_in(&self, keys: &Keys) -> Result<Vec<(Approval, Vec<u8>)>, StoreError> {
        let mut call = self.function(keys, "list_approvals");
        call.arg("all").arg("").arg(1_000_000_000u64);
        let rows = reply::list(self.invoke(&call).await?)?;
        rows.into_iter().map(|raw| Ok((decode("approval request", &raw)?, raw))).collect()
    }
}
