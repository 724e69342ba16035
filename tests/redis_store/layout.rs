//! The function library, the layout mark, and what the functions write:
//! rows read back whole, namespaces apart, damaged rows change nothing,
//! times exact.

use super::*;

/// The function library is loaded by the first call, once, and again by
/// the next call after a node lost it (a restart without persistence, a
/// failover to a node that never had it), with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_library_is_loaded_when_missing() {
    let server = RedisServer::start();
    assert_eq!(writ_libraries(&server), 0);
    let first = store(&config(server.url(), "library")).await;
    assert_eq!(writ_libraries(&server), 1, "opening the store checks its health, a function");
    first.create_task(task("before")).await.unwrap();

    assert_eq!(server.cli(&["function", "flush"]).trim(), "OK");
    assert_eq!(writ_libraries(&server), 0);
    first.create_task(task("after")).await.unwrap();
    assert_eq!(writ_libraries(&server), 1);
    // A second store (another replica) finds it loaded and adds no other.
    let second = store(&config(server.url(), "library")).await;
    assert!(second.get_task("before").await.unwrap().is_some());
    assert!(matches!(second.create_task(task("after")).await, Err(StoreError::TaskExists(_))));
    assert_eq!(writ_libraries(&server), 1);
}

/// A namespace in another layout of keys is refused on every call, before
/// anything is read or written: one marked with another layout, and one
/// holding leases but no mark (the first layout had none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_in_another_layout_is_refused() {
    let server = RedisServer::start();
    let store = store(&config(server.url(), "layout")).await;
    store.create_task(task("before")).await.unwrap();
    assert_eq!(server.cli(&["get", "writ:{layout}:layout"]).trim(), "4", "marked on first use");

    // Layout 2 (no agent states) is read and written as it is, and marked
    // 3 by the first suspension, after which layout 2 code refuses it.
    server.cli(&["set", "writ:{layout}:layout", "2"]);
    assert!(store.get_task("before").await.unwrap().is_some());
    store.overdue_tasks(t(0), 10).await.expect("a read of a layout 2 namespace");
    store.insert_pending(lease(id(9), "before"), t(0)).await.expect("a write to a layout 2 namespace");
    store.health().await.unwrap();
    assert_eq!(server.cli(&["get", "writ:{layout}:layout"]).trim(), "2", "still layout 2 code's");
    let suspension =
        Closure { by: "op".into(), reason: RevocationReason::AgentSuspended, note: String::new() };
    store.close_scope(&Scope::Agent("agent".into()), &suspension, t(1)).await.unwrap();
    assert_eq!(server.cli(&["get", "writ:{layout}:layout"]).trim(), "3", "marked by the first suspension");
    store.resume_agent("agent", "op", "", t(2)).await.unwrap();

    // Layout 3 (no provider states) likewise, marked 4 by the first
    // provider's suspension (or retirement).
    server.cli(&["set", "writ:{layout}:layout", "3"]);
    store.insert_pending(lease(id(10), "before"), t(3)).await.expect("a write to a layout 3 namespace");
    assert_eq!(server.cli(&["get", "writ:{layout}:layout"]).trim(), "3", "still layout 3 code's");
    let suspension =
        Closure { by: "op".into(), reason: RevocationReason::ProviderSuspended, note: String::new() };
    store.close_scope(&Scope::Provider("test".into()), &suspension, t(4)).await.unwrap();
    assert_eq!(server.cli(&["get", "writ:{layout}:layout"]).trim(), "4", "marked by the first suspension");
    store.resume_provider("test", "op", "", t(5)).await.unwrap();

    let refused = |result: Result<(), StoreError>, layout: &str| match result {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains(&format!("holds data in layout {layout}")), "{message}");
            assert!(message.contains("Upgrading on Redis"), "{message}");
            assert!(!message.contains("script:"), "no Lua location in the message: {message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    };
    // (Layout 5 is a sharded namespace's home, read as 4: see shards.rs.)
    server.cli(&["set", "writ:{layout}:layout", "6"]);
    refused(store.health().await, "6");
    refused(store.create_task(task("during")).await, "6");
    refused(store.overdue_tasks(t(0), 10).await.map(drop), "6");
    assert!(store.get_task("during").await.unwrap().is_none(), "nothing written");

    server.cli(&["del", "writ:{layout}:layout"]);
    server.cli(&["hset", "writ:{layout}:leases", "an old lease", "in layout 1"]);
    refused(store.health().await, "1");
    assert_eq!(server.cli(&["exists", "writ:{layout}:layout"]).trim(), "0", "not marked");

    // Opening a replica on such a namespace fails, with the same message.
    match RedisStore::open(&config(server.url(), "layout")).await {
        Err(StoreError::Unavailable(message)) => assert!(message.contains("layout 1"), "{message}"),
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }

    // Redis lost everything (restarted without persistence) under a running
    // store: the first write marks the namespace again, before any health
    // check, so the leases written next do not make it look like layout 1.
    server.cli(&["flushall"]);
    store.create_task(task("again")).await.unwrap();
    assert_eq!(server.cli(&["get", "writ:{layout}:layout"]).trim(), "4");
    store.insert_pending(lease(id(1), "again"), t(0)).await.unwrap();
    store.health().await.unwrap();
}

