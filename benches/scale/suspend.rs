//! `suspend`: the kill switch on an agent holding many leases (or, with
//! `--scope provider`, the suspension of the provider that issued them).
//! How long from `SuspendAgent` (`SuspendProvider`) until the agent is
//! refused (by a prober that keeps asking, on Redis through another
//! replica), until the call returns, and until the last of its leases is
//! revoked at the provider.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use tonic::transport::{Channel, Endpoint};
use writ::api::proto;
use writ::api::proto::admin_service_client::AdminServiceClient;
use writ::api::proto::credential_service_client::CredentialServiceClient;
use writ::api::proto::task_service_client::TaskServiceClient;
use writ::clock::SystemClock;
use writ::model::LeaseState;
use writ::server::Running;
use writ::store::LeaseFilter;

use super::{Dev, Options, RedisServer, authed, for_each, start_dev};

fn issue(task_id: String) -> proto::IssueRequest {
    proto::IssueRequest {
        task_id,
        tool: "orders.lookup".into(),
        grants: vec![proto::GrantRequest {
            provider: "tokens".into(),
            role: "orders-read".into(),
            scopes: vec!["orders:read".into()],
            ttl: Some(prost_types::Duration { seconds: 900, nanos: 0 }),
        }],
    }
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

pub async fn run(options: &Options) {
    let redis = options.redis.then(RedisServer::start);
    let Dev { _dir, config, issuer, running } = start_dev(redis.as_ref(), "suspend").await;
    // On Redis, the prober asks a second replica, which did not get the call.
    let other = match &redis {
        Some(_) => {
            let mut config = config.clone();
            config.server.listen = "127.0.0.1:0".parse().unwrap();
            config.server.http_listen = "127.0.0.1:0".parse().unwrap();
            config.audit.path = config.audit.path.with_file_name("audit-b.jsonl");
            config.audit.replica = "replica-b".into();
            Some(Running::start(&config, Arc::new(SystemClock)).await.unwrap())
        }
        None => None,
    };
    let now = Utc::now();
    let token = |subject: &str| issuer.mint(subject, "writ", Duration::from_secs(7200), now).unwrap();
    let (agent, workflow, operator) = (
        token(writ::dev::AGENT_SUBJECT),
        token(writ::dev::WORKFLOW_SUBJECT),
        token(writ::dev::OPERATOR_SUBJECT),
    );
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(channel(running.grpc_addr).await);
    }
    let (leases, tasks) = (options.leases, options.tasks);
    for task in 0..tasks {
        let start = proto::StartTaskRequest {
            task_id: format!("suspend-{task}"),
            agent: "demo-agent".into(),
            context: Some(proto::TaskContext { environment: "dev".into(), ..Default::default() }),
            deadline: Some(writ::api::convert::timestamp(now + TimeDelta::minutes(60))),
        };
        TaskServiceClient::new(channels[0].clone()).start_task(authed(&workflow, start)).await.unwrap();
    }
    println!(
        "suspend {}: {leases} leases over {tasks} tasks on the {} store",
        options.scope,
        if options.redis { "redis (two replicas)" } else { "embedded" }
    );
    let (agent_, channels_) = (agent.clone(), channels.clone());
    for_each(leases, 64, "issued", move |n| {
        let mut client = CredentialServiceClient::new(channels_[n % channels_.len()].clone());
        let agent = agent_.clone();
        async move {
            client.issue(authed(&agent, issue(format!("suspend-{}", n % tasks)))).await.unwrap();
        }
    })
    .await;

    // The prober: back-to-back issues until one is refused.
    let probe_addr = other.as_ref().map_or(running.grpc_addr, |other| other.grpc_addr);
    let mut prober = CredentialServiceClient::new(channel(probe_addr).await);
    let suspended = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let probing = {
        let (agent, suspended) = (agent.clone(), suspended.clone());
        tokio::spawn(async move {
            let mut issued_after = 0;
            loop {
                match prober.issue(authed(&agent, issue("suspend-0".into()))).await {
                    Ok(_) if suspended.load(Ordering::Acquire) => issued_after += 1,
                    Ok(_) => {}
                    Err(status) if status.code() == tonic::Code::PermissionDenied => {
                        return (started.elapsed(), issued_after);
                    }
                    Err(status) => panic!("the prober got {status:?}"),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let called_at = Utc::now();
    let mut admin = AdminServiceClient::new(channels[0].clone());
    let (revoked_in_reply, retrying_in_reply) = if options.scope == "provider" {
        let request = proto::SuspendProviderRequest { provider: "tokens".into(), reason: "benchmark".into() };
        let reply = admin.suspend_provider(authed(&operator, request)).await.unwrap().into_inner();
        (reply.revoked, reply.retrying)
    } else {
        let request = proto::SuspendAgentRequest {
            agents: Some(proto::AgentSelector { agent: "demo-agent".into(), ..Default::default() }),
            reason: "benchmark".into(),
        };
        let reply = admin.suspend_agent(authed(&operator, request)).await.unwrap().into_inner();
        (reply.revoked, reply.retrying)
    };
    let call = t0.elapsed();
    suspended.store(true, Ordering::Release);
    let (refused_at, issued_after) = probing.await.unwrap();
    let refused = refused_at.saturating_sub(t0 - started);

    let store = running.broker.store().clone();
    let revoking = LeaseFilter { state: Some(LeaseState::Revoking), ..LeaseFilter::default() };
    let active = LeaseFilter { state: Some(LeaseState::Active), ..LeaseFilter::default() };
    loop {
        let left = store.list_leases(&revoking, None, 1).await.unwrap().len()
            + store.list_leases(&active, None, 1).await.unwrap().len();
        if left == 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "leases still not revoked after 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let revoked = LeaseFilter { state: Some(LeaseState::Revoked), ..LeaseFilter::default() };
    let (mut after, mut count, mut last) = (None, 0usize, called_at);
    loop {
        let page = store.list_leases(&revoked, after, 10_000).await.unwrap();
        let Some(tail) = page.last() else { break };
        after = Some(tail.id);
        for lease in &page {
            count += 1;
            if let Some(completed) = lease.revocation.as_ref().and_then(|revocation| revocation.completed_at)
            {
                last = last.max(completed);
            }
        }
    }
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    println!(
        "refused {:.1} ms after the call began (the call returned after {:.1} ms; {} issues succeeded after it \
         returned)",
        ms(refused),
        ms(call),
        issued_after
    );
    println!(
        "the reply: {} revoked, {} still retrying; {count} leases revoked in all, the last {:.0} ms after the \
         call began",
        revoked_in_reply,
        retrying_in_reply,
        (last - called_at).num_milliseconds()
    );
    if let Some(other) = other {
        other.stop().await.unwrap();
    }
    running.stop().await.unwrap();
}
