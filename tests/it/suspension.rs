//! The kill switch (AdminService SuspendAgent and ResumeAgent): from the
//! moment the call returns nothing more is issued, renewed or activated
//! for the agent on any replica, and everything it holds is revoked at the
//! provider; resuming lifts it and revoked leases stay revoked. On the
//! embedded store and on Redis with two replicas, with a suspension that
//! lands while a mint is under way on another replica, for an owner's and
//! a team's agents at once, and with bad input that changes nothing.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::Channel;
use writ::api::proto;
use writ::api::proto::admin_service_client::AdminServiceClient;
use writ::clock::Clock;

use crate::harness::{self, Harness, authed, bearer};
use crate::redis_support::RedisServer;
use crate::replicas::{on_redis, second_replica};

/// An AdminService client on a replica.
async fn admin_at(addr: SocketAddr) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap())
}

fn suspend(selector: proto::AgentSelector, reason: &str) -> proto::SuspendAgentRequest {
    proto::SuspendAgentRequest { agents: Some(selector), reason: reason.into() }
}

fn resume(selector: proto::AgentSelector, reason: &str) -> proto::ResumeAgentRequest {
    proto::ResumeAgentRequest { agents: Some(selector), reason: reason.into() }
}

fn agent_named(name: &str) -> proto::AgentSelector {
    proto::AgentSelector { agent: name.into(), ..Default::default() }
}

/// Suspends the demo agent over gRPC on the replica at `suspender` (this
/// one or another) and checks what every replica must then refuse.
async fn suspension_stops_the_agent(h: &Harness, suspender: SocketAddr) {
    h.open_task("s-1", "demo-agent", 600).await;
    h.open_task("s-2", "demo-agent", 600).await;
    let first = h.issue_orders_read("s-1", 300).await.unwrap();
    let second = h.issue_orders_read("s-2", 300).await.unwrap();
    let leases = [first.lease.clone().unwrap(), second.lease.clone().unwrap()];

    let mut admin = admin_at(suspender).await;
    let operator = h.operator();
    let outcome = admin
        .suspend_agent(authed(&operator, suspend(agent_named("demo-agent"), "incident 42")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (outcome.revoked, outcome.retrying, outcome.failed),
        (2, 0, 0),
        "every live lease, in every task, revoked at the provider before the call returned: {outcome:?}"
    );
    let suspended = &outcome.suspended[0];
    assert_eq!(suspended.state, proto::AgentState::Suspended as i32);
    assert_eq!(
        (suspended.state_changed_by.as_str(), suspended.state_reason.as_str()),
        ("demo-operator", "incident 42")
    );

    let refused = h.issue_orders_read("s-1", 60).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("is suspended since"), "{refused:?}");
    assert!(
        !refused.message().contains("incident 42") && !refused.message().contains("demo-operator"),
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
    // Every replica reports the agent suspended.
    let request = authed(&operator, proto::GetAgentRequest { agent: "demo-agent".into() });
    let shown = h.admin().await.get_agent(request).await.unwrap().into_inner();
    assert_eq!(shown.state, proto::AgentState::Suspended as i32);

    let again = admin
        .suspend_agent(authed(&operator, suspend(agent_named("demo-agent"), "again")))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("suspended already"), "{again:?}");
    let unknown =
        admin.suspend_agent(authed(&operator, suspend(agent_named("nobody"), "why"))).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    admin.resume_agent(authed(&operator, resume(agent_named("demo-agent"), "contained"))).await.unwrap();
    let twice =
        admin.resume_agent(authed(&operator, resume(agent_named("demo-agent"), "again"))).await.unwrap_err();
    assert_eq!(twice.code(), tonic::Code::FailedPrecondition, "{twice:?}");
    let issued = h.issue_orders_read("s-1", 60).await.expect("issued again once resumed");
    assert_eq!(h.introspect(&bearer(&issued)).await["active"], true);
    for lease in &leases {
        assert_eq!(h.lease(&lease.lease_id).await.state, proto::LeaseState::Revoked as i32, "stays revoked");
    }
    h.tasks().await.start_task(authed(&h.workflow(), start)).await.expect("a task again");

    // A second suspension counts only what it revoked, not the history.
    let again =
        admin.suspend_agent(authed(&operator, suspend(agent_named("demo-agent"), "again"))).await.unwrap();
    assert_eq!((again.get_ref().revoked, again.get_ref().retrying, again.get_ref().failed), (1, 0, 0));
    admin.resume_agent(authed(&operator, resume(agent_named("demo-agent"), "done"))).await.unwrap();
}

