//! A namespace spread over shards (`shards > 1`, ADR 0017): the
//! conformance suite on one node and on the three-primary cluster, the
//! Redis work spread over every primary (`INFO commandstats`), revocation
//! claims exactly once across two replicas, a primary stopped mid-run
//! stopping only its own shards, a suspension cut short carried to every
//! shard, and `reshard` moving a namespace with nothing lost.

use std::collections::{BTreeMap, BTreeSet};

use writ::model::routing::id_for_task;
use writ::store::{LeaseFilter, reshard};

use super::*;

fn sharded(config: RedisConfig, shards: u16) -> RedisConfig {
    RedisConfig { shards, ..config }
}

/// A pending approval request of `task_id`, with an id that names its shard.
fn approval(task_id: &str) -> writ::model::Approval {
    use writ::model::{Approval, ApprovalGrant, ApprovalState};
    Approval {
        id: id_for_task(task_id),
        agent: "agent".into(),
        task_id: task_id.into(),
        tool: "migrate".into(),
        grants: vec![ApprovalGrant {
            provider: "test".into(),
            role: "admin".into(),
            scopes: vec![],
            ttl_seconds: None,
        }],
        group: "dba".into(),
        quorum: 1,
        policies: vec!["p".into()],
        policy_set: "ab".into(),
        state: ApprovalState::Pending,
        created_at: t(0),
        expires_at: t(900),
        collect_within_seconds: 600,
        votes: Vec::new(),
        approved_at: None,
        collect_by: None,
        collected_at: None,
        ended: None,
    }
}

/// Issues one lease for `task` as the broker does: pending, then active.
async fn issue(
    store: &Arc<dyn LeaseStore>,
    task_id: &str,
    agent: &str,
    now: i64,
) -> Result<Uuid, StoreError> {
    let id = id_for_task(task_id);
    let mut pending = lease(id, task_id);
    pending.agent = agent.into();
    pending.created_at = t(now);
    store.insert_pending(pending, t(now)).await?;
    store
        .activate(id, t(now + 600), SealedHandle { key_id: "k".into(), sealed: vec![7; 40] }, t(now))
        .await?;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_with_shards_on_one_node() {
    let server = RedisServer::start();
    let count = AtomicUsize::new(0);
    conformance::run(|| {
        let namespace = format!("sharded-{}", count.fetch_add(1, Ordering::Relaxed));
        let config = sharded(config(server.url(), &namespace), 4);
        async move { store(&config).await }
    })
    .await;
}

/// The conformance suite on the cluster, then issuance over many tasks:
/// every primary runs a fair part of the functions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_with_shards_on_a_cluster_and_spreads_the_work() {
    let cluster = RedisCluster::start();
    let count = AtomicUsize::new(0);
    conformance::run(|| {
        let namespace = format!("sharded-{}", count.fetch_add(1, Ordering::Relaxed));
        let config = sharded(RedisConfig { namespace, ..RedisConfig::cluster(cluster.urls()) }, 3);
        async move { store(&config).await }
    })
    .await;

    let store = store(&sharded(
        RedisConfig { namespace: "spread".into(), ..RedisConfig::cluster(cluster.urls()) },
        3,
    ))
    .await;
    for node in cluster.nodes() {
        node.cli(&["config", "resetstat"]);
    }
    for n in 0..300 {
        let task_id = format!("task-{n}");
        store.create_task(task(&task_id)).await.unwrap();
        issue(&store, &task_id, "agent", 1).await.unwrap();
    }
    let calls: Vec<u64> = cluster.nodes().iter().map(fcalls).collect();
    let total: u64 = calls.iter().sum();
    eprintln!("FCALLs per primary for 300 tasks with one lease each: {calls:?} (of {total})");
    for (node, calls) in cluster.nodes().iter().zip(&calls) {
        assert!(*calls * 100 >= total * 20, "node on port {} ran {calls} of {total} calls", node.port());
    }
}

