//! Step-up approvals end to end over gRPC: `writ dev`'s policy asks two
//! approvers of `orders-approvers` for refunds in prod. Issue → approval
//! request → votes → the agent collects exactly what was approved, once;
//! every rule an approver is held to; deny, expiry, close, suspension and
//! restart; two replicas on Redis; approvers identified by npm
//! `oidc-provider`.

use std::time::Duration;

use tokio_stream::StreamExt as _;
use writ::api::proto;
use writ::clock::Clock;
use writ::config::{IdentityMatch, IssuerConfig, ServiceConfig, ServiceRole};

use crate::harness::{self, Harness, authed, bearer};
use crate::redis_support::RedisServer;
use crate::replicas::{on_redis, second_replica};

/// Opens a prod task for the demo agent.
async fn prod_task(h: &Harness, task_id: &str, deadline_in: i64) {
    let request = proto::StartTaskRequest {
        task_id: task_id.into(),
        agent: "demo-agent".into(),
        context: Some(proto::TaskContext {
            environment: "prod".into(),
            ticket: "OPS-43".into(),
            ..Default::default()
        }),
        deadline: Some(writ::api::convert::timestamp(h.clock.now() + chrono::Duration::seconds(deadline_in))),
    };
    h.tasks().await.start_task(authed(&h.workflow(), request)).await.unwrap();
}

fn refund_request(task_id: &str) -> proto::IssueRequest {
    let mut request = harness::issue_request(task_id, "orders-admin", &["orders:refund"], 120);
    request.tool = "orders.refund".into();
    request
}

/// Asks for a refund token in a prod task: policy wants approval.
async fn ask(h: &Harness, task_id: &str) -> proto::Approval {
    let response = h.credentials().await.issue(authed(&h.agent(), refund_request(task_id))).await.unwrap();
    let response = response.into_inner();
    assert!(response.credentials.is_empty(), "nothing is issued before approval: {response:?}");
    response.approval_required.expect("an approval request")
}

async fn approve(h: &Harness, token: &str, id: &str, reason: &str) -> Result<proto::Approval, tonic::Status> {
    let request = proto::DecideApprovalRequest { approval_id: id.into(), reason: reason.into() };
    h.approvals().await.approve(authed(token, request)).await.map(tonic::Response::into_inner)
}

async fn deny(h: &Harness, token: &str, id: &str, reason: &str) -> Result<proto::Approval, tonic::Status> {
    let request = proto::DecideApprovalRequest { approval_id: id.into(), reason: reason.into() };
    h.approvals().await.deny(authed(token, request)).await.map(tonic::Response::into_inner)
}

async fn collect(h: &Harness, id: &str) -> Result<proto::IssueResponse, tonic::Status> {
    let request = proto::CollectApprovalRequest { approval_id: id.into() };
    h.credentials().await.collect_approval(authed(&h.agent(), request)).await.map(tonic::Response::into_inner)
}

async fn get(h: &Harness, id: &str) -> proto::Approval {
    let request = proto::GetApprovalRequest { approval_id: id.into() };
    h.approvals().await.get_approval(authed(&h.approver(1), request)).await.unwrap().into_inner()
}

