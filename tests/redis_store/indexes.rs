//! The indexes: claims never shared, order kept at any size, memory per
//! lease, limits that mean "all".

use super::*;

/// Two replicas claiming from one queue at once never both get a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_never_share_a_claim() {
    let server = RedisServer::start();
    let replicas =
        [store(&config(server.url(), "claims")).await, store(&config(server.url(), "claims")).await];
    replicas[0].create_task(task("t")).await.unwrap();
    let ids: Vec<Uuid> = (0..300).map(id).collect();
    for lease_id in &ids {
        replicas[0].insert_pending(lease(*lease_id, "t"), t(0)).await.unwrap();
    }
    let moved = replicas[1].close_task("t", "engine", RevocationReason::TaskClosed, t(1)).await.unwrap();
    assert_eq!(moved.revoking.len(), ids.len());

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = Arc::clone(&replicas[worker % 2]);
        workers.spawn(async move {
            let mut claimed = Vec::new();
            loop {
                let batch = store.claim_revocations(t(1), t(100), 7).await.unwrap();
                if batch.is_empty() {
                    return claimed;
                }
                claimed.extend(batch.iter().map(|lease| lease.id));
            }
        });
    }
    let mut claimed = Vec::new();
    while let Some(batch) = workers.join_next().await {
        claimed.extend(batch.unwrap());
    }
    claimed.sort();
    assert_eq!(claimed, ids, "every lease claimed exactly once");
    let outcomes: Vec<_> =
        ids.iter().map(|lease_id| RevocationOutcome::Done { lease_id: *lease_id, generation: 0 }).collect();
    replicas[1].finish_revocations(&outcomes, t(2)).await.unwrap();
    assert_eq!(replicas[0].next_due().await.unwrap(), None);
}

/// Measures what a lease costs in Redis, with realistic field sizes: the
/// growth of `used_memory` per lease (its record and every index entry) as
/// pending, active and revoked leases; then forgets them all (retention
/// passed) and checks that nothing of them is left. Prints the figures
/// (`--nocapture`) and holds them under a loose bound; the benchmark
/// (`cargo bench --bench scale -- memory`) measures at a million leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_per_lease() {
    const LEASES: u128 = 8000;
    let server = RedisServer::start();
    // Some calls below handle every lease at once.
    let patient = RedisConfig {
        response_timeout: Duration::from_secs(30),
        operation_timeout: Duration::from_secs(30),
        ..config(server.url(), "memory")
    };
    let store = store(&patient).await;
    let mut connection = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    let mut used_memory = || -> i64 {
        let info: String = redis::cmd("INFO").arg("memory").query(&mut connection).unwrap();
        info.lines().find_map(|line| line.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
    };
    let task_id = |n: u128| format!("task-{}", Uuid::from_u128(n / 4));
    let base = t(0) + TimeDelta::nanoseconds(123_456_789);
    // Nonce, a 48-byte handle and the tag.
    let handle = SealedHandle { key_id: "k-2026-01".into(), sealed: vec![7; 12 + 48 + 16] };
    let realistic = |n: u128| Lease {
        id: id(n),
        agent: format!("agent-payments-reconciler-{:02}", n % 20),
        task_id: task_id(n),
        provider: "postgres".into(),
        role: "readonly-analytics".into(),
        scopes: vec!["select:orders".into(), "select:customers".into()],
        tool: "sql-query".into(),
        state: LeaseState::Pending,
        created_at: base,
        issued_at: None,
        expires_at: base + TimeDelta::seconds(900),
        handle: handle.clone(),
        revocation: None,
    };
    for n in (0..LEASES).step_by(4) {
        store.create_task(task(&task_id(n))).await.unwrap();
    }
    let keys_before = server.cli(&["dbsize"]);
    let before = used_memory();
    for n in 0..LEASES {
        store.insert_pending(realistic(n), base).await.unwrap();
    }
    let pending = used_memory() - before;
    for n in 0..LEASES {
        let expires_at = base + TimeDelta::seconds(900) + TimeDelta::milliseconds(n as i64);
        store.activate(id(n), expires_at, handle.clone(), base + TimeDelta::seconds(1)).await.unwrap();
    }
    let active = used_memory() - before;
    print_memory_by_kind(&server);
    let ids: Vec<Uuid> = (0..LEASES).map(id).collect();
    let now = base + TimeDelta::seconds(2);
    for chunk in ids.chunks(500) {
        store.request_revocation(chunk, RevocationReason::Released, now).await.unwrap();
    }
    let started = Instant::now();
    let claimed = store.claim_revocations(now, now + TimeDelta::seconds(60), ids.len()).await.unwrap();
    eprintln!("claiming {LEASES} at once took {:?}", started.elapsed());
    assert_eq!(claimed.len(), ids.len());
    let outcomes: Vec<_> =
        ids.iter().map(|lease_id| RevocationOutcome::Done { lease_id: *lease_id, generation: 0 }).collect();
    store.finish_revocations(&outcomes, now + TimeDelta::seconds(1)).await.unwrap();
    let revoked = used_memory() - before;
    for (what, bytes) in [("pending", pending), ("active", active), ("revoked", revoked)] {
        eprintln!("used_memory per {what} lease: {} B", bytes / LEASES as i64);
    }
    // A guard against regressions, not the target (see docs/performance.md).
    let per_lease = active / LEASES as i64;
    assert!(per_lease < 700, "an active lease costs {per_lease} B");

    // Retention passed: forgetting takes everything of the leases away.
    let later = now + TimeDelta::days(2);
    let mut forgotten = 0;
    loop {
        let swept = store.sweep(later, later, 1000).await.unwrap();
        assert!(swept.expired.is_empty() && swept.abandoned.is_empty());
        if swept.forgotten == 0 {
            break;
        }
        forgotten += swept.forgotten;
    }
    assert_eq!(forgotten, LEASES as usize, "every finished lease is forgotten once");
    assert_eq!(server.cli(&["dbsize"]), keys_before, "no key of a forgotten lease is left");
    eprintln!("used_memory left per forgotten lease: {} B", (used_memory() - before) / LEASES as i64);
    assert!(store.task_leases(&task_id(0)).await.unwrap().is_empty());
}

