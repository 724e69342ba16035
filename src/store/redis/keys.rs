//! Where everything lives in Redis. Every key starts with the namespace
//! prefix `writ:{<namespace>}:`; the Lua functions build the names below from
//! that prefix (see `lua/common.lua`), and Rust builds only the two it reads
//! directly.
//!
//! | key (after the prefix)    | type   | holds                                              |
//! |---------------------------|--------|----------------------------------------------------|
//! | `task:<task id>`          | string | the task, JSON                                     |
//! | `deadlines`               | zset   | open task ids, score = deadline (ms)               |
//! | `closed-tasks`            | zset   | closed task ids whose close is done, score = when it closed (ms), moved a minute on each time a sweep finds a lease of it left; the sweep forgets a task once `finished_retention` has passed since its score and no lease of it is left |
//! | `closing`                 | hash   | closed task id → `<reason code>:<last lease id done>`, while its close is moving leases to revoking (a batch per call) |
//! | `agents`                  | hash   | agent name → its status (suspended or resumed, by whom, when, why), JSON; only agents whose state ever changed |
//! | `suspended`               | set    | the names of suspended agents: what every insert, activation and extension checks |
//! | `closing-agents`          | hash   | suspended agent → `<reason code>:<last lease id done>`, while its suspension is moving leases to revoking |
//! | `registry`                | hash   | agent name → its record (the inventory: owner, team, identity, who registered it, retirement), JSON |
//! | `registry-names`          | zset   | every registered agent's name, score 0: listings page through it in name order |
//! | `registry-revision`       | string | a counter every change of `registry` bumps; replicas poll it to reload the inventory |
//! | `closing-touched`         | hash   | `<kind>:<scope id>` → when (ms) a close under way last moved a batch: the sweep takes a close over only a second after that |
//! | `providers`               | hash   | provider name → its status (suspended or resumed, by whom, when, why), JSON; only providers whose state ever changed |
//! | `suspended-providers`     | set    | the names of suspended providers: what every insert, activation and extension checks |
//! | `closing-providers`       | hash   | suspended provider → `<reason code>:<last lease id done>`, while its suspension walks `state:active` |
//! | `leases`                  | hash   | lease id → the lease record (`record.rs`: compact binary, sealed handle included) |
//! | `state:<state>`           | index  | lease ids in that state                            |
//! | `task-leases:<task id>`   | index  | the task's lease ids                               |
//! | `agent-leases:<agent>`    | index  | the agent's lease ids                              |
//! | `pending`                 | index  | pending leases: created_at + id                    |
//! | `expiries`                | index  | active leases: expires_at + id                     |
//! | `queue`                   | index  | revoking leases: next_attempt_at + id              |
//! | `finished`                | index  | revoked and failed leases: completed_at + id       |
//! | `dir:<index>`             | zset   | the first member of each chunk of a large index    |
//! | `chunk:<index>#<first>`   | zset   | one chunk of a large index                         |
//! | `approval:<id>`           | string | an approval request, JSON (the id hyphenated, lower case) |
//! | `approvals`               | zset   | every approval request's id, score 0: id order is creation order (UUID v7) |
//! | `approvals-open`          | zset   | pending and approved requests' ids, score = when each falls due (ms) |
//! | `sightings`               | hash   | `["issuer","subject"]` → the sighting, JSON        |
//! | `sightings-seen`          | zset   | sighting fields, score = last_seen (ms)            |
//! | `health`                  | string | written by every health check                      |
//! | `layout`                  | string | `4`, the version of this layout (`LAYOUT` in `lua/common.lua`; layout 1 chunked every index, layout 2 had no agent states, layout 3 no provider states; both are marked 4 by the first write of a state); set by the first writing call, checked by every function call |
//!
//! Every lease is in exactly one state index and the one schedule of its
//! state (`pending`, `expiries`, `queue` or `finished`), plus its task's
//! and its agent's index. A finished lease leaves all of them, and
//! `leases`, when the sweep forgets it after `finished_retention`.
//!
//! An *index* is a set of fixed-length byte strings kept in byte order
//! (`lua/common.lua`). The indexes of passing states (`state:pending`,
//! `pending`, `state:revoking`, `queue`) are one sorted set of score 0
//! each, small in steady state. The others are a sorted set of score 0
//! under the index's own name while they are small, which Redis keeps as a compact listpack (about 20
//! bytes a member), and past 128 members further chunks of at most 128,
//! found through `dir:<index>`, rather than one sorted set that Redis
//! would turn into a skiplist at about 110 bytes a member. Lease ids are
//! their 16 raw bytes (big-endian), so byte order is id order and listings
//! page through an index with ZRANGEBYLEX. Schedule members are the due
//! time (8 bytes that sort as times, see `record.rs`) then the lease id:
//! byte order is due order, exact to the nanosecond, so the sweep and the
//! revocation worker take what is due from the front, and `next_due` reads
//! the time off the first member.
//!
//! One hash tag keeps every multi-key function in one slot, which Redis
//! Cluster requires (no script or MULTI spans slots). With `shards = 1`
//! (the default) the whole namespace shares the tag `{<namespace>}`: a
//! cluster then gives the deployment failover, not write scaling.
//!
//! With `shards = N > 1` ([ADR 0017](../../../docs/adr/0017-redis-shards.md))
//! the keys above are split in two:
//!
//! - the **home**, `writ:{<namespace>}:`, keeps what is namespace-wide:
//!   `registry*`, `agents`, `providers`, `suspended`,
//!   `suspended-providers` (the statuses operators read), `sightings*`,
//!   `health`, `layout` (`5` in a sharded home, which code from before
//!   shards refuses), plus `shards` (the shard count the namespace is
//!   laid out in, checked at every start), `resharding` (`<from>:<to>`
//!   while `writ store reshard` moves it), `spreading` (a suspension or
//!   resume not yet carried to every shard: `<kind>:<name>` → the
//!   suspension's reason code, empty for a resume) and
//!   `lock:<kind>:<name>` (held by the one suspension or resume of that
//!   agent or provider under way; it lapses after 30 s unless refreshed);
//! - each **shard** `i`, `writ:{<namespace>:<N>.<i>.<k>}:`, keeps whole
//!   tasks: `task:*`, `deadlines`, `closed-tasks`, `closing`, the leases
//!   and every index of them, the approval requests of its tasks, and its
//!   own copy of `agents`/`suspended`/`closing-agents` and of the provider
//!   states, which its functions check atomically with each insert. A task
//!   lives in shard `crc16(task id) % N`, and every lease and approval id
//!   carries that checksum (`model::routing`), so a call on a lease goes
//!   straight to its shard. `k` is the smallest number that puts shard
//!   `i`'s slot in the `i`-th N-th of the slot space, so a cluster whose
//!   primaries own equal runs of slots gets an equal share of shards.

