//! Suspending an agent (the store and domain path the kill switch will
//! use): from the moment the call returns nothing more is issued, renewed
//! or activated for the agent on any replica, and everything it holds is
//! revoked at the provider; resuming lifts it and revoked leases stay
//! revoked. On the embedded store and on Redis with two replicas, and with
//! a suspension that lands while a mint is under way on another replica.

use std::sync::Arc;
use std::time::Duration;

use writ::api::proto;
use writ::clock::Clock;
use writ::domain::{Broker, Error};

use crate::harness::{self, Harness, authed, bearer};
use crate::redis_support::RedisServer;
use crate::replicas::{on_redis, second_replica};

/// Suspends the demo agent through `suspender` (a broker of this replica
/// or of another) and checks what every replica must then refuse.
async fn suspension_stops_the_agent(h: &Harness, suspender: &Arc<Broker>) {
    h.open_task("s-1", "demo-agent", 600).await;
    h.open_task("s-2", "demo-agent", 600).await;
    let first = h.issue_orders_read("s-1", 300).await.unwrap();
    let second = h.issue_orders_read("s-2", 300).await.unwrap();
    let leases = [first.lease.clone().unwrap(), second.lease.clone().unwrap()];

    let now = h.clock.now();
    let outcome = suspender.suspend_agent("soc-oncall", "demo-agent", "incident 42", now).await.unwrap();
    assert_eq!(outcome.closed.revoking.len(), 2, "every live lease, in every task");
    assert_eq!(outcome.revoked, 2, "revoked at the provider before the call returned: {outcome:?}");

    let refused = h.issue_orders_read("s-1", 60).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("is suspended since"), "{refused:?}");
    assert!(
        !refused.message().contains("incident 42") && !refused.message().contains("soc-oncall"),
        "{refused:?}"
    );
    let renew = proto::RenewRequest { lease_id: leases[0].lease_id.clone(), ttl: None };
    let refused = h.credentials().await.renew(authed(&h.agent(), renew)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    for (lease, issued) in leases.iter().zip([&first, &second]) {
        let revoked = h.wait_for_state(&lease.lease_id, proto::LeaseState::Revoked).await;
        assert_eq!(revoked.revocation_reason, "agent_suspended");
        assert_eq!(h.introspect(&bearer(issued)).await["active"], false);
    }
    let start = proto::StartTaskRequest {
        task_id: "s-3".into(),
        agent: "demo-agent".into(),
        context: None,
        deadline: Some(writ::api::convert::timestamp(h.clock.now() + chrono::Duration::minutes(10))),
    };
    let refused = h.tasks().await.start_task(authed(&h.workflow(), start.clone())).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "no new task for a suspended agent");

    let again = suspender.suspend_agent("soc-oncall", "demo-agent", "again", now).await.unwrap_err();
    assert!(matches!(&again, Error::FailedPrecondition(m) if m.contains("suspended already")), "{again:?}");
    let unknown = suspender.suspend_agent("soc-oncall", "nobody", "", now).await.unwrap_err();
    assert!(matches!(unknown, Error::NotFound(_)), "{unknown:?}");

    suspender.resume_agent("soc-oncall", "demo-agent", "contained", h.clock.now()).await.unwrap();
    let twice = suspender.resume_agent("soc-oncall", "demo-agent", "", h.clock.now()).await.unwrap_err();
    assert!(matches!(twice, Error::FailedPrecondition(_)), "{twice:?}");
    let issued = h.issue_orders_read("s-1", 60).await.expect("issued again once resumed");
    assert_eq!(h.introspect(&bearer(&issued)).await["active"], true);
    for lease in &leases {
        assert_eq!(h.lease(&lease.lease_id).await.state, proto::LeaseState::Revoked as i32, "stays revoked");
    }
    h.tasks().await.start_task(authed(&h.workflow(), start)).await.expect("a task again");

    // A second suspension counts only what it revoked, not the history.
    let again = suspender.suspend_agent("soc-oncall", "demo-agent", "again", h.clock.now()).await.unwrap();
    assert_eq!((again.closed.revoking.len(), again.revoked, again.retrying, again.failed), (1, 1, 0, 0));
    suspender.resume_agent("soc-oncall", "demo-agent", "", h.clock.now()).await.unwrap();
}