#[tokio::test]
async fn a_suspension_stops_the_agent_on_the_embedded_store() {
    let h = harness::start().await;
    suspension_stops_the_agent(&h, h.grpc_addr()).await;
    let audit = h.audit_lines();
    let event = |name: &str| audit.iter().filter(|line| line["event"] == name).count();
    assert_eq!((event("agent_suspended"), event("agent_resumed")), (2, 2));
    let suspended = audit.iter().find(|line| line["event"] == "agent_suspended").unwrap();
    assert_eq!(suspended["actor"], "demo-operator");
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
    suspension_stops_the_agent(&h, b.grpc_addr).await;
    b.stop().await.unwrap();
    h.stop().await;
}

/// The same on a namespace spread over shards: the suspension reaches
/// every shard before the call returns.
#[tokio::test]
async fn a_suspension_on_sharded_replicas_stops_the_agent_in_every_shard() {
    let redis = RedisServer::start();
    let h = crate::replicas::on_sharded_redis(&redis, 3).await;
    let b = second_replica(&h).await;
    suspension_stops_the_agent(&h, b.grpc_addr).await;
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

/// Two more agents: one of the demo agent's owner in another team, one of
/// another owner in the demo team.
pub(crate) fn with_more_agents(config: &mut writ::config::Config, dir: &std::path::Path) {
    let policy = r#"@id("team-bot-reads-orders")
permit (
  principal == Writ::Agent::"team-bot",
  action == Writ::Action::"issue",
  resource == Writ::Role::"tokens/orders-read"
);
"#;
    std::fs::write(dir.join("policies/team-bot.cedar"), policy).unwrap();
    let issuer = config.issuers[0].issuer.clone();
    for (name, owner, team) in
        [("helper-bot", "you@example.com", "other-team"), ("team-bot", "someone@example.com", "demo-team")]
    {
        config.agents.push(writ::config::AgentConfig {
            name: name.into(),
            owner: owner.into(),
            team: team.into(),
            description: String::new(),
            risk_tier: "low".into(),
            identity: writ::config::IdentityMatch {
                issuer: issuer.clone(),
                subject: Some(format!("{name}-subject")),
                claims: Default::default(),
            },
        });
    }
}

fn names(agents: &[proto::Agent]) -> Vec<&str> {
    agents.iter().map(|agent| agent.name.as_str()).collect()
}

/// An owner's suspension stops every agent it owns and no other; a team's
/// likewise; agents suspended already are reported, not refused.
#[tokio::test]
async fn an_owner_or_a_team_is_suspended_at_once() {
    let h = harness::start_with(Box::new(with_more_agents)).await;
    let (mut admin, operator) = (h.admin().await, h.operator());
    let listed = admin.list_agents(authed(&operator, proto::ListAgentsRequest::default())).await.unwrap();
    assert_eq!(names(&listed.get_ref().agents), ["demo-agent", "helper-bot", "team-bot"], "in name order");
    let demo = &listed.get_ref().agents[0];
    assert_eq!(
        (demo.owner.as_str(), demo.team.as_str(), demo.managed_by.as_str()),
        ("you@example.com", "demo-team", "configuration")
    );
    assert_eq!(demo.identities[0].subject, writ::dev::AGENT_SUBJECT);
    assert_eq!(demo.state, proto::AgentState::Active as i32);
    let paged = proto::ListAgentsRequest { page_size: 2, ..Default::default() };
    let first = admin.list_agents(authed(&operator, paged.clone())).await.unwrap().into_inner();
    assert_eq!(names(&first.agents), ["demo-agent", "helper-bot"]);
    let rest = proto::ListAgentsRequest { page_token: first.next_page_token, ..paged };
    let rest = admin.list_agents(authed(&operator, rest)).await.unwrap().into_inner();
    assert_eq!((names(&rest.agents), rest.next_page_token.as_str()), (vec!["team-bot"], ""));

    h.open_task("o-1", "demo-agent", 600).await;
    h.issue_orders_read("o-1", 300).await.unwrap();
    h.open_task("o-2", "team-bot", 600).await;

    let owner = proto::AgentSelector { owner: "you@example.com".into(), ..Default::default() };
    let outcome = admin.suspend_agent(authed(&operator, suspend(owner.clone(), "owner left"))).await.unwrap();
    let outcome = outcome.into_inner();
    assert_eq!(names(&outcome.suspended), ["demo-agent", "helper-bot"]);
    assert_eq!((outcome.revoked, outcome.retrying, outcome.already_suspended.len()), (1, 0, 0));
    let suspended =
        proto::ListAgentsRequest { state: proto::AgentState::Suspended as i32, ..Default::default() };
    let listed = admin.list_agents(authed(&operator, suspended.clone())).await.unwrap().into_inner();
    assert_eq!(names(&listed.agents), ["demo-agent", "helper-bot"]);
    let other = h.token("team-bot-subject");
    let request = harness::issue_request("o-2", "orders-read", &["orders:read"], 60);
    h.credentials()
        .await
        .issue(authed(&other, request.clone()))
        .await
        .expect("another owner's agent is untouched");

    // The team holds demo-agent (suspended already) and team-bot.
    let team = proto::AgentSelector { team: "demo-team".into(), ..Default::default() };
    let outcome =
        admin.suspend_agent(authed(&operator, suspend(team.clone(), "team incident"))).await.unwrap();
    let outcome = outcome.into_inner();
    assert_eq!(
        (names(&outcome.suspended), outcome.already_suspended),
        (vec!["team-bot"], vec!["demo-agent".to_string()])
    );
    assert_eq!(outcome.revoked, 1, "team-bot's lease");
    let refused = h.credentials().await.issue(authed(&other, request.clone())).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    let resumed =
        admin.resume_agent(authed(&operator, resume(team, "contained"))).await.unwrap().into_inner();
    assert_eq!(names(&resumed.resumed), ["demo-agent", "team-bot"]);
    let resumed = admin.resume_agent(authed(&operator, resume(owner, "back"))).await.unwrap().into_inner();
    assert_eq!(
        (names(&resumed.resumed), resumed.not_suspended),
        (vec!["helper-bot"], vec!["demo-agent".to_string()])
    );
    let listed = admin.list_agents(authed(&operator, suspended)).await.unwrap().into_inner();
    assert!(listed.agents.is_empty(), "{listed:?}");

    let audit = h.audit_lines();
    let suspensions: Vec<&str> = audit
        .iter()
        .filter(|line| line["event"] == "agent_suspended" && line["outcome"] == "ok")
        .map(|line| line["agent"].as_str().unwrap())
        .collect();
    assert_eq!(suspensions, ["demo-agent", "helper-bot", "team-bot"], "one record per agent suspended");
    h.stop().await;
}

/// Bad input gets a precise status and suspends nothing; only operators
/// reach the kill switch.
#[tokio::test]
async fn bad_kill_switch_requests_change_nothing() {
    let h = harness::start().await;
    let (mut admin, operator) = (h.admin().await, h.operator());
    let cases = [
        (suspend(agent_named("demo-agent"), ""), tonic::Code::InvalidArgument, "reason must say why"),
        (suspend(agent_named("demo-agent"), "   "), tonic::Code::InvalidArgument, "reason must say why"),
        (
            suspend(agent_named("demo-agent"), &"x".repeat(501)),
            tonic::Code::InvalidArgument,
            "longer than 500",
        ),
        (
            suspend(agent_named("demo-agent"), "bad\u{202e}text"),
            tonic::Code::InvalidArgument,
            "must be printable",
        ),
        (suspend(proto::AgentSelector::default(), "why"), tonic::Code::InvalidArgument, "must name an agent"),
        (
            suspend(
                proto::AgentSelector {
                    agent: "demo-agent".into(),
                    owner: "you@example.com".into(),
                    ..Default::default()
                },
                "why",
            ),
            tonic::Code::InvalidArgument,
            "only one of",
        ),
        (
            suspend(proto::AgentSelector { owner: "nobody@example.com".into(), ..Default::default() }, "why"),
            tonic::Code::NotFound,
            "no registered agent has owner",
        ),
        (suspend(agent_named("ghost"), "why"), tonic::Code::NotFound, "not registered"),
    ];
    for (request, code, says) in cases {
        let refused = admin.suspend_agent(authed(&operator, request.clone())).await.unwrap_err();
        assert_eq!(refused.code(), code, "{request:?}: {refused:?}");
        assert!(refused.message().contains(says), "{request:?}: {refused:?}");
    }
    let refused =
        admin.resume_agent(authed(&operator, resume(agent_named("demo-agent"), "why"))).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    let state = proto::ListAgentsRequest { state: 7, ..Default::default() };
    let refused = admin.list_agents(authed(&operator, state)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let refused = admin
        .get_agent(authed(&operator, proto::GetAgentRequest { agent: "ghost".into() }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");

    // Not an operator: an agent, a workflow engine, an approver.
    for token in [h.agent(), h.workflow(), h.approver(1)] {
        let refused =
            admin.suspend_agent(authed(&token, suspend(agent_named("demo-agent"), "why"))).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    }
    let refused = admin.suspend_agent(suspend(agent_named("demo-agent"), "why")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "no token: {refused:?}");

    h.open_task("b-1", "demo-agent", 600).await;
    h.issue_orders_read("b-1", 60).await.expect("nothing was suspended");
    assert!(
        h.audit_lines().iter().all(|line| line["event"] != "agent_suspended"),
        "and nothing was recorded"
    );
    h.stop().await;
}

/// An owner's suspension with the store down suspends nothing and says,
/// agent by agent, what was not stopped; once the store is back, the same
/// call stops them all.
#[tokio::test]
async fn an_owner_suspension_with_the_store_down_says_what_is_not_stopped() {
    let mut redis = crate::redis_support::RedisServer::start();
    let url = redis.url();
    let h = harness::start_with(Box::new(move |config, dir| {
        with_more_agents(config, dir);
        let mut store = writ::store::RedisConfig::single(url);
        store.namespace = format!("it-{}", uuid::Uuid::now_v7().simple());
        config.store = writ::store::StoreConfig::Redis(store);
    }))
    .await;
    let (mut admin, operator) = (h.admin().await, h.operator());
    let owner = proto::AgentSelector { owner: "you@example.com".into(), ..Default::default() };
    redis.stop();
    let refused = admin.suspend_agent(authed(&operator, suspend(owner.clone(), "INC-9"))).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    for says in
        ["could not suspend \"demo-agent\" (", "\"helper-bot\" (", "suspended: none; call again to finish"]
    {
        assert!(refused.message().contains(says), "{says}: {refused:?}");
    }
    redis.restart();
    let mut done = None;
    for _ in 0..50 {
        match admin.suspend_agent(authed(&operator, suspend(owner.clone(), "INC-9"))).await {
            Ok(response) => {
                done = Some(response.into_inner());
                break;
            }
            // Redis came back empty: the configured agents are seeded
            // again within a poll or two.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let done = done.expect("suspended once Redis is back");
    assert_eq!(names(&done.suspended), ["demo-agent", "helper-bot"]);
    h.stop().await;
}