use uuid::Uuid;

use crate::store::StoreError;

/// The namespace's key names.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(namespace: &str) -> Self {
        Self { prefix: format!("writ:{{{namespace}}}:") }
    }

    /// Shard `index` of `count` (see the module's docs).
    pub(super) fn shard(namespace: &str, index: u16, count: u16) -> Self {
        let band = |tag: &str| usize::from(slot(tag)) * usize::from(count) / SLOTS;
        let tag = (0u32..)
            .map(|k| format!("{namespace}:{count}.{index}.{k}"))
            .find(|tag| band(tag) == usize::from(index))
            .unwrap_or_else(|| unreachable!("every band of the slot space is hit by some tag"));
        Self { prefix: format!("writ:{{{tag}}}:") }
    }

    /// The hash tag.
    #[cfg(test)]
    pub(super) fn tag(&self) -> &str {
        let open = self.prefix.find('{').map_or(0, |at| at + 1);
        let close = self.prefix.rfind('}').unwrap_or(self.prefix.len());
        &self.prefix[open..close]
    }

    /// Suspensions still being carried to every shard (home only).
    pub(super) fn spreading(&self) -> String {
        format!("{}spreading", self.prefix)
    }

    /// A move to another shard count under way: `<from>:<to>` (home only).
    pub(super) fn resharding(&self) -> Vec<u8> {
        format!("{}resharding", self.prefix).into_bytes()
    }

    /// The shard count the namespace is laid out in (home only).
    pub(super) fn shard_count(&self) -> Vec<u8> {
        format!("{}shards", self.prefix).into_bytes()
    }

    /// Passed to every function as its one key: it routes the call to the
    /// namespace's slot, and the function builds every other name from it.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn task(&self, task_id: &str) -> Vec<u8> {
        [self.prefix.as_bytes(), b"task:", task_id.as_bytes()].concat()
    }

    /// Tasks whose close has not moved all their leases yet.
    pub(super) fn closing(&self) -> String {
        format!("{}closing", self.prefix)
    }

    /// Agents whose suspension has not moved all their leases yet.
    pub(super) fn closing_agents(&self) -> String {
        format!("{}closing-agents", self.prefix)
    }

    /// Providers whose suspension has not moved all their leases yet.
    pub(super) fn closing_providers(&self) -> String {
        format!("{}closing-providers", self.prefix)
    }

    /// The names of suspended agents (with shards, each shard's own copy).
    pub(super) fn suspended(&self) -> String {
        format!("{}suspended", self.prefix)
    }

    pub(super) fn suspended_providers(&self) -> String {
        format!("{}suspended-providers", self.prefix)
    }

    /// Providers' statuses, by name.
    pub(super) fn providers(&self) -> String {
        format!("{}providers", self.prefix)
    }

    pub(super) fn approval(&self, id: Uuid) -> Vec<u8> {
        format!("{}approval:{id}", self.prefix).into_bytes()
    }

    pub(super) fn agents(&self) -> String {
        format!("{}agents", self.prefix)
    }

    /// Registered agents' records, by name.
    pub(super) fn registry(&self) -> String {
        format!("{}registry", self.prefix)
    }

    pub(super) fn registry_revision(&self) -> Vec<u8> {
        format!("{}registry-revision", self.prefix).into_bytes()
    }

    /// The hash of every lease record, by lease id.
    pub(super) fn leases(&self) -> String {
        format!("{}leases", self.prefix)
    }
}

