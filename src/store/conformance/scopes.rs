//! Ending a scope: an agent's suspension (a task's close is in the parent
//! module), and the check every insert, activation and extension makes
//! that its task is open and its agent active.

use super::*;
use crate::model::{AgentState, AgentStatus, ProviderStatus};
use crate::store::{Closure, Scope};

fn suspension(by: &str) -> Closure {
    Closure { by: by.into(), reason: RevocationReason::AgentSuspended, note: "incident 7".into() }
}

/// A pending lease `n` of another agent.
fn lease_of_agent(n: u16, agent: &str, task_id: &str) -> Lease {
    Lease { agent: agent.into(), ..lease(n, task_id, t(0)) }
}

pub(super) async fn suspend_agent(store: Store) {
    assert_eq!(store.agent_status("agent-1").await.unwrap(), None, "an agent starts with no status");
    open_task(&store, "a").await;
    open_task(&store, "b").await;
    let waiting = pending(&store, 1, "a", t(0)).await;
    let live = active(&store, 2, "b", t(1000)).await;
    let released = active(&store, 3, "a", t(1000)).await;
    store.request_revocation(&[released], RevocationReason::Released, t(5)).await.unwrap();
    let mut other_task = task("c", t(100_000));
    other_task.agent = "agent-2".into();
    store.create_task(other_task).await.unwrap();
    store.insert_pending(lease_of_agent(4, "agent-2", "c"), t(0)).await.unwrap();
    let bystander = lease_id(4);

    let scope = Scope::Agent("agent-1".into());
    let closed = store.close_scope(&scope, &suspension("operator-1"), t(10)).await.unwrap();
    assert!(closed.ended_now, "the first suspension ends the scope");
    assert!(closed.task.is_none());
    let status = AgentStatus {
        agent: "agent-1".into(),
        state: AgentState::Suspended,
        changed_at: t(10),
        changed_by: "operator-1".into(),
        reason: "incident 7".into(),
    };
    assert_eq!(closed.agent, Some(status.clone()));
    assert_eq!(store.agent_status("agent-1").await.unwrap(), Some(status.clone()), "the status is stored");
    assert_eq!(sorted(closed.revoking), vec![waiting, live], "every live lease, in every task");
    assert_revoking(&store, waiting, RevocationReason::AgentSuspended, t(10)).await;
    assert_revoking(&store, live, RevocationReason::AgentSuspended, t(10)).await;
    assert_revoking(&store, released, RevocationReason::Released, t(5)).await;
    assert_eq!(lease_of(&store, bystander).await.state, LeaseState::Pending, "other agents untouched");
    assert_eq!(store.get_task("a").await.unwrap().unwrap().state, TaskState::Open, "tasks stay open");
    assert_eq!(store.agent_status("agent-2").await.unwrap(), None);

    let again = store.close_scope(&scope, &suspension("operator-2"), t(20)).await.unwrap();
    assert!(!again.ended_now, "suspending a suspended agent ends nothing");
    assert!(again.revoking.is_empty());
    assert_eq!(again.agent, Some(status.clone()), "the first suspension is kept");
    assert_eq!(store.agent_status("agent-1").await.unwrap(), Some(status));

    // Nothing more is recorded for the agent, in any task.
    let err = store.insert_pending(lease(5, "a", t(30)), t(30)).await.unwrap_err();
    assert_eq!(err, StoreError::AgentSuspended("agent-1".into()));
    assert_eq!(store.get_lease(lease_id(5)).await.unwrap(), None, "refused lease not written");
    store
        .insert_pending(lease_of_agent(6, "agent-2", "c"), t(30))
        .await
        .expect("another agent still gets leases");
}

