//! The Lua scripts, one per store operation. Each runs atomically in Redis:
//! it checks the state rules, then writes the rows and moves their index
//! entries, so concurrent callers and replicas cannot race past a check.
//! The source is in `lua/`; every script starts with `lua/common.lua`.
//!
//! Scripts run by `EVALSHA`, loaded on first use (`redis::Script` reloads
//! them when a restarted server answers `NOSCRIPT`), so nothing is loaded
//! at start.

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(include_str!("lua/common.lua"), "\n", include_str!(concat!("lua/", $file))))
    };
}

pub(super) struct Scripts {
    pub(super) create_task: Script,
    pub(super) close_task: Script,
    pub(super) overdue_tasks: Script,
    pub(super) task_leases: Script,
    pub(super) insert_pending: Script,
    pub(super) activate: Script,
    pub(super) extend: Script,
    pub(super) list_leases: Script,
    pub(super) request_revocation: Script,
    pub(super) sweep: Script,
    pub(super) claim_revocations: Script,
    pub(super) finish_revocations: Script,
    pub(super) next_due: Script,
    pub(super) record_sighting: Script,
    pub(super) list_sightings: Script,
    pub(super) health: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            create_task: script!("create_task.lua"),
            close_task: script!("close_task.lua"),
            overdue_tasks: script!("overdue_tasks.lua"),
            task_leases: script!("task_leases.lua"),
            insert_pending: script!("insert_pending.lua"),
            activate: script!("activate.lua"),
            extend: script!("extend.lua"),
            list_leases: script!("list_leases.lua"),
            request_revocation: script!("request_revocation.lua"),
            sweep: script!("sweep.lua"),
            claim_revocations: script!("claim_revocations.lua"),
            finish_revocations: script!("finish_revocations.lua"),
            next_due: script!("next_due.lua"),
            record_sighting: script!("record_sighting.lua"),
            list_sightings: script!("list_sightings.lua"),
            health: script!("health.lua"),
        }
    }
}
