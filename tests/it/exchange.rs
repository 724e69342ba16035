//! The core exchange: issue → verify with the published JWKS → close the
//! task → introspection says inactive.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;
use writ::api::proto;

use crate::harness::{self, authed, bearer};

#[tokio::test]
async fn issue_verify_close_and_introspect() {
    let h = harness::start().await;
    h.open_task("exchange-1", "demo-agent", 600).await;
    let issued = h.issue_orders_read("exchange-1", 120).await.unwrap();
    let lease = issued.lease.clone().unwrap();
    assert_eq!(lease.state, proto::LeaseState::Active as i32);
    assert_eq!(lease.shape, proto::CredentialShape::Revocable as i32);
    let token = bearer(&issued);

    // A resource server verifies offline with the published JWKS.
    let jwks: JwkSet =
        reqwest::get(h.http_url("/providers/tokens/jwks.json")).await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("the token's key is published");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&["orders-api"]);
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["jti"], lease.lease_id.as_str());
    assert_eq!(claims["sub"], "demo-agent");
    assert_eq!(claims["writ_task"], "exchange-1");
    assert_eq!(claims["scope"], "orders:read");
    let exp = claims["exp"].as_i64().unwrap();
    assert_eq!(exp - claims["iat"].as_i64().unwrap(), 120);

    // The independent implementation agrees.
    let verified = crate::peers::jose_verify(
        &h.http_url("/providers/tokens/jwks.json"),
        claims["iss"].as_str().unwrap(),
        "orders-api",
        &token,
    )
    .await;
    assert_eq!(verified["jti"], lease.lease_id.as_str());

    let active = h.introspect(&token).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["sub"], "demo-agent");

    let closed = h
        .tasks()
        .await
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: "exchange-1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((closed.revoked, closed.retrying), (1, 0));
    assert_eq!(closed.task.unwrap().state, proto::TaskState::Closed as i32);
    assert_eq!(h.introspect(&token).await, serde_json::json!({ "active": false }));
    let revoked = h.lease(&lease.lease_id).await;
    assert_eq!(revoked.state, proto::LeaseState::Revoked as i32);
    assert_eq!(revoked.revocation_reason, "task_closed");

    // A closed task refuses issuance.
    let refused = h.issue_orders_read("exchange-1", 60).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");

    // Evidence: every step is in the audit log, without the token or lease id.
    let lines = h.audit_lines();
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    for expected in ["task_started", "decision", "issued", "task_closed", "revoked"] {
        assert!(events.contains(&expected), "{expected} missing from {events:?}");
    }
    let text = std::fs::read_to_string(&h.config.audit.path).unwrap();
    assert!(!text.contains(&token) && !text.contains(&lease.lease_id));
    assert!(writ::audit::verify_file(&h.config.audit.path).is_ok());
    h.stop().await;
}

#[tokio::test]
async fn bad_grants_get_precise_errors_and_change_nothing() {
    let h = harness::start().await;
    h.open_task("bad-1", "demo-agent", 600).await;
    let cases = [
        (harness::issue_request("bad-1", "no-such-role", &[], 60), tonic::Code::NotFound, "no role"),
        (
            harness::issue_request("bad-1", "orders-read", &["orders:delete"], 60),
            tonic::Code::InvalidArgument,
            "scope",
        ),
        (harness::issue_request("bad-1", "orders-read", &[], 0), tonic::Code::InvalidArgument, "ttl"),
        (
            harness::issue_request("bad-1", "orders-admin", &["orders:write"], 60),
            tonic::Code::PermissionDenied,
            "no policy permits",
        ),
        (harness::issue_request("no-such-task", "orders-read", &[], 60), tonic::Code::NotFound, "not found"),
        (harness::issue_request("", "orders-read", &[], 60), tonic::Code::InvalidArgument, "task_id"),
    ];
    for (request, code, text) in cases {
        let status = h.credentials().await.issue(authed(&h.agent(), request)).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(text), "{:?} should mention {text:?}", status.message());
    }
    let mut no_tool = harness::issue_request("bad-1", "orders-read", &[], 60);
    no_tool.tool.clear();
    let status = h.credentials().await.issue(authed(&h.agent(), no_tool)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let leases = h
        .admin()
        .await
        .list_leases(authed(&h.operator(), proto::ListLeasesRequest::default()))
        .await
        .unwrap();
    assert!(leases.into_inner().leases.is_empty(), "nothing was issued");
    h.stop().await;
}

