//! Step-up approval requests: created under an open task only, voted on
//! atomically (distinct approvers, one denial ends it, the quorum approves),
//! collected once, and ended by expiry or by their scope ending.

use super::*;
use crate::model::{Approval, ApprovalGrant, ApprovalState, ApprovalVote};
use crate::store::{ApprovalFilter, Closure, Scope};

/// A v7 approval id; ids sort in `n` order and never equal a lease id.
fn approval_id(n: u16) -> Uuid {
    let millis = u64::try_from(t(0).timestamp_millis()).unwrap() + u64::from(n);
    let [high, low] = n.to_be_bytes();
    uuid::Builder::from_unix_timestamp_millis(millis, &[high, low, 0, 0, 0, 0, 0, 0, 0, 2]).into_uuid()
}

/// A pending request `n` of `agent-1` under `task_id`, made at `t(0)`,
/// expiring undecided at `t(900)`, with a quorum of `quorum`.
pub(super) fn approval(n: u16, task_id: &str, quorum: u32) -> Approval {
    Approval {
        id: approval_id(n),
        agent: "agent-1".into(),
        task_id: task_id.into(),
        tool: "migrate".into(),
        grants: vec![
            ApprovalGrant {
                provider: "pg".into(),
                role: "admin".into(),
                scopes: vec!["ddl".into(), "write".into()],
                ttl_seconds: Some(300),
            },
            ApprovalGrant { provider: "jwt".into(), role: "ops".into(), scopes: vec![], ttl_seconds: None },
        ],
        group: "dba".into(),
        quorum,
        policies: vec!["prod-ddl".into()],
        policy_set: "ab12".into(),
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

fn vote(by: &str, approve: bool, at: DateTime<Utc>) -> ApprovalVote {
    ApprovalVote { by: by.into(), approve, reason: format!("{by} says {approve}"), at }
}

async fn get(store: &Store, id: Uuid) -> Approval {
    store.get_approval(id).await.unwrap().unwrap_or_else(|| panic!("approval {id} missing"))
}

fn assert_state_error(result: Result<Approval, StoreError>, id: Uuid, state: ApprovalState, what: &str) {
    match result {
        Err(StoreError::ApprovalState { id: got, state: got_state }) => {
            assert_eq!((got, got_state), (id, state), "{what}");
        }
        other => panic!("{what}: expected ApprovalState {}, got {other:?}", state.as_str()),
    }
}

pub(super) async fn create_and_list(store: Store) {
    open_task(&store, "a").await;
    open_task(&store, "b").await;
    let first = approval(1, "a", 2);
    store.create_approval(first.clone(), t(0)).await.unwrap();
    assert_eq!(get(&store, first.id).await, first, "a request reads back as written");
    assert_eq!(store.get_approval(approval_id(99)).await.unwrap(), None);

    let second = Approval { group: "security".into(), ..approval(2, "b", 1) };
    store.create_approval(second.clone(), t(1)).await.unwrap();
    let third = Approval { agent: "agent-2".into(), ..approval(3, "a", 1) };
    // The task belongs to agent-1, but the store does not check ownership:
    // the domain binds requests to their agent's tasks.
    store.create_approval(third.clone(), t(1)).await.unwrap();

    let all = store.list_approvals(&ApprovalFilter::default(), None, 10).await.unwrap();
    assert_eq!(all, vec![first.clone(), second.clone(), third.clone()], "listed in id order");
    assert_eq!(store.backlog().await.unwrap().approvals_open, 3, "open requests are counted");
    let page = store.list_approvals(&ApprovalFilter::default(), Some(first.id), 1).await.unwrap();
    assert_eq!(page, vec![second.clone()], "pages start after `after`");
    let by_task = ApprovalFilter { task_id: Some("a".into()), ..ApprovalFilter::default() };
    assert_eq!(store.list_approvals(&by_task, None, 10).await.unwrap(), vec![first.clone(), third.clone()]);
    let by_group = ApprovalFilter { group: Some("security".into()), ..ApprovalFilter::default() };
    assert_eq!(store.list_approvals(&by_group, None, 10).await.unwrap(), vec![second.clone()]);
    let by_agent = ApprovalFilter { agent: Some("agent-2".into()), ..ApprovalFilter::default() };
    assert_eq!(store.list_approvals(&by_agent, None, 10).await.unwrap(), vec![third.clone()]);

    store.vote_approval(second.id, vote("alice", true, t(5))).await.unwrap();
    let approved = ApprovalFilter { state: Some(ApprovalState::Approved), ..ApprovalFilter::default() };
    let listed = store.list_approvals(&approved, None, 10).await.unwrap();
    assert_eq!(ids_of(&listed), vec![second.id], "filtered by state");
    let pending = ApprovalFilter { state: Some(ApprovalState::Pending), ..ApprovalFilter::default() };
    assert_eq!(ids_of(&store.list_approvals(&pending, None, 10).await.unwrap()), vec![first.id, third.id]);
}

fn ids_of(approvals: &[Approval]) -> Vec<Uuid> {
    approvals.iter().map(|approval| approval.id).collect()
}

pub(super) async fn create_refusals(store: Store) {
    let missing = store.create_approval(approval(1, "nope", 1), t(0)).await;
    assert_eq!(missing, Err(StoreError::TaskNotFound("nope".into())));
    store.create_task(task("short", t(50))).await.unwrap();
    let late = store.create_approval(approval(2, "short", 1), t(50)).await;
    assert_eq!(late, Err(StoreError::TaskClosed("short".into())), "at the deadline the task is closed");
    open_task(&store, "a").await;
    store.close_task("a", "engine", RevocationReason::TaskClosed, t(10)).await.unwrap();
    let closed = store.create_approval(approval(3, "a", 1), t(11)).await;
    assert_eq!(closed, Err(StoreError::TaskClosed("a".into())));
    open_task(&store, "b").await;
    let suspension =
        Closure { by: "operator".into(), reason: RevocationReason::AgentSuspended, note: String::new() };
    store.close_scope(&Scope::Agent("agent-1".into()), &suspension, t(12)).await.unwrap();
    let suspended = store.create_approval(approval(4, "b", 1), t(13)).await;
    assert_eq!(suspended, Err(StoreError::AgentSuspended("agent-1".into())));
    assert!(store.list_approvals(&ApprovalFilter::default(), None, 10).await.unwrap().is_empty());
}

pub(super) async fn votes(store: Store) {
    open_task(&store, "a").await;
    let request = approval(1, "a", 2);
    store.create_approval(request.clone(), t(0)).await.unwrap();

    let one = store.vote_approval(request.id, vote("alice", true, t(10))).await.unwrap();
    assert_eq!(one.state, ApprovalState::Pending, "one of two approvals");
    assert_eq!(one.votes, vec![vote("alice", true, t(10))]);
    assert_eq!(one, get(&store, request.id).await, "the vote is durable");

    let again = store.vote_approval(request.id, vote("alice", true, t(11))).await;
    assert_eq!(again, Err(StoreError::AlreadyVoted { id: request.id, by: "alice".into() }));
    let changed_mind = store.vote_approval(request.id, vote("alice", false, t(11))).await;
    assert_eq!(changed_mind, Err(StoreError::AlreadyVoted { id: request.id, by: "alice".into() }));
    assert_eq!(get(&store, request.id).await, one, "a refused vote changes nothing");

    let two = store.vote_approval(request.id, vote("bob", true, t(20))).await.unwrap();
    assert_eq!(two.state, ApprovalState::Approved, "two distinct approvers make the quorum");
    assert_eq!(two.approved_at, Some(t(20)));
    assert_eq!(two.collect_by, Some(t(20 + 600)), "collect within collect_within_seconds of approval");
    assert_eq!(two.approvers().collect::<Vec<_>>(), vec!["alice", "bob"]);
    assert_eq!(two.ended, None);
    let late = store.vote_approval(request.id, vote("carol", true, t(21))).await;
    assert_state_error(late, request.id, ApprovalState::Approved, "no vote after approval");

    let unknown = store.vote_approval(approval_id(9), vote("alice", true, t(1))).await;
    assert_eq!(unknown, Err(StoreError::ApprovalNotFound(approval_id(9))));
}

pub(super) async fn denial(store: Store) {
    open_task(&store, "a").await;
    let request = approval(1, "a", 2);
    store.create_approval(request.clone(), t(0)).await.unwrap();
    store.vote_approval(request.id, vote("alice", true, t(10))).await.unwrap();
    let denied = store.vote_approval(request.id, vote("bob", false, t(20))).await.unwrap();
    assert_eq!(denied.state, ApprovalState::Denied, "one denial ends the request");
    let ended = denied.ended.clone().expect("a denied request says how it ended");
    assert_eq!((ended.at, ended.by.as_str(), ended.reason.as_str()), (t(20), "bob", "bob says false"));
    assert_eq!(denied.approved_at, None);
    assert_eq!(get(&store, request.id).await, denied);
    let after = store.vote_approval(request.id, vote("carol", true, t(21))).await;
    assert_state_error(after, request.id, ApprovalState::Denied, "no vote after a denial");
    let collect = store.collect_approval(request.id, "agent-1", t(22)).await;
    assert_state_error(collect, request.id, ApprovalState::Denied, "a denied request is not collected");
}

pub(super) async fn collect_once(store: Store) {
    open_task(&store, "a").await;
    let request = approval(1, "a", 1);
    store.create_approval(request.clone(), t(0)).await.unwrap();
    let early = store.collect_approval(request.id, "agent-1", t(5)).await;
    assert_state_error(early, request.id, ApprovalState::Pending, "not collected before approval");
    store.vote_approval(request.id, vote("alice", true, t(10))).await.unwrap();

    let stranger = store.collect_approval(request.id, "agent-2", t(11)).await;
    assert_eq!(stranger, Err(StoreError::ApprovalNotFound(request.id)), "another agent's request");
    let collected = store.collect_approval(request.id, "agent-1", t(12)).await.unwrap();
    assert_eq!(collected.state, ApprovalState::Collected);
    assert_eq!(collected.collected_at, Some(t(12)));
    assert_eq!(get(&store, request.id).await, collected);
    let twice = store.collect_approval(request.id, "agent-1", t(13)).await;
    assert_state_error(twice, request.id, ApprovalState::Collected, "collected once");

    // Concurrent collections: exactly one wins.
    let second = approval(2, "a", 1);
    store.create_approval(second.clone(), t(0)).await.unwrap();
    store.vote_approval(second.id, vote("alice", true, t(10))).await.unwrap();
    let attempts = (0..8).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.collect_approval(second.id, "agent-1", t(14)).await })
    });
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::ApprovalState { state: ApprovalState::Collected, .. }) => {}
            Err(other) => panic!("a losing collection fails as collected, not {other:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one of eight concurrent collections succeeds");
}

