//! The identity team's PolicyService (role `policy_admin`, not `operator`):
//! live reload (also on SIGHUP) and explain. A good set changes the next
//! decision; a broken one is refused with file and line and the running set
//! is kept; every reload is evidence with the set's digest; explain says
//! what would be decided without issuing anything.

use std::time::Duration;

use writ::api::proto;
use writ::api::proto::policy_service_client::PolicyServiceClient;
use writ::clock::Clock;
use writ::config::{IdentityMatch, ServiceConfig, ServiceRole};

use crate::harness::{self, Harness, authed};

const POLICY_ADMIN: &str = "policy-admin";

async fn with_policy_admin() -> Harness {
    with_policy_admin_and(false).await
}

async fn with_policy_admin_and(reload_on_sighup: bool) -> Harness {
    harness::start_with(Box::new(move |config, _| {
        config.policy.reload_on_sighup = reload_on_sighup;
        let issuer = config.issuers[0].issuer.clone();
        config.services.push(ServiceConfig {
            name: "policy-team".into(),
            roles: vec![ServiceRole::PolicyAdmin],
            identity: Some(IdentityMatch {
                issuer,
                subject: Some(POLICY_ADMIN.into()),
                claims: Default::default(),
            }),
            certificate: None,
        });
    }))
    .await
}

async fn policies(h: &Harness) -> PolicyServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", h.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    PolicyServiceClient::new(channel)
}

fn policy_dir(h: &Harness) -> std::path::PathBuf {
    h.config.policy.paths[0].clone()
}

const FORBID: &str = r#"@id("orders-frozen")
forbid (principal, action, resource == Writ::Role::"tokens/orders-read");
"#;

#[tokio::test]
async fn a_reload_changes_the_next_decision_and_a_broken_set_is_refused() {
    let h = with_policy_admin().await;
    let admin = h.token(POLICY_ADMIN);
    let mut client = policies(&h).await;
    let first =
        client.get_policy_set(authed(&admin, proto::GetPolicySetRequest {})).await.unwrap().into_inner();
    assert_eq!(first.digest.len(), 64, "{first:?}");
    let info = format!("writ_policy_set_info{{digest=\"{}\"}}", first.digest);
    assert_eq!(h.metric(&info).await, 1.0, "the replica reports its set: {}", h.metrics().await);

    h.open_task("p-1", "demo-agent", 600).await;
    h.issue_orders_read("p-1", 60).await.expect("allowed by the example policy");

    std::fs::write(policy_dir(&h).join("freeze.cedar"), FORBID).unwrap();
    let reloaded =
        client.reload_policies(authed(&admin, proto::ReloadPoliciesRequest {})).await.unwrap().into_inner();
    assert_eq!(reloaded.previous_digest, first.digest);
    let second = reloaded.policy_set.unwrap();
    assert_ne!(second.digest, first.digest);
    assert_eq!(second.policies, first.policies + 1);
    let denied = h.issue_orders_read("p-1", 60).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(denied.message().contains("orders-frozen"), "the next decision uses the new set: {denied:?}");
    let info = |digest: &str| format!("writ_policy_set_info{{digest=\"{digest}\"}}");
    assert_eq!(h.metric(&info(&second.digest)).await, 1.0);
    assert_eq!(h.metric(&info(&first.digest)).await, 0.0, "the old set is no longer reported");

    // A broken file: refused with file and line, the running set kept.
    std::fs::write(policy_dir(&h).join("broken.cedar"), "@id(\"x\")\n\npermit (principal, action,\n")
        .unwrap();
    let refused = client.reload_policies(authed(&admin, proto::ReloadPoliciesRequest {})).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("broken.cedar") && refused.message().contains("line "), "{refused:?}");
    assert!(refused.message().contains("running policy set is kept"), "{refused:?}");
    let now =
        client.get_policy_set(authed(&admin, proto::GetPolicySetRequest {})).await.unwrap().into_inner();
    assert_eq!(now.digest, second.digest);
    assert_eq!(h.issue_orders_read("p-1", 60).await.unwrap_err().code(), tonic::Code::PermissionDenied);

    // Evidence: both reloads, with who and which digests; every decision
    // names the set it was made under.
    let audit = h.audit_lines();
    let decisions: Vec<_> = audit.iter().filter(|line| line["event"] == "decision").collect();
    assert_eq!(decisions.len(), 3, "{decisions:?}");
    assert_eq!(decisions[0]["details"]["policy_set"], first.digest.as_str());
    assert_eq!(decisions[1]["details"]["policy_set"], second.digest.as_str());
    assert_eq!(
        decisions[2]["details"]["policy_set"],
        second.digest.as_str(),
        "the refused set never decided"
    );
    let reloads: Vec<_> = audit.iter().filter(|line| line["event"] == "policy_reloaded").collect();
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert_eq!((&reloads[0]["outcome"], &reloads[0]["actor"]), (&"ok".into(), &"policy-team".into()));
    assert_eq!(reloads[0]["details"]["digest"], second.digest.as_str());
    assert_eq!(reloads[0]["details"]["previous_digest"], first.digest.as_str());
    assert_eq!(reloads[1]["outcome"], "error");
    assert!(reloads[1]["reason"].as_str().unwrap().contains("broken.cedar"));
    h.stop().await;
}

