//! What finished is forgotten after its retention (leases, then closed
//! tasks), and a close cut short is finished by the sweep.

use super::*;

/// A finished lease stays readable for `finished_retention`, then a sweep
/// forgets it: gone from reads, listings and its task, and nothing else is
/// touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_leases_are_forgotten_after_the_retention() {
    let server = RedisServer::start();
    let retention = Duration::from_secs(3600);
    let store =
        store(&RedisConfig { finished_retention: retention, ..config(server.url(), "retention") }).await;
    store.create_task(task("t")).await.unwrap();
    let handle = SealedHandle { key_id: "k".into(), sealed: vec![1; 40] };
    for n in 1..=3 {
        store.insert_pending(lease(id(n), "t"), t(0)).await.unwrap();
        store.activate(id(n), t(100_000), handle.clone(), t(1)).await.unwrap();
    }
    store.request_revocation(&[id(1), id(2)], RevocationReason::Operator, t(10)).await.unwrap();
    store.claim_revocations(t(10), t(70), 10).await.unwrap();
    let outcomes = [
        RevocationOutcome::Done { lease_id: id(1), generation: 0 },
        RevocationOutcome::Retry {
            lease_id: id(2),
            generation: 0,
            next_attempt_at: t(20),
            error: "no".into(),
        },
    ];
    store.finish_revocations(&outcomes, t(20)).await.unwrap();
    let revoked = writ::store::LeaseFilter { state: Some(LeaseState::Revoked), ..Default::default() };

    let before = t(20) + TimeDelta::seconds(3599);
    assert_eq!(store.sweep(before, t(0), 10).await.unwrap().forgotten, 0, "not yet");
    assert_eq!(store.get_lease(id(1)).await.unwrap().unwrap().state, LeaseState::Revoked);
    assert_eq!(store.list_leases(&revoked, None, 10).await.unwrap().len(), 1);

    let after = t(20) + TimeDelta::seconds(3600);
    assert_eq!(store.sweep(after, t(0), 10).await.unwrap().forgotten, 1, "retention passed");
    assert_eq!(store.get_lease(id(1)).await.unwrap(), None);
    assert!(store.list_leases(&revoked, None, 10).await.unwrap().is_empty());
    let left: Vec<Uuid> = store.task_leases("t").await.unwrap().iter().map(|lease| lease.id).collect();
    assert_eq!(left, [id(2), id(3)], "the retrying and the active lease stay");
    assert_eq!(store.get_lease(id(2)).await.unwrap().unwrap().state, LeaseState::Revoking);
    assert_eq!(store.sweep(after, t(0), 10).await.unwrap().forgotten, 0, "forgotten once");
}