#[tokio::test]
async fn ttl_is_clamped_to_role_maximum_and_task_deadline() {
    let h = harness::start().await;
    h.open_task("clamp-1", "demo-agent", 3600).await;
    let issued = h.issue_orders_read("clamp-1", 7200).await.unwrap();
    let lease = issued.lease.unwrap();
    let ttl = lease.expires_at.unwrap().seconds - lease.issued_at.unwrap().seconds;
    assert_eq!(ttl, 900, "clamped to the role's 15m maximum");
    assert!(issued.notices.iter().any(|n| n.contains("role maximum")), "{:?}", issued.notices);

    h.open_task("clamp-2", "demo-agent", 100).await;
    let issued = h.issue_orders_read("clamp-2", 600).await.unwrap();
    let lease = issued.lease.unwrap();
    assert_eq!(lease.expires_at.unwrap().seconds - lease.issued_at.unwrap().seconds, 100);
    assert!(issued.notices.iter().any(|n| n.contains("deadline")), "{:?}", issued.notices);
    h.stop().await;
}

/// A provider in another process and another language (the example Python
/// plugin) is configured like any other and goes through the same lease
/// lifecycle: issued, then revoked at the plugin when the task closes.
async fn with_reports_provider(endpoint: String) -> harness::Harness {
    harness::start_with(Box::new(move |config, dir| harness::add_reports_provider(config, dir, &endpoint)))
        .await
}

async fn issue_report_token(h: &harness::Harness, task_id: &str) -> proto::Lease {
    let request = harness::reports_request(task_id);
    let issued = h.credentials().await.issue(authed(&h.agent(), request)).await.unwrap().into_inner();
    assert!(!bearer(&issued.credentials[0]).is_empty());
    issued.credentials[0].lease.clone().unwrap()
}

#[tokio::test]
async fn an_external_provider_is_used_through_the_same_lifecycle() {
    let plugin = crate::peers::PythonPlugin::start();
    let h = with_reports_provider(plugin.endpoint.clone()).await;
    h.open_task("ext-1", "demo-agent", 600).await;
    let lease = issue_report_token(&h, "ext-1").await;
    assert_eq!(lease.provider, "reports");
    let closed = h
        .tasks()
        .await
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: "ext-1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((closed.revoked, closed.retrying), (1, 0));
    assert_eq!(h.lease(&lease.lease_id).await.state, proto::LeaseState::Revoked as i32);
    h.stop().await;
    drop(plugin);
}

/// A batch of revocations that outlasts its claims (a slow provider; the
/// test clock jumps past `claim_timeout` while the batch runs) has its
/// outcomes written before the worker claims again, so the worker does not
/// take its own leases a second time: at the provider each credential is
/// revoked once, with no repeated call.
#[tokio::test]
async fn a_batch_that_outlasts_its_claims_is_not_claimed_again() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.txt");
    let plugin = crate::peers::PythonPlugin::start_with(
        0,
        &["--journal", journal.to_str().unwrap(), "--revoke-delay-ms", "1500"],
    );
    // CloseTask waits for the whole batch (1.5 s at the provider): well
    // past the default `close_wait` of 2 s, so that a loaded machine does
    // not make the answer come back with the batch still retrying.
    let endpoint = plugin.endpoint.clone();
    let h = harness::start_with(Box::new(move |config, dir| {
        harness::add_reports_provider(config, dir, &endpoint);
        config.limits.close_wait = Duration::from_secs(20);
    }))
    .await;
    h.open_task("slow", "demo-agent", 600).await;
    for _ in 0..4 {
        issue_report_token(&h, "slow").await;
    }
    let mut tasks = h.tasks().await;
    let workflow = h.workflow();
    let closing = tokio::spawn(async move {
        tasks.close_task(authed(&workflow, proto::CloseTaskRequest { task_id: "slow".into() })).await
    });
    // The batch is claimed at once and takes 1.5 s at the provider; its
    // claims end 30 s (of the test clock) after the claim.
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.advance(31);
    let closed = closing.await.unwrap().unwrap().into_inner();
    assert_eq!((closed.revoked, closed.retrying), (4, 0));
    // Had the worker claimed the batch again, it would not be idle before
    // that second batch was done at the provider.
    h.settle().await;
    let text = std::fs::read_to_string(&journal).unwrap();
    let calls = |outcome: &str| text.lines().filter(|line| line.starts_with(outcome)).count();
    assert_eq!((calls("revoked "), calls("revoke-noop ")), (4, 0), "{text}");
    h.stop().await;
    drop(plugin);
}

