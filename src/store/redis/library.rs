//! Writ's Redis Function library: one function per store operation. Each
//! runs atomically in Redis: it checks the state rules, then writes the
//! rows and moves their index entries, so concurrent callers and replicas
//! cannot race past a check. The source is in `lua/`: `common.lua` once,
//! then each operation's body, registered as a function.
//!
//! A library is loaded once per Redis node (`FUNCTION LOAD`, on every
//! primary of a cluster) and kept in its data set, persisted and
//! replicated with it; calling a function does not re-run the shared
//! helpers, as `EVALSHA` of a script that starts with them would (about
//! 12 µs of Redis time per call). The connection loads it on first use,
//! and again whenever a node answers that the function is missing (a
//! restarted Redis without persistence, a new cluster primary), so nothing
//! is loaded at start.
//!
//! The library's name carries a digest of its source, so that replicas of
//! two Writ versions sharing one Redis during a rolling upgrade each call
//! their own code. The old version's library stays loaded until an
//! operator deletes it (`FUNCTION DELETE`, see docs/operations.md).

use ring::digest::{SHA256, digest};

/// The operations, each a file in `lua/` and whether it only reads.
const OPERATIONS: &[(&str, &str, bool)] = &[
    ("create_task", include_str!("lua/create_task.lua"), false),
    ("close_scope", include_str!("lua/close_scope.lua"), false),
    ("resume_agent", include_str!("lua/resume_agent.lua"), false),
    ("resume_provider", include_str!("lua/resume_provider.lua"), false),
    ("overdue_tasks", include_str!("lua/overdue_tasks.lua"), true),
    ("task_leases", include_str!("lua/task_leases.lua"), true),
    ("insert_pending", include_str!("lua/insert_pending.lua"), false),
    ("activate", include_str!("lua/activate.lua"), false),
    ("extend", include_str!("lua/extend.lua"), false),
    ("list_leases", include_str!("lua/list_leases.lua"), true),
    ("request_revocation", include_str!("lua/request_revocation.lua"), false),
    ("sweep", include_str!("lua/sweep.lua"), false),
    ("claim_revocations", include_str!("lua/claim_revocations.lua"), false),
    ("finish_revocations", include_str!("lua/finish_revocations.lua"), false),
    ("next_due", include_str!("lua/next_due.lua"), true),
    ("record_sighting", include_str!("lua/record_sighting.lua"), false),
    ("list_sightings", include_str!("lua/list_sightings.lua"), true),
    ("health", include_str!("lua/health.lua"), false),
    ("put_approval", include_str!("lua/put_approval.lua"), false),
    ("list_approvals", include_str!("lua/list_approvals.lua"), true),
    ("put_agent", include_str!("lua/put_agent.lua"), false),
    ("list_agents", include_str!("lua/list_agents.lua"), true),
    ("import_task", include_str!("lua/import_task.lua"), false),
    ("import_leases", include_str!("lua/import_leases.lua"), false),
    ("drop_task", include_str!("lua/drop_task.lua"), false),
    ("lock", include_str!("lua/lock.lua"), false),
];

/// The library's source and the name it is loaded under.
#[derive(Debug)]
pub(super) struct Library {
    name: String,
    source: String,
}

impl Library {
    pub(super) fn new() -> Self {
        // The body, with a placeholder for the name (which the functions'
        // names carry too): the name is a digest of the body.
        let mut body = String::from(include_str!("lua/common.lua"));
        for (operation, source, read_only) in OPERATIONS {
            let flags = if *read_only { "{ 'no-writes' }" } else { "{}" };
            body.push_str(&format!("\nregister('{operation}', {flags}, function(ARGV)\n{source}\nend)\n"));
        }
        let hash = digest(&SHA256, body.as_bytes());
        let name = format!("writ_{}", hex(&hash.as_ref()[..8]));
        let source = format!("#!lua name={name}\nlocal LIBRARY = '{name}'\n{body}");
        Self { name, source }
    }

    /// What `FUNCTION LOAD` takes.
    pub(super) fn source(&self) -> &str {
        &self.source
    }

    /// The library's name in Redis (`writ_` and 16 hex digits).
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The name `FCALL` takes for `operation`.
    pub(super) fn function(&self, operation: &str) -> String {
        format!("{}_{operation}", self.name)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_follows_the_source() {
        let library = Library::new();
        assert!(library.source().starts_with(&format!("#!lua name={}\n", library.name())));
        assert_eq!(library.name().len(), "writ_".len() + 16);
        assert_eq!(Library::new().name(), library.name());
        assert_eq!(library.function("sweep"), format!("{}_sweep", library.name()));
        for (operation, _, _) in OPERATIONS {
            assert!(library.source().contains(&format!("register('{operation}'")));
        }
    }

    #[test]
    fn the_functions_know_the_layout() {
        // keys.rs documents layout 4; a change to the layout changes both.
        assert!(include_str!("lua/common.lua").contains("local LAYOUT = '4'\n"));
        assert!(include_str!("keys.rs").contains("| `4`, the version of this layout"));
    }
}
