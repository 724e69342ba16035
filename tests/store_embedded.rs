//! The embedded store against the conformance suite, and what only a file
//! on disk can show: leases survive a restart, and a dropped store lets go
//! of its file.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "support/store_fixtures.rs"]
mod store_fixtures;

use store_fixtures::{lease, t, task};
use uuid::Uuid;
use writ::model::{LeaseState, SealedHandle};
use writ::store::{EmbeddedStore, LeaseStore, StoreError, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms() {
    let root = tempfile::tempdir().unwrap();
    let count = AtomicUsize::new(0);
    conformance::run(|| {
        // Nested, to show open creates parent directories.
        let path =
            root.path().join(format!("store-{}/data/leases.redb", count.fetch_add(1, Ordering::Relaxed)));
        async move { Arc::new(EmbeddedStore::open(&path).await.unwrap()) as Arc<dyn LeaseStore> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let path: PathBuf = root.path().join("leases.redb");
    let ids: Vec<Uuid> =
        (0..50).map(|n| Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n)).collect();
    {
        let store = EmbeddedStore::open(&path).await.unwrap();
        store.create_task(task("t")).await.unwrap();
        for (n, id) in ids.iter().enumerate() {
            store.insert_pending(lease(*id, "t"), t(0)).await.unwrap();
            if n % 2 == 0 {
                let handle = SealedHandle { key_id: "k".into(), sealed: vec![1, 2, 3] };
                store.activate(*id, t(300 + n as i64), handle, t(1)).await.unwrap();
            }
        }
    }
    let store = EmbeddedStore::open(&path).await.unwrap();
    assert_eq!(store.get_task("t").await.unwrap().unwrap().id, "t");
    let leases = store.task_leases("t").await.unwrap();
    assert_eq!(leases.len(), 50, "every acknowledged lease is still there");
    assert_eq!(leases[0].state, LeaseState::Active);
    assert_eq!(leases[1].state, LeaseState::Pending);
    // The indexes came back too: the earliest expiry is scheduled and swept.
    assert_eq!(store.next_due().await.unwrap(), Some(t(300)));
    let swept = store.sweep(t(302), t(0), 10).await.unwrap();
    assert_eq!(swept.expired, vec![ids[0], ids[2]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_store_releases_its_file() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("leases.redb");
    let store = EmbeddedStore::open(&path).await.unwrap();
    store.create_task(task("t")).await.unwrap();
    let second = EmbeddedStore::open(&path).await;
    assert!(matches!(second, Err(StoreError::Unavailable(_))), "the file is locked while open");
    drop(store);
    let reopened = EmbeddedStore::open(&path).await.expect("reopen right after drop");
    assert!(reopened.get_task("t").await.unwrap().is_some());
    reopened.health().await.unwrap();
}

/// Set in the child process of [`acknowledged_leases_survive_a_kill`]: the
/// store file it writes to.
const CRASH_CHILD_PATH: &str = "WRIT_STORE_CRASH_CHILD_PATH";

/// A writer killed mid-flight (SIGKILL, no shutdown) forgets no lease it had
/// acknowledged.
#[test]
fn acknowledged_leases_survive_a_kill() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("leases.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_PATH, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(id) = line.unwrap().strip_prefix("acked ") {
            acked.push(Uuid::parse_str(id).unwrap());
            if acked.len() == 3000 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(acked.len(), 3000, "the child acknowledged writes before it was killed");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = EmbeddedStore::open(&path).await.unwrap();
        for id in &acked {
            assert!(store.get_lease(*id).await.unwrap().is_some(), "acknowledged lease {id} was lost");
        }
    });
}

/// The child half of [`acknowledged_leases_survive_a_kill`]; does nothing
/// when run on its own.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_CHILD_PATH) else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let store: Arc<dyn LeaseStore> = Arc::new(EmbeddedStore::open(path.as_ref()).await.unwrap());
        store.create_task(task("t")).await.unwrap();
        let mut writers = tokio::task::JoinSet::new();
        for worker in 0..64u128 {
            let store = Arc::clone(&store);
            writers.spawn(async move {
                for n in 0..100_000u128 {
                    let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + (n << 8) + worker);
                    store.insert_pending(lease(id, "t"), t(0)).await.unwrap();
                    println!("acked {id}");
                }
            });
        }
        while writers.join_next().await.is_some() {}
    });
}
