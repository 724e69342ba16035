//! Writ on the Redis lease store: two replicas sharing one Redis, and a
//! Redis outage (fail closed, then recover).

use std::sync::Arc;
use std::time::{Duration, Instant};

use writ::api::proto;
use writ::server::Running;
use writ::store::{RedisConfig, StoreConfig};

use crate::harness::{self, authed};
use crate::redis_support::RedisServer;

pub(crate) async fn on_redis(redis: &RedisServer) -> harness::Harness {
    let url = redis.url();
    harness::start_with(Box::new(move |config, _| {
        let mut store = RedisConfig::single(url);
        store.namespace = format!("it-{}", uuid::Uuid::now_v7().simple());
        config.store = StoreConfig::Redis(store);
    }))
    .await
}

/// Writ on Redis with its namespace spread over `shards` shards.
pub(crate) async fn on_sharded_redis(redis: &RedisServer, shards: u16) -> harness::Harness {
    let url = redis.url();
    harness::start_with(Box::new(move |config, _| {
        let mut store = RedisConfig::single(url);
        store.namespace = format!("it-{}", uuid::Uuid::now_v7().simple());
        store.shards = shards;
        config.store = StoreConfig::Redis(store);
    }))
    .await
}

/// A second replica: the same keys and store, its own ports and audit log.
pub(crate) async fn second_replica(h: &harness::Harness) -> Running {
    let mut config = h.config.clone();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.http_listen = "127.0.0.1:0".parse().unwrap();
    config.audit.path = config.audit.path.with_file_name("audit-replica-b.jsonl");
    config.audit.replica = "replica-b".into();
    Running::start(&config, Arc::new(h.clock.clone())).await.unwrap()
}

