//! Crash safety: `kill -9` a separate Writ process at random moments while
//! agents are issuing, restart it, and count against the provider's own
//! record of what it minted. Every credential the provider minted must be
//! tracked by Writ and, in the end, revoked at the provider.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use writ::api::proto;
use writ::dev::{DevIssuer, DevOptions};

use crate::harness::authed;
use crate::peers::PythonPlugin;

pub(crate) fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

pub(crate) struct WritProcess {
    child: Child,
}

impl WritProcess {
    pub(crate) fn start(config: &std::path::Path) -> Self {
        Self::run(&["serve", "--config", config.to_str().unwrap()], &[])
    }

    /// Runs `writ <args>` with extra environment variables.
    pub(crate) fn run(args: &[&str], env: &[(&str, &str)]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_writ"))
            .args(args)
            .envs(env.iter().copied())
            .env("WRIT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("writ starts");
        Self { child }
    }

    /// SIGKILL: no shutdown, no flushing, nothing.
    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WritProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn connect(addr: SocketAddr) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await {
            return channel;
        }
        assert!(Instant::now() < deadline, "writ did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn request(task_id: &str) -> proto::IssueRequest {
    let mut request = crate::harness::issue_request(task_id, "reports-read", &["reports:read"], 600);
    request.grants[0].provider = "reports".into();
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_issuance_leaves_nothing_untracked_embedded() {
    kill_9_during_issuance(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_issuance_leaves_nothing_untracked_redis() {
    let redis = crate::redis_support::RedisServer::start();
    kill_9_during_issuance(Some(redis.url())).await;
}

/// Runs the load, the kills and the count, on the embedded store or, given
/// a URL, on Redis.
async fn kill_9_during_issuance(redis: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("provider-journal.txt");
    let plugin = PythonPlugin::start_with(0, &["--journal", journal.to_str().unwrap()]);
    let (grpc, http) = (free_addr(), free_addr());
    let issuer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = DevOptions {
        data_dir: dir.path().to_path_buf(),
        listen: grpc,
        http_listen: http,
        issuer_listen: issuer_listener.local_addr().unwrap(),
    };
    writ::dev::prepare(&options).unwrap();
    let issuer = Arc::new(
        DevIssuer::load_or_create(&writ::dev::issuer_url(&options), &dir.path().join("dev-issuer.pk8"))
            .unwrap(),
    );
    let router = issuer.router();
    tokio::spawn(async move { axum::serve(issuer_listener, router).await });
    let config_path = dir.path().join("writ.toml");
    let config = std::fs::read_to_string(&config_path).unwrap().replace(
        "poll_interval = \"250ms\"",
        "poll_interval = \"50ms\"\npending_timeout = \"1s\"\nmin_backoff = \"50ms\"\nmax_backoff = \"200ms\"",
    );
    let config = match &redis {
        Some(url) => config.replace(
            "kind = \"embedded\"\npath = \"leases.redb\"",
            &format!("kind = \"redis\"\nurl = \"{url}\"\nnamespace = \"crash\""),
        ),
        None => config,
    };
    assert_eq!(config.contains("kind = \"redis\""), redis.is_some(), "the store was switched");
    let config =
        format!("{config}\n[providers.reports]\nkind = \"external\"\nendpoint = \"{}\"\n", plugin.endpoint);
    std::fs::write(&config_path, config).unwrap();
    let policy =
        r#"@id("reports") permit (principal, action, resource == Writ::Role::"reports/reports-read");"#;
    std::fs::write(dir.path().join("policies/reports.cedar"), policy).unwrap();

    let now = chrono::Utc::now();
    let agent = issuer.mint(writ::dev::AGENT_SUBJECT, "writ", Duration::from_secs(3600), now).unwrap();
    let workflow = issuer.mint(writ::dev::WORKFLOW_SUBJECT, "writ", Duration::from_secs(3600), now).unwrap();
    let operator = issuer.mint(writ::dev::OPERATOR_SUBJECT, "writ", Duration::from_secs(3600), now).unwrap();

    let mut writ = WritProcess::start(&config_path);
    let start = proto::StartTaskRequest {
        task_id: "crash-1".into(),
        agent: "demo-agent".into(),
        context: None,
        deadline: Some(writ::api::convert::timestamp(now + chrono::Duration::minutes(30))),
    };
    proto::task_service_client::TaskServiceClient::new(connect(grpc).await)
        .start_task(authed(&workflow, start))
        .await
        .unwrap();

    let mut returned: HashSet<String> = HashSet::new();
    for round in 0..4u64 {
        let channel = connect(grpc).await;
        let stop_at = Instant::now() + Duration::from_millis(300 + fastrand::u64(0..500));
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let mut client = proto::credential_service_client::CredentialServiceClient::new(channel.clone());
            let agent = agent.clone();
            callers.spawn(async move {
                let mut leases = Vec::new();
                while Instant::now() < stop_at + Duration::from_secs(2) {
                    match client.issue(authed(&agent, request("crash-1"))).await {
                        Ok(response) => leases.extend(
                            response
                                .into_inner()
                                .credentials
                                .into_iter()
                                .filter_map(|c| c.lease)
                                .map(|l| l.lease_id),
                        ),
                        Err(_) => break,
                    }
                }
                leases
            });
        }
        tokio::time::sleep(stop_at.saturating_duration_since(Instant::now())).await;
        writ.kill();
        while let Some(leases) = callers.join_next().await {
            returned.extend(leases.unwrap());
        }
        println!("round {round}: {} credentials returned so far", returned.len());
        writ = WritProcess::start(&config_path);
    }
    assert!(!returned.is_empty(), "the load issued something");

    // Close the task; abandoned pending leases are swept after 1 s.
    let closed = proto::task_service_client::TaskServiceClient::new(connect(grpc).await)
        .close_task(authed(&workflow, proto::CloseTaskRequest { task_id: "crash-1".into() }))
        .await
        .unwrap()
        .into_inner();
    println!("closed: {} revoked, {} retrying", closed.revoked, closed.retrying);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut admin = proto::admin_service_client::AdminServiceClient::new(connect(grpc).await);
        let mut tracked = BTreeMap::new();
        let mut page_token = String::new();
        loop {
            let request = proto::ListLeasesRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            };
            let page = admin.list_leases(authed(&operator, request)).await.unwrap().into_inner();
            for lease in page.leases {
                tracked.insert(lease.lease_id.replace('-', ""), lease.state);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        let minted: HashSet<&str> = text.lines().filter_map(|l| l.strip_prefix("minted apikey_")).collect();
        let revoked: HashSet<&str> = text.lines().filter_map(|l| l.strip_prefix("revoked apikey_")).collect();
        let untracked: Vec<&&str> = minted.iter().filter(|id| !tracked.contains_key(**id)).collect();
        assert!(untracked.is_empty(), "credentials minted but unknown to Writ: {untracked:?}");
        for lease in &returned {
            assert!(tracked.contains_key(&lease.replace('-', "")), "a returned credential is tracked");
        }
        let alive: Vec<&&str> = minted.iter().filter(|id| !revoked.contains(**id)).collect();
        let unfinished = tracked.values().filter(|state| {
            ![proto::LeaseState::Revoked as i32, proto::LeaseState::Failed as i32].contains(state)
        });
        let unfinished = unfinished.count();
        if alive.is_empty() && unfinished == 0 {
            println!(
                "{} minted at the provider, {} returned to agents, {} leases tracked: all revoked",
                minted.len(),
                returned.len(),
                tracked.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still alive at the provider: {alive:?}; leases not final: {unfinished}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writ.kill();
    drop(plugin);
}