/// Redis Cluster's slot count.
const SLOTS: usize = 16384;

/// The Redis Cluster slot of a hash tag.
pub(super) fn slot(tag: &str) -> u16 {
    crate::model::routing::task_route(tag) % 16384
}

/// Where a namespace's keys are: its home and its shards.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    home: Keys,
    /// One or more; with one, it is the home itself.
    shards: Vec<Keys>,
}

impl Layout {
    pub(super) fn new(namespace: &str, count: u16) -> Self {
        let home = Keys::new(namespace);
        let shards = if count <= 1 {
            vec![home.clone()]
        } else {
            (0..count).map(|index| Keys::shard(namespace, index, count)).collect()
        };
        Self { home, shards }
    }

    pub(super) fn home(&self) -> &Keys {
        &self.home
    }

    pub(super) fn shards(&self) -> &[Keys] {
        &self.shards
    }

    /// Whether the namespace is spread over shards (else its one shard is
    /// the home).
    pub(super) fn sharded(&self) -> bool {
        self.shards.len() > 1
    }

    fn by_route(&self, route: u16) -> usize {
        usize::from(route) % self.shards.len()
    }

    pub(super) fn of_task(&self, task_id: &str) -> &Keys {
        &self.shards[self.by_route(crate::model::routing::task_route(task_id))]
    }

    /// The shard an id names (`model::routing`): where it is, unless it was
    /// made otherwise.
    pub(super) fn of_id(&self, id: Uuid) -> &Keys {
        &self.shards[self.by_route(crate::model::routing::id_route(id))]
    }

    /// The shards other than the one `id` names: where to look next.
    pub(super) fn others(&self, id: Uuid) -> impl Iterator<Item = &Keys> {
        let own = self.by_route(crate::model::routing::id_route(id));
        self.shards.iter().enumerate().filter(move |(index, _)| *index != own).map(|(_, keys)| keys)
    }

