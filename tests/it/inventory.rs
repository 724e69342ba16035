//! The agent inventory over gRPC (AdminService RegisterAgent, UpdateAgent,
//! RetireAgent): a shadow agent sighted, registered from its sighting,
//! issued to (a JWT and a PostgreSQL login), updated, then retired, after
//! which both credentials are dead at their provider and its identity is
//! refused, also after a restart; a registration made on one Redis replica
//! recognised on the other within a second; bad input that changes nothing.

use std::time::{Duration, Instant};

use writ::api::proto;
use writ::api::proto::admin_service_client::AdminServiceClient;

use crate::harness::{self, Harness, authed, bearer};
use crate::postgres::password;
use crate::postgres_support::{PgDatabase, login};
use crate::redis_support::RedisServer;
use crate::replicas::{on_redis, second_replica};

const SCOUT_SUBJECT: &str = "system:serviceaccount:agents:scout";

/// Lets `scout-bot` read orders and log in to the `analytics` database.
fn scout_policy(dir: &std::path::Path) {
    let policy = r#"
        @id("scout-reads-orders")
        permit (principal == Writ::Agent::"scout-bot", action == Writ::Action::"issue", resource == Writ::Role::"tokens/orders-read");
        @id("scout-reads-analytics")
        permit (principal == Writ::Agent::"scout-bot", action == Writ::Action::"issue", resource == Writ::Role::"analytics/reader");
    "#;
    std::fs::write(dir.join("policies/scout.cedar"), policy).unwrap();
}

fn registration(h: &Harness, name: &str, subject: &str) -> proto::RegisterAgentRequest {
    proto::RegisterAgentRequest {
        name: name.into(),
        owner: "dana@example.com".into(),
        team: "research".into(),
        description: "looks things up".into(),
        risk_tier: "low".into(),
        identity: Some(proto::IdentityBinding {
            issuer: h.config.issuers[0].issuer.clone(),
            subject: subject.into(),
            claims: Default::default(),
        }),
        from_sighting: false,
    }
}

fn retire(agent: &str, reason: &str) -> proto::RetireAgentRequest {
    proto::RetireAgentRequest { agent: agent.into(), reason: reason.into(), force: false }
}

async fn issue_as(h: &Harness, token: &str, task_id: &str) -> Result<proto::IssuedCredential, tonic::Status> {
    let request = harness::issue_request(task_id, "orders-read", &["orders:read"], 300);
    let issued = h.credentials().await.issue(authed(token, request)).await?;
    Ok(issued.into_inner().credentials.into_iter().next().unwrap())
}

async fn agent_names(
    admin: &mut AdminServiceClient<tonic::transport::Channel>,
    operator: &str,
) -> Vec<String> {
    let listed = admin.list_agents(authed(operator, proto::ListAgentsRequest::default())).await.unwrap();
    listed.into_inner().agents.into_iter().map(|agent| agent.name).collect()
}

