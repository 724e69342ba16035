//! The throw-away PostgreSQL database of the end-to-end tests and the load
//! tool, from `writ-test-peers` (the one implementation, in
//! `tests/peers/src/postgres.rs`), under the names the crates that include
//! this file (`#[path]`) already use.
#[allow(unused_imports)]
pub use writ_test_peers::postgres::{TestDatabase as PgDatabase, login};
