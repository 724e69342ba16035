//! Leases over time: expiry, renewal, release, deadlines, other agents'
//! tasks, and a restart on the embedded store.

use writ::api::proto;

use crate::harness::{self, authed, bearer};

#[tokio::test]
async fn expiry_revokes_on_time() {
    let h = harness::start().await;
    h.open_task("exp-1", "demo-agent", 600).await;
    let issued = h.issue_orders_read("exp-1", 30).await.unwrap();
    let lease_id = issued.lease.clone().unwrap().lease_id;
    h.advance(29);
    h.settle().await;
    assert_eq!(h.lease(&lease_id).await.state, proto::LeaseState::Active as i32, "not before its time");
    h.advance(1);
    let lease = h.wait_for_state(&lease_id, proto::LeaseState::Revoked).await;
    assert_eq!(lease.revocation_reason, "expired");
    assert_eq!(h.introspect(&bearer(&issued)).await["active"], false);
    // The sweeper's evidence names the agent and the task.
    let hashed = h.running().broker.audit().lease_hash(lease_id.parse().unwrap());
    let audit = h.audit_lines();
    let requested = audit
        .iter()
        .find(|line| line["event"] == "revocation_requested" && line["lease"] == hashed.as_str())
        .expect("the sweeper recorded the expiry");
    assert_eq!((&requested["agent"], &requested["task"]), (&"demo-agent".into(), &"exp-1".into()));
    h.stop().await;
}