/// Waits (bounded) until the request is in `state`.
async fn wait_for(h: &Harness, id: &str, state: proto::ApprovalState) -> proto::Approval {
    for _ in 0..200 {
        let approval = get(h, id).await;
        if approval.state() == state {
            return approval;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("approval {id} never reached {state:?}: {:?}", get(h, id).await);
}

fn assert_refused(result: Result<impl std::fmt::Debug, tonic::Status>, code: tonic::Code, words: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(words), "{words:?} not in {:?}", status.message());
}

/// The whole happy path, on whichever store `h` runs; `collector` is where
/// the agent collects (the same replica, or another).
async fn two_approvers_then_one_collection(h: &Harness, collector: &Harness) {
    prod_task(h, "refund-1", 3600).await;
    let approval = ask(h, "refund-1").await;
    let id = approval.approval_id.clone();
    assert_eq!(approval.state(), proto::ApprovalState::Pending);
    assert_eq!((approval.group.as_str(), approval.quorum), ("orders-approvers", 2));
    assert_eq!(approval.policies, vec!["prod-refunds-need-approval".to_string()]);
    assert_eq!(approval.grants.len(), 1);
    assert_eq!(approval.grants[0].role, "orders-admin");
    assert_eq!(approval.grants[0].scopes, vec!["orders:refund".to_string()]);
    let expires = approval.expires_at.unwrap();
    assert_eq!(expires.seconds - approval.created_at.unwrap().seconds, 15 * 60, "the default timeout");
    // Asking again while it waits answers the same request.
    assert_eq!(ask(h, "refund-1").await.approval_id, id);

    // The agent watches its request.
    let watch = proto::WatchApprovalRequest { approval_id: id.clone() };
    let mut stream =
        h.credentials().await.watch_approval(authed(&h.agent(), watch)).await.unwrap().into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.state(), proto::ApprovalState::Pending);

    assert_refused(collect(collector, &id).await, tonic::Code::FailedPrecondition, "still pending: 0 of 2");
    let one = approve(h, &h.approver(1), &id, "refund OPS-43 checked").await.unwrap();
    assert_eq!(one.state(), proto::ApprovalState::Pending, "one of two");
    let seen = stream.next().await.unwrap().unwrap();
    assert_eq!(
        (seen.state(), seen.votes.len()),
        (proto::ApprovalState::Pending, 1),
        "the watch sees the vote"
    );
    // The same approver twice is not a quorum of two.
    assert_refused(
        approve(h, &h.approver(1), &id, "again").await,
        tonic::Code::FailedPrecondition,
        "a quorum of 2 needs 2 distinct approvers",
    );
    let two = approve(h, &h.approver(2), &id, "agreed").await.unwrap();
    assert_eq!(two.state(), proto::ApprovalState::Approved);
    assert!(two.collect_by.is_some());
    let seen = stream.next().await.unwrap().unwrap();
    assert_eq!(seen.state(), proto::ApprovalState::Approved);
    assert!(stream.next().await.is_none(), "the watch ends once the request is approved");
    assert_refused(
        approve(h, &h.token(writ::dev::APPROVER_SUBJECT), &id, "late").await,
        tonic::Code::FailedPrecondition,
        "is approved",
    );

    let collected = collect(collector, &id).await.unwrap();
    assert!(collected.approval_required.is_none());
    assert_eq!(collected.credentials.len(), 1);
    let lease = collected.credentials[0].lease.clone().unwrap();
    assert_eq!((lease.role.as_str(), lease.tool.as_str()), ("orders-admin", "orders.refund"));
    assert_eq!(lease.scopes, vec!["orders:refund".to_string()]);
    let token = bearer(&collected.credentials[0]);
    let introspected = h.introspect(&token).await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["scope"], "orders:refund", "exactly the approved scope: {introspected}");
    assert_refused(collect(collector, &id).await, tonic::Code::FailedPrecondition, "collected already");
    assert_eq!(get(h, &id).await.state(), proto::ApprovalState::Collected);

    // The task's close revokes what was collected, like any lease.
    let close = proto::CloseTaskRequest { task_id: "refund-1".into() };
    h.tasks().await.close_task(authed(&h.workflow(), close)).await.unwrap();
    h.wait_for_state(&lease.lease_id, proto::LeaseState::Revoked).await;
    assert_eq!(h.introspect(&token).await["active"], false);
}