/// A closed task is forgotten once `finished_retention` has passed and no
/// lease of it is left; an open task, or a closed one whose lease is still
/// kept, is not. Its id can then be used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_tasks_are_forgotten_after_their_leases() {
    let server = RedisServer::start();
    let store = store(&config(server.url(), "tasks")).await;
    let day = TimeDelta::days(1); // the default retention
    for name in ["empty", "with-lease", "open"] {
        store.create_task(task(name)).await.unwrap();
    }
    store.insert_pending(lease(id(1), "with-lease"), t(0)).await.unwrap();
    let handle = SealedHandle { key_id: "k".into(), sealed: vec![1] };
    store.activate(id(1), t(100), handle, t(1)).await.unwrap();
    store.close_task("empty", "engine", RevocationReason::TaskClosed, t(10)).await.unwrap();
    store.close_task("with-lease", "engine", RevocationReason::TaskClosed, t(10)).await.unwrap();
    let claimed = store.claim_revocations(t(10), t(40), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    store
        .finish_revocations(&[RevocationOutcome::Done { lease_id: id(1), generation: 0 }], t(20))
        .await
        .unwrap();

    // The tasks' retention has passed, the lease's (from t(20)) not yet.
    let swept = store.sweep(t(15) + day, t(0), 100).await.unwrap();
    assert_eq!((swept.forgotten, swept.forgotten_tasks), (0, 1));
    assert!(store.get_task("empty").await.unwrap().is_none());
    assert!(store.get_task("with-lease").await.unwrap().is_some(), "its lease is still kept");
    // The lease goes; its task is looked at again a minute after the last look.
    let swept = store.sweep(t(25) + day, t(0), 100).await.unwrap();
    assert_eq!((swept.forgotten, swept.forgotten_tasks), (1, 0));
    let swept = store.sweep(t(74) + day, t(0), 100).await.unwrap();
    assert_eq!(swept.forgotten_tasks, 0, "not before the minute is up");
    let swept = store.sweep(t(76) + day, t(0), 100).await.unwrap();
    assert_eq!(swept.forgotten_tasks, 1);
    assert!(store.get_task("with-lease").await.unwrap().is_none());
    assert!(store.task_leases("with-lease").await.unwrap().is_empty());

    // Much later, the open task is still there, and nothing else is.
    let swept = store.sweep(t(0) + day * 30, t(0), 100).await.unwrap();
    assert_eq!(swept.forgotten_tasks, 0);
    assert!(store.get_task("open").await.unwrap().is_some());
    let mut keys: Vec<String> = server.cli(&["keys", "writ:{tasks}:*"]).lines().map(str::to_owned).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "writ:{tasks}:deadlines",
            "writ:{tasks}:health",
            "writ:{tasks}:layout",
            "writ:{tasks}:shards",
            "writ:{tasks}:task:open"
        ]
    );
    store.create_task(task("empty")).await.expect("a forgotten task's id can be used again");
}