#[tokio::test]
async fn only_the_policy_admin_role_reaches_the_policy_service() {
    let h = with_policy_admin().await;
    let mut client = policies(&h).await;
    for token in [h.operator(), h.workflow(), h.agent()] {
        let refused =
            client.reload_policies(authed(&token, proto::ReloadPoliciesRequest {})).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("policy_admin"), "{refused:?}");
    }
    let missing =
        client.get_policy_set(tonic::Request::new(proto::GetPolicySetRequest {})).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    assert!(h.audit_lines().iter().all(|line| line["event"] != "policy_reloaded"), "nothing was reloaded");
    h.stop().await;
}

/// SIGHUP reloads the files. (The signal goes to this whole test process;
/// only this test's Writ listens for it, `reload_on_sighup` being off in
/// the others.)
#[tokio::test]
async fn sighup_reloads_the_policy_files() {
    let h = with_policy_admin_and(true).await;
    let before = h.running().broker.policy_digest();
    std::fs::write(policy_dir(&h).join("freeze.cedar"), FORBID).unwrap();
    let status =
        std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut after = before.clone();
    for _ in 0..100 {
        after = h.running().broker.policy_digest();
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(after, before, "reloaded on SIGHUP");
    let audit = h.audit_lines();
    let reload = audit.iter().find(|line| line["event"] == "policy_reloaded").expect("audited");
    assert_eq!(reload["actor"], "sighup");
    h.stop().await;
}

fn explain_request(grant: &str, context: proto::TaskContext) -> proto::ExplainRequest {
    proto::ExplainRequest {
        agent: "demo-agent".into(),
        task_id: String::new(),
        context: Some(context),
        tool: "orders.refund".into(),
        grant: Some(writ::cli::parse_grant(grant).unwrap()),
        action: String::new(),
    }
}

fn environment(environment: &str, classification: &str) -> proto::TaskContext {
    proto::TaskContext {
        environment: environment.into(),
        data_classification: classification.into(),
        ..Default::default()
    }
}

/// Explain says what Writ would decide and which policies decide it,
/// through the same validation and policy as Issue, and issues nothing.
#[tokio::test]
async fn explain_says_what_would_be_decided_and_issues_nothing() {
    let h = with_policy_admin().await;
    let admin = h.token(POLICY_ADMIN);
    let mut client = policies(&h).await;
    let digest = h.running().broker.policy_digest();

    let request = explain_request("tokens/orders-admin:orders:refund@5m", environment("dev", "internal"));
    let allowed = client.explain(authed(&admin, request)).await.unwrap().into_inner();
    assert_eq!((allowed.decision.as_str(), allowed.allowed), ("allow", true), "{allowed:?}");
    assert_eq!(allowed.policies, ["refunds-only-in-dev"]);
    assert_eq!(allowed.policy_set, *digest);
    assert!(allowed.explanation.contains("permitted by refunds-only-in-dev"), "{allowed:?}");

    let request = explain_request("tokens/orders-admin:orders:refund", environment("prod", "internal"));
    let step_up = client.explain(authed(&admin, request)).await.unwrap().into_inner();
    assert_eq!((step_up.decision.as_str(), step_up.allowed), ("step_up", false), "{step_up:?}");
    assert_eq!(step_up.policies, ["prod-refunds-need-approval"]);
    assert!(step_up.explanation.contains("an Issue would create an approval request"), "{step_up:?}");

    let request = explain_request("tokens/orders-admin:orders:refund", environment("staging", "internal"));
    let denied = client.explain(authed(&admin, request)).await.unwrap().into_inner();
    assert_eq!((denied.decision.as_str(), denied.allowed), ("deny", false));
    assert!(denied.policies.is_empty() && denied.explanation.contains("no policy permits"), "{denied:?}");

    let request = explain_request("tokens/orders-admin:orders:refund", environment("dev", "restricted"));
    let forbidden = client.explain(authed(&admin, request)).await.unwrap().into_inner();
    assert_eq!(forbidden.policies, ["no-restricted-data"]);
    assert!(forbidden.explanation.contains("denied by no-restricted-data"), "{forbidden:?}");

    // An existing task of the agent: its attributes decide.
    h.open_task("x-1", "demo-agent", 600).await;
    let mut on_task = explain_request("tokens/orders-read:orders:read@1h", environment("", ""));
    (on_task.task_id, on_task.context) = ("x-1".into(), None);
    let read = client.explain(authed(&admin, on_task.clone())).await.unwrap().into_inner();
    assert_eq!(read.policies, ["demo-agent-reads-orders"]);
    assert!(!read.notices.is_empty(), "the TTL clamp is said as Issue would: {read:?}");

    // Bad questions get clear errors.
    let mut unknown = on_task.clone();
    unknown.agent = "nobody".into();
    let error = client.explain(authed(&admin, unknown)).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");
    let mut both = on_task.clone();
    both.context = Some(environment("dev", ""));
    assert_eq!(client.explain(authed(&admin, both)).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let mut action = on_task.clone();
    action.action = "delete".into();
    assert_eq!(
        client.explain(authed(&admin, action)).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let mut role = on_task.clone();
    role.grant = Some(writ::cli::parse_grant("tokens/no-such-role").unwrap());
    assert_eq!(client.explain(authed(&admin, role)).await.unwrap_err().code(), tonic::Code::NotFound);
    h.tasks()
        .await
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: "x-1".into() }))
        .await
        .unwrap();
    let closed = client.explain(authed(&admin, on_task)).await.unwrap_err();
    assert_eq!(closed.code(), tonic::Code::FailedPrecondition, "{closed:?}");

    // A suspended agent: the policy's answer, and that Writ would refuse.
    h.running().broker.suspend_agent("soc", "demo-agent", "", h.clock.now()).await.unwrap();
    let request = explain_request("tokens/orders-admin:orders:refund", environment("dev", "internal"));
    let suspended = client.explain(authed(&admin, request)).await.unwrap().into_inner();
    assert_eq!((suspended.decision.as_str(), suspended.allowed), ("allow", false));
    assert!(suspended.explanation.contains("is suspended"), "{suspended:?}");

    // Nothing was issued; each question is evidence.
    let listed = h
        .admin()
        .await
        .list_leases(authed(&h.operator(), proto::ListLeasesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert!(listed.is_empty(), "{listed:?}");
    let audit = h.audit_lines();
    let asked = audit.iter().filter(|line| line["event"] == "policy_explained").count();
    assert_eq!(asked, 6, "the six questions that reached policy");
    h.stop().await;
}

/// `writ policy explain` prints the decision and the policies.
#[tokio::test]
async fn the_cli_explains() {
    let h = with_policy_admin().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_writ"))
        .args([
            "policy",
            "explain",
            "--agent",
            "demo-agent",
            "--environment",
            "dev",
            "--tool",
            "orders.refund",
        ])
        .args(["--grant", "tokens/orders-admin:orders:refund@5m"])
        .env("WRIT_ENDPOINT", format!("http://{}", h.grpc_addr()))
        .env("WRIT_TOKEN", h.token(POLICY_ADMIN))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text} {}", String::from_utf8_lossy(&output.stderr));
    assert!(text.starts_with("allow: permitted by refunds-only-in-dev"), "{text}");
    assert!(text.contains(&format!("policy set {}", h.running().broker.policy_digest())), "{text}");
    h.stop().await;
}
