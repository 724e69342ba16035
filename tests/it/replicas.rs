//! Writ on the Redis lease store: two replicas sharing one Redis, and a
//! Redis outage (fail closed, then recover).

use std::sync::Arc;
use std::time::{Duration, Instant};

use writ::api::proto;
use writ::server::Running;
use writ::store::{RedisConfig, StoreConfig};

use crate::harness::{self, authed};
use crate::redis_support::RedisServer;

async fn on_redis(redis: &RedisServer) -> harness::Harness {
    let url = redis.url();
    harness::start_with(Box::new(move |config, _| {
        let mut store = RedisConfig::single(url);
        store.namespace = format!("it-{}", uuid::Uuid::now_v7().simple());
        config.store = StoreConfig::Redis(store);
    }))
    .await
}

/// A second replica: the same keys and store, its own ports and audit log.
async fn second_replica(h: &harness::Harness) -> Running {
    let mut config = h.config.clone();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.http_listen = "127.0.0.1:0".parse().unwrap();
    config.audit.path = config.audit.path.with_file_name("audit-replica-b.jsonl");
    Running::start(&config, Arc::new(h.clock.clone())).await.unwrap()
}

async fn issue_via(addr: std::net::SocketAddr, token: &str, task_id: &str) -> proto::Lease {
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = proto::credential_service_client::CredentialServiceClient::new(channel);
    let request = harness::issue_request(task_id, "orders-read", &["orders:read"], 300);
    let issued = client.issue(authed(token, request)).await.unwrap().into_inner();
    issued.credentials[0].lease.clone().unwrap()
}

#[tokio::test]
async fn two_replicas_share_leases_and_revoke_each_once() {
    let redis = RedisServer::start();
    let h = on_redis(&redis).await;
    let b = second_replica(&h).await;
    h.open_task("shared-1", "demo-agent", 600).await;
    let mut leases = Vec::new();
    for _ in 0..5 {
        leases.push(issue_via(h.grpc_addr(), &h.agent(), "shared-1").await);
        leases.push(issue_via(b.grpc_addr, &h.agent(), "shared-1").await);
    }
    // Replica B closes a task whose leases both replicas issued.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", b.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let closed = proto::task_service_client::TaskServiceClient::new(channel)
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: "shared-1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.revoked + closed.retrying, 10);
    for lease in &leases {
        h.wait_for_state(&lease.lease_id, proto::LeaseState::Revoked).await;
    }
    // Each lease was revoked at the provider exactly once, by one replica.
    let audit_b =
        std::fs::read_to_string(h.config.audit.path.with_file_name("audit-replica-b.jsonl")).unwrap();
    let revoked_lines = h
        .audit_lines()
        .into_iter()
        .chain(audit_b.lines().map(|line| serde_json::from_str(line).unwrap()))
        .filter(|line: &serde_json::Value| line["event"] == "revoked")
        .count();
    assert_eq!(revoked_lines, 10);
    b.stop().await.unwrap();
    h.stop().await;
}

#[tokio::test]
async fn a_redis_outage_fails_closed_and_recovers() {
    let mut redis = RedisServer::start();
    let h = on_redis(&redis).await;
    h.open_task("outage-1", "demo-agent", 600).await;
    issue_via(h.grpc_addr(), &h.agent(), "outage-1").await;

    redis.stop();
    let began = Instant::now();
    let status = h.issue_orders_read("outage-1", 60).await.unwrap_err();
    let took = began.elapsed();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("nothing was issued"), "{status:?}");
    assert!(took < Duration::from_secs(5), "fails fast, took {took:?}");

    redis.restart();
    // The restarted server kept nothing (no persistence in tests): a new
    // task, then issuance works again.
    let mut recovered = false;
    for _ in 0..40 {
        let request = proto::StartTaskRequest {
            task_id: "outage-2".into(),
            agent: "demo-agent".into(),
            context: None,
            deadline: Some(writ::api::convert::timestamp(
                writ::clock::Clock::now(&h.clock) + chrono::Duration::minutes(10),
            )),
        };
        if h.tasks().await.start_task(authed(&h.workflow(), request)).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "Writ works again once Redis is back");
    assert!(h.issue_orders_read("outage-2", 60).await.is_ok());
    h.stop().await;
}

/// Revocations that fall due while Redis is down are done once it is back,
/// within seconds, and none is lost (Redis with AOF keeps the leases).
#[tokio::test]
async fn revocations_due_during_an_outage_are_done_after_it() {
    let mut redis = RedisServer::start_persistent();
    let h = on_redis(&redis).await;
    h.open_task("due-1", "demo-agent", 600).await;
    let mut leases = Vec::new();
    for _ in 0..20 {
        leases.push(issue_via(h.grpc_addr(), &h.agent(), "due-1").await);
    }
    redis.stop();
    // Every lease expires while Redis is down (their TTL is 300 s).
    h.advance(301);
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart();
    let recovered = Instant::now();
    for lease in &leases {
        let revoked = h.wait_for_state(&lease.lease_id, proto::LeaseState::Revoked).await;
        assert_eq!(revoked.revocation_reason, "expired");
    }
    let took = recovered.elapsed();
    assert!(took < Duration::from_secs(5), "all due revocations done {took:?} after recovery");
    h.stop().await;
}

/// On Redis, the expiry sweeper forgets a revoked lease once
/// `finished_retention` has passed: it is no longer listed, while the
/// audit log keeps its revocation.
#[tokio::test]
async fn revoked_leases_are_forgotten_after_the_retention() {
    let redis = RedisServer::start();
    let url = redis.url();
    let h = harness::start_with(Box::new(move |config, _| {
        let mut store = RedisConfig::single(url);
        store.namespace = format!("it-{}", uuid::Uuid::now_v7().simple());
        store.finished_retention = Duration::from_secs(3600);
        config.store = StoreConfig::Redis(store);
    }))
    .await;
    h.open_task("forget-1", "demo-agent", 600).await;
    let issued = h.issue_orders_read("forget-1", 300).await.unwrap();
    let lease_id = issued.lease.unwrap().lease_id;
    h.tasks()
        .await
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: "forget-1".into() }))
        .await
        .unwrap();
    h.wait_for_state(&lease_id, proto::LeaseState::Revoked).await;

    h.advance(3601);
    let listed = || async {
        let request = proto::ListLeasesRequest::default();
        let leases = h.admin().await.list_leases(authed(&h.operator(), request)).await.unwrap().into_inner();
        leases.leases.iter().any(|lease| lease.lease_id == lease_id)
    };
    let started = Instant::now();
    while listed().await {
        assert!(started.elapsed() < Duration::from_secs(10), "the revoked lease was never forgotten");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let hash = h.running().broker.audit().lease_hash(lease_id.parse().unwrap());
    let revoked =
        h.audit_lines().iter().any(|line| line["event"] == "revoked" && line["lease"] == hash.as_str());
    assert!(revoked, "the audit log keeps the revocation");
    h.stop().await;
}