pub(super) async fn deadlines(store: Store) {
    open_task(&store, "a").await;
    let request = approval(1, "a", 1);
    store.create_approval(request.clone(), t(0)).await.unwrap();
    let late = store.vote_approval(request.id, vote("alice", true, t(900))).await;
    assert_state_error(late, request.id, ApprovalState::Expired, "a vote at expires_at is too late");
    assert_eq!(get(&store, request.id).await.state, ApprovalState::Pending, "the refusal changed nothing");

    let uncollected = approval(2, "a", 1);
    store.create_approval(uncollected.clone(), t(0)).await.unwrap();
    store.vote_approval(uncollected.id, vote("alice", true, t(100))).await.unwrap();
    let stale = store.collect_approval(uncollected.id, "agent-1", t(700)).await;
    assert_state_error(stale, uncollected.id, ApprovalState::Expired, "collect_by has passed");

    let live = approval(3, "a", 1);
    store.create_approval(Approval { expires_at: t(5000), ..live.clone() }, t(0)).await.unwrap();

    assert_eq!(store.next_due().await.unwrap(), Some(t(700)), "the earliest due request (approved: t(700))");
    assert!(store.end_approvals(t(699), 10).await.unwrap().is_empty(), "nothing due yet");
    let ended = store.end_approvals(t(900), 10).await.unwrap();
    let mut found: Vec<(Uuid, ApprovalState, String)> = ended
        .iter()
        .map(|approval| (approval.id, approval.state, approval.ended.clone().unwrap().reason))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (request.id, ApprovalState::Expired, "not_decided".into()),
            (uncollected.id, ApprovalState::Expired, "not_collected".into()),
        ]
    );
    let expired = get(&store, request.id).await;
    assert_eq!(expired.ended.as_ref().map(|end| (end.at, end.by.as_str())), Some((t(900), "writ")));
    assert_eq!(expired.state, ApprovalState::Expired);
    assert!(store.end_approvals(t(900), 10).await.unwrap().is_empty(), "ended once");
    assert_eq!(store.next_due().await.unwrap(), Some(t(5000)), "only the live request is due");
}

