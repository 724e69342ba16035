//! Suspending a provider (AdminService SuspendProvider, ResumeProvider,
//! `writ providers`): an incident at one downstream system stops issuing
//! from it on every replica and revokes every live lease it issued there,
//! while other providers go on; resuming lifts it and what was revoked
//! stays revoked. On the embedded store with PostgreSQL, on Redis with two
//! replicas, and with bad input that changes nothing.

use writ::api::proto;
use writ::api::proto::admin_service_client::AdminServiceClient;

use crate::harness::{self, Harness, authed, bearer};
use crate::postgres::password;
use crate::postgres_support::{PgDatabase, login};
use crate::redis_support::RedisServer;
use crate::replicas::{issue_via, on_redis, second_replica};

fn suspend(provider: &str, reason: &str) -> proto::SuspendProviderRequest {
    proto::SuspendProviderRequest { provider: provider.into(), reason: reason.into() }
}

fn resume(provider: &str, reason: &str) -> proto::ResumeProviderRequest {
    proto::ResumeProviderRequest { provider: provider.into(), reason: reason.into() }
}

fn analytics_request(task_id: &str) -> proto::IssueRequest {
    let mut request = harness::issue_request(task_id, "reader", &[], 300);
    request.grants[0].provider = "analytics".into();
    request
}

async fn issue_analytics(h: &Harness, task_id: &str) -> Result<proto::IssuedCredential, tonic::Status> {
    let issued = h.credentials().await.issue(authed(&h.agent(), analytics_request(task_id))).await?;
    Ok(issued.into_inner().credentials.into_iter().next().unwrap())
}