pub(super) async fn resume_agent(store: Store) {
    let err = store.resume_agent("agent-1", "operator", "", t(1)).await.unwrap_err();
    assert_eq!(err, StoreError::AgentNotSuspended("agent-1".into()), "an agent never suspended");
    assert_eq!(store.agent_status("agent-1").await.unwrap(), None, "a refused resume writes nothing");

    open_task(&store, "a").await;
    let live = active(&store, 1, "a", t(1000)).await;
    let scope = Scope::Agent("agent-1".into());
    store.close_scope(&scope, &suspension("operator-1"), t(10)).await.unwrap();
    let resumed = store.resume_agent("agent-1", "operator-2", "fixed", t(20)).await.unwrap();
    let status = AgentStatus {
        agent: "agent-1".into(),
        state: AgentState::Active,
        changed_at: t(20),
        changed_by: "operator-2".into(),
        reason: "fixed".into(),
    };
    assert_eq!(resumed, status);
    assert_eq!(store.agent_status("agent-1").await.unwrap(), Some(status));
    assert_revoking(&store, live, RevocationReason::AgentSuspended, t(10)).await;
    let err = store.resume_agent("agent-1", "operator-2", "", t(21)).await.unwrap_err();
    assert_eq!(err, StoreError::AgentNotSuspended("agent-1".into()), "resuming twice");

    let fresh = pending(&store, 2, "a", t(30)).await;
    let activated = store.activate(fresh, t(900), handle("minted", 2), t(31)).await.expect("issued again");
    assert_eq!(activated.state, LeaseState::Active);
    store.extend(fresh, t(950), t(32)).await.expect("renewed again");

    // A second suspension takes what was issued since.
    let closed = store.close_scope(&scope, &suspension("operator-3"), t(40)).await.unwrap();
    assert!(closed.ended_now);
    assert_eq!(closed.revoking, vec![fresh]);
}

/// Nothing is activated or extended under a task that is no longer open
/// or for a suspended agent, whatever the lease's own state says: a close
/// or suspension may not have reached it yet.
pub(super) async fn nothing_under_a_closed_scope(store: Store) {
    // A pending lease whose task's deadline passed before the mint
    // returned goes to revoking, with the minted handle.
    store.create_task(task("due", t(100))).await.unwrap();
    let late = pending(&store, 1, "due", t(50)).await;
    let err = store.activate(late, t(900), handle("minted", 1), t(100)).await.unwrap_err();
    assert_eq!(err, StoreError::TaskClosed("due".into()));
    assert_revoking(&store, late, RevocationReason::DeadlinePassed, t(100)).await;
    assert_eq!(lease_of(&store, late).await.handle, handle("minted", 1), "the minted handle is kept");
    assert_eq!(ids(&store.claim_revocations(t(100), t(160), 10).await.unwrap()), vec![late]);

    // An active lease under a task past its deadline is not extended.
    store.create_task(task("ending", t(200))).await.unwrap();
    let live = pending(&store, 2, "ending", t(0)).await;
    store.activate(live, t(150), handle("minted", 2), t(1)).await.unwrap();
    let before = lease_of(&store, live).await;
    let err = store.extend(live, t(199), t(200)).await.unwrap_err();
    assert_eq!(err, StoreError::TaskClosed("ending".into()));
    assert_eq!(lease_of(&store, live).await, before, "a refused extension changes nothing");
    store.extend(live, t(199), t(199)).await.expect("before the deadline it extends");

    // A suspended agent's lease is not extended either.
    open_task(&store, "open").await;
    let other = pending(&store, 3, "open", t(0)).await;
    store.activate(other, t(900), handle("minted", 3), t(1)).await.unwrap();
    store.close_scope(&Scope::Agent("agent-1".into()), &suspension("operator"), t(300)).await.unwrap();
    let err = store.extend(other, t(950), t(301)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseState { .. } | StoreError::AgentSuspended(_)),
        "a suspended agent's lease is not extended: {err:?}"
    );
}

fn provider_suspension(by: &str) -> Closure {
    Closure { by: by.into(), reason: RevocationReason::ProviderSuspended, note: "db outage".into() }
}

/// A pending lease `n` from another provider.
fn lease_from(n: u16, provider: &str, task_id: &str) -> Lease {
    Lease { provider: provider.into(), ..lease(n, task_id, t(0)) }
}