/// Prints `MEMORY USAGE` summed over each kind of key (the part of the
/// name after the namespace and before the next colon), and key counts.
fn print_memory_by_kind(server: &RedisServer) {
    let mut connection = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    let mut kinds = std::collections::BTreeMap::<String, (usize, i64)>::new();
    for key in keys {
        let usage: i64 =
            redis::cmd("MEMORY").arg("USAGE").arg(&key).arg("SAMPLES").arg(0).query(&mut connection).unwrap();
        let name = String::from_utf8_lossy(&key).into_owned();
        let kind = name.split(':').nth(2).unwrap_or("?").to_owned();
        let entry = kinds.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += usage;
    }
    for (kind, (count, bytes)) in kinds {
        eprintln!("{kind}: {count} keys, {bytes} B");
    }
}

/// "All of them" limits work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_limits_mean_all() {
    let server = RedisServer::start();
    let store = store(&config(server.url(), "limits")).await;
    store.create_task(Task { deadline: t(5), ..task("t") }).await.unwrap();
    store.insert_pending(lease(id(1), "t"), t(0)).await.unwrap();
    store.record_sighting("issuer", "subject", t(1)).await.unwrap();
    let all = writ::store::LeaseFilter::default();
    assert_eq!(store.list_leases(&all, None, usize::MAX).await.unwrap().len(), 1);
    assert_eq!(store.list_sightings(usize::MAX).await.unwrap().len(), 1);
    assert_eq!(store.overdue_tasks(t(5), usize::MAX).await.unwrap(), ["t"]);
    assert_eq!(store.sweep(t(6), t(6), usize::MAX).await.unwrap().abandoned, [id(1)]);
    assert_eq!(store.claim_revocations(t(6), t(60), usize::MAX).await.unwrap().len(), 1);
}