#[tokio::test]
async fn a_suspended_provider_issues_nothing_and_its_leases_are_revoked() {
    let db = PgDatabase::create().await;
    let settings = db.provider_settings();
    let h = harness::start_with(Box::new(move |config, dir| {
        config
            .providers
            .insert("analytics".into(), writ::config::ProviderConfig { kind: "postgres".into(), settings });
        let policy = r#"
            @id("demo-agent-reads-analytics")
            permit (principal == Writ::Agent::"demo-agent", action == Writ::Action::"issue", resource == Writ::Role::"analytics/reader");
        "#;
        std::fs::write(dir.join("policies/analytics.cedar"), policy).unwrap();
    }))
    .await;
    let (mut admin, operator) = (h.admin().await, h.operator());
    h.open_task("p-1", "demo-agent", 600).await;
    h.open_task("p-2", "demo-agent", 600).await;
    let logins = [issue_analytics(&h, "p-1").await.unwrap(), issue_analytics(&h, "p-2").await.unwrap()];
    let token = h.issue_orders_read("p-1", 300).await.unwrap();
    let session = {
        let login_ = password(&logins[0]);
        login(&login_.username, &login_.password, &login_.connection).await.unwrap()
    };

    let outcome =
        admin.suspend_provider(authed(&operator, suspend("analytics", "INC-9: replica lag"))).await.unwrap();
    let outcome = outcome.into_inner();
    assert_eq!((outcome.revoked, outcome.retrying, outcome.failed), (2, 0, 0), "{outcome:?}");
    let provider = outcome.provider.unwrap();
    assert_eq!(provider.state, proto::ProviderState::Suspended as i32);
    assert_eq!((provider.kind.as_str(), provider.state_reason.as_str()), ("postgres", "INC-9: replica lag"));

    // Dead at the provider, in every task.
    for issued in &logins {
        let login_ = password(issued);
        assert!(!db.role_exists(&login_.username).await, "the role {} is gone", login_.username);
        let lease = h.lease(&issued.lease.as_ref().unwrap().lease_id).await;
        assert_eq!(lease.revocation_reason, "provider_suspended");
    }
    assert!(session.query("SELECT 1", &[]).await.is_err(), "the open session was ended");
    // Nothing more from it; the other provider goes on.
    let refused = issue_analytics(&h, "p-1").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("provider \"analytics\" is suspended"), "{refused:?}");
    assert!(!refused.message().contains("INC-9"), "the reason is for operators: {refused:?}");
    assert_eq!(h.introspect(&bearer(&token)).await["active"], true, "another provider's lease lives");
    h.issue_orders_read("p-2", 60).await.expect("another provider still issues");

    // The CLI shows it. (Not std's Command: the server runs on this
    // test's one thread.)
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(["providers", "list"])
        .env("WRIT_ENDPOINT", format!("http://{}", h.grpc_addr()))
        .env("WRIT_TOKEN", &operator)
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("analytics  postgres  suspended  since"), "{printed}");
    assert!(printed.contains("by demo-operator: INC-9: replica lag"), "{printed}");
    assert!(printed.contains("tokens  jwt  active"), "{printed}");

    // Bad input changes nothing.
    let twice = admin.suspend_provider(authed(&operator, suspend("analytics", "again"))).await.unwrap_err();
    assert_eq!(twice.code(), tonic::Code::FailedPrecondition, "{twice:?}");
    let unknown = admin.suspend_provider(authed(&operator, suspend("nope", "x"))).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let blank = admin.suspend_provider(authed(&operator, suspend("tokens", " "))).await.unwrap_err();
    assert_eq!(blank.code(), tonic::Code::InvalidArgument, "{blank:?}");
    let not_suspended = admin.resume_provider(authed(&operator, resume("tokens", "x"))).await.unwrap_err();
    assert_eq!(not_suspended.code(), tonic::Code::FailedPrecondition, "{not_suspended:?}");
    for token in [h.agent(), h.workflow(), h.auditor()] {
        let refused = admin.suspend_provider(authed(&token, suspend("tokens", "x"))).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    }
    assert_eq!(h.introspect(&bearer(&token)).await["active"], true, "tokens was never suspended");

    // Resumed: issued again; what was revoked stays revoked.
    let resumed =
        admin.resume_provider(authed(&operator, resume("analytics", "INC-9 closed"))).await.unwrap();
    assert_eq!(resumed.get_ref().state, proto::ProviderState::Active as i32);
    let fresh = issue_analytics(&h, "p-1").await.expect("issued again once resumed");
    let login_ = password(&fresh);
    login(&login_.username, &login_.password, &login_.connection).await.unwrap();
    let old = h.lease(&logins[0].lease.as_ref().unwrap().lease_id).await;
    assert_eq!(old.state, proto::LeaseState::Revoked as i32);

    // Evidence names the provider and the operator.
    let events: Vec<(String, String)> = h
        .audit_lines()
        .iter()
        .filter(|line| line["provider"] == "analytics" && line["outcome"] == "ok")
        .filter(|line| line["event"].as_str().is_some_and(|event| event.starts_with("provider_")))
        .map(|line| (line["event"].as_str().unwrap().to_owned(), line["actor"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        events,
        [
            ("provider_suspended".to_owned(), "demo-operator".to_owned()),
            ("provider_resumed".into(), "demo-operator".into())
        ]
    );
    h.stop().await;
    db.drop().await;
}

/// Suspended through replica B: replica A refuses at once, and the leases A
/// issued are revoked.
#[tokio::test]
async fn a_provider_suspended_on_one_replica_is_refused_on_the_other() {
    let redis = RedisServer::start();
    let h = on_redis(&redis).await;
    let b = second_replica(&h).await;
    h.open_task("r-1", "demo-agent", 600).await;
    let leases =
        [issue_via(h.grpc_addr(), &h.agent(), "r-1").await, issue_via(b.grpc_addr, &h.agent(), "r-1").await];
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", b.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let outcome = AdminServiceClient::new(channel)
        .suspend_provider(authed(&h.operator(), suspend("tokens", "key leak")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((outcome.revoked, outcome.retrying), (2, 0), "both replicas' leases: {outcome:?}");
    let refused = h.issue_orders_read("r-1", 60).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "refused on A at once: {refused:?}");
    for lease in &leases {
        let revoked = h.wait_for_state(&lease.lease_id, proto::LeaseState::Revoked).await;
        assert_eq!(revoked.revocation_reason, "provider_suspended");
    }
    b.stop().await.unwrap();
    h.stop().await;
}