/// A provider's suspension takes every live lease it issued, of every
/// agent and task, and nothing from another provider; nothing more is
/// issued from it until it is resumed.
pub(super) async fn suspend_provider(store: Store) {
    assert_eq!(store.provider_status("db").await.unwrap(), None, "a provider starts with no status");
    open_task(&store, "a").await;
    let mut other_agents = task("b", t(100_000));
    other_agents.agent = "agent-2".into();
    store.create_task(other_agents).await.unwrap();
    let waiting = lease_from(1, "db", "a");
    store.insert_pending(waiting.clone(), t(0)).await.unwrap();
    let live = Lease { agent: "agent-2".into(), ..lease_from(2, "db", "b") };
    store.insert_pending(live.clone(), t(0)).await.unwrap();
    store.activate(live.id, t(1000), handle("minted", 2), t(1)).await.unwrap();
    let done = lease_from(3, "db", "a");
    store.insert_pending(done.clone(), t(0)).await.unwrap();
    store.activate(done.id, t(1000), handle("minted", 3), t(1)).await.unwrap();
    store.request_revocation(&[done.id], RevocationReason::Released, t(5)).await.unwrap();
    let bystander = active(&store, 4, "a", t(1000)).await;

    let scope = Scope::Provider("db".into());
    let closed = store.close_scope(&scope, &provider_suspension("operator-1"), t(10)).await.unwrap();
    assert!(closed.ended_now);
    assert!(closed.task.is_none() && closed.agent.is_none());
    let status = ProviderStatus {
        provider: "db".into(),
        state: AgentState::Suspended,
        changed_at: t(10),
        changed_by: "operator-1".into(),
        reason: "db outage".into(),
    };
    assert_eq!(closed.provider, Some(status.clone()));
    assert_eq!(store.provider_status("db").await.unwrap(), Some(status.clone()));
    assert_eq!(sorted(closed.revoking), vec![waiting.id, live.id], "every live lease, of every agent");
    assert_revoking(&store, waiting.id, RevocationReason::ProviderSuspended, t(10)).await;
    assert_revoking(&store, live.id, RevocationReason::ProviderSuspended, t(10)).await;
    assert_revoking(&store, done.id, RevocationReason::Released, t(5)).await;
    assert_eq!(lease_of(&store, bystander).await.state, LeaseState::Active, "other providers untouched");
    assert_eq!(store.agent_status("agent-1").await.unwrap(), None, "agents are not suspended");

    let filter = LeaseFilter {
        provider: Some("db".into()),
        state: Some(LeaseState::Revoking),
        ..LeaseFilter::default()
    };
    assert_eq!(
        ids(&store.list_leases(&filter, None, 10).await.unwrap()),
        sorted(vec![waiting.id, live.id, done.id])
    );

    let again = store.close_scope(&scope, &provider_suspension("operator-2"), t(20)).await.unwrap();
    assert!(!again.ended_now && again.revoking.is_empty());
    assert_eq!(again.provider, Some(status));

    // Nothing more from it; the other provider goes on.
    let err = store.insert_pending(lease_from(5, "db", "a"), t(30)).await.unwrap_err();
    assert_eq!(err, StoreError::ProviderSuspended("db".into()));
    assert_eq!(store.get_lease(lease_id(5)).await.unwrap(), None, "refused lease not written");
    store.extend(bystander, t(1100), t(30)).await.expect("another provider's lease is renewed");
    store.insert_pending(lease(6, "a", t(30)), t(30)).await.expect("another provider still issues");

    let resumed = store.resume_provider("db", "operator-3", "db back", t(40)).await.unwrap();
    assert_eq!(resumed.state, AgentState::Active);
    assert_eq!(store.provider_status("db").await.unwrap(), Some(resumed));
    let err = store.resume_provider("db", "operator-3", "", t(41)).await.unwrap_err();
    assert_eq!(err, StoreError::ProviderNotSuspended("db".into()), "resuming twice");
    assert_revoking(&store, live.id, RevocationReason::ProviderSuspended, t(10)).await;
    store.insert_pending(lease_from(7, "db", "a"), t(50)).await.expect("issued again once resumed");
}

/// A lease whose mint was under way when its provider was suspended is not
/// activated: it goes to revoking with the minted handle.
pub(super) async fn no_activation_from_a_suspended_provider(store: Store) {
    open_task(&store, "a").await;
    let minting = lease_from(1, "db", "a");
    store.insert_pending(minting.clone(), t(0)).await.unwrap();
    let live = lease_from(2, "db", "a");
    store.insert_pending(live.clone(), t(0)).await.unwrap();
    store.activate(live.id, t(1000), handle("minted", 2), t(1)).await.unwrap();
    store.close_scope(&Scope::Provider("db".into()), &provider_suspension("operator"), t(10)).await.unwrap();
    let err = store.activate(minting.id, t(900), handle("minted", 1), t(11)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseState { .. } | StoreError::ProviderSuspended(_)),
        "not handed out: {err:?}"
    );
    let lease = lease_of(&store, minting.id).await;
    assert_eq!(lease.state, LeaseState::Revoking);
    assert_eq!(lease.handle, handle("minted", 1), "the minted handle is kept, to revoke");
    let err = store.extend(live.id, t(1100), t(12)).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseState { .. } | StoreError::ProviderSuspended(_)), "{err:?}");
}