#[tokio::test]
async fn two_approvers_approve_and_the_agent_collects_once() {
    let h = harness::start().await;
    two_approvers_then_one_collection(&h, &h).await;
    let audit = h.audit_lines();
    let events: Vec<&str> = audit
        .iter()
        .map(|line| line["event"].as_str().unwrap())
        .filter(|event| event.starts_with("approval_") || *event == "issued")
        .collect();
    assert_eq!(
        events,
        [
            "approval_requested",
            "approval_vote",
            "approval_vote",
            "approval_approved",
            "approval_collected",
            "issued"
        ]
    );
    let approved = audit.iter().find(|line| line["event"] == "approval_approved").unwrap();
    assert_eq!(approved["details"]["approvers"], serde_json::json!(["demo-approver-1", "demo-approver-2"]));
    assert_eq!(approved["actor"], "demo-approver-2");
    let decisions: Vec<&str> = audit
        .iter()
        .filter(|line| line["event"] == "decision" && line["role"] == "orders-admin")
        .map(|line| line["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["step_up", "step_up", "step_up"], "asked, asked again, collected");
    writ::audit::verify_file(&h.config.audit.path).unwrap();
    h.stop().await;
}

/// Adds approvers who are the demo agent's owner, the task's starter, and
/// outside the group.
fn with_conflicted_approvers(config: &mut writ::config::Config, _: &std::path::Path) {
    let issuer = config.issuers[0].issuer.clone();
    let service = |name: &str, subject: &str, roles: Vec<ServiceRole>| ServiceConfig {
        name: name.into(),
        roles,
        identity: Some(IdentityMatch {
            issuer: issuer.clone(),
            subject: Some(subject.into()),
            claims: Default::default(),
        }),
        certificate: None,
    };
    config.services.push(service("you@example.com", "approver:owner", vec![ServiceRole::Approver]));
    config.services.push(service("outsider", "approver:outsider", vec![ServiceRole::Approver]));
    let workflow = config.services.iter_mut().find(|service| service.name == "demo-workflow").unwrap();
    workflow.roles.push(ServiceRole::Approver);
    let group = config.approvals.groups.get_mut("orders-approvers").unwrap();
    group.push("you@example.com".into());
    group.push("demo-workflow".into());
}

#[tokio::test]
async fn approvers_are_held_to_the_rules() {
    let h = harness::start_with(Box::new(with_conflicted_approvers)).await;
    prod_task(&h, "refund-2", 3600).await;
    let id = ask(&h, "refund-2").await.approval_id;
    let owner = h.token("approver:owner");
    assert_refused(
        approve(&h, &owner, &id, "mine").await,
        tonic::Code::PermissionDenied,
        "owns agent \"demo-agent\"; an owner may not decide its own agent's requests",
    );
    assert_refused(
        approve(&h, &h.workflow(), &id, "I started it").await,
        tonic::Code::PermissionDenied,
        "started task \"refund-2\"; whoever started a task may not decide its requests",
    );
    assert_refused(
        approve(&h, &h.token("approver:outsider"), &id, "ok").await,
        tonic::Code::PermissionDenied,
        "is not in approver group \"orders-approvers\"",
    );
    // An agent's token never reaches the approvals API, nor an operator's.
    assert_refused(approve(&h, &h.agent(), &id, "me").await, tonic::Code::PermissionDenied, "is an agent");
    assert_refused(
        approve(&h, &h.operator(), &id, "ops").await,
        tonic::Code::PermissionDenied,
        "lacks the approver role",
    );
    let list = proto::ListApprovalsRequest::default();
    let refused = h.approvals().await.list_approvals(authed(&h.agent(), list)).await;
    assert_refused(refused, tonic::Code::PermissionDenied, "approver role");
    // Bad input changes nothing.
    assert_refused(
        approve(&h, &h.approver(1), &id, "  ").await,
        tonic::Code::InvalidArgument,
        "reason must say why",
    );
    assert_refused(
        approve(&h, &h.approver(1), &id, "bad\u{202e}text").await,
        tonic::Code::InvalidArgument,
        "reason must be printable",
    );
    assert_refused(
        approve(&h, &h.approver(1), "nope", "x").await,
        tonic::Code::InvalidArgument,
        "not a UUID",
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_refused(approve(&h, &h.approver(1), &unknown, "x").await, tonic::Code::NotFound, "not found");
    let approval = get(&h, &id).await;
    assert!(approval.votes.is_empty(), "no refused vote counted: {approval:?}");
    // A single approver on a quorum of two does not approve.
    let one = approve(&h, &h.approver(1), &id, "fine").await.unwrap();
    assert_eq!(one.state(), proto::ApprovalState::Pending);
    // The agent cannot watch or collect another's request, nor a bad id.
    let watch = proto::WatchApprovalRequest { approval_id: unknown.clone() };
    let refused = h.credentials().await.watch_approval(authed(&h.agent(), watch)).await;
    assert_refused(refused.map(|_| ()), tonic::Code::NotFound, "not found for agent");
    assert_refused(collect(&h, "x").await, tonic::Code::InvalidArgument, "not a UUID");

    // The listing filters.
    let pending = proto::ListApprovalsRequest {
        state: proto::ApprovalState::Pending.into(),
        group: "orders-approvers".into(),
        ..Default::default()
    };
    let listed = h
        .approvals()
        .await
        .list_approvals(authed(&h.approver(2), pending))
        .await
        .unwrap()
        .into_inner()
        .approvals;
    assert_eq!(listed.iter().map(|a| a.approval_id.as_str()).collect::<Vec<_>>(), vec![id.as_str()]);
    let other = proto::ListApprovalsRequest { agent: "someone-else".into(), ..Default::default() };
    let listed = h
        .approvals()
        .await
        .list_approvals(authed(&h.approver(2), other))
        .await
        .unwrap()
        .into_inner()
        .approvals;
    assert!(listed.is_empty());
    let bad_state = proto::ListApprovalsRequest { state: 99, ..Default::default() };
    let refused = h.approvals().await.list_approvals(authed(&h.approver(2), bad_state)).await;
    assert_refused(refused, tonic::Code::InvalidArgument, "not an approval state");
    h.stop().await;
}

#[tokio::test]
async fn one_denial_ends_the_request_and_says_who_and_why() {
    let h = harness::start().await;
    prod_task(&h, "refund-3", 3600).await;
    let id = ask(&h, "refund-3").await.approval_id;
    approve(&h, &h.approver(1), &id, "fine by me").await.unwrap();
    let denied = deny(&h, &h.approver(2), &id, "no refund without a customer call").await.unwrap();
    assert_eq!(denied.state(), proto::ApprovalState::Denied);
    assert_eq!(
        (denied.ended_by.as_str(), denied.end_reason.as_str()),
        ("demo-approver-2", "no refund without a customer call")
    );
    assert_refused(
        collect(&h, &id).await,
        tonic::Code::PermissionDenied,
        "was denied by \"demo-approver-2\": \"no refund without a customer call\"",
    );
    let watch = proto::WatchApprovalRequest { approval_id: id.clone() };
    let mut stream =
        h.credentials().await.watch_approval(authed(&h.agent(), watch)).await.unwrap().into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap().state(), proto::ApprovalState::Denied);
    assert!(stream.next().await.is_none(), "a watch of an ended request ends at once");
    assert_eq!(h.audit_lines().iter().filter(|line| line["event"] == "approval_denied").count(), 1);
    // A new Issue makes a new request: a denial does not stick to the grant.
    let again = ask(&h, "refund-3").await;
    assert_ne!(again.approval_id, id);
    h.stop().await;
}

#[tokio::test]
async fn requests_expire_undecided_and_uncollected() {
    let h = harness::start().await;
    prod_task(&h, "refund-4", 7200).await;
    let undecided = ask(&h, "refund-4").await.approval_id;
    h.advance(15 * 60);
    let expired = wait_for(&h, &undecided, proto::ApprovalState::Expired).await;
    assert_eq!((expired.ended_by.as_str(), expired.end_reason.as_str()), ("writ", "not_decided"));
    assert_refused(
        approve(&h, &h.approver(1), &undecided, "late").await,
        tonic::Code::FailedPrecondition,
        "is expired",
    );

    let uncollected = ask(&h, "refund-4").await.approval_id;
    approve(&h, &h.approver(1), &uncollected, "ok").await.unwrap();
    approve(&h, &h.approver(2), &uncollected, "ok").await.unwrap();
    h.advance(15 * 60);
    let expired = wait_for(&h, &uncollected, proto::ApprovalState::Expired).await;
    assert_eq!(expired.end_reason, "not_collected");
    assert_refused(collect(&h, &uncollected).await, tonic::Code::FailedPrecondition, "is expired");
    assert_eq!(h.audit_lines().iter().filter(|line| line["event"] == "approval_expired").count(), 2);
    h.stop().await;
}

#[tokio::test]
async fn closing_the_task_its_deadline_or_suspending_the_agent_cancels_its_requests() {
    let h = harness::start().await;
    prod_task(&h, "refund-5", 3600).await;
    let closed = ask(&h, "refund-5").await.approval_id;
    let close = proto::CloseTaskRequest { task_id: "refund-5".into() };
    h.tasks().await.close_task(authed(&h.workflow(), close)).await.unwrap();
    let cancelled = get(&h, &closed).await;
    assert_eq!(cancelled.state(), proto::ApprovalState::Cancelled, "cancelled by the close itself");
    assert_eq!(cancelled.end_reason, "task_closed");
    assert_refused(
        approve(&h, &h.approver(1), &closed, "late").await,
        tonic::Code::FailedPrecondition,
        "cancelled",
    );

    prod_task(&h, "refund-6", 600).await;
    let overdue = ask(&h, "refund-6").await.approval_id;
    h.advance(601);
    let cancelled = wait_for(&h, &overdue, proto::ApprovalState::Cancelled).await;
    assert_eq!(cancelled.end_reason, "deadline_passed");

    prod_task(&h, "refund-7", 3600).await;
    let suspended = ask(&h, "refund-7").await.approval_id;
    approve(&h, &h.approver(1), &suspended, "ok").await.unwrap();
    approve(&h, &h.approver(2), &suspended, "ok").await.unwrap();
    let broker = h.running().broker.clone();
    broker.suspend_agent("soc-oncall", "demo-agent", "incident 44", h.clock.now()).await.unwrap();
    let cancelled = get(&h, &suspended).await;
    assert_eq!(
        (cancelled.state(), cancelled.end_reason.as_str()),
        (proto::ApprovalState::Cancelled, "agent_suspended")
    );
    assert_refused(collect(&h, &suspended).await, tonic::Code::PermissionDenied, "is suspended");
    assert_eq!(h.audit_lines().iter().filter(|line| line["event"] == "approval_cancelled").count(), 3);
    h.stop().await;
}

#[tokio::test]
async fn a_pending_request_survives_a_restart() {
    let mut h = harness::start().await;
    prod_task(&h, "refund-8", 3600).await;
    let id = ask(&h, "refund-8").await.approval_id;
    approve(&h, &h.approver(1), &id, "before the restart").await.unwrap();
    h.restart().await;
    let after = get(&h, &id).await;
    assert_eq!((after.state(), after.votes.len()), (proto::ApprovalState::Pending, 1));
    assert_refused(
        approve(&h, &h.approver(1), &id, "again").await,
        tonic::Code::FailedPrecondition,
        "already",
    );
    approve(&h, &h.approver(2), &id, "after the restart").await.unwrap();
    let collected = collect(&h, &id).await.unwrap();
    assert_eq!(h.introspect(&bearer(&collected.credentials[0])).await["active"], true);
    h.stop().await;
}

/// On Redis: requested and approved through replica A, collected through
/// replica B, once; a second collection through A is refused.
#[tokio::test]
async fn approved_on_one_replica_collected_on_the_other() {
    let redis = RedisServer::start();
    let h = on_redis(&redis).await;
    let b = second_replica(&h).await;
    let b_client = |token: String| {
        let addr = b.grpc_addr;
        async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            (proto::credential_service_client::CredentialServiceClient::new(channel), token)
        }
    };
    prod_task(&h, "refund-9", 3600).await;
    let id = ask(&h, "refund-9").await.approval_id;
    // The agent watches on B while the votes land on A.
    let (mut on_b, agent) = b_client(h.agent()).await;
    let watch = proto::WatchApprovalRequest { approval_id: id.clone() };
    let mut stream = on_b.watch_approval(authed(&agent, watch)).await.unwrap().into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap().state(), proto::ApprovalState::Pending);
    approve(&h, &h.approver(1), &id, "one").await.unwrap();
    approve(&h, &h.approver(2), &id, "two").await.unwrap();
    let mut last = proto::ApprovalState::Pending;
    while let Some(seen) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap() {
        last = seen.unwrap().state();
    }
    assert_eq!(last, proto::ApprovalState::Approved, "B's watch sees A's votes");
    let request = proto::CollectApprovalRequest { approval_id: id.clone() };
    let collected = on_b.collect_approval(authed(&agent, request)).await.unwrap().into_inner();
    assert_eq!(collected.credentials.len(), 1);
    assert_refused(collect(&h, &id).await, tonic::Code::FailedPrecondition, "collected already");
    b.stop().await.unwrap();
    h.stop().await;
}

