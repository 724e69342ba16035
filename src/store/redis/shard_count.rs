//! The shard count a namespace records, checked when the store opens: a
//! replica reading the wrong shards would miss leases, so a count never
//! changes silently (ADR 0017).

use redis::Value;

use super::RedisStore;
use super::keys::Keys;
use crate::store::StoreError;

impl RedisStore {
    /// The shard count the namespace records (1 if it records none: the
    /// layout from before shards).
    pub(super) async fn stored_shard_count(&self) -> Result<Option<u16>, StoreError> {
        let Some(raw) = self.connection.get(self.layout.home().shard_count()).await? else {
            return Ok(None);
        };
        let count = std::str::from_utf8(&raw).ok().and_then(|text| text.parse().ok());
        count
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt("the namespace's shard count is not a number".into()))
    }

    /// Refuses a namespace laid out in another number of shards than the
    /// configuration says: a replica reading the wrong shards would miss
    /// leases. A new namespace is marked with the configured count.
    pub(super) async fn check_shard_count(&self, namespace: &str) -> Result<(), StoreError> {
        let configured = self.layout.shards().len();
        let refuse = |stored: usize| {
            StoreError::Unavailable(format!(
                "redis store: namespace {namespace:?} is laid out in {stored} shard(s), but shards = \
                 {configured}; set shards = {stored}, or move it with `writ store reshard --shards \
                 {configured}` while no replica runs (docs/operations.md, \"Sharding on Redis\")"
            ))
        };
        if let Some(plan) = self.connection.get(self.layout.home().resharding()).await? {
            let plan = String::from_utf8_lossy(&plan).replace(':', " to ");
            return Err(StoreError::Unavailable(format!(
                "redis store: namespace {namespace:?} is being moved from {plan} shards; finish the \
                 move with `writ store reshard` before starting Writ"
            )));
        }
        let stored = match self.stored_shard_count().await? {
            Some(stored) => stored,
            None => {
                // Unmarked: from before shards, or new. Data from before
                // shards is in the one-shard layout.
                if configured > 1 {
                    if self.holds_tasks(self.layout.home()).await? {
                        return Err(refuse(1));
                    }
                    // Suspensions recorded before shards hold in every shard.
                    self.copy_suspensions(self.layout.home()).await?;
                }
                // Marked whatever the count, so that replicas starting
                // together with different counts cannot both go on.
                let mut mark = redis::cmd("SET");
                mark.arg(self.layout.home().shard_count()).arg(configured).arg("NX");
                let _: Value = self.connection.query(mark).await?;
                self.stored_shard_count().await?.unwrap_or(1)
            }
        };
        if usize::from(stored) != configured {
            return Err(refuse(stored.into()));
        }
        self.mark_home().await
    }

    /// Marks a sharded home layout 5 (code from before shards would read
    /// its home as the whole namespace and miss every task), an unsharded
    /// one back to 4 if it was moved back to one shard.
    pub(super) async fn mark_home(&self) -> Result<(), StoreError> {
        let key = format!("{}layout", self.layout.home().prefix());
        let current = self.connection.get(key.clone().into_bytes()).await?;
        let wanted: &[u8] = if self.layout.sharded() { b"5" } else { b"4" };
        let stale = match current.as_deref() {
            Some(b"5") => !self.layout.sharded(),
            _ => self.layout.sharded(),
        };
        if stale {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(wanted);
            self.connection.query::<()>(set).await?;
        }
        Ok(())
    }

    /// Whether `keys` holds any task, lease or approval request.
    pub(super) async fn holds_tasks(&self, keys: &Keys) -> Result<bool, StoreError> {
        let mut exists = redis::cmd("EXISTS");
        for name in ["leases", "deadlines", "closed-tasks", "closing", "approvals"] {
            exists.arg(format!("{}{name}", keys.prefix()));
        }
        Ok(self.connection.query::<u64>(exists).await? > 0)
    }
}