/// A close moves its task's leases to revoking a batch per script call. A
/// close stopped half-way (the closer crashed) leaves the task closed, so
/// nothing more is issued under it, and the next sweep moves the rest, with
/// the reason the close was given. Closing again also finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_stopped_half_way_is_finished_by_the_sweep() {
    let server = RedisServer::start();
    let redis = RedisStore::open(&config(server.url(), "closing")).await.unwrap();
    let handle = SealedHandle { key_id: "k".into(), sealed: vec![1; 40] };
    for task_id in ["t", "u"] {
        redis.create_task(task(task_id)).await.unwrap();
        for n in 0..7 {
            let lease_id = id(n + if task_id == "t" { 0 } else { 100 });
            redis.insert_pending(lease(lease_id, task_id), t(0)).await.unwrap();
            if n % 2 == 0 {
                redis.activate(lease_id, t(1000), handle.clone(), t(1)).await.unwrap();
            }
        }
    }
    let closure = br#"{"at":"2026-01-01T00:00:02Z","by":"wf","reason":"task_closed"}"#;
    let scope = Scope::Task("t".into());
    let first =
        redis.close_step_of(&scope, closure, RevocationReason::TaskClosed, t(2), 3).await.unwrap().unwrap();
    assert!(!first.done);
    assert!(first.ended_now);
    assert_eq!(first.revoking, vec![id(0), id(1), id(2)]);
    assert_eq!(first.task.unwrap().state, TaskState::Closed);
    // Closed for issuing at once, though four leases are still live.
    let late = redis.insert_pending(lease(id(50), "t"), t(3)).await.unwrap_err();
    assert!(matches!(late, StoreError::TaskClosed(_)), "{late:?}");
    // A pending lease the close has not reached is not activated: it goes
    // to revoking with the close's reason; an active one is not extended.
    let err = redis.activate(id(5), t(1000), handle.clone(), t(3)).await.unwrap_err();
    assert_eq!(err, StoreError::TaskClosed("t".into()));
    let refused = redis.get_lease(id(5)).await.unwrap().unwrap();
    assert_eq!(refused.state, LeaseState::Revoking);
    assert_eq!(refused.revocation.unwrap().reason, RevocationReason::TaskClosed);
    let err = redis.extend(id(6), t(2000), t(3)).await.unwrap_err();
    assert_eq!(err, StoreError::TaskClosed("t".into()));
    assert_eq!(redis.get_lease(id(6)).await.unwrap().unwrap().expires_at, t(1000), "not extended");
    let live = |leases: Vec<Lease>| {
        leases.iter().filter(|lease| !lease.state.is_final() && lease.state != LeaseState::Revoking).count()
    };
    assert_eq!(live(redis.task_leases("t").await.unwrap()), 3);

    // The sweep (the closer is gone) finishes it: the rest, queued for the
    // first close's reason, even though a sweep's own reason would differ.
    let swept = redis.sweep(t(4), t(0), 100).await.unwrap();
    let named =
        |n: u128, task_id: &str| SweptLease { id: id(n), agent: "agent".into(), task_id: task_id.into() };
    let rest = [3, 4, 6].map(|n| (named(n, "t"), RevocationReason::TaskClosed));
    assert_eq!(swept.closed, rest.to_vec(), "with the agent and task the evidence names");
    for lease in redis.task_leases("t").await.unwrap() {
        assert_eq!(lease.state, LeaseState::Revoking, "{}", lease.id);
        assert_eq!(lease.revocation.unwrap().reason, RevocationReason::TaskClosed);
    }
    assert!(redis.sweep(t(5), t(0), 100).await.unwrap().closed.is_empty(), "finished once");
    assert_eq!(live(redis.task_leases("u").await.unwrap()), 7, "another task is untouched");

    // A close stopped half-way and then closed again by its closer is
    // finished by that close, which reports what it moved.
    let scope = Scope::Task("u".into());
    redis.close_step_of(&scope, closure, RevocationReason::DeadlinePassed, t(6), 2).await.unwrap();
    let again = redis.close_task("u", "wf", RevocationReason::TaskClosed, t(7)).await.unwrap();
    assert_eq!(again.revoking, (102..107).map(id).collect::<Vec<_>>());
    for lease in redis.task_leases("u").await.unwrap() {
        assert_eq!(lease.revocation.unwrap().reason, RevocationReason::DeadlinePassed, "the first reason");
    }
    assert!(
        redis.close_task("u", "wf", RevocationReason::TaskClosed, t(8)).await.unwrap().revoking.is_empty()
    );

    // A close under way that cannot be finished (here: its task is gone)
    // is left for later; it holds up neither the others nor the rest of
    // the sweep.
    server.cli(&["hset", "writ:{closing}:closing", "ghost", "0:"]);
    redis.create_task(task("v")).await.unwrap();
    redis.insert_pending(lease(id(200), "v"), t(8)).await.unwrap();
    redis.activate(id(200), t(9), handle.clone(), t(8)).await.unwrap();
    let swept = redis.sweep(t(10), t(0), 100).await.expect("the sweep goes on");
    assert_eq!(swept.expired, [id(200)]);
    assert_eq!(server.cli(&["hexists", "writ:{closing}:closing", "ghost"]).trim(), "1", "left for later");
}