pub(crate) async fn issue_via(addr: std::net::SocketAddr, token: &str, task_id: &str) -> proto::Lease {
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

/// Two replicas on a namespace of four shards: leases of eight tasks,
/// issued through both, are listed by either (every shard, in id order,
/// a page at a time), and closing the tasks revokes each once.
#[tokio::test]
async fn sharded_replicas_list_and_revoke_across_shards() {
    let redis = RedisServer::start();
    let h = on_sharded_redis(&redis, 4).await;
    let b = second_replica(&h).await;
    let mut issued = Vec::new();
    for n in 0..8 {
        let task_id = format!("sharded-{n}");
        h.open_task(&task_id, "demo-agent", 600).await;
        let addr = if n % 2 == 0 { h.grpc_addr() } else { b.grpc_addr };
        issued.push(issue_via(addr, &h.agent(), &task_id).await.lease_id);
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", b.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = proto::admin_service_client::AdminServiceClient::new(channel.clone());
    let mut listed = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = proto::ListLeasesRequest { page_size: 3, page_token, ..Default::default() };
        let page = admin.list_leases(authed(&h.operator(), request)).await.unwrap().into_inner();
        listed.extend(page.leases.into_iter().map(|lease| lease.lease_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut expected = issued.clone();
    expected.sort_by_key(|id| uuid::Uuid::parse_str(id).unwrap());
    assert_eq!(listed, expected, "every shard's leases, in id order");
    let mut tasks = proto::task_service_client::TaskServiceClient::new(channel);
    for n in 0..8 {
        let request = proto::CloseTaskRequest { task_id: format!("sharded-{n}") };
        let closed = tasks.close_task(authed(&h.workflow(), request)).await.unwrap().into_inner();
        assert_eq!(closed.revoked + closed.retrying, 1);
    }
    for lease in &issued {
        h.wait_for_state(lease, proto::LeaseState::Revoked).await;
    }
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
    use tonic_health::pb::health_check_response::ServingStatus;
    assert!(
        wait_for_health(&h, ServingStatus::NotServing).await,
        "health says NOT_SERVING while Redis is down"
    );

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
    assert!(wait_for_health(&h, ServingStatus::Serving).await, "and health says SERVING again");
    h.stop().await;
}

/// Polls gRPC health for the credential service until it reports `want`
/// (the health watch re-checks every 500 ms); false after 10 s.
async fn wait_for_health(
    h: &harness::Harness,
    want: tonic_health::pb::health_check_response::ServingStatus,
) -> bool {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", h.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for _ in 0..100 {
        let request = tonic_health::pb::HealthCheckRequest { service: "writ.v1.CredentialService".into() };
        if health.check(request).await.is_ok_and(|response| response.into_inner().status == want as i32) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
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

/// Two `writ serve` processes share one Redis; both issue; leases fall due
/// together and one replica is killed (`kill -9`) while revocations are
/// under way. The survivor takes over the dead one's claims once they
/// lapse, and at the provider every credential is taken back exactly once.
#[tokio::test]
async fn a_replica_killed_mid_sweep_leaves_every_lease_revoked_exactly_once() {
    use crate::crash::{WritProcess, connect, free_addr};
    use std::collections::HashMap;

    const LEASES: usize = 120;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("provider-journal.txt");
    // A slow backend (100 ms per revocation, 8 at a time) makes the sweep
    // last long enough to be cut in the middle.
    let plugin = crate::peers::PythonPlugin::start_with(
        0,
        &["--journal", journal.to_str().unwrap(), "--revoke-delay-ms", "100"],
    );
    let issuer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = writ::dev::DevOptions {
        data_dir: dir.path().to_path_buf(),
        listen: free_addr(),
        http_listen: free_addr(),
        issuer_listen: issuer_listener.local_addr().unwrap(),
    };
    writ::dev::prepare(&options).unwrap();
    let issuer = Arc::new(
        writ::dev::DevIssuer::load_or_create(
            &writ::dev::issuer_url(&options),
            &dir.path().join("dev-issuer.pk8"),
        )
        .unwrap(),
    );
    let router = issuer.router();
    tokio::spawn(async move { axum::serve(issuer_listener, router).await });
    let base = std::fs::read_to_string(dir.path().join("writ.toml"))
        .unwrap()
        .replace("poll_interval = \"250ms\"", "poll_interval = \"50ms\"\nclaim_timeout = \"2s\"\nmin_backoff = \"50ms\"\nmax_backoff = \"200ms\"")
        .replace(
            "kind = \"embedded\"\npath = \"leases.redb\"",
            &format!("kind = \"redis\"\nurl = \"{}\"\nnamespace = \"midsweep\"", redis.url()),
        );
    assert!(base.contains("kind = \"redis\"") && base.contains("claim_timeout"), "the config was rewritten");
    let base =
        format!("{base}\n[providers.reports]\nkind = \"external\"\nendpoint = \"{}\"\n", plugin.endpoint);
    std::fs::write(
        dir.path().join("policies/reports.cedar"),
        r#"@id("reports") permit (principal, action, resource == Writ::Role::"reports/reports-read");"#,
    )
    .unwrap();
    // Replica B: its own ports and audit log, everything else shared.
    let (b_grpc, b_http) = (free_addr(), free_addr());
    let config_b = base
        .replace(&format!("listen = \"{}\"", options.listen), &format!("listen = \"{b_grpc}\""))
        .replace(
            &format!("http_listen = \"{}\"", options.http_listen),
            &format!("http_listen = \"{b_http}\""),
        )
        .replace("path = \"audit.jsonl\"", "path = \"audit-b.jsonl\"");
    assert!(config_b.contains(&b_grpc.to_string()) && config_b.contains("audit-b.jsonl"));
    let (path_a, path_b) = (dir.path().join("writ.toml"), dir.path().join("writ-b.toml"));
    std::fs::write(&path_a, &base).unwrap();
    std::fs::write(&path_b, &config_b).unwrap();

    let now = chrono::Utc::now();
    let agent = issuer.mint(writ::dev::AGENT_SUBJECT, "writ", Duration::from_secs(3600), now).unwrap();
    let workflow = issuer.mint(writ::dev::WORKFLOW_SUBJECT, "writ", Duration::from_secs(3600), now).unwrap();
    let operator = issuer.mint(writ::dev::OPERATOR_SUBJECT, "writ", Duration::from_secs(3600), now).unwrap();
    let a = WritProcess::start(&path_a);
    let _b = WritProcess::start(&path_b);
    let (a_channel, b_channel) = (connect(options.listen).await, connect(b_grpc).await);
    let start = proto::StartTaskRequest {
        task_id: "sweep-1".into(),
        agent: "demo-agent".into(),
        context: None,
        deadline: Some(writ::api::convert::timestamp(now + chrono::Duration::minutes(30))),
    };
    proto::task_service_client::TaskServiceClient::new(a_channel.clone())
        .start_task(authed(&workflow, start))
        .await
        .unwrap();

    // Both replicas issue, concurrently; every lease lives 3 s.
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..8 {
        let channel = if caller % 2 == 0 { a_channel.clone() } else { b_channel.clone() };
        let agent = agent.clone();
        callers.spawn(async move {
            let mut client = proto::credential_service_client::CredentialServiceClient::new(channel);
            let mut leases = Vec::new();
            for _ in 0..LEASES / 8 {
                let mut request = harness::issue_request("sweep-1", "reports-read", &["reports:read"], 3);
                request.grants[0].provider = "reports".into();
                let issued = client.issue(authed(&agent, request)).await.unwrap().into_inner();
                leases.push(issued.credentials[0].lease.clone().unwrap().lease_id);
            }
            leases
        });
    }
    let mut issued = Vec::new();
    while let Some(leases) = callers.join_next().await {
        issued.extend(leases.unwrap());
    }
    assert_eq!(issued.len(), LEASES);

    let journal_lines = || std::fs::read_to_string(&journal).unwrap_or_default();
    let count = |text: &str, prefix: &str| text.lines().filter(|line| line.starts_with(prefix)).count();
    // Wait for the sweep to start, let it run a little, then kill A.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&journal_lines(), "revoked ") == 0 {
        assert!(Instant::now() < deadline, "the leases never fell due");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(150 + fastrand::u64(0..200))).await;
    a.kill();
    let at_kill = count(&journal_lines(), "revoked ");
    println!("replica A killed with {at_kill} of {LEASES} credentials revoked");
    assert!(at_kill > 0 && at_kill < LEASES, "A was killed mid-sweep ({at_kill} of {LEASES} done)");

    // B finishes: every lease revoked in Writ's records...
    let mut admin = proto::admin_service_client::AdminServiceClient::new(b_channel.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let request =
            proto::ListLeasesRequest { task_id: "sweep-1".into(), page_size: 1000, ..Default::default() };
        let leases = admin.list_leases(authed(&operator, request)).await.unwrap().into_inner().leases;
        let revoked = leases.iter().filter(|l| l.state == proto::LeaseState::Revoked as i32).count();
        if revoked == LEASES && leases.len() == LEASES {
            break;
        }
        assert!(Instant::now() < deadline, "{revoked} of {LEASES} leases revoked after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and at the provider, each credential exactly once.
    let text = journal_lines();
    let mut revocations: HashMap<&str, usize> = HashMap::new();
    for handle in text.lines().filter_map(|line| line.strip_prefix("revoked ")) {
        *revocations.entry(handle).or_default() += 1;
    }
    let minted: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("minted ")).collect();
    assert_eq!(minted.len(), LEASES, "one credential per lease");
    for handle in &minted {
        assert_eq!(revocations.get(handle), Some(&1), "{handle} is taken back exactly once");
    }
    let repeats = count(&text, "revoke-noop ");
    println!(
        "all {LEASES} revoked exactly once at the provider; {repeats} repeated (idempotent) calls from the taken-over claims"
    );
    // B's audit log shows it did the part A left.
    let audit_b = std::fs::read_to_string(dir.path().join("audit-b.jsonl")).unwrap();
    let done_by_b = audit_b.lines().filter(|line| line.contains("\"event\":\"revoked\"")).count();
    assert!(done_by_b > 0, "the surviving replica revoked what was left");
    drop(plugin);
}

/// The topology of docker-compose.yml, without Docker: `writ dev` on Redis
/// (`WRIT_REDIS_URL`) writes the configuration and keys and runs the
/// issuer; `writ serve` on that configuration is the second replica, with
/// its own ports (`WRIT_LISTEN`, `WRIT_HTTP_LISTEN`) and audit log
/// (`WRIT_AUDIT_PATH`). A lease issued on one is revoked by a close on the
/// other, and each replica wrote its own audit log.
#[tokio::test]
async fn the_compose_topology_runs_two_replicas_on_one_redis() {
    use crate::crash::{WritProcess, connect, free_addr};

    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let (a_grpc, a_http, issuer_addr) = (free_addr(), free_addr(), free_addr());
    let (b_grpc, b_http) = (free_addr(), free_addr());
    let (audit_a, audit_b) = (data.join("audit-a.jsonl"), data.join("audit-b.jsonl"));
    let url = redis.url();
    let _a = WritProcess::run(
        &[
            "dev",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &a_grpc.to_string(),
            "--http-listen",
            &a_http.to_string(),
            "--issuer-listen",
            &issuer_addr.to_string(),
        ],
        &[("WRIT_REDIS_URL", &url), ("WRIT_AUDIT_PATH", audit_a.to_str().unwrap())],
    );
    let a_channel = connect(a_grpc).await;
    let _b = WritProcess::run(
        &["serve", "--config", data.join("writ.toml").to_str().unwrap()],
        &[
            ("WRIT_LISTEN", &b_grpc.to_string()),
            ("WRIT_HTTP_LISTEN", &b_http.to_string()),
            ("WRIT_REDIS_URL", &url),
            ("WRIT_AUDIT_PATH", audit_b.to_str().unwrap()),
        ],
    );
    let b_channel = connect(b_grpc).await;

    let issuer =
        writ::dev::DevIssuer::load_or_create(&format!("http://{issuer_addr}"), &data.join("dev-issuer.pk8"))
            .unwrap();
    let now = chrono::Utc::now();
    let agent = issuer.mint(writ::dev::AGENT_SUBJECT, "writ", Duration::from_secs(600), now).unwrap();
    let workflow = issuer.mint(writ::dev::WORKFLOW_SUBJECT, "writ", Duration::from_secs(600), now).unwrap();
    let start = proto::StartTaskRequest {
        task_id: "compose-1".into(),
        agent: "demo-agent".into(),
        context: Some(proto::TaskContext { environment: "dev".into(), ..Default::default() }),
        deadline: Some(writ::api::convert::timestamp(now + chrono::Duration::minutes(10))),
    };
    proto::task_service_client::TaskServiceClient::new(b_channel.clone())
        .start_task(authed(&workflow, start))
        .await
        .unwrap();
    let request = harness::issue_request("compose-1", "orders-read", &["orders:read"], 300);
    let issued = proto::credential_service_client::CredentialServiceClient::new(a_channel.clone())
        .issue(authed(&agent, request))
        .await
        .unwrap()
        .into_inner();
    let lease = issued.credentials[0].lease.clone().unwrap();
    let closed = proto::task_service_client::TaskServiceClient::new(b_channel.clone())
        .close_task(authed(&workflow, proto::CloseTaskRequest { task_id: "compose-1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((closed.revoked, closed.retrying), (1, 0));

    // Both replicas see the same lease, and it is in Redis, not a local file.
    let got = proto::credential_service_client::CredentialServiceClient::new(a_channel)
        .release(authed(&agent, proto::ReleaseRequest { lease_id: lease.lease_id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.lease.unwrap().state, proto::LeaseState::Revoked as i32, "A sees B's revocation");
    assert!(!data.join("leases.redb").exists(), "no embedded store was opened");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    assert!(read(&audit_a).contains("\"issued\""), "A's audit log has the issuance");
    assert!(read(&audit_b).contains("\"task_closed\"") || read(&audit_b).contains("\"revoked\""));
    assert!(!data.join("audit.jsonl").exists(), "the configured audit path was overridden");
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