    /// Splits `limit` over the shards exactly (the remainder going to the
    /// shards from `start` on, so that it moves round), for a batch taken
    /// from every shard that stays within `limit` in all.
    pub(super) fn shares(&self, limit: usize, start: usize) -> Vec<(&Keys, usize)> {
        let count = self.shards.len();
        (0..count)
            .map(|index| {
                let extra = usize::from((index + count - start % count) % count < limit % count);
                (&self.shards[index], limit / count + extra)
            })
            .collect()
    }
}

/// A lease id as it appears in keys and index members.
pub(super) fn member(lease_id: Uuid) -> [u8; 16] {
    lease_id.into_bytes()
}

/// A lease id a script answered with.
pub(super) fn lease_id(member: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(member)
        .map_err(|_| StoreError::Corrupt(format!("a lease id of {} bytes in an index", member.len())))
}

/// The lease ids a script answered with.
pub(super) fn lease_ids(members: Vec<Vec<u8>>) -> Result<Vec<Uuid>, StoreError> {
    members.iter().map(|member| lease_id(member)).collect()
}

/// A sighting's field in the `sightings` hash: JSON, so that no issuer or
/// subject can run into the other.
pub(super) fn sighting(issuer: &str, subject: &str) -> String {
    // Two strings always encode; the fallback only keeps this infallible.
    serde_json::to_string(&(issuer, subject)).unwrap_or_else(|_| format!("{issuer}\u{0}{subject}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_namespace_tag() {
        let keys = Keys::new("prod");
        assert_eq!(keys.prefix(), "writ:{prod}:");
        assert_eq!(keys.task("t-1"), b"writ:{prod}:task:t-1");
        assert_eq!(keys.leases(), "writ:{prod}:leases");
        let id = Uuid::from_u128(0x0102);
        assert_eq!(lease_id(&member(id)).unwrap(), id);
    }

    #[test]
    fn shards_spread_over_the_slot_space_and_tasks_over_shards() {
        let layout = Layout::new("prod", 3);
        let slots: Vec<u16> = layout.shards().iter().map(|keys| slot(keys.tag())).collect();
        for (index, slot) in slots.iter().enumerate() {
            assert_eq!(usize::from(*slot) * 3 / SLOTS, index, "{slots:?}");
        }
        assert!(layout.shards().iter().all(|keys| keys.prefix().starts_with("writ:{prod:3.")));
        // A task's ids lead to the task's shard.
        let id = crate::model::routing::id_for_task("t-42");
        assert_eq!(layout.of_id(id).prefix(), layout.of_task("t-42").prefix());
        assert_eq!(layout.others(id).count(), 2);
        // One shard is the home, as before shards existed.
        let one = Layout::new("prod", 1);
        assert_eq!(one.shards()[0].prefix(), "writ:{prod}:");
        assert!(!one.sharded());
        let shares: Vec<usize> = layout.shares(1024, 0).iter().map(|(_, n)| *n).collect();
        assert_eq!(shares, [342, 341, 341]);
        let shares: Vec<usize> = layout.shares(2, 2).iter().map(|(_, n)| *n).collect();
        assert_eq!(shares, [1, 0, 1], "the remainder moves round");
        assert_eq!(layout.shares(7, 5).iter().map(|(_, n)| n).sum::<usize>(), 7);
    }

    #[test]
    fn members_sort_in_id_order() {
        let ids =
            [Uuid::from_u128(1), Uuid::from_u128(0xff), Uuid::from_u128(0x100), Uuid::from_u128(u128::MAX)];
        let mut members: Vec<_> = ids.iter().map(|id| member(*id)).collect();
        members.sort();
        assert_eq!(members, ids.map(member));
    }

    #[test]
    fn sighting_fields_do_not_collide() {
        assert_ne!(sighting("a:b", "c"), sighting("a", "b:c"));
        assert_eq!(sighting("iss", "sub"), r#"["iss","sub"]"#);
    }
}
