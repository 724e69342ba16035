//! What an operator alerts on, read from `GET /metrics` after real calls:
//! issuances by provider and outcome, policy decisions, gRPC calls by
//! method and code, expiry lag, and the backlog gauges; and the health
//! endpoints a Kubernetes probe uses.

use std::time::Duration;

use tonic::Code;

use crate::harness::{self, authed, issue_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_issuances_decisions_calls_and_expiry_lag() {
    let h = harness::start().await;
    h.open_task("m-1", "demo-agent", 3600).await;
    h.issue_orders_read("m-1", 60).await.expect("issued");
    let denied = h
        .credentials()
        .await
        .issue(authed(&h.agent(), issue_request("m-1", "orders-admin", &["orders:refund"], 60)))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut unknown = issue_request("m-1", "reader", &[], 60);
    unknown.grants[0].provider = "no-such-provider-\u{1F600}".into();
    h.credentials().await.issue(authed(&h.agent(), unknown)).await.unwrap_err();

    let series = [
        (r#"writ_issuances_total{provider="tokens",outcome="issued"}"#, 1.0),
        (r#"writ_issuances_total{provider="tokens",outcome="denied"}"#, 1.0),
        (r#"writ_issuances_total{provider="unknown",outcome="refused"}"#, 1.0),
        (r#"writ_issue_duration_seconds_count{provider="tokens",outcome="issued"}"#, 1.0),
        (r#"writ_policy_decisions_total{action="issue",decision="allow"}"#, 1.0),
        (r#"writ_policy_decisions_total{action="issue",decision="deny"}"#, 1.0),
        (r#"writ_grpc_calls_total{method="writ.v1.CredentialService/Issue",code="Ok"}"#, 1.0),
        (r#"writ_grpc_calls_total{method="writ.v1.CredentialService/Issue",code="PermissionDenied"}"#, 1.0),
        (r#"writ_grpc_calls_total{method="writ.v1.TaskService/StartTask",code="Ok"}"#, 1.0),
    ];
    for (name, value) in series {
        assert_eq!(h.metric(name).await, value, "{name}:\n{}", h.metrics().await);
    }
    let page = h.metrics().await;
    assert!(!page.contains("no-such-provider"), "an agent's text is never a label");
    for gauge in
        ["writ_revocation_queue_depth ", "writ_revocation_oldest_due_seconds ", "writ_approvals_pending "]
    {
        assert!(page.contains(gauge), "{gauge}missing:\n{page}");
    }
    assert!(page.contains("writ_store_unavailable_total"), "{page}");

    // The lease outlives its TTL by 90 s of Writ's clock before the sweep
    // runs: its revocation reports about that much lag.
    h.advance(150);
    h.settle().await;
    let lag_count = r#"writ_expiry_lag_seconds_count{provider="tokens"}"#;
    assert_eq!(h.metric(lag_count).await, 1.0, "{}", h.metrics().await);
    let lag = h.metric(r#"writ_expiry_lag_seconds_sum{provider="tokens"}"#).await;
    assert!((89.0..=92.0).contains(&lag), "lag {lag}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_answer_for_probes() {
    let h = harness::start().await;
    let get = |path: &str| reqwest::get(h.http_url(path));
    let live = get("/healthz").await.unwrap();
    assert_eq!(live.status(), 200);
    let mut ready = get("/readyz").await.unwrap();
    for _ in 0..50 {
        if ready.status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = get("/readyz").await.unwrap();
    }
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
    // The gRPC health service says the same.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", h.grpc_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let status = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(
        status.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    h.stop().await;
}