pub(super) async fn scope_ends_cancel(store: Store) {
    open_task(&store, "a").await;
    open_task(&store, "b").await;
    store.create_task(task("c", t(300))).await.unwrap();
    let mut other = task("d", t(100_000));
    other.agent = "agent-2".into();
    store.create_task(other).await.unwrap();
    let by_close = approval(1, "a", 1);
    let by_deadline = approval(2, "c", 1);
    let bystander = Approval { agent: "agent-2".into(), ..approval(3, "d", 1) };
    let approved = approval(4, "b", 1);
    for request in [&by_close, &by_deadline, &bystander, &approved] {
        store.create_approval(request.clone(), t(0)).await.unwrap();
    }
    store.vote_approval(approved.id, vote("alice", true, t(10))).await.unwrap();

    store.close_task("a", "engine", RevocationReason::TaskClosed, t(20)).await.unwrap();
    let refused = store.vote_approval(by_close.id, vote("alice", true, t(21))).await;
    assert_eq!(refused, Err(StoreError::TaskClosed("a".into())), "no vote under a closed task");
    let ended = store.end_approvals(t(21), 10).await.unwrap();
    assert_eq!(ids_of(&ended), vec![by_close.id]);
    assert_eq!(ended[0].state, ApprovalState::Cancelled);
    assert_eq!(ended[0].ended.as_ref().map(|end| end.reason.as_str()), Some("task_closed"));

    let ended = store.end_approvals(t(300), 10).await.unwrap();
    assert_eq!(ids_of(&ended), vec![by_deadline.id], "the task's deadline cancels its requests");
    assert_eq!(ended[0].ended.as_ref().map(|end| end.reason.as_str()), Some("deadline_passed"));

    let suspension =
        Closure { by: "operator".into(), reason: RevocationReason::AgentSuspended, note: String::new() };
    store.close_scope(&Scope::Agent("agent-1".into()), &suspension, t(400)).await.unwrap();
    let collect = store.collect_approval(approved.id, "agent-1", t(401)).await;
    assert_eq!(collect, Err(StoreError::AgentSuspended("agent-1".into())), "no collection when suspended");
    let ended = store.end_approvals(t(401), 10).await.unwrap();
    assert_eq!(ids_of(&ended), vec![approved.id], "suspension cancels approved, uncollected requests too");
    assert_eq!(ended[0].state, ApprovalState::Cancelled);
    assert_eq!(ended[0].ended.as_ref().map(|end| end.reason.as_str()), Some("agent_suspended"));
    assert_eq!(get(&store, bystander.id).await.state, ApprovalState::Pending, "another agent's stays");

    // `limit` bounds a pass.
    let mut many = task("e", t(100_000));
    many.agent = "agent-2".into();
    store.create_task(many).await.unwrap();
    for n in 10..15 {
        let request = Approval { agent: "agent-2".into(), ..approval(n, "e", 1) };
        store.create_approval(request, t(0)).await.unwrap();
    }
    store.close_task("e", "engine", RevocationReason::TaskClosed, t(500)).await.unwrap();
    assert_eq!(store.end_approvals(t(500), 3).await.unwrap().len(), 3);
    assert_eq!(store.end_approvals(t(500), 3).await.unwrap().len(), 2);
}