/// Approvers identified by a real OIDC provider nobody here wrote.
#[tokio::test]
async fn approvers_from_oidc_provider() {
    let clients = [("approver-alice", "secret-alice", "ES256"), ("approver-bob", "secret-bob", "RS256")];
    let provider = crate::peers::OidcProvider::start(&clients).await;
    let issuer = provider.issuer.clone();
    let h = harness::start_with(Box::new(move |config, _| {
        config.issuers.push(IssuerConfig {
            issuer: issuer.clone(),
            jwks_url: None,
            algorithms: vec![],
            ca_file: None,
            token_file: None,
        });
        for (client_id, _, _) in clients {
            config.services.push(ServiceConfig {
                name: client_id.into(),
                roles: vec![ServiceRole::Approver],
                identity: Some(IdentityMatch {
                    issuer: issuer.clone(),
                    subject: Some(client_id.into()),
                    claims: Default::default(),
                }),
                certificate: None,
            });
        }
        config
            .approvals
            .groups
            .insert("orders-approvers".into(), vec!["approver-alice".into(), "approver-bob".into()]);
    }))
    .await;
    prod_task(&h, "refund-10", 3600).await;
    let id = ask(&h, "refund-10").await.approval_id;
    let alice = provider.token("approver-alice", "secret-alice").await;
    let bob = provider.token("approver-bob", "secret-bob").await;
    assert_refused(
        approve(&h, &h.approver(1), &id, "not in the group now").await,
        tonic::Code::PermissionDenied,
        "not in approver group",
    );
    approve(&h, &alice, &id, "alice agrees").await.unwrap();
    let approved = approve(&h, &bob, &id, "bob agrees").await.unwrap();
    assert_eq!(approved.state(), proto::ApprovalState::Approved);
    let voters: Vec<&str> = approved.votes.iter().map(|vote| vote.by.as_str()).collect();
    assert_eq!(voters, ["approver-alice", "approver-bob"]);
    assert_eq!(collect(&h, &id).await.unwrap().credentials.len(), 1);
    h.stop().await;
}