/// A provider that goes away mid-run: minting fails cleanly, revocations are
/// retried (visibly) and complete once the provider is back.
#[tokio::test]
async fn revocations_wait_for_a_provider_that_went_away() {
    let plugin = crate::peers::PythonPlugin::start();
    let port = plugin.port();
    let h = with_reports_provider(plugin.endpoint.clone()).await;
    h.open_task("ext-down", "demo-agent", 600).await;
    let lease = issue_report_token(&h, "ext-down").await;
    drop(plugin);

    let request = harness::reports_request("ext-down");
    let status = h.credentials().await.issue(authed(&h.agent(), request)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let failures =
        r#"writ_provider_failures_total{provider="reports",operation="mint",reason="unavailable"}"#;
    assert_eq!(h.metric(failures).await, 1.0, "{}", h.metrics().await);

    let closed = h
        .tasks()
        .await
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: "ext-down".into() }))
        .await
        .unwrap()
        .into_inner();
    // Both the live lease and the failed mint's pending lease (cleaned up by
    // its intent handle, in case the plugin created something) wait for it.
    assert_eq!((closed.revoked, closed.retrying), (0, 2), "{closed:?}");
    let waiting = h.lease(&lease.lease_id).await;
    assert_eq!(waiting.state, proto::LeaseState::Revoking as i32);
    assert!(!waiting.revocation_error.is_empty(), "the error is visible: {waiting:?}");
    let retries = r#"writ_revocation_retries_total{provider="reports"}"#;
    assert!(h.metric(retries).await >= 2.0, "retries are visible in metrics: {}", h.metrics().await);
    let failed_revokes =
        r#"writ_provider_failures_total{provider="reports",operation="revoke",reason="unavailable"}"#;
    assert!(h.metric(failed_revokes).await >= 2.0, "{}", h.metrics().await);

    let _back = crate::peers::PythonPlugin::start_on(port);
    h.advance(5);
    let revoked = h.wait_for_state(&lease.lease_id, proto::LeaseState::Revoked).await;
    assert_eq!(revoked.revocation_reason, "task_closed");
    let request = proto::ListLeasesRequest { task_id: "ext-down".into(), ..Default::default() };
    let leases =
        h.admin().await.list_leases(authed(&h.operator(), request)).await.unwrap().into_inner().leases;
    let failed = leases.iter().find(|other| other.lease_id != lease.lease_id).unwrap();
    let failed = h.wait_for_state(&failed.lease_id, proto::LeaseState::Failed).await;
    assert_eq!(failed.revocation_reason, "mint_failed");
    let done = r#"writ_revocations_done_total{provider="reports"}"#;
    assert_eq!(h.metric(done).await, 2.0, "{}", h.metrics().await);
    let minted = r#"writ_provider_call_duration_seconds_count{provider="reports",operation="mint"}"#;
    assert_eq!(h.metric(minted).await, 2.0, "one mint that worked, one that failed");
    h.stop().await;
}

/// A revocation the provider says can never succeed is not retried
/// forever: from attempt `give_up_after` the lease becomes failed with the
/// reason, one audit record and a metric say so, and nothing is tried
/// again. The provider's own words reach the operator (the lease, the
/// audit log), never the agent.
#[tokio::test]
async fn a_revocation_that_cannot_succeed_fails_once_and_visibly() {
    let plugin = crate::peers::PythonPlugin::start_with(0, &["--refuse-revoke"]);
    let h = with_reports_provider(plugin.endpoint.clone()).await;
    assert_eq!(h.config.revocation.give_up_after, 3, "the default");
    h.open_task("pinned", "demo-agent", 600).await;
    let lease = issue_report_token(&h, "pinned").await;
    let closed = h
        .tasks()
        .await
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: "pinned".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((closed.revoked, closed.retrying, closed.failed), (0, 1, 0), "retried at first: {closed:?}");
    let mut failed = h.lease(&lease.lease_id).await;
    for _ in 0..50 {
        if failed.state != proto::LeaseState::Revoking as i32 {
            break;
        }
        h.advance(600);
        h.settle().await;
        failed = h.lease(&lease.lease_id).await;
    }
    assert_eq!(failed.state, proto::LeaseState::Failed as i32, "{failed:?}");
    assert_eq!(failed.revocation_reason, "task_closed", "the reason it was revoked for is kept");
    assert!(failed.revocation_error.contains("pinned and cannot be revoked"), "{failed:?}");
    assert_eq!(failed.revocation_attempts, 3);
    let gave_up = r#"writ_revocations_failed_total{provider="reports"}"#;
    assert_eq!(h.metric(gave_up).await, 1.0, "{}", h.metrics().await);

    // Time passes: nothing is tried again, and the evidence says so once.
    for _ in 0..3 {
        h.advance(3600);
        h.settle().await;
    }
    let revokes = r#"writ_provider_call_duration_seconds_count{provider="reports",operation="revoke"}"#;
    assert_eq!(h.metric(revokes).await, 3.0, "three attempts, then no more: {}", h.metrics().await);
    let audit = h.audit_lines();
    let hashed = h.running().broker.audit().lease_hash(lease.lease_id.parse().unwrap());
    let about = |event: &str| {
        audit.iter().filter(|line| line["event"] == event && line["lease"] == hashed.as_str()).count()
    };
    assert_eq!((about("revocation_failed"), about("revocation_retry"), about("revoked")), (1, 2, 0));
    let request = proto::GetTaskRequest { task_id: "pinned".into() };
    let task = h.tasks().await.get_task(authed(&h.workflow(), request)).await.unwrap().into_inner();
    assert_eq!(task.leases[0].state, proto::LeaseState::Failed as i32);
    h.stop().await;
}
