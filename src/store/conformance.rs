//! The behaviour every [`LeaseStore`] must show, as one suite that each
//! backend's tests run: `conformance::run(|| async { fresh store }).await`.
//!
//! Every check gets a fresh, empty store and panics with what it expected.
//! Times are fixed (from 2026-01-01T00:00:00Z) and lease ids are built from
//! a counter, so runs are repeatable and nothing reads the clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use uuid::Uuid;

use super::{LeaseFilter, LeaseStore, StoreError, Swept};
use crate::model::{
    Lease, LeaseState, RevocationReason, SealedHandle, Task, TaskClosure, TaskContext, TaskState,
};

mod approvals;
mod registry;
mod revocation;
mod scopes;

type Store = Arc<dyn LeaseStore>;

/// Runs every check, each on a store from `make_store`.
pub async fn run<F, Fut>(make_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn LeaseStore>>,
{
    tasks(make_store().await).await;
    insert_pending_refusals(make_store().await).await;
    activate(make_store().await).await;
    activate_after_close(make_store().await).await;
    extend(make_store().await).await;
    close_task(make_store().await).await;
    scopes::suspend_agent(make_store().await).await;
    scopes::resume_agent(make_store().await).await;
    scopes::nothing_under_a_closed_scope(make_store().await).await;
    scopes::suspend_provider(make_store().await).await;
    scopes::no_activation_from_a_suspended_provider(make_store().await).await;
    revocation::request_revocation(make_store().await).await;
    revocation::sweep(make_store().await).await;
    revocation::sweep_limit(make_store().await).await;
    revocation::claim_revocations(make_store().await).await;
    revocation::finish_revocations(make_store().await).await;
    revocation::next_due(make_store().await).await;
    revocation::backlog(make_store().await).await;
    overdue_tasks(make_store().await).await;
    task_leases(make_store().await).await;
    list_leases(make_store().await).await;
    sightings(make_store().await).await;
    concurrent_inserts(make_store().await).await;
    approvals::create_and_list(make_store().await).await;
    approvals::create_refusals(make_store().await).await;
    approvals::votes(make_store().await).await;
    approvals::denial(make_store().await).await;
    approvals::collect_once(make_store().await).await;
    approvals::deadlines(make_store().await).await;
    approvals::scope_ends_cancel(make_store().await).await;
    registry::register_update_retire(make_store().await).await;
    registry::list_in_name_order(make_store().await).await;
    registry::concurrent_updates(make_store().await).await;
    registry::a_retired_agent_is_not_resumed(make_store().await).await;
    make_store().await.health().await.expect("health of a fresh store");
}

/// `secs` seconds after 2026-01-01T00:00:00Z.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

/// A v7 lease id; ids sort in `n` order.
fn lease_id(n: u16) -> Uuid {
    let millis = u64::try_from(t(0).timestamp_millis()).unwrap() + u64::from(n);
    let [high, low] = n.to_be_bytes();
    uuid::Builder::from_unix_timestamp_millis(millis, &[high, low, 0, 0, 0, 0, 0, 0, 0, 1]).into_uuid()
}

fn handle(kind: &str, n: u16) -> SealedHandle {
    SealedHandle { key_id: "key-1".into(), sealed: format!("{kind}-{n}").into_bytes() }
}

fn task(id: &str, deadline: DateTime<Utc>) -> Task {
    Task {
        id: id.into(),
        agent: "agent-1".into(),
        context: TaskContext { purpose: "conformance".into(), ..TaskContext::default() },
        state: TaskState::Open,
        created_at: t(0),
        created_by: "engine".into(),
        deadline,
        closed: None,
    }
}

/// A pending lease `n` of `task_id`, created at `created_at`.
fn lease(n: u16, task_id: &str, created_at: DateTime<Utc>) -> Lease {
    Lease {
        id: lease_id(n),
        agent: "agent-1".into(),
        task_id: task_id.into(),
        provider: "test".into(),
        role: "reader".into(),
        scopes: vec!["read".into()],
        tool: "query".into(),
        state: LeaseState::Pending,
        created_at,
        issued_at: None,
        expires_at: created_at + TimeDelta::seconds(600),
        handle: handle("intent", n),
        revocation: None,
    }
}

async fn open_task(store: &Store, id: &str) {
    store.create_task(task(id, t(100_000))).await.expect("create task");
}

async fn pending(store: &Store, n: u16, task_id: &str, created_at: DateTime<Utc>) -> Uuid {
    store.insert_pending(lease(n, task_id, created_at), created_at).await.expect("insert pending");
    lease_id(n)
}

/// An active lease created at `t(0)` expiring at `expires_at`.
async fn active(store: &Store, n: u16, task_id: &str, expires_at: DateTime<Utc>) -> Uuid {
    let id = pending(store, n, task_id, t(0)).await;
    store.activate(id, expires_at, handle("minted", n), t(0)).await.expect("activate");
    id
}

async fn lease_of(store: &Store, id: Uuid) -> Lease {
    store.get_lease(id).await.expect("get lease").unwrap_or_else(|| panic!("lease {id} missing"))
}

async fn assert_revoking(store: &Store, id: Uuid, reason: RevocationReason, at: DateTime<Utc>) {
    let lease = lease_of(store, id).await;
    assert_eq!(lease.state, LeaseState::Revoking, "lease {id} should be revoking");
    let revocation = lease.revocation.expect("a revoking lease has a revocation");
    assert_eq!(revocation.reason, reason, "revocation reason of {id}");
    assert_eq!(revocation.requested_at, at, "revocation of {id} requested at");
    assert_eq!(revocation.next_attempt_at, at, "revocation of {id} due at once");
    assert_eq!(revocation.attempts, 0, "no attempt yet on {id}");
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

fn ids(leases: &[Lease]) -> Vec<Uuid> {
    leases.iter().map(|lease| lease.id).collect()
}

async fn tasks(store: Store) {
    let original = task("t", t(1000));
    store.create_task(original.clone()).await.expect("create task");
    assert_eq!(store.get_task("t").await.unwrap(), Some(original.clone()), "task reads back");
    let mut other = task("t", t(2000));
    other.agent = "agent-2".into();
    assert_eq!(store.create_task(other).await.unwrap_err(), StoreError::TaskExists("t".into()));
    assert_eq!(store.get_task("t").await.unwrap(), Some(original), "duplicate create changes nothing");
    assert_eq!(store.get_task("missing").await.unwrap(), None);
}

async fn insert_pending_refusals(store: Store) {
    let err = store.insert_pending(lease(1, "missing", t(0)), t(0)).await.unwrap_err();
    assert_eq!(err, StoreError::TaskNotFound("missing".into()));
    assert_eq!(store.get_lease(lease_id(1)).await.unwrap(), None, "refused lease not written");

    open_task(&store, "closed").await;
    store.close_task("closed", "engine", RevocationReason::TaskClosed, t(1)).await.unwrap();
    let err = store.insert_pending(lease(2, "closed", t(2)), t(2)).await.unwrap_err();
    assert_eq!(err, StoreError::TaskClosed("closed".into()));
    assert_eq!(store.get_lease(lease_id(2)).await.unwrap(), None, "refused lease not written");
    assert!(store.task_leases("closed").await.unwrap().is_empty());

    store.create_task(task("due", t(100))).await.unwrap();
    let err = store.insert_pending(lease(3, "due", t(100)), t(100)).await.unwrap_err();
    assert_eq!(err, StoreError::TaskClosed("due".into()), "deadline == now counts as closed");
    assert_eq!(store.get_lease(lease_id(3)).await.unwrap(), None, "refused lease not written");

    store.insert_pending(lease(4, "due", t(99)), t(99)).await.expect("insert before the deadline");
    assert_eq!(lease_of(&store, lease_id(4)).await, lease(4, "due", t(99)), "pending lease reads back");
    let mut again = lease(4, "due", t(99));
    again.role = "admin".into();
    assert!(store.insert_pending(again, t(99)).await.is_err(), "a lease id is taken once");
    assert_eq!(lease_of(&store, lease_id(4)).await.role, "reader", "duplicate insert changes nothing");
    let all = store.list_leases(&LeaseFilter::default(), None, 100).await.unwrap();
    assert_eq!(ids(&all), vec![lease_id(4)], "only the accepted lease is stored");
}

async fn activate(store: Store) {
    open_task(&store, "t").await;
    let id = pending(&store, 1, "t", t(0)).await;
    let activated = store.activate(id, t(900), handle("minted", 1), t(5)).await.expect("activate");
    assert_eq!(activated.state, LeaseState::Active);
    assert_eq!(activated.issued_at, Some(t(5)));
    assert_eq!(activated.expires_at, t(900));
    assert_eq!(activated.handle, handle("minted", 1));
    assert_eq!(lease_of(&store, id).await, activated, "activation is stored");

    let err = store.activate(id, t(950), handle("again", 1), t(6)).await.unwrap_err();
    assert_eq!(err, StoreError::LeaseState { id, state: LeaseState::Active });
    assert_eq!(lease_of(&store, id).await, activated, "a second activation changes nothing");
    let unknown = lease_id(99);
    let err = store.activate(unknown, t(900), handle("minted", 99), t(5)).await.unwrap_err();
    assert_eq!(err, StoreError::LeaseNotFound(unknown));
}

async fn activate_after_close(store: Store) {
    open_task(&store, "t").await;
    let id = pending(&store, 1, "t", t(0)).await;
    let closed = store.close_task("t", "engine", RevocationReason::TaskClosed, t(10)).await.unwrap();
    assert_eq!(closed.revoking, vec![id]);
    let err = store.activate(id, t(900), handle("minted", 1), t(20)).await.unwrap_err();
    assert_eq!(err, StoreError::LeaseState { id, state: LeaseState::Revoking });
    let stored = lease_of(&store, id).await;
    assert_eq!(stored.state, LeaseState::Revoking, "still revoking after a late activation");
    assert_eq!(stored.handle, handle("minted", 1), "the minted handle is kept for the revocation");
    let claimed = store.claim_revocations(t(20), t(80), 10).await.unwrap();
    assert_eq!(ids(&claimed), vec![id]);
    assert_eq!(claimed[0].handle, handle("minted", 1), "the revocation sees the minted handle");

    // The revocation may even finish before the mint returns; a late
    // activation then queues the lease again with the real handle.
    open_task(&store, "t2").await;
    let late = pending(&store, 2, "t2", t(0)).await;
    store.request_revocation(&[late], RevocationReason::TaskClosed, t(30)).await.unwrap();
    store.claim_revocations(t(30), t(90), 10).await.unwrap();
    store
        .finish_revocations(&[super::RevocationOutcome::Done { lease_id: late, generation: 0 }], t(31))
        .await
        .unwrap();
    assert_eq!(lease_of(&store, late).await.state, LeaseState::Revoked);
    let err = store.activate(late, t(900), handle("minted", 2), t(32)).await.unwrap_err();
    assert_eq!(err, StoreError::LeaseState { id: late, state: LeaseState::Revoked });
    let requeued = lease_of(&store, late).await;
    assert_eq!(requeued.state, LeaseState::Revoking, "revoked again with the real handle");
    let claimed = store.claim_revocations(t(32), t(90), 10).await.unwrap();
    assert_eq!(ids(&claimed), vec![late]);
    assert_eq!(claimed[0].handle, handle("minted", 2));

    // Or be under way when the mint returns: the attempt with the intent
    // handle reports done, but it is stale, and the lease is revoked again
    // with the real handle.
    open_task(&store, "t3").await;
    let racing = pending(&store, 3, "t3", t(0)).await;
    store.request_revocation(&[racing], RevocationReason::TaskClosed, t(40)).await.unwrap();
    let in_flight = store.claim_revocations(t(40), t(100), 10).await.unwrap();
    let generation = in_flight[0].revocation.as_ref().unwrap().generation;
    assert_eq!(in_flight[0].handle, lease(3, "t3", t(0)).handle, "the attempt uses the intent handle");
    store.activate(racing, t(900), handle("minted", 3), t(41)).await.unwrap_err();
    let stale = [super::RevocationOutcome::Done { lease_id: racing, generation }];
    store.finish_revocations(&stale, t(42)).await.unwrap();
    let still = lease_of(&store, racing).await;
    assert_eq!(still.state, LeaseState::Revoking, "a stale outcome does not finish the revocation");
    let again = store.claim_revocations(t(42), t(100), 10).await.unwrap();
    assert_eq!(ids(&again), vec![racing], "due again at once");
    assert_eq!(again[0].handle, handle("minted", 3));
    let fresh = again[0].revocation.as_ref().unwrap().generation;
    assert_ne!(fresh, generation);
    let done = [super::RevocationOutcome::Done { lease_id: racing, generation: fresh }];
    store.finish_revocations(&done, t(43)).await.unwrap();
    assert_eq!(lease_of(&store, racing).await.state, LeaseState::Revoked);
}

async fn extend(store: Store) {
    open_task(&store, "t").await;
    let id = active(&store, 1, "t", t(100)).await;
    let extended = store.extend(id, t(500), t(50)).await.expect("extend an active lease");
    assert_eq!(extended.expires_at, t(500));
    assert_eq!(lease_of(&store, id).await, extended, "extension is stored");
    let swept = store.sweep(t(100), t(0), 10).await.unwrap();
    assert_eq!(swept, Swept::default(), "the old expiry no longer counts");
    let swept = store.sweep(t(500), t(0), 10).await.unwrap();
    assert_eq!(swept.expired, vec![id], "the new expiry counts");

    let err = store.extend(id, t(900), t(500)).await.unwrap_err();
    assert_eq!(err, StoreError::LeaseState { id, state: LeaseState::Revoking });
    let waiting = pending(&store, 2, "t", t(0)).await;
    let err = store.extend(waiting, t(900), t(500)).await.unwrap_err();
    assert_eq!(err, StoreError::LeaseState { id: waiting, state: LeaseState::Pending });
    assert_eq!(lease_of(&store, waiting).await, lease(2, "t", t(0)), "refused extend changes nothing");
    let unknown = lease_id(99);
    assert_eq!(store.extend(unknown, t(900), t(500)).await.unwrap_err(), StoreError::LeaseNotFound(unknown));
}

async fn close_task(store: Store) {
    open_task(&store, "t").await;
    let waiting = pending(&store, 1, "t", t(0)).await;
    let live = active(&store, 2, "t", t(1000)).await;
    let revoked = active(&store, 3, "t", t(1000)).await;
    store.request_revocation(&[revoked], RevocationReason::Operator, t(5)).await.unwrap();
    open_task(&store, "other").await;
    let bystander = active(&store, 4, "other", t(1000)).await;

    let closed = store.close_task("t", "engine-1", RevocationReason::TaskClosed, t(10)).await.unwrap();
    assert_eq!(sorted(closed.revoking), vec![waiting, live], "pending and active leases are revoked");
    let closure = TaskClosure { at: t(10), by: "engine-1".into(), reason: RevocationReason::TaskClosed };
    assert_eq!(closed.task.state, TaskState::Closed);
    assert_eq!(closed.task.closed, Some(closure.clone()));
    assert_eq!(store.get_task("t").await.unwrap(), Some(closed.task.clone()), "closure is stored");
    assert_revoking(&store, waiting, RevocationReason::TaskClosed, t(10)).await;
    assert_revoking(&store, live, RevocationReason::TaskClosed, t(10)).await;
    assert_revoking(&store, revoked, RevocationReason::Operator, t(5)).await;
    assert_eq!(lease_of(&store, bystander).await.state, LeaseState::Active, "other tasks untouched");

    let again = store.close_task("t", "engine-2", RevocationReason::DeadlinePassed, t(20)).await.unwrap();
    assert!(again.revoking.is_empty(), "a second close revokes nothing");
    assert_eq!(again.task.closed, Some(closure), "a second close keeps the first closure");
    let err = store.close_task("missing", "engine", RevocationReason::TaskClosed, t(10)).await;
    assert_eq!(err.unwrap_err(), StoreError::TaskNotFound("missing".into()));
}

async fn overdue_tasks(store: Store) {
    for (id, deadline) in [("c", 30), ("a", 10), ("b", 20), ("d", 15)] {
        store.create_task(task(id, t(deadline))).await.unwrap();
    }
    store.close_task("d", "engine", RevocationReason::TaskClosed, t(1)).await.unwrap();
    assert!(store.overdue_tasks(t(9), 10).await.unwrap().is_empty());
    assert_eq!(store.overdue_tasks(t(20), 10).await.unwrap(), ["a", "b"], "deadline == now is overdue");
    assert_eq!(store.overdue_tasks(t(20), 1).await.unwrap(), ["a"], "the oldest first, up to the limit");
    store.close_task("a", "engine", RevocationReason::DeadlinePassed, t(20)).await.unwrap();
    assert_eq!(store.overdue_tasks(t(60), 10).await.unwrap(), ["b", "c"], "closed tasks are not overdue");
}

async fn task_leases(store: Store) {
    open_task(&store, "t").await;
    open_task(&store, "other").await;
    for n in [3, 1, 2] {
        pending(&store, n, "t", t(i64::from(n))).await;
    }
    pending(&store, 4, "other", t(0)).await;
    let leases = store.task_leases("t").await.unwrap();
    assert_eq!(ids(&leases), vec![lease_id(1), lease_id(2), lease_id(3)], "a task's leases, oldest first");
    assert_eq!(leases[0], lease(1, "t", t(1)));
    assert!(store.task_leases("missing").await.unwrap().is_empty());
}

async fn list_leases(store: Store) {
    for id in ["t1", "t2"] {
        open_task(&store, id).await;
    }
    let mut made = Vec::new();
    for (n, agent, task_id) in
        [(1, "alice", "t1"), (2, "bob", "t1"), (3, "alice", "t2"), (4, "alice", "t1"), (5, "bob", "t2")]
    {
        let mut lease = lease(n, task_id, t(0));
        lease.agent = agent.into();
        store.insert_pending(lease, t(0)).await.unwrap();
        made.push(lease_id(n));
    }
    for n in [0, 3, 4] {
        store.activate(made[n], t(900), handle("minted", 0), t(1)).await.unwrap();
    }
    store.request_revocation(&[made[3]], RevocationReason::Operator, t(2)).await.unwrap();

    let filter = |agent: Option<&str>, task_id: Option<&str>, state| LeaseFilter {
        agent: agent.map(Into::into),
        task_id: task_id.map(Into::into),
        state,
        provider: None,
    };
    let cases = [
        (filter(None, None, None), vec![0, 1, 2, 3, 4]),
        (filter(Some("alice"), None, None), vec![0, 2, 3]),
        (filter(None, Some("t1"), None), vec![0, 1, 3]),
        (filter(None, None, Some(LeaseState::Pending)), vec![1, 2]),
        (filter(Some("alice"), None, Some(LeaseState::Active)), vec![0]),
        (filter(Some("bob"), Some("t2"), None), vec![4]),
        (filter(None, Some("t1"), Some(LeaseState::Revoking)), vec![3]),
        (filter(Some("carol"), None, None), vec![]),
    ];
    for (filter, expected) in cases {
        let expected: Vec<Uuid> = expected.into_iter().map(|i| made[i]).collect();
        let all = store.list_leases(&filter, None, 100).await.unwrap();
        assert_eq!(ids(&all), expected, "list_leases({filter:?})");
        let mut paged = Vec::new();
        let mut after = None;
        for _ in 0..=expected.len() {
            let page = store.list_leases(&filter, after, 2).await.unwrap();
            assert!(page.len() <= 2, "a page holds at most the limit");
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            paged.extend(ids(&page));
        }
        assert_eq!(paged, expected, "list_leases({filter:?}) page by page");
    }
}

async fn sightings(store: Store) {
    assert!(store.list_sightings(10).await.unwrap().is_empty());
    store.record_sighting("issuer", "a", t(1)).await.unwrap();
    store.record_sighting("issuer", "b", t(2)).await.unwrap();
    store.record_sighting("issuer", "a", t(3)).await.unwrap();
    let seen = store.list_sightings(10).await.unwrap();
    let summary: Vec<_> =
        seen.iter().map(|s| (s.subject.as_str(), s.count, s.first_seen, s.last_seen)).collect();
    assert_eq!(summary, [("a", 2, t(1), t(3)), ("b", 1, t(2), t(2))], "most recently seen first");
    assert!(seen.iter().all(|s| s.issuer == "issuer"));
    assert_eq!(store.list_sightings(1).await.unwrap()[0].subject, "a", "limit keeps the most recent");
    store.record_sighting("issuer", "b", t(4)).await.unwrap();
    let seen = store.list_sightings(10).await.unwrap();
    assert_eq!((seen[0].subject.as_str(), seen[0].count), ("b", 2), "a new sighting moves to the front");
    assert_eq!(seen.len(), 2);
}

/// Many inserts at once all land; refused ones among them (a closed task)
/// fail alone and write nothing.
async fn concurrent_inserts(store: Store) {
    open_task(&store, "t").await;
    open_task(&store, "closed").await;
    store.close_task("closed", "engine", RevocationReason::TaskClosed, t(0)).await.unwrap();
    let mut inserts = tokio::task::JoinSet::new();
    for n in 1..=600 {
        let store = Arc::clone(&store);
        let task_id = if n % 6 == 0 { "closed" } else { "t" };
        inserts.spawn(async move { (task_id, store.insert_pending(lease(n, task_id, t(0)), t(0)).await) });
    }
    while let Some(joined) = inserts.join_next().await {
        match joined.expect("insert task") {
            ("t", result) => result.expect("concurrent insert_pending"),
            (_, result) => assert_eq!(result, Err(StoreError::TaskClosed("closed".into()))),
        }
    }
    assert_eq!(store.task_leases("t").await.unwrap().len(), 500, "every concurrent insert is stored");
    assert!(store.task_leases("closed").await.unwrap().is_empty(), "refused inserts wrote nothing");
    let pending = LeaseFilter { state: Some(LeaseState::Pending), ..LeaseFilter::default() };
    assert_eq!(store.list_leases(&pending, None, 1000).await.unwrap().len(), 500);
}