#[tokio::test]
async fn renew_extends_and_release_revokes() {
    let h = harness::start().await;
    h.open_task("renew-1", "demo-agent", 3600).await;
    let issued = h.issue_orders_read("renew-1", 60).await.unwrap();
    let lease = issued.lease.unwrap();
    h.advance(30);
    let renewed = h
        .credentials()
        .await
        .renew(authed(
            &h.agent(),
            proto::RenewRequest {
                lease_id: lease.lease_id.clone(),
                ttl: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let extended = renewed.lease.unwrap();
    assert_eq!(extended.expires_at.unwrap().seconds, lease.issued_at.unwrap().seconds + 30 + 300);
    let token = match renewed.credential.and_then(|c| c.kind) {
        Some(proto::credential::Kind::BearerToken(token)) => token.token,
        other => panic!("a signed token is replaced on renewal: {other:?}"),
    };
    h.advance(100);
    assert_eq!(h.introspect(&token).await["active"], true, "alive past the original expiry");

    let released = h
        .credentials()
        .await
        .release(authed(&h.agent(), proto::ReleaseRequest { lease_id: lease.lease_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(released.lease.unwrap().state, proto::LeaseState::Active as i32);
    let revoked = h.wait_for_state(&lease.lease_id, proto::LeaseState::Revoked).await;
    assert_eq!(revoked.revocation_reason, "released");
    assert_eq!(h.introspect(&token).await["active"], false);
    let again = h
        .credentials()
        .await
        .renew(authed(&h.agent(), proto::RenewRequest { lease_id: lease.lease_id.clone(), ttl: None }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_passed_deadline_closes_the_task_and_revokes() {
    let h = harness::start().await;
    h.open_task("deadline-1", "demo-agent", 120).await;
    let issued = h.issue_orders_read("deadline-1", 600).await.unwrap();
    let lease_id = issued.lease.clone().unwrap().lease_id;
    h.advance(121);
    let lease = h.wait_for_state(&lease_id, proto::LeaseState::Revoked).await;
    assert!(["deadline_passed", "expired"].contains(&lease.revocation_reason.as_str()), "{lease:?}");
    let task = h
        .tasks()
        .await
        .get_task(authed(&h.workflow(), proto::GetTaskRequest { task_id: "deadline-1".into() }))
        .await
        .unwrap()
        .into_inner();
    let task_state = task.task.unwrap();
    assert_eq!(task_state.state, proto::TaskState::Closed as i32);
    assert_eq!(task_state.close_reason, "deadline_passed");
    assert_eq!(task.leases.len(), 1);
    // The sweeper closed it through the same path as CloseTask: one
    // task_closed record naming the agent, by `writ`.
    let audit = h.audit_lines();
    let closed: Vec<_> = audit.iter().filter(|line| line["event"] == "task_closed").collect();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!((&closed[0]["actor"], &closed[0]["agent"]), (&"writ".into(), &"demo-agent".into()));
    assert_eq!(closed[0]["task"], "deadline-1");
    assert_eq!(closed[0]["reason"], "deadline_passed");
    h.stop().await;
}

#[tokio::test]
async fn an_agent_cannot_use_another_agents_task() {
    let h = harness::start_with(Box::new(|config, _| {
        let mut other = config.agents[0].clone();
        other.name = "other-agent".into();
        other.identity.subject = Some("agent:other".into());
        config.agents.push(other);
    }))
    .await;
    h.open_task("mine-1", "demo-agent", 600).await;
    let request = harness::issue_request("mine-1", "orders-read", &[], 60);
    let status = h.credentials().await.issue(authed(&h.token("agent:other"), request)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert!(status.message().contains("other-agent"));

    // Nor its leases.
    let lease = h.issue_orders_read("mine-1", 60).await.unwrap().lease.unwrap();
    let release = proto::ReleaseRequest { lease_id: lease.lease_id.clone() };
    let status = h.credentials().await.release(authed(&h.token("agent:other"), release)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(h.lease(&lease.lease_id).await.state, proto::LeaseState::Active as i32);
    h.stop().await;
}

#[tokio::test]
async fn tasks_are_validated_and_unique() {
    let h = harness::start().await;
    h.open_task("dup-1", "demo-agent", 600).await;
    let mut tasks = h.tasks().await;
    let start = |task_id: &str, agent: &str, deadline_in: i64| proto::StartTaskRequest {
        task_id: task_id.into(),
        agent: agent.into(),
        context: None,
        deadline: Some(writ::api::convert::timestamp(
            writ::clock::Clock::now(&h.clock) + chrono::Duration::seconds(deadline_in),
        )),
    };
    let cases = [
        (start("dup-1", "demo-agent", 600), tonic::Code::AlreadyExists),
        (start("new-1", "nobody", 600), tonic::Code::NotFound),
        (start("new-1", "demo-agent", -5), tonic::Code::InvalidArgument),
        (start("new-1", "demo-agent", 10 * 24 * 3600), tonic::Code::InvalidArgument),
        (start("bad id with spaces", "demo-agent", 600), tonic::Code::InvalidArgument),
    ];
    for (request, code) in cases {
        let status = tasks.start_task(authed(&h.workflow(), request)).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
    }
    let missing = tasks
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: "nope".into() }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    h.stop().await;
}

#[tokio::test]
async fn after_a_restart_leases_are_kept_and_later_revoked() {
    let mut h = harness::start().await;
    h.open_task("restart-1", "demo-agent", 3600).await;
    let issued = h.issue_orders_read("restart-1", 60).await.unwrap();
    let lease_id = issued.lease.clone().unwrap().lease_id;
    h.restart().await;
    assert_eq!(h.lease(&lease_id).await.state, proto::LeaseState::Active as i32, "the lease survived");
    assert_eq!(h.introspect(&bearer(&issued)).await["active"], true);
    h.advance(61);
    let lease = h.wait_for_state(&lease_id, proto::LeaseState::Revoked).await;
    assert_eq!(lease.revocation_reason, "expired");
    assert!(
        writ::audit::verify_file(&h.config.audit.path).is_ok(),
        "the audit chain continues across restarts"
    );
    h.stop().await;
}

/// A revocation that cannot be done is retried, stays visible on the lease,
/// survives restarts, and completes once the cause is fixed. Here the cause
/// is a sealing key an operator retired too early.
#[tokio::test]
async fn a_failing_revocation_is_retried_visibly_until_it_succeeds() {
    let mut h = harness::start().await;
    h.open_task("retry-1", "demo-agent", 3600).await;
    let lease_id = h.issue_orders_read("retry-1", 600).await.unwrap().lease.unwrap().lease_id;

    let original_keys = h.config.sealing.keys.clone();
    let replacement = h.config.sealing.keys[0].file.with_file_name("sealing-2.key");
    std::fs::write(&replacement, [9u8; 32]).unwrap();
    h.config.sealing.keys = vec![writ::config::SealingKeyConfig { id: "dev-2".into(), file: replacement }];
    h.restart().await;

    let closed = h
        .tasks()
        .await
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: "retry-1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((closed.revoked, closed.retrying), (0, 1), "the revocation is still being retried");
    let mut lease = h.lease(&lease_id).await;
    for _ in 0..100 {
        if lease.revocation_attempts >= 2 {
            break;
        }
        h.advance(1);
        h.settle().await;
        lease = h.lease(&lease_id).await;
    }
    assert_eq!(lease.state, proto::LeaseState::Revoking as i32);
    assert!(lease.revocation_attempts >= 2, "retried: {lease:?}");
    assert!(lease.revocation_error.contains("dev-1"), "the error is visible: {lease:?}");
    assert!(h.audit_lines().iter().any(|line| line["event"] == "revocation_retry"));

    h.config.sealing.keys.extend(original_keys);
    h.restart().await;
    h.advance(1);
    let revoked = h.wait_for_state(&lease_id, proto::LeaseState::Revoked).await;
    assert_eq!(revoked.revocation_reason, "task_closed");
    h.stop().await;
}
