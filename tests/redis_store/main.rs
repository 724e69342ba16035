//! The Redis store against real servers this test starts: the conformance
//! suite on one node and on a three-primary Redis Cluster (here), and what
//! only a network store can show: it fails closed, quickly, while Redis is
//! down, and recovers when Redis is back (`outage`); its function library
//! and key layout are checked on every call (`layout`); its indexes stay in
//! order and compact (`indexes`); what finished is forgotten after its
//! retention, and a close cut short is finished (`retention`).

#[path = "../support/certs.rs"]
mod certs;
#[path = "../support/redis.rs"]
mod redis_support;
#[path = "../support/store_fixtures.rs"]
mod store_fixtures;

mod indexes;
mod layout;
mod outage;
mod retention;
mod shards;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use uuid::Uuid;
use writ::model::{AgentState, Lease, LeaseState, RevocationReason, SealedHandle, Task, TaskState};
use writ::store::{
    Closure, LeaseStore, RedisConfig, RedisStore, RevocationOutcome, Scope, StoreError, SweptLease,
    conformance,
};

use redis_support::{RedisCluster, RedisServer};
use store_fixtures::{lease, t, task};

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)
}

fn config(url: String, namespace: &str) -> RedisConfig {
    RedisConfig { namespace: namespace.into(), ..RedisConfig::single(url) }
}

async fn store(config: &RedisConfig) -> Arc<dyn LeaseStore> {
    Arc::new(RedisStore::open(config).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_on_one_node() {
    let server = RedisServer::start();
    let count = AtomicUsize::new(0);
    conformance::run(|| {
        // A fresh namespace is a fresh, empty store.
        let config = config(server.url(), &format!("conformance-{}", count.fetch_add(1, Ordering::Relaxed)));
        async move { store(&config).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_on_a_cluster() {
    let cluster = RedisCluster::start();
    let count = AtomicUsize::new(0);
    conformance::run(|| {
        let namespace = format!("conformance-{}", count.fetch_add(1, Ordering::Relaxed));
        let config = RedisConfig { namespace, ..RedisConfig::cluster(cluster.urls()) };
        async move { store(&config).await }
    })
    .await;
    // The namespaces hash to slots on every node: each node served some
    // checks whole, which it could only do if every script stayed in its
    // namespace's slot. (The names are fixed, so this is deterministic.)
    for node in cluster.nodes() {
        let keys: u64 = node.cli(&["dbsize"]).trim().parse().unwrap();
        assert!(keys > 0, "node on port {} holds none of the namespaces", node.port());
        // Loading the function library reaches every primary.
        assert_eq!(writ_libraries(node), 1, "libraries on port {}", node.port());
    }
}

/// How many of Writ's function libraries a node has loaded.
fn writ_libraries(server: &RedisServer) -> usize {
    server
        .cli(&["function", "list", "libraryname", "writ_*"])
        .lines()
        .filter(|line| *line == "library_name")
        .count()
}

/// Every lease `filter` matches, listed 37 at a time.
async fn paged(store: &Arc<dyn LeaseStore>, filter: &writ::store::LeaseFilter) -> Vec<Uuid> {
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_leases(filter, after, 37).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        listed.extend(page.iter().map(|lease| lease.id));
    }
    listed
}
