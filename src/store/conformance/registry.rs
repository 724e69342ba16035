//! The agent inventory: records by name, written only over the record the
//! change was made from, listed in name order, with a revision that moves
//! on every change.

use std::collections::BTreeMap;

use super::*;
use crate::config::IdentityMatch;
use crate::model::{AgentRecord, ManagedBy, Retirement};

fn record(name: &str, owner: &str) -> AgentRecord {
    AgentRecord {
        name: name.into(),
        owner: owner.into(),
        team: "payments".into(),
        description: "reads invoices".into(),
        risk_tier: "low".into(),
        identity: IdentityMatch {
            issuer: "https://issuer.example".into(),
            subject: Some(format!("system:serviceaccount:agents:{name}")),
            claims: BTreeMap::from([("aud".to_string(), "writ".to_string())]),
        },
        managed_by: ManagedBy::Operator,
        created_at: t(1),
        created_by: "operator-1".into(),
        updated_at: t(1),
        updated_by: "operator-1".into(),
        revision: 1,
        retired: None,
    }
}

pub(super) async fn register_update_retire(store: Store) {
    assert_eq!(store.agents_revision().await.unwrap(), 0, "a fresh store has revision 0");
    assert_eq!(store.get_agent("bot").await.unwrap(), None);
    let bot = record("bot", "alice@example.com");
    store.put_agent(None, &bot).await.unwrap();
    assert_eq!(store.get_agent("bot").await.unwrap(), Some(bot.clone()), "read back exactly");
    let first = store.agents_revision().await.unwrap();
    assert_ne!(first, 0, "a registration moves the revision");

    let again = AgentRecord { owner: "mallory@example.com".into(), ..bot.clone() };
    assert_eq!(store.put_agent(None, &again).await, Err(StoreError::AgentExists("bot".into())));
    assert_eq!(store.get_agent("bot").await.unwrap(), Some(bot.clone()), "a refused write changes nothing");
    assert_eq!(store.agents_revision().await.unwrap(), first, "nor the revision");

    let updated =
        AgentRecord { owner: "bob@example.com".into(), revision: 2, updated_at: t(5), ..bot.clone() };
    store.put_agent(Some(&bot), &updated).await.unwrap();
    let second = store.agents_revision().await.unwrap();
    assert_ne!(second, first, "an update moves the revision");
    // A change made from the old record lost the race: refused.
    let stale = AgentRecord { team: "other".into(), revision: 2, ..bot.clone() };
    assert_eq!(store.put_agent(Some(&bot), &stale).await, Err(StoreError::AgentChanged("bot".into())));
    assert_eq!(store.get_agent("bot").await.unwrap(), Some(updated.clone()));
    // A change of an agent that was never registered is refused too.
    let ghost = record("ghost", "alice@example.com");
    assert_eq!(store.put_agent(Some(&ghost), &ghost).await, Err(StoreError::AgentChanged("ghost".into())));
    assert_eq!(store.get_agent("ghost").await.unwrap(), None);

    let retired = AgentRecord {
        revision: 3,
        retired: Some(Retirement { at: t(9), by: "operator-2".into(), reason: "decommissioned".into() }),
        ..updated.clone()
    };
    store.put_agent(Some(&updated), &retired).await.unwrap();
    assert_eq!(
        store.get_agent("bot").await.unwrap(),
        Some(retired.clone()),
        "a retired agent keeps its record"
    );
    assert_eq!(
        store.put_agent(None, &record("bot", "eve@example.com")).await,
        Err(StoreError::AgentExists("bot".into())),
        "a retired agent's name is not free again"
    );
    assert_ne!(store.agents_revision().await.unwrap(), second);
}

pub(super) async fn list_in_name_order(store: Store) {
    // Byte order: upper case before lower, `-` before letters.
    let names = ["zeta", "Alpha", "beta", "beta-2", "a.b"];
    for name in names {
        store.put_agent(None, &record(name, "alice@example.com")).await.unwrap();
    }
    let all: Vec<String> =
        store.list_agents(None, 100).await.unwrap().into_iter().map(|record| record.name).collect();
    assert_eq!(all, ["Alpha", "a.b", "beta", "beta-2", "zeta"]);
    let page: Vec<String> =
        store.list_agents(Some("beta"), 2).await.unwrap().into_iter().map(|record| record.name).collect();
    assert_eq!(page, ["beta-2", "zeta"], "a page starts after the name given");
    let after_unknown: Vec<String> =
        store.list_agents(Some("b"), 1).await.unwrap().into_iter().map(|record| record.name).collect();
    assert_eq!(after_unknown, ["beta"], "after a name that is not registered");
    assert!(store.list_agents(Some("zeta"), 10).await.unwrap().is_empty());
    assert!(store.list_agents(None, 0).await.unwrap().is_empty());
    // Updating a record does not list it twice.
    let alpha = store.get_agent("Alpha").await.unwrap().unwrap();
    let moved = AgentRecord { team: "t2".into(), revision: 2, ..alpha.clone() };
    store.put_agent(Some(&alpha), &moved).await.unwrap();
    assert_eq!(store.list_agents(None, 100).await.unwrap().len(), 5);
}

/// Of many concurrent changes made from one record, exactly one lands.
pub(super) async fn concurrent_updates(store: Store) {
    let bot = record("bot", "alice@example.com");
    store.put_agent(None, &bot).await.unwrap();
    let attempts = (0..8).map(|n| {
        let (store, bot) = (store.clone(), bot.clone());
        async move {
            let changed = AgentRecord { description: format!("edit {n}"), revision: 2, ..bot.clone() };
            store.put_agent(Some(&bot), &changed).await.map(|()| changed)
        }
    });
    let results = spawn_all(attempts).await;
    let won: Vec<&AgentRecord> = results.iter().filter_map(|result| result.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "exactly one concurrent change lands: {results:?}");
    assert!(results.iter().all(|result| match result {
        Ok(_) => true,
        Err(error) => *error == StoreError::AgentChanged("bot".into()),
    }));
    assert_eq!(store.get_agent("bot").await.unwrap().as_ref(), Some(won[0]));
}

async fn spawn_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

/// A retired agent is never resumed, whichever replica is asked: the store
/// reads the record.
pub(super) async fn a_retired_agent_is_not_resumed(store: Store) {
    use crate::store::{Closure, Scope};
    let bot = record("bot", "alice@example.com");
    store.put_agent(None, &bot).await.unwrap();
    let closure =
        Closure { by: "operator-1".into(), reason: RevocationReason::AgentRetired, note: "gone".into() };
    store.close_scope(&Scope::Agent("bot".into()), &closure, t(5)).await.unwrap();
    let retired = AgentRecord {
        revision: 2,
        retired: Some(Retirement { at: t(5), by: "operator-1".into(), reason: "gone".into() }),
        ..bot.clone()
    };
    store.put_agent(Some(&bot), &retired).await.unwrap();
    let err = store.resume_agent("bot", "operator-2", "oops", t(6)).await.unwrap_err();
    assert_eq!(err, StoreError::AgentRetired("bot".into()));
    let status = store.agent_status("bot").await.unwrap().unwrap();
    assert_eq!(status.state, crate::model::AgentState::Suspended, "still suspended");
}