/// Indexes past one chunk (128 members) stay whole and in order when
/// leases arrive out of order, move between states and leave: listings,
/// paging, the sweep and claims see every lease once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_indexes_stay_in_order() {
    const LEASES: u128 = 1000;
    let server = RedisServer::start();
    let store = store(&config(server.url(), "chunks")).await;
    store.create_task(task("t")).await.unwrap();
    // A fixed permutation: ids and expiries both arrive out of order.
    let order: Vec<u128> = (0..LEASES).map(|n| (n * 617) % LEASES).collect();
    let expiry = |n: u128| t(1000) + TimeDelta::milliseconds(((n * 389) % LEASES) as i64);
    let handle = SealedHandle { key_id: "k".into(), sealed: vec![1; 40] };
    for n in &order {
        store.insert_pending(lease(id(*n), "t"), t(0)).await.unwrap();
    }
    for n in order.iter().rev() {
        store.activate(id(*n), expiry(*n), handle.clone(), t(1)).await.unwrap();
    }
    let mut all: Vec<Uuid> = (0..LEASES).map(id).collect();
    all.sort();
    let by_task = writ::store::LeaseFilter { task_id: Some("t".into()), ..Default::default() };
    assert_eq!(paged(&store, &by_task).await, all, "listed page by page, in id order, each once");

    // Half are revoked by request: the state indexes split them exactly.
    let released: Vec<Uuid> = order.iter().step_by(2).map(|n| id(*n)).collect();
    store.request_revocation(&released, RevocationReason::Released, t(2)).await.unwrap();
    let active = writ::store::LeaseFilter { state: Some(LeaseState::Active), ..Default::default() };
    let listed = store.list_leases(&active, None, usize::MAX).await.unwrap();
    let mut expected: Vec<Uuid> = order.iter().skip(1).step_by(2).map(|n| id(*n)).collect();
    expected.sort();
    assert_eq!(listed.iter().map(|lease| lease.id).collect::<Vec<_>>(), expected);

    // The sweep takes the rest in expiry order, a batch at a time.
    let mut swept = Vec::new();
    loop {
        let batch = store.sweep(t(2000), t(0), 64).await.unwrap().expired;
        if batch.is_empty() {
            break;
        }
        swept.extend(batch);
    }
    let mut by_expiry = expected.clone();
    by_expiry.sort_by_key(|lease_id| (expiry(lease_id.as_u128() - id(0).as_u128()), *lease_id));
    assert_eq!(swept, by_expiry, "expired in expiry order, each once");
    // The passing states' indexes are single sorted sets, however large.
    let revoking = writ::store::LeaseFilter { state: Some(LeaseState::Revoking), ..Default::default() };
    let listed = store.list_leases(&revoking, None, usize::MAX).await.unwrap();
    assert_eq!(listed.iter().map(|lease| lease.id).collect::<Vec<_>>(), all);
    assert_eq!(
        server.cli(&["exists", "writ:{chunks}:dir:queue", "writ:{chunks}:dir:state:revoking"]).trim(),
        "0"
    );
    let claimed = store.claim_revocations(t(2000), t(3000), usize::MAX).await.unwrap();
    // In due order: the released (due at 2 s) by id, then the expired.
    let mut released_in_order = released.clone();
    released_in_order.sort();
    let expected_claims: Vec<Uuid> = released_in_order.into_iter().chain(expected).collect();
    assert_eq!(claimed.iter().map(|lease| lease.id).collect::<Vec<_>>(), expected_claims);
    assert_eq!(store.task_leases("t").await.unwrap().len(), LEASES as usize);

    // All finished in one call, in id order: whole chunks appended at once.
    let outcomes: Vec<_> =
        all.iter().map(|id| RevocationOutcome::Done { lease_id: *id, generation: 0 }).collect();
    store.finish_revocations(&outcomes, t(2001)).await.unwrap();
    let revoked = writ::store::LeaseFilter { state: Some(LeaseState::Revoked), ..Default::default() };
    assert_eq!(paged(&store, &revoked).await, all, "revoked leases listed in id order, each once");
    let chunks: u64 = server.cli(&["zcard", "writ:{chunks}:dir:state:revoked"]).trim().parse().unwrap();
    assert_eq!(chunks, (LEASES as u64).div_ceil(128) - 1, "full chunks after the base");
    // Forgotten in completion order, every index entry with them.
    let mut forgotten = 0;
    loop {
        let swept = store.sweep(t(2001) + TimeDelta::days(2), t(0), 300).await.unwrap();
        if swept.forgotten == 0 {
            break;
        }
        forgotten += swept.forgotten;
    }
    assert_eq!(forgotten, LEASES as usize);
    assert_eq!(server.cli(&["keys", "writ:{chunks}:*chunk*"]).trim(), "", "no chunk is left");
}