/// A suspension moves the agent's leases a batch per call too: from the
/// first batch nothing is recorded, activated or extended for the agent,
/// though some of its leases are still live; the sweep finishes it; and a
/// resume while it is unfinished finishes it first, so a lease issued after
/// the resume is not taken by the rest of the old suspension.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_stopped_half_way_is_finished_before_anything_else() {
    let server = RedisServer::start();
    let redis = RedisStore::open(&config(server.url(), "suspending")).await.unwrap();
    let handle = SealedHandle { key_id: "k".into(), sealed: vec![1; 40] };
    for task_id in ["t", "u"] {
        redis.create_task(task(task_id)).await.unwrap();
    }
    for n in 0..6u128 {
        let task_id = if n.is_multiple_of(2) { "t" } else { "u" };
        redis.insert_pending(lease(id(n), task_id), t(0)).await.unwrap();
        if n < 4 {
            redis.activate(id(n), t(1000), handle.clone(), t(1)).await.unwrap();
        }
    }
    let scope = Scope::Agent("agent".into());
    let status = br#"{"agent":"agent","state":"suspended","changed_at":"2026-01-01T00:00:02Z","changed_by":"op","reason":"x"}"#;
    let first = redis
        .close_step_of(&scope, status, RevocationReason::AgentSuspended, t(2), 2)
        .await
        .unwrap()
        .unwrap();
    assert!(!first.done);
    assert!(first.ended_now);
    assert_eq!(first.revoking, vec![id(0), id(1)]);
    assert_eq!(redis.agent_status("agent").await.unwrap().unwrap().state, AgentState::Suspended);

    let late = redis.insert_pending(lease(id(50), "t"), t(3)).await.unwrap_err();
    assert_eq!(late, StoreError::AgentSuspended("agent".into()));
    let err = redis.extend(id(2), t(2000), t(3)).await.unwrap_err();
    assert_eq!(err, StoreError::AgentSuspended("agent".into()));
    let err = redis.activate(id(4), t(1000), handle.clone(), t(3)).await.unwrap_err();
    assert_eq!(err, StoreError::AgentSuspended("agent".into()));
    let refused = redis.get_lease(id(4)).await.unwrap().unwrap();
    assert_eq!(refused.state, LeaseState::Revoking);
    assert_eq!(refused.revocation.unwrap().reason, RevocationReason::AgentSuspended);

    // The sweep finishes it, with the suspension's reason.
    let swept = redis.sweep(t(4), t(0), 100).await.unwrap();
    let named = |n: u128| {
        let task_id = if n.is_multiple_of(2) { "t" } else { "u" };
        (
            SweptLease { id: id(n), agent: "agent".into(), task_id: task_id.into() },
            RevocationReason::AgentSuspended,
        )
    };
    assert_eq!(swept.closed, [2, 3, 5].map(named).to_vec(), "with the agent and task of each lease");
    assert!(redis.sweep(t(5), t(0), 100).await.unwrap().closed.is_empty(), "finished once");

    // Suspended again, cut short again, then resumed: the resume finishes
    // the suspension first.
    redis.resume_agent("agent", "op", "", t(6)).await.unwrap();
    redis.insert_pending(lease(id(60), "t"), t(7)).await.unwrap();
    redis.insert_pending(lease(id(61), "u"), t(7)).await.unwrap();
    let second = redis
        .close_step_of(&scope, status, RevocationReason::AgentSuspended, t(8), 1)
        .await
        .unwrap()
        .unwrap();
    assert!(!second.done);
    redis.resume_agent("agent", "op", "", t(9)).await.unwrap();
    for n in [60, 61] {
        assert_eq!(redis.get_lease(id(n)).await.unwrap().unwrap().state, LeaseState::Revoking, "lease {n}");
    }
    redis.insert_pending(lease(id(70), "t"), t(10)).await.unwrap();
    assert!(redis.sweep(t(11), t(0), 100).await.unwrap().closed.is_empty());
    // Going on with a close that is no longer under way (a sweep that read
    // `closing-agents` before the resume) never suspends the agent again.
    let stale = redis.close_step_of(&scope, b"", RevocationReason::AgentSuspended, t(12), 10).await.unwrap();
    assert!(stale.is_none(), "{stale:?}");
    assert_eq!(redis.agent_status("agent").await.unwrap().unwrap().state, AgentState::Active);
    redis.insert_pending(lease(id(71), "t"), t(13)).await.expect("still active");
    assert_eq!(redis.get_lease(id(70)).await.unwrap().unwrap().state, LeaseState::Pending, "not taken");
}