#[tokio::test]
async fn a_suspension_stops_the_agent_on_the_embedded_store() {
    let h = harness::start().await;
    let broker = h.running().broker.clone();
    suspension_stops_the_agent(&h, &broker).await;
    let audit = h.audit_lines();
    let event = |name: &str| audit.iter().filter(|line| line["event"] == name).count();
    assert_eq!((event("agent_suspended"), event("agent_resumed")), (2, 2));
    let suspended = audit.iter().find(|line| line["event"] == "agent_suspended").unwrap();
    assert_eq!(suspended["actor"], "soc-oncall");
    assert_eq!(suspended["agent"], "demo-agent");
    assert_eq!(suspended["details"]["note"], "incident 42");
    h.stop().await;
}

/// Suspended on replica B, refused at once on replica A: the state is in
/// Redis, checked on every issue, not cached per replica.
#[tokio::test]
async fn a_suspension_on_one_replica_stops_the_agent_on_the_other() {
    let redis = RedisServer::start();
    let h = on_redis(&redis).await;
    let b = second_replica(&h).await;
    suspension_stops_the_agent(&h, &b.broker).await;
    b.stop().await.unwrap();
    h.stop().await;
}

/// Replica B suspends the agent while replica A is minting for it: A does
/// not hand the credential out, and the credential the provider made is
/// revoked there.
#[tokio::test]
async fn a_suspension_during_a_mint_on_another_replica_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.txt");
    let plugin = crate::peers::PythonPlugin::start_with(
        0,
        &["--journal", journal.to_str().unwrap(), "--mint-delay-ms", "1500"],
    );
    let redis = RedisServer::start();
    let (url, endpoint) = (redis.url(), plugin.endpoint.clone());
    let h = harness::start_with(Box::new(move |config, dir| {
        let mut store = writ::store::RedisConfig::single(url);
        store.namespace = format!("it-{}", uuid::Uuid::now_v7().simple());
        config.store = writ::store::StoreConfig::Redis(store);
        harness::add_reports_provider(config, dir, &endpoint);
    }))
    .await;
    let b = second_replica(&h).await;
    h.open_task("slow-mint", "demo-agent", 600).await;

    let mut credentials = h.credentials().await;
    let request = harness::reports_request("slow-mint");
    let agent = h.agent();
    let issuing = tokio::spawn(async move { credentials.issue(authed(&agent, request)).await });
    // The lease is recorded and the mint under way (it takes 1.5 s).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!issuing.is_finished());
    b.broker.suspend_agent("soc-oncall", "demo-agent", "incident 43", h.clock.now()).await.unwrap();

    let refused = issuing.await.unwrap().unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("is suspended since"), "{refused:?}");
    let request = proto::ListLeasesRequest { task_id: "slow-mint".into(), ..Default::default() };
    let leases =
        h.admin().await.list_leases(authed(&h.operator(), request)).await.unwrap().into_inner().leases;
    assert_eq!(leases.len(), 1);
    let revoked = h.wait_for_state(&leases[0].lease_id, proto::LeaseState::Revoked).await;
    assert_eq!(revoked.revocation_reason, "agent_suspended");
    // At the provider: minted once, and that credential revoked.
    let mut revoked_there = false;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        let minted: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("minted ")).collect();
        assert_eq!(minted.len(), 1, "{text}");
        if text.lines().any(|line| line == format!("revoked {}", minted[0])) {
            revoked_there = true;
            break;
        }
        h.advance(1);
        h.settle().await;
    }
    assert!(revoked_there, "the minted credential is revoked at the provider");
    b.stop().await.unwrap();
    h.stop().await;
    drop(plugin);
}