/// What a receiver saw: each request's headers and raw body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver that answers 503 to its first `failures` requests
/// (down), then 200, recording everything.
async fn receiver(failures: usize) -> (String, Received) {
    let received: Received = Default::default();
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                seen.push((headers, body.to_vec()));
                if seen.len() <= failures {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// Approvers hear of a request and of each vote through a signed webhook
/// that the receiver verifies; a receiver that fails at first gets the
/// notice again, and nothing is lost.
#[tokio::test]
async fn signed_webhooks_reach_a_receiver_that_was_down() {
    let (url, received) = receiver(1).await;
    let secret = "an example secret of at least thirty-two bytes";
    let h = harness::start_with(Box::new(move |config, dir| {
        std::fs::write(dir.join("webhook-secret"), format!("{secret}\n")).unwrap();
        let hook: writ::webhooks::WebhookConfig =
            toml::from_str(&format!("url = {url:?}\nsecret_file = {:?}\n", dir.join("webhook-secret")))
                .unwrap();
        config.approvals.webhooks.push(hook);
    }))
    .await;
    prod_task(&h, "refund-11", 3600).await;
    let id = ask(&h, "refund-11").await.approval_id;
    approve(&h, &h.approver(1), &id, "one").await.unwrap();
    approve(&h, &h.approver(2), &id, "two").await.unwrap();

    let delivered = |received: &Received| {
        let seen = received.lock().unwrap();
        let mut types: Vec<String> = Vec::new();
        for (headers, body) in seen.iter() {
            let json: serde_json::Value = serde_json::from_slice(body).unwrap();
            types.push(json["type"].as_str().unwrap().to_owned());
            let _ = headers;
        }
        types
    };
    for _ in 0..200 {
        let types = delivered(&received);
        if ["approval.requested", "approval.voted", "approval.approved"]
            .iter()
            .all(|want| types.iter().filter(|got| got == want).count() >= 1)
            && types.len() >= 4
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = received.lock().unwrap().clone();
    let types = delivered(&received);
    assert_eq!(types.iter().filter(|t| *t == "approval.requested").count(), 2, "retried once: {types:?}");
    assert!(
        types.contains(&"approval.voted".to_string()) && types.contains(&"approval.approved".to_string())
    );
    let now = chrono::Utc::now();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    for (headers, body) in &seen {
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        let (timestamp, signature) = (header("writ-timestamp"), header("writ-signature"));
        writ::webhooks::verify(
            secret.as_bytes(),
            &timestamp,
            body,
            &signature,
            now,
            Duration::from_secs(300),
        )
        .unwrap();
        // And independently: HMAC-SHA256 over "<timestamp>.<body>".
        let signed = [timestamp.as_bytes(), b".", body].concat();
        let hex = signature.strip_prefix("v1=").unwrap();
        let mac: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        ring::hmac::verify(&key, &signed, &mac).expect("the signature is HMAC-SHA256 of timestamp.body");
        let tampered = [body.as_slice(), b" "].concat();
        assert!(
            writ::webhooks::verify(
                secret.as_bytes(),
                &timestamp,
                &tampered,
                &signature,
                now,
                Duration::from_secs(300)
            )
            .is_err()
        );
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["approval"]["id"], id.as_str());
        assert_eq!(header("writ-event-id"), json["id"].as_str().unwrap());
        let text = String::from_utf8_lossy(body);
        assert!(
            !text.contains("eyJ") && !text.contains(secret),
            "no token or secret in a notification: {text}"
        );
    }
    // The retry of the first notice carries the same event id.
    let ids: Vec<String> = seen
        .iter()
        .filter(|(_, body)| {
            serde_json::from_slice::<serde_json::Value>(body).unwrap()["type"] == "approval.requested"
        })
        .map(|(headers, _)| headers["writ-event-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids[0], ids[1]);
    h.stop().await;
}

/// One agent holds at most 16 watches open on a replica; a watch that ends
/// gives its place back.
#[tokio::test]
async fn an_agent_holds_a_bounded_number_of_watches() {
    let h = harness::start().await;
    prod_task(&h, "refund-w", 3600).await;
    let id = ask(&h, "refund-w").await.approval_id;
    let mut credentials = h.credentials().await;
    let agent = h.agent();
    let watch = proto::WatchApprovalRequest { approval_id: id.clone() };
    let mut open = Vec::new();
    for _ in 0..16 {
        let mut stream =
            credentials.watch_approval(authed(&agent, watch.clone())).await.unwrap().into_inner();
        assert_eq!(stream.next().await.unwrap().unwrap().state(), proto::ApprovalState::Pending);
        open.push(stream);
    }
    assert_refused(
        credentials.watch_approval(authed(&agent, watch.clone())).await.map(|_| ()),
        tonic::Code::ResourceExhausted,
        "has 16 approval watches open on this replica",
    );
    drop(open.pop());
    let mut again = None;
    for _ in 0..50 {
        // The server notices the hang-up within its poll (500 ms).
        match credentials.watch_approval(authed(&agent, watch.clone())).await {
            Ok(stream) => {
                again = Some(stream);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert!(again.is_some(), "a watch that ended gives its place back");
    drop((open, again));
    h.stop().await;
}