/// The scripts rewrite rows in Lua: what Rust wrote comes back whole,
/// including an empty array, which Lua's JSON cannot tell from `{}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_rewritten_by_scripts_read_back() {
    let server = RedisServer::start();
    let store = store(&config(server.url(), "rows")).await;
    let mut labelled = task("t");
    labelled.context.labels.insert("team".into(), "payments/eu".into());
    labelled.context.purpose = "quote \" and ünïcode".into();
    store.create_task(labelled.clone()).await.unwrap();
    let mut original = lease(id(1), "t");
    original.created_at = t(0) + TimeDelta::nanoseconds(123_456_789);
    original.handle.sealed = (0..=255).collect();
    store.insert_pending(original.clone(), t(1)).await.unwrap();
    let at = t(2) + TimeDelta::nanoseconds(5);
    let handle = SealedHandle { key_id: "k2".into(), sealed: vec![0xff; 90] };
    let active = store.activate(original.id, t(900), handle.clone(), at).await.unwrap();
    assert_eq!(
        active,
        Lease { state: LeaseState::Active, issued_at: Some(at), expires_at: t(900), handle, ..original }
    );
    let closed = store.close_task("t", "engine", RevocationReason::TaskClosed, t(3)).await.unwrap();
    assert_eq!(closed.task.context, labelled.context);
    let revoking = store.get_lease(original.id).await.unwrap().unwrap();
    assert_eq!(revoking.scopes, Vec::<String>::new());
    assert_eq!(
        revoking,
        Lease { state: LeaseState::Revoking, revocation: revoking.revocation.clone(), ..active }
    );
}

/// Namespaces share a Redis without seeing each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_separate() {
    let server = RedisServer::start();
    let blue = store(&config(server.url(), "blue")).await;
    let green = store(&config(server.url(), "green")).await;
    blue.create_task(task("t")).await.unwrap();
    assert_eq!(green.get_task("t").await.unwrap(), None);
    green.create_task(task("t")).await.expect("the same id in another namespace");
    blue.insert_pending(lease(id(1), "t"), t(0)).await.unwrap();
    assert!(green.task_leases("t").await.unwrap().is_empty());
}

/// A damaged row fails the operation as `Corrupt`, and a script that meets
/// one part-way has written nothing: scripts check everything first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_corrupt_and_change_nothing() {
    let server = RedisServer::start();
    let store = store(&config(server.url(), "damaged")).await;
    store.create_task(task("t")).await.unwrap();
    store.insert_pending(lease(id(1), "t"), t(0)).await.unwrap();
    store.insert_pending(lease(id(2), "t"), t(0)).await.unwrap();
    let mut connection = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    // A lease as earlier versions stored it (JSON): not read, refused.
    let old_format = serde_json::to_vec(&lease(id(2), "t")).unwrap();
    let _: () = redis::cmd("HSET")
        .arg("writ:{damaged}:leases")
        .arg(id(2).as_bytes())
        .arg(old_format)
        .query(&mut connection)
        .unwrap();

    let closed = store.close_task("t", "engine", RevocationReason::TaskClosed, t(1)).await;
    assert!(matches!(closed, Err(StoreError::Corrupt(_))), "{closed:?}");
    assert_eq!(store.get_task("t").await.unwrap().unwrap().state, TaskState::Open, "task not closed");
    assert_eq!(store.get_lease(id(1)).await.unwrap().unwrap().state, LeaseState::Pending, "lease untouched");
    assert!(matches!(store.get_lease(id(2)).await, Err(StoreError::Corrupt(_))));
    let swept = store.sweep(t(10), t(10), 10).await;
    assert!(matches!(swept, Err(StoreError::Corrupt(_))), "{swept:?}");
    assert_eq!(store.get_lease(id(1)).await.unwrap().unwrap().state, LeaseState::Pending, "lease untouched");

    // A record cut short is corrupt too, to Rust and to the scripts.
    let record: Vec<u8> =
        redis::cmd("HGET").arg("writ:{damaged}:leases").arg(id(1).as_bytes()).query(&mut connection).unwrap();
    let _: () = redis::cmd("HSET")
        .arg("writ:{damaged}:leases")
        .arg(id(2).as_bytes())
        .arg(&record[..40])
        .query(&mut connection)
        .unwrap();
    assert!(matches!(store.get_lease(id(2)).await, Err(StoreError::Corrupt(_))));
    let revoked = store.request_revocation(&[id(2)], RevocationReason::Operator, t(2)).await;
    assert!(matches!(revoked, Err(StoreError::Corrupt(_))), "{revoked:?}");
}

/// Schedules and checks are exact to the nanosecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_are_exact_within_a_millisecond() {
    let server = RedisServer::start();
    let store = store(&config(server.url(), "exact")).await;
    let at = |nanos: i64| t(10) + TimeDelta::nanoseconds(nanos);
    store.create_task(Task { deadline: at(500_001), ..task("t") }).await.unwrap();
    let err = store.insert_pending(lease(id(9), "t"), at(500_001)).await.unwrap_err();
    assert_eq!(err, StoreError::TaskClosed("t".into()), "deadline == now, to the nanosecond");
    store.insert_pending(lease(id(1), "t"), at(500_000)).await.expect("a nanosecond before the deadline");
    assert!(store.overdue_tasks(at(500_000), 10).await.unwrap().is_empty());
    assert_eq!(store.overdue_tasks(at(500_001), 10).await.unwrap(), ["t"]);

    let handle = SealedHandle { key_id: "k".into(), sealed: vec![1] };
    store.activate(id(1), at(700_002), handle, at(0)).await.unwrap();
    assert!(store.sweep(at(700_001), t(0), 10).await.unwrap().expired.is_empty(), "1 ns early");
    assert_eq!(store.sweep(at(700_002), t(0), 10).await.unwrap().expired, [id(1)]);
    assert!(store.claim_revocations(at(700_001), at(900_000), 10).await.unwrap().is_empty());
    assert_eq!(store.claim_revocations(at(700_002), at(900_000), 10).await.unwrap().len(), 1);
    assert_eq!(store.next_due().await.unwrap(), Some(at(500_001)), "the exact time, not the index's");
}