/// `cmdstat_fcall`'s `calls=` from a node's `INFO commandstats`.
fn fcalls(node: &RedisServer) -> u64 {
    let stats = node.cli(&["info", "commandstats"]);
    let line = stats.lines().find(|line| line.starts_with("cmdstat_fcall:")).unwrap_or("");
    line.split([':', ','])
        .find_map(|part| part.strip_prefix("calls="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Two replicas claiming the same shards at once: every revocation is
/// claimed by exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_are_exactly_once_across_two_replicas() {
    let cluster = RedisCluster::start();
    let config =
        sharded(RedisConfig { namespace: "claims".into(), ..RedisConfig::cluster(cluster.urls()) }, 3);
    let (first, second) = (store(&config).await, store(&config).await);
    let mut all = BTreeSet::new();
    for n in 0..24 {
        let task_id = format!("task-{n}");
        first.create_task(task(&task_id)).await.unwrap();
        for _ in 0..25 {
            all.insert(issue(&first, &task_id, "agent", 1).await.unwrap());
        }
    }
    let ids: Vec<Uuid> = all.iter().copied().collect();
    assert_eq!(first.request_revocation(&ids, RevocationReason::Released, t(2)).await.unwrap().len(), 600);
    let claim = |store: Arc<dyn LeaseStore>| async move {
        let mut claimed = Vec::new();
        loop {
            let batch = store.claim_revocations(t(3), t(300), 16).await.unwrap();
            if batch.is_empty() {
                return claimed;
            }
            claimed.extend(batch.into_iter().map(|lease| lease.id));
        }
    };
    let (a, b) = tokio::join!(tokio::spawn(claim(first.clone())), tokio::spawn(claim(second.clone())));
    let (a, b) = (a.unwrap(), b.unwrap());
    eprintln!("claimed: {} by one replica, {} by the other", a.len(), b.len());
    let mut seen = BTreeSet::new();
    for id in a.iter().chain(&b) {
        assert!(seen.insert(*id), "lease {id} claimed twice");
    }
    assert_eq!(seen, all, "every revocation claimed");
    // Outcomes recorded by either replica land in the right shard.
    let outcomes: Vec<_> =
        a.iter().map(|id| RevocationOutcome::Done { lease_id: *id, generation: 0 }).collect();
    second.finish_revocations(&outcomes, t(4)).await.unwrap();
    let revoked = LeaseFilter { state: Some(LeaseState::Revoked), ..LeaseFilter::default() };
    assert_eq!(paged(&first, &revoked).await.len(), a.len());
}

/// With a primary down, the tasks of its shards fail closed and the
/// others go on issuing and revoking; once it is back, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_stops_only_its_shards() {
    let mut cluster = RedisCluster::start_partial();
    let config =
        sharded(RedisConfig { namespace: "partial".into(), ..RedisConfig::cluster(cluster.urls()) }, 3);
    let store = store(&config).await;
    let mut issued = BTreeMap::new();
    for n in 0..30 {
        let task_id = format!("task-{n}");
        store.create_task(task(&task_id)).await.unwrap();
        issued.insert(task_id.clone(), vec![issue(&store, &task_id, "agent", 1).await.unwrap()]);
    }
    // Which tasks the first node holds.
    let on_node: BTreeSet<String> = cluster.nodes()[0]
        .cli(&["keys", "writ:*:task:*"])
        .lines()
        .filter_map(|key| key.split(":task:").nth(1).map(str::to_owned))
        .collect();
    assert!(!on_node.is_empty() && on_node.len() < 30, "{on_node:?}");

    cluster.node_mut(0).stop();
    for (task_id, ids) in &mut issued {
        let started = Instant::now();
        let result = issue(&store, task_id, "agent", 2).await;
        if on_node.contains(task_id) {
            assert!(matches!(result, Err(StoreError::Unavailable(_))), "{task_id}: {result:?}");
            assert!(started.elapsed() < Duration::from_millis(2500), "failed after {:?}", started.elapsed());
        } else {
            // While the client learns that a node is gone, a call to a live
            // node may time out once on a loaded machine; the agent's retry
            // of UNAVAILABLE goes through.
            let mut result = result;
            for _ in 0..3 {
                match result {
                    Err(StoreError::Unavailable(ref error)) => {
                        eprintln!("{task_id} on a live node, retried: {error}");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        result = issue(&store, task_id, "agent", 2).await;
                    }
                    _ => break,
                }
            }
            ids.push(result.unwrap_or_else(|error| panic!("{task_id} on a live node: {error}")));
        }
    }
    // The live shards' revocations are claimed and finished meanwhile.
    let live: Vec<Uuid> = issued
        .iter()
        .filter(|(task_id, _)| !on_node.contains(*task_id))
        .flat_map(|(_, ids)| ids.clone())
        .collect();
    // (Calls to live nodes may time out now and then while the client
    // learns the cluster's new shape; each is safe to repeat.)
    for attempt in 0..5 {
        match store.request_revocation(&live, RevocationReason::Released, t(3)).await {
            Ok(_) => break,
            Err(error) if attempt < 4 => eprintln!("request_revocation retried: {error}"),
            Err(error) => panic!("{error}"),
        }
    }
    for id in &live {
        assert_eq!(store.get_lease(*id).await.unwrap().unwrap().state, LeaseState::Revoking);
    }
    let mut claimed = Vec::new();
    for _ in 0..10 {
        claimed.extend(store.claim_revocations(t(4), t(300), 1000).await.unwrap());
        if claimed.len() == live.len() {
            break;
        }
        eprintln!("claims retried: {} of {}", claimed.len(), live.len());
    }
    assert_eq!(claimed.len(), live.len(), "the live shards' revocations are claimed");
    let outcomes: Vec<_> =
        claimed.iter().map(|lease| RevocationOutcome::Done { lease_id: lease.id, generation: 0 }).collect();
    for attempt in 0..5 {
        match store.finish_revocations(&outcomes, t(5)).await {
            Ok(()) => break,
            Err(error) if attempt < 4 => eprintln!("finish_revocations retried: {error}"),
            Err(error) => panic!("{error}"),
        }
    }
    store.sweep(t(5), t(0), 100).await.expect("a sweep of the live shards");

    cluster.node_mut(0).restart();
    let restarted = Instant::now();
    while store.health().await.is_err() {
        assert!(restarted.elapsed() < Duration::from_secs(15), "not back after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (task_id, ids) in &issued {
        for id in ids {
            let lease = store.get_lease(*id).await.unwrap().unwrap_or_else(|| panic!("{id} lost"));
            let expected = if on_node.contains(task_id) { LeaseState::Active } else { LeaseState::Revoked };
            assert_eq!(lease.state, expected, "{task_id}");
        }
        if on_node.contains(task_id) {
            issue(&store, task_id, "agent", 6).await.expect("its shard is back");
        }
    }
}

/// A suspension whose caller died after the home recorded it (before the
/// shards heard of it) is carried to every shard by the next sweep that
/// can take its lock; resuming lifts it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_cut_short_is_carried_to_every_shard() {
    let server = RedisServer::start();
    let config = sharded(config(server.url(), "spreading"), 3);
    let redis = RedisStore::open(&config).await.unwrap();
    let store = store(&config).await;
    let mut leases = Vec::new();
    for n in 0..12 {
        let task_id = format!("task-{n}");
        store.create_task(task(&task_id)).await.unwrap();
        leases.push(issue(&store, &task_id, "bad", 1).await.unwrap());
    }
    // What a caller leaves when it dies after the home's step: the mark
    // (the reason's code; 7 is agent_suspended) and the home suspended.
    let status = r#"{"agent":"bad","state":"suspended","changed_at":"2026-01-01T00:00:02Z","changed_by":"op","reason":"test"}"#;
    let scope = Scope::Agent("bad".into());
    server.cli(&["hset", "writ:{spreading}:spreading", "agent:bad", "7"]);
    redis
        .close_step_of(&scope, status.as_bytes(), RevocationReason::AgentSuspended, t(2), 1000)
        .await
        .unwrap();
    assert_eq!(store.agent_status("bad").await.unwrap().unwrap().state, AgentState::Suspended);

    // While a live caller holds the lock, the sweep leaves it alone.
    server.cli(&["set", "writ:{spreading}:lock:agent:bad", "someone", "px", "60000"]);
    let swept = store.sweep(t(3), t(0), 1000).await.unwrap();
    assert!(swept.closed.is_empty(), "{swept:?}");
    let refused = store.resume_agent("bad", "op", "", t(3)).await;
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(message)) if message.contains("under way")),
        "{refused:?}"
    );
    server.cli(&["del", "writ:{spreading}:lock:agent:bad"]);

    let swept = store.sweep(t(4), t(0), 1000).await.unwrap();
    let closed: BTreeSet<Uuid> = swept.closed.iter().map(|(lease, _)| lease.id).collect();
    assert_eq!(closed, leases.iter().copied().collect(), "every shard's leases");
    assert!(swept.closed.iter().all(|(_, reason)| *reason == RevocationReason::AgentSuspended));
    assert_eq!(server.cli(&["exists", "writ:{spreading}:spreading"]).trim(), "0");
    assert_eq!(server.cli(&["exists", "writ:{spreading}:lock:agent:bad"]).trim(), "0", "released");
    for n in 0..12 {
        let refused = issue(&store, &format!("task-{n}"), "bad", 5).await;
        assert!(matches!(refused, Err(StoreError::AgentSuspended(_))), "{refused:?}");
    }

    // A resume cut short after the home's step (the home resumed, the
    // shards not) is finished by calling it again.
    let resumed = r#"{"agent":"bad","state":"active","changed_at":"2026-01-01T00:00:06Z","changed_by":"op","reason":"fixed"}"#;
    server.cli(&["hset", "writ:{spreading}:agents", "bad", resumed]);
    server.cli(&["srem", "writ:{spreading}:suspended", "bad"]);
    assert!(
        matches!(issue(&store, "task-0", "bad", 6).await, Err(StoreError::AgentSuspended(_))),
        "shards still refuse"
    );
    store.resume_agent("bad", "op", "fixed", t(6)).await.expect("finishes the resume");
    for n in 0..12 {
        issue(&store, &format!("task-{n}"), "bad", 7).await.expect("resumed in every shard");
    }
    assert!(matches!(store.resume_agent("bad", "op", "", t(8)).await, Err(StoreError::AgentNotSuspended(_))));

    // A suspension and a resume of one agent at once never leave the
    // shards apart from the home.
    for round in 0..5 {
        let suspension =
            Closure { by: "op".into(), reason: RevocationReason::AgentSuspended, note: String::new() };
        let (a, b) = tokio::join!(
            store.close_scope(&scope, &suspension, t(10 + round)),
            store.resume_agent("bad", "op", "", t(10 + round))
        );
        a.unwrap();
        let suspended = b.is_err();
        for n in 0..12 {
            let result = issue(&store, &format!("task-{n}"), "bad", 10 + round).await;
            assert_eq!(
                matches!(result, Err(StoreError::AgentSuspended(_))),
                suspended,
                "round {round}: {result:?}"
            );
        }
        if !suspended {
            continue;
        }
        store.resume_agent("bad", "op", "", t(10 + round)).await.unwrap();
    }
}