/// Starts a task for `agent` on the harness's replica as soon as it
/// recognises the agent (NOT_FOUND until then, for at most 3 s); returns
/// how long that took.
async fn start_task_once_recognised(h: &Harness, task_id: &str, agent: &str) -> Duration {
    let started = Instant::now();
    loop {
        let request = proto::StartTaskRequest {
            task_id: task_id.into(),
            agent: agent.into(),
            context: Some(proto::TaskContext { environment: "dev".into(), ..Default::default() }),
            deadline: Some(writ::api::convert::timestamp(
                writ::clock::Clock::now(&h.clock) + chrono::Duration::seconds(600),
            )),
        };
        match h.tasks().await.start_task(authed(&h.workflow(), request)).await {
            Ok(_) => return started.elapsed(),
            Err(status) if started.elapsed() < Duration::from_secs(3) => {
                assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("the replica never recognised {agent}: {status:?}"),
        }
    }
}

#[tokio::test]
async fn a_sighted_agent_is_registered_issued_to_and_retired() {
    let db = PgDatabase::create().await;
    let settings = db.provider_settings();
    let mut h = harness::start_with(Box::new(move |config, dir| {
        config
            .providers
            .insert("analytics".into(), writ::config::ProviderConfig { kind: "postgres".into(), settings });
        scout_policy(dir);
    }))
    .await;
    let (mut admin, operator) = (h.admin().await, h.operator());
    let scout = h.token(SCOUT_SUBJECT);

    // A shadow agent: refused, and sighted.
    h.open_task("before", "demo-agent", 600).await;
    let refused = issue_as(&h, &scout, "before").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let sightings =
        admin.list_sightings(authed(&operator, proto::ListSightingsRequest::default())).await.unwrap();
    assert!(sightings.get_ref().sightings.iter().any(|seen| seen.subject == SCOUT_SUBJECT));

    // Brought under control by exactly the identity it used.
    let mut request = registration(&h, "scout-bot", SCOUT_SUBJECT);
    request.from_sighting = true;
    let registered = admin.register_agent(authed(&operator, request)).await.unwrap().into_inner();
    assert_eq!(
        (registered.managed_by.as_str(), registered.created_by.as_str(), registered.revision),
        ("operator", "demo-operator", 1)
    );
    assert_eq!(registered.state, proto::AgentState::Active as i32);
    assert_eq!(registered.identities[0].subject, SCOUT_SUBJECT);
    let sightings =
        admin.list_sightings(authed(&operator, proto::ListSightingsRequest::default())).await.unwrap();
    assert!(
        !sightings.get_ref().sightings.iter().any(|seen| seen.subject == SCOUT_SUBJECT),
        "a registered sighting is no longer a shadow agent"
    );
    assert_eq!(agent_names(&mut admin, &operator).await, ["demo-agent", "scout-bot"]);
    let demo =
        admin.get_agent(authed(&operator, proto::GetAgentRequest { agent: "demo-agent".into() })).await;
    assert_eq!(demo.unwrap().get_ref().managed_by, "configuration", "seeded from the configuration");

    // Issued to at once, like any agent, through policy.
    h.open_task("scout-1", "scout-bot", 600).await;
    let token = issue_as(&h, &scout, "scout-1").await.unwrap();
    let mut pg = harness::issue_request("scout-1", "reader", &[], 300);
    pg.grants[0].provider = "analytics".into();
    let issued = h.credentials().await.issue(authed(&scout, pg)).await.unwrap().into_inner();
    let database = password(&issued.credentials[0]);
    let session = login(&database.username, &database.password, &database.connection).await.unwrap();
    session.query("SELECT 1", &[]).await.unwrap();

    // Updated, guarded by its revision.
    let update = proto::UpdateAgentRequest {
        agent: "scout-bot".into(),
        team: Some("platform".into()),
        revision: 1,
        ..Default::default()
    };
    let updated = admin.update_agent(authed(&operator, update.clone())).await.unwrap().into_inner();
    assert_eq!((updated.team.as_str(), updated.revision), ("platform", 2));
    let stale = admin.update_agent(authed(&operator, update)).await.unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Aborted, "{stale:?}");

    // Retired: everything it holds is dead at its provider, its identity refused.
    let retired = admin.retire_agent(authed(&operator, retire("scout-bot", "replaced by scout-v2"))).await;
    let retired = retired.unwrap().into_inner();
    assert_eq!((retired.revoked, retired.retrying, retired.failed), (2, 0, 0), "{retired:?}");
    let agent = retired.agent.unwrap();
    assert_eq!(agent.state, proto::AgentState::Retired as i32);
    assert_eq!(
        (agent.state_changed_by.as_str(), agent.state_reason.as_str()),
        ("demo-operator", "replaced by scout-v2")
    );
    assert_eq!(h.introspect(&bearer(&token)).await["active"], false, "the JWT is inactive");
    assert!(session.query("SELECT 1", &[]).await.is_err(), "the open database session was ended");
    assert!(!db.role_exists(&database.username).await, "the database role is gone");
    let lease = h.lease(&token.lease.as_ref().unwrap().lease_id).await;
    assert_eq!(lease.revocation_reason, "agent_retired");
    let refused = issue_as(&h, &scout, "scout-1").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("is retired"), "{refused:?}");

    // Final: not resumed, not re-registered, not retired twice.
    let resume = proto::ResumeAgentRequest {
        agents: Some(proto::AgentSelector { agent: "scout-bot".into(), ..Default::default() }),
        reason: "oops".into(),
    };
    let refused = admin.resume_agent(authed(&operator, resume)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    let again = admin.register_agent(authed(&operator, registration(&h, "scout-bot", "other"))).await;
    assert_eq!(again.unwrap_err().code(), tonic::Code::AlreadyExists);
    let twice = admin.retire_agent(authed(&operator, retire("scout-bot", "again"))).await.unwrap_err();
    assert_eq!(twice.code(), tonic::Code::FailedPrecondition, "{twice:?}");
    let listed = admin
        .list_agents(authed(
            &operator,
            proto::ListAgentsRequest { state: proto::AgentState::Retired as i32, ..Default::default() },
        ))
        .await
        .unwrap();
    assert_eq!(listed.get_ref().agents.len(), 1);

    // Evidence of every change, by whom.
    let events: Vec<(String, String, String)> = h
        .audit_lines()
        .iter()
        .filter(|line| line["agent"] == "scout-bot")
        .filter(|line| line["event"].as_str().is_some_and(|event| event.starts_with("agent_")))
        .map(|line| {
            let text = |field: &str| line[field].as_str().unwrap_or_default().to_owned();
            (text("event"), text("actor"), text("outcome"))
        })
        .collect();
    let operator_did = |event: &str| (event.to_owned(), "demo-operator".to_owned(), "ok".to_owned());
    for event in ["agent_registered", "agent_updated", "agent_suspended", "agent_retired"] {
        assert!(events.contains(&operator_did(event)), "{event} missing from {events:?}");
    }

    // A restart keeps it all: the inventory is in the store.
    h.restart().await;
    let refused = issue_as(&h, &scout, "scout-1").await.unwrap_err();
    assert!(refused.message().contains("is retired"), "{refused:?}");
    let mut admin = h.admin().await;
    assert_eq!(agent_names(&mut admin, &h.operator()).await, ["demo-agent", "scout-bot"]);
    h.stop().await;
    db.drop().await;
}