/// A provider's suspension walks every active lease in batches: one cut
/// short (the caller crashed) is finished by the sweep, and leases of
/// other providers met on the way are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_suspension_stopped_half_way_is_finished_by_the_sweep() {
    let server = RedisServer::start();
    let redis = RedisStore::open(&config(server.url(), "provider-suspending")).await.unwrap();
    let handle = SealedHandle { key_id: "k".into(), sealed: vec![1; 40] };
    redis.create_task(task("t")).await.unwrap();
    for n in 0..8u128 {
        let provider = if n % 2 == 0 { "db" } else { "other" };
        redis.insert_pending(Lease { provider: provider.into(), ..lease(id(n), "t") }, t(0)).await.unwrap();
        if n < 6 {
            redis.activate(id(n), t(1000), handle.clone(), t(1)).await.unwrap();
        }
    }
    let scope = Scope::Provider("db".into());
    let status = br#"{"provider":"db","state":"suspended","changed_at":"2026-01-01T00:00:02Z","changed_by":"op","reason":"x"}"#;
    let first = redis
        .close_step_of(&scope, status, RevocationReason::ProviderSuspended, t(2), 2)
        .await
        .unwrap()
        .unwrap();
    assert!(!first.done && first.ended_now);
    // The pending lease of the provider (6), then the first two active ones
    // walked (0 of db, 1 of another provider).
    assert_eq!(first.revoking.iter().map(|lease| lease.id).collect::<Vec<_>>(), [id(6), id(0)]);
    let err = redis.extend(id(2), t(2000), t(3)).await.unwrap_err();
    assert_eq!(err, StoreError::ProviderSuspended("db".into()), "refused before its batch is reached");
    redis.extend(id(3), t(2000), t(3)).await.expect("another provider's lease is renewed");

    let swept = redis.sweep(t(4), t(0), 100).await.unwrap();
    let moved: Vec<Uuid> = swept.closed.iter().map(|(lease, _)| lease.id).collect();
    assert_eq!(moved, [id(2), id(4)], "the rest of the provider's active leases");
    assert!(swept.closed.iter().all(|(_, reason)| *reason == RevocationReason::ProviderSuspended));
    for n in [1, 3, 5, 7] {
        let state = redis.get_lease(id(n)).await.unwrap().unwrap().state;
        assert!(
            matches!(state, LeaseState::Active | LeaseState::Pending),
            "lease {n} of another provider: {state:?}"
        );
    }
    assert!(redis.sweep(t(5), t(0), 100).await.unwrap().closed.is_empty(), "finished once");
    redis.resume_provider("db", "op", "fixed", t(6)).await.unwrap();
    redis.insert_pending(Lease { provider: "db".into(), ..lease(id(20), "t") }, t(7)).await.expect("resumed");
}

/// The sweep leaves a close alone while its caller is still moving it
/// (the caller counts what it moves, and reports it), and takes over one
/// whose caller went quiet for a second: then it finishes it whole, over
/// as many batches as it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_takes_over_only_a_close_whose_caller_went_quiet() {
    let server = RedisServer::start();
    let redis = RedisStore::open(&config(server.url(), "takeover")).await.unwrap();
    redis.create_task(task("t")).await.unwrap();
    // More than two of the store's batches (1,000 leases each).
    let leases = 2_345u128;
    for n in 0..leases {
        redis.insert_pending(lease(id(n), "t"), t(0)).await.unwrap();
    }
    let closure = br#"{"at":"2026-01-01T00:00:02Z","by":"wf","reason":"task_closed"}"#;
    let scope = Scope::Task("t".into());
    let first =
        redis.close_step_of(&scope, closure, RevocationReason::TaskClosed, t(2), 5).await.unwrap().unwrap();
    assert!(!first.done);

    // Within a second of the caller's last batch: left to the caller.
    let soon = t(2) + TimeDelta::milliseconds(900);
    assert!(redis.sweep(soon, t(0), 100).await.unwrap().closed.is_empty(), "the caller is moving it");
    let second =
        redis.close_step_of(&scope, b"", RevocationReason::TaskClosed, soon, 5).await.unwrap().unwrap();
    assert_eq!(second.revoking.len(), 5, "the caller goes on from where it was");

    // The caller went quiet: a second later the sweep moves all the rest.
    let swept = redis.sweep(soon + TimeDelta::milliseconds(1000), t(0), 100).await.unwrap();
    assert_eq!(swept.closed.len() as u128, leases - 10, "every lease left, in one sweep");
    assert!(swept.closed.iter().all(|(_, reason)| *reason == RevocationReason::TaskClosed));
    assert_eq!(server.cli(&["hexists", "writ:{takeover}:closing", "t"]).trim(), "0", "finished");
    assert_eq!(server.cli(&["exists", "writ:{takeover}:closing-touched"]).trim(), "0", "nothing left behind");
}