/// A namespace from before shards, with a provider suspended and no task
/// left, opened with shards: the suspension holds in every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspensions_from_before_shards_hold_in_every_shard() {
    let server = RedisServer::start();
    let one = store(&config(server.url(), "older")).await;
    let suspension =
        Closure { by: "op".into(), reason: RevocationReason::ProviderSuspended, note: String::new() };
    one.close_scope(&Scope::Provider("test".into()), &suspension, t(1)).await.unwrap();
    server.cli(&["del", "writ:{older}:shards"]);
    let three = store(&sharded(config(server.url(), "older"), 3)).await;
    for n in 0..9 {
        let task_id = format!("task-{n}");
        three.create_task(task(&task_id)).await.unwrap();
        let refused = issue(&three, &task_id, "agent", 2).await;
        assert!(matches!(refused, Err(StoreError::ProviderSuspended(_))), "{refused:?}");
    }
}

/// `reshard` moves a namespace (tasks open and closed, leases in every
/// state, approval requests, a suspension) from one shard to three on the
/// cluster and back to two, and stores configured with the old count are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_moves_everything_and_refuses_the_old_count() {
    let cluster = RedisCluster::start();
    let base = RedisConfig { namespace: "moving".into(), ..RedisConfig::cluster(cluster.urls()) };
    let one = store(&base).await;
    for n in 0..20 {
        let task_id = format!("task-{n}");
        one.create_task(task(&task_id)).await.unwrap();
        for k in 0..6 {
            let id = issue(&one, &task_id, if k == 0 { "bad" } else { "agent" }, 1).await.unwrap();
            match k {
                1 => {
                    one.request_revocation(&[id], RevocationReason::Released, t(2)).await.unwrap();
                }
                2 => {
                    one.request_revocation(&[id], RevocationReason::Released, t(2)).await.unwrap();
                    let claimed = one.claim_revocations(t(3), t(30), 1000).await.unwrap();
                    let done: Vec<_> = claimed
                        .iter()
                        .map(|lease| RevocationOutcome::Done { lease_id: lease.id, generation: 0 })
                        .collect();
                    one.finish_revocations(&done, t(3)).await.unwrap();
                }
                _ => {}
            }
        }
        // A pending lease too (an issue under way), with a plain v4-style id.
        let mut pending = lease(Uuid::from_u128(0xabc0 + n), &task_id);
        pending.created_at = t(1);
        one.insert_pending(pending, t(1)).await.unwrap();
    }
    for n in 0..20 {
        one.create_approval(approval(&format!("task-{n}")), t(3)).await.unwrap();
    }
    one.close_task("task-0", "engine", RevocationReason::TaskClosed, t(4)).await.unwrap();
    let suspension = Closure { by: "op".into(), reason: RevocationReason::AgentSuspended, note: "x".into() };
    one.close_scope(&Scope::Agent("bad".into()), &suspension, t(5)).await.unwrap();
    let before = paged_leases(&one).await;
    assert_eq!(before.len(), 140);
    let approvals_before = one.list_approvals(&Default::default(), None, 100).await.unwrap();
    assert_eq!(approvals_before.len(), 20);

    // A store with another count refuses the namespace.
    let three = sharded(base.clone(), 3);
    let refused = RedisStore::open(&three).await.err().expect("refused");
    assert!(refused.to_string().contains("writ store reshard"), "{refused}");

    let moved = reshard(&three, 3).await.unwrap();
    eprintln!("{moved:?}");
    assert_eq!((moved.from, moved.to, moved.tasks, moved.leases, moved.approvals), (1, 3, 20, 140, 20));
    let refused = RedisStore::open(&base).await.err().expect("the old count is refused");
    assert!(refused.to_string().contains("3 shard(s)"), "{refused}");
    let sharded_store = store(&three).await;
    let home_layout = cluster.nodes()[0].cli(&["-c", "get", "writ:{moving}:layout"]);
    assert_eq!(home_layout.trim(), "5", "code from before shards refuses the home");
    assert_eq!(paged_leases(&sharded_store).await, before, "every lease, as it was");
    let approvals_after = sharded_store.list_approvals(&Default::default(), None, 100).await.unwrap();
    assert_eq!(approvals_after.len(), 20);
    for approval in &approvals_before {
        let found = sharded_store.get_approval(approval.id).await.unwrap();
        assert_eq!(found.map(|found| found.id), Some(approval.id));
    }
    for n in 0..20 {
        let task_id = format!("task-{n}");
        let leases = sharded_store.task_leases(&task_id).await.unwrap();
        assert_eq!(leases.len(), 7, "{task_id}");
        for lease in &leases {
            assert_eq!(sharded_store.get_lease(lease.id).await.unwrap().as_ref(), Some(lease));
        }
    }
    // The suspension holds in every shard; the closed task stays closed.
    for n in 1..20 {
        let refused = issue(&sharded_store, &format!("task-{n}"), "bad", 6).await;
        assert!(matches!(refused, Err(StoreError::AgentSuspended(_))), "{refused:?}");
    }
    assert!(matches!(issue(&sharded_store, "task-0", "agent", 6).await, Err(StoreError::TaskClosed(_))));
    // Every shard holds some of the namespace.
    for node in cluster.nodes() {
        assert!(!node.cli(&["keys", "writ:{moving:3.*"]).trim().is_empty(), "node {}", node.port());
    }
    // Closing a moved task revokes its live leases.
    let closed =
        sharded_store.close_task("task-7", "engine", RevocationReason::TaskClosed, t(7)).await.unwrap();
    assert_eq!(closed.revoking.len(), 4, "three active and one pending (the rest ended already)");

    // And on to two shards; then a second run changes nothing.
    let two = sharded(base.clone(), 2);
    let after_close = paged_leases(&sharded_store).await;
    let moved = reshard(&two, 2).await.unwrap();
    assert_eq!((moved.from, moved.to), (3, 2));
    assert_eq!(paged_leases(&store(&two).await).await, after_close);
    assert_eq!(reshard(&two, 2).await.unwrap().tasks, 0);
    assert!(cluster.nodes().iter().all(|node| node.cli(&["keys", "writ:{moving:3.*"]).trim().is_empty()));

    // A move cut short at the very end (the count recorded, the mark not
    // yet removed) is finished by running it again.
    cluster.nodes()[0].cli(&["-c", "set", "writ:{moving}:resharding", "3:2"]);
    assert!(RedisStore::open(&two).await.is_err(), "refused while marked");
    assert_eq!(reshard(&two, 2).await.unwrap().tasks, 0);
    store(&two).await;

    // A move cut short keeps every replica out until it is finished.
    cluster.nodes()[0].cli(&["-c", "set", "writ:{moving}:resharding", "2:5"]);
    let refused = RedisStore::open(&two).await.err().expect("refused while moving");
    assert!(refused.to_string().contains("being moved"), "{refused}");
    let other = reshard(&sharded(base.clone(), 4), 4).await.expect_err("another count refused");
    assert!(other.to_string().contains("--shards 5"), "{other}");
}

/// Every lease of a store, in id order.
async fn paged_leases(store: &Arc<dyn LeaseStore>) -> Vec<Lease> {
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_leases(&LeaseFilter::default(), after, 50).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        listed.extend(page);
    }
    listed
}