/// Each refused request gets a precise status and leaves the inventory as
/// it was.
#[tokio::test]
async fn bad_inventory_requests_change_nothing() {
    let h = harness::start().await;
    let (mut admin, operator) = (h.admin().await, h.operator());
    let before = h.audit_lines().len();
    let with = |change: &dyn Fn(&mut proto::RegisterAgentRequest)| {
        let mut request = registration(&h, "new-bot", "new-subject");
        change(&mut request);
        request
    };
    let cases: Vec<(&str, proto::RegisterAgentRequest, tonic::Code)> = vec![
        ("no owner", with(&|r| r.owner = "  ".into()), tonic::Code::InvalidArgument),
        (
            "untrusted issuer",
            with(&|r| r.identity.as_mut().unwrap().issuer = "https://evil.example".into()),
            tonic::Code::InvalidArgument,
        ),
        (
            "any token of the issuer",
            with(&|r| r.identity.as_mut().unwrap().subject.clear()),
            tonic::Code::InvalidArgument,
        ),
        ("no identity", with(&|r| r.identity = None), tonic::Code::InvalidArgument),
        ("a name with a space", with(&|r| r.name = "new bot".into()), tonic::Code::InvalidArgument),
        ("a control character", with(&|r| r.description = "a\u{7}b".into()), tonic::Code::InvalidArgument),
        ("a configured agent's name", with(&|r| r.name = "demo-agent".into()), tonic::Code::AlreadyExists),
        ("a service's name", with(&|r| r.name = "demo-operator".into()), tonic::Code::AlreadyExists),
        (
            "the demo agent's identity",
            with(&|r| r.identity.as_mut().unwrap().subject = writ::dev::AGENT_SUBJECT.into()),
            tonic::Code::AlreadyExists,
        ),
        ("never sighted", with(&|r| r.from_sighting = true), tonic::Code::NotFound),
        (
            "the demo agent's subject, made to look different by a claim",
            with(&|r| {
                let identity = r.identity.as_mut().unwrap();
                identity.subject = writ::dev::AGENT_SUBJECT.into();
                identity.claims.insert("team".into(), "x".into());
            }),
            tonic::Code::AlreadyExists,
        ),
        (
            "a claims-only binding that would catch the operator's token",
            with(&|r| {
                let identity = r.identity.as_mut().unwrap();
                identity.subject.clear();
                identity.claims.insert("scope".into(), "x".into());
            }),
            tonic::Code::AlreadyExists,
        ),
        (
            "a reserved claim",
            with(&|r| {
                r.identity.as_mut().unwrap().claims.insert("sub".into(), "new-subject".into());
            }),
            tonic::Code::InvalidArgument,
        ),
        (
            "a sighting with claims",
            with(&|r| {
                r.from_sighting = true;
                r.identity.as_mut().unwrap().claims.insert("aud".into(), "writ".into());
            }),
            tonic::Code::InvalidArgument,
        ),
    ];
    for (case, request, code) in cases {
        let refused = admin.register_agent(authed(&operator, request)).await.unwrap_err();
        assert_eq!(refused.code(), code, "{case}: {refused:?}");
        assert!(!refused.message().is_empty(), "{case}");
    }
    // Not an operator, or nobody.
    for token in [h.agent(), h.workflow(), h.auditor()] {
        let refused = admin.register_agent(authed(&token, registration(&h, "x-bot", "x"))).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    }
    let anonymous = admin.register_agent(registration(&h, "x-bot", "x")).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    // Agents the configuration declares are changed there.
    let update = proto::UpdateAgentRequest {
        agent: "demo-agent".into(),
        owner: Some("mallory@example.com".into()),
        ..Default::default()
    };
    let refused = admin.update_agent(authed(&operator, update)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    let refused = admin.retire_agent(authed(&operator, retire("demo-agent", "test"))).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    let refused = admin.retire_agent(authed(&operator, retire("nobody", "test"))).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    let update = proto::UpdateAgentRequest { agent: "nobody".into(), ..Default::default() };
    let refused = admin.update_agent(authed(&operator, update)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");

    // An operator's agent: an empty owner or a blank reason is refused too.
    admin.register_agent(authed(&operator, registration(&h, "ok-bot", "ok-subject"))).await.unwrap();
    let update = proto::UpdateAgentRequest {
        agent: "ok-bot".into(),
        owner: Some(String::new()),
        ..Default::default()
    };
    let refused = admin.update_agent(authed(&operator, update)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let refused = admin.retire_agent(authed(&operator, retire("ok-bot", " "))).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let ok = admin.get_agent(authed(&operator, proto::GetAgentRequest { agent: "ok-bot".into() })).await;
    let ok = ok.unwrap().into_inner();
    assert_eq!(
        (ok.owner.as_str(), ok.revision, ok.state),
        ("dana@example.com", 1, proto::AgentState::Active as i32)
    );

    assert_eq!(agent_names(&mut admin, &operator).await, ["demo-agent", "ok-bot"], "nothing else registered");
    let registered: Vec<_> = h.audit_lines()[before..]
        .iter()
        .filter(|line| line["event"].as_str().is_some_and(|event| event.starts_with("agent_")))
        .map(|line| line["agent"].clone())
        .collect();
    assert_eq!(registered, ["ok-bot"], "evidence only of the registration that happened");
    h.stop().await;
}

/// A registration on replica B is recognised on replica A within a second
/// (A polls the inventory's revision); a retirement on A is refused on B
/// at once (the store's suspension check).
#[tokio::test]
async fn replicas_follow_the_inventory() {
    let redis = RedisServer::start();
    let h = on_redis(&redis).await;
    let b = second_replica(&h).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", b.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin_b = AdminServiceClient::new(channel);
    let operator = h.operator();
    let mut request = registration(&h, "demo-helper", "helper-subject");
    request.owner = "you@example.com".into();
    admin_b.register_agent(authed(&operator, request)).await.unwrap();

    // StartTask names the agent: NOT_FOUND until A recognises it.
    let seen_on_a = start_task_once_recognised(&h, "helper-task", "demo-helper").await;
    assert!(seen_on_a < Duration::from_millis(1500), "recognised on A after {seen_on_a:?}");

    let mut admin_a = h.admin().await;
    admin_a.retire_agent(authed(&operator, retire("demo-helper", "done"))).await.unwrap();
    let helper = h.token("helper-subject");
    let request = harness::issue_request("helper-task", "orders-read", &["orders:read"], 60);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", b.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut credentials_b = proto::credential_service_client::CredentialServiceClient::new(channel);
    let refused = credentials_b.issue(authed(&helper, request)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "refused on B at once: {refused:?}");
    b.stop().await.unwrap();
    h.stop().await;
}

/// The whole control-plane path on Redis with two replicas: an agent
/// registered through B is issued a JWT and a PostgreSQL login on A,
/// suspended through B, refused on A with both credentials dead at their
/// provider, resumed, and issued to again.
#[tokio::test]
async fn register_issue_suspend_resume_across_replicas() {
    let db = PgDatabase::create().await;
    let settings = db.provider_settings();
    let redis = RedisServer::start();
    let url = redis.url();
    let h = harness::start_with(Box::new(move |config, dir| {
        let mut store = writ::store::RedisConfig::single(url);
        store.namespace = format!("it-{}", uuid::Uuid::now_v7().simple());
        config.store = writ::store::StoreConfig::Redis(store);
        config
            .providers
            .insert("analytics".into(), writ::config::ProviderConfig { kind: "postgres".into(), settings });
        scout_policy(dir);
    }))
    .await;
    let b = second_replica(&h).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", b.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin_b = AdminServiceClient::new(channel);
    let operator = h.operator();
    admin_b.register_agent(authed(&operator, registration(&h, "scout-bot", SCOUT_SUBJECT))).await.unwrap();
    let scout = h.token(SCOUT_SUBJECT);

    // On A, once it has seen the registration.
    start_task_once_recognised(&h, "x-1", "scout-bot").await;
    let token = issue_as(&h, &scout, "x-1").await.unwrap();
    let mut pg = harness::issue_request("x-1", "reader", &[], 300);
    pg.grants[0].provider = "analytics".into();
    let issued = h.credentials().await.issue(authed(&scout, pg.clone())).await.unwrap().into_inner();
    let database = password(&issued.credentials[0]);
    login(&database.username, &database.password, &database.connection).await.unwrap();

    // Suspended through B: A refuses at once, both credentials are dead.
    let suspend = proto::SuspendAgentRequest {
        agents: Some(proto::AgentSelector { agent: "scout-bot".into(), ..Default::default() }),
        reason: "INC-5".into(),
    };
    let outcome = admin_b.suspend_agent(authed(&operator, suspend)).await.unwrap().into_inner();
    assert_eq!((outcome.revoked, outcome.retrying), (2, 0), "{outcome:?}");
    let refused = issue_as(&h, &scout, "x-1").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "refused on A: {refused:?}");
    assert_eq!(h.introspect(&bearer(&token)).await["active"], false, "the JWT is inactive");
    assert!(!db.role_exists(&database.username).await, "the PostgreSQL role is gone");

    // Resumed through A: issued again.
    let resume = proto::ResumeAgentRequest {
        agents: Some(proto::AgentSelector { agent: "scout-bot".into(), ..Default::default() }),
        reason: "INC-5 closed".into(),
    };
    h.admin().await.resume_agent(authed(&operator, resume)).await.unwrap();
    issue_as(&h, &scout, "x-1").await.expect("issued again once resumed");
    let again = h.credentials().await.issue(authed(&scout, pg)).await.expect("a new login");
    assert_ne!(again.into_inner().credentials[0].lease, issued.credentials[0].lease);
    b.stop().await.unwrap();
    h.stop().await;
    db.drop().await;
}
