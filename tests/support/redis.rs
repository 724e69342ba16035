//! The Redis servers of the tests and benches, from `writ-test-peers` (the
//! one starter, in `tests/peers/src/redis.rs`), under the name the test and
//! bench crates that include this file (`#[path]`) already use.
#[allow(unused_imports)]
pub use writ_test_peers::redis::{RedisCluster, RedisServer};
