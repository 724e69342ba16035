//! Starts a real Writ (gRPC + HTTP, embedded store in a temp dir) next to a
//! development issuer, with a manual clock the test moves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tempfile::TempDir;
use tonic::transport::Channel;
use writ::api::proto;
use writ::api::proto::admin_service_client::AdminServiceClient;
use writ::api::proto::approval_service_client::ApprovalServiceClient;
use writ::api::proto::credential_service_client::CredentialServiceClient;
use writ::api::proto::task_service_client::TaskServiceClient;
use writ::clock::{Clock, ManualClock};
use writ::config::Config;
use writ::dev::{DevIssuer, DevOptions};
use writ::server::Running;

pub struct Harness {
    /// Holds the data directory until the harness is dropped.
    _dir: TempDir,
    pub issuer: Arc<DevIssuer>,
    pub clock: ManualClock,
    pub config: Config,
    running: Option<Running>,
    _issuer_task: tokio::task::JoinHandle<()>,
}

pub type Customize = Box<dyn FnOnce(&mut Config, &std::path::Path)>;

pub async fn start() -> Harness {
    start_with(Box::new(|_, _| {})).await
}

/// Starts Writ with the `writ dev` configuration, changed by `customize`.
pub async fn start_with(customize: Customize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer_addr = listener.local_addr().unwrap();
    let options = DevOptions {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        issuer_listen: issuer_addr,
    };
    let mut config = writ::dev::prepare(&options).unwrap();
    config.revocation.poll_interval = Duration::from_millis(50);
    config.revocation.min_backoff = Duration::from_millis(50);
    config.revocation.max_backoff = Duration::from_millis(200);
    // A SIGHUP reaches every Writ in the test process: only the test that
    // sends one listens for it.
    config.policy.reload_on_sighup = false;
    customize(&mut config, dir.path());
    let issuer = Arc::new(
        DevIssuer::load_or_create(&writ::dev::issuer_url(&options), &dir.path().join("dev-issuer.pk8"))
            .unwrap(),
    );
    let router = issuer.router();
    let issuer_task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let clock = ManualClock::new(Utc::now());
    let running = Running::start(&config, Arc::new(clock.clone())).await.unwrap();
    Harness { _dir: dir, issuer, clock, config, running: Some(running), _issuer_task: issuer_task }
}

impl Harness {
    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.running().grpc_addr
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().http_addr)
    }

    /// Stops Writ gracefully and starts it again on the same data.
    pub async fn restart(&mut self) {
        self.running.take().unwrap().stop().await.unwrap();
        self.running = Some(Running::start(&self.config, Arc::new(self.clock.clone())).await.unwrap());
    }

    /// Stops Writ gracefully, keeping its data directory to look at.
    pub async fn stop_serving(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.advance(chrono::Duration::seconds(seconds));
    }

    /// Waits until the sweeper and the revocation worker have acted on the
    /// clock's time: what they have not done by then they will not do
    /// before the clock moves again. A check that something has not
    /// happened yet uses this instead of sleeping, so it is exact.
    pub async fn settle(&self) {
        let settled = self.running().broker.revocations().settled(self.clock.now());
        tokio::time::timeout(Duration::from_secs(10), settled).await.expect("the workers settle within 10 s");
    }

    pub fn token(&self, subject: &str) -> String {
        self.issuer.mint(subject, "writ", Duration::from_secs(3600), self.clock.now()).unwrap()
    }

    pub fn agent(&self) -> String {
        self.token(writ::dev::AGENT_SUBJECT)
    }

    pub fn workflow(&self) -> String {
        self.token(writ::dev::WORKFLOW_SUBJECT)
    }

    pub fn operator(&self) -> String {
        self.token(writ::dev::OPERATOR_SUBJECT)
    }

    pub fn auditor(&self) -> String {
        self.token(writ::dev::AUDITOR_SUBJECT)
    }

    pub async fn audit(&self) -> writ::api::proto::audit_service_client::AuditServiceClient<Channel> {
        writ::api::proto::audit_service_client::AuditServiceClient::new(self.channel().await)
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr())).unwrap().connect().await.unwrap()
    }

    pub async fn credentials(&self) -> CredentialServiceClient<Channel> {
        CredentialServiceClient::new(self.channel().await)
    }

    pub async fn tasks(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.channel().await)
    }

    pub async fn approvals(&self) -> ApprovalServiceClient<Channel> {
        ApprovalServiceClient::new(self.channel().await)
    }

    /// The first (`1`) or second (`2`) approver of `writ dev`'s
    /// `orders-approvers` group.
    pub fn approver(&self, which: u8) -> String {
        match which {
            1 => self.token(writ::dev::APPROVER_SUBJECT),
            _ => self.token(writ::dev::SECOND_APPROVER_SUBJECT),
        }
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// Opens a task for `agent` with the given deadline (seconds from now).
    pub async fn open_task(&self, task_id: &str, agent: &str, deadline_in: i64) -> proto::Task {
        let request = proto::StartTaskRequest {
            task_id: task_id.into(),
            agent: agent.into(),
            context: Some(proto::TaskContext { environment: "dev".into(), ..Default::default() }),
            deadline: Some(writ::api::convert::timestamp(
                self.clock.now() + chrono::Duration::seconds(deadline_in),
            )),
        };
        self.tasks()
            .await
            .start_task(authed(&self.workflow(), request))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
    }

    /// Issues one `tokens/orders-read` grant as the demo agent.
    pub async fn issue_orders_read(
        &self,
        task_id: &str,
        ttl_seconds: i64,
    ) -> Result<proto::IssuedCredential, tonic::Status> {
        let request = issue_request(task_id, "orders-read", &["orders:read"], ttl_seconds);
        let response = self.credentials().await.issue(authed(&self.agent(), request)).await?;
        Ok(response.into_inner().credentials.into_iter().next().unwrap())
    }

    pub async fn lease(&self, lease_id: &str) -> proto::Lease {
        let request = proto::ListLeasesRequest::default();
        let leases = self
            .admin()
            .await
            .list_leases(authed(&self.operator(), request))
            .await
            .unwrap()
            .into_inner()
            .leases;
        leases.into_iter().find(|lease| lease.lease_id == lease_id).expect("lease is listed")
    }

    /// Waits (bounded) until the lease reaches `state`.
    pub async fn wait_for_state(&self, lease_id: &str, state: proto::LeaseState) -> proto::Lease {
        for _ in 0..200 {
            let lease = self.lease(lease_id).await;
            if lease.state == state as i32 {
                return lease;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("lease {lease_id} never reached {state:?}: {:?}", self.lease(lease_id).await);
    }

    /// The Prometheus metrics page.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.http_url("/metrics"))
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one metric series, 0 when it does not exist yet.
    pub async fn metric(&self, series: &str) -> f64 {
        let page = self.metrics().await;
        page.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// RFC 7662 introspection of a token Writ signed.
    pub async fn introspect(&self, token: &str) -> serde_json::Value {
        reqwest::Client::new()
            .post(self.http_url("/providers/tokens/introspect"))
            .bearer_auth(self.operator())
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.config.audit.path).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }
}

/// Configures the example Python plugin at `endpoint` as provider
/// `reports`, with a policy that lets the demo agent read reports.
pub fn add_reports_provider(config: &mut Config, dir: &std::path::Path, endpoint: &str) {
    let settings: toml::Table = toml::from_str(&format!("endpoint = {endpoint:?}")).unwrap();
    config
        .providers
        .insert("reports".into(), writ::config::ProviderConfig { kind: "external".into(), settings });
    let policy = r#"
        @id("demo-agent-reads-reports")
        permit (principal == Writ::Agent::"demo-agent", action == Writ::Action::"issue", resource == Writ::Role::"reports/reports-read");
    "#;
    std::fs::write(dir.join("policies/reports.cedar"), policy).unwrap();
}

/// An issue request for the `reports` provider's one role.
pub fn reports_request(task_id: &str) -> proto::IssueRequest {
    let mut request = issue_request(task_id, "reports-read", &["reports:read"], 60);
    request.grants[0].provider = "reports".into();
    request
}

pub fn issue_request(task_id: &str, role: &str, scopes: &[&str], ttl_seconds: i64) -> proto::IssueRequest {
    proto::IssueRequest {
        task_id: task_id.into(),
        tool: "orders.lookup".into(),
        grants: vec![proto::GrantRequest {
            provider: "tokens".into(),
            role: role.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ttl: Some(prost_types::Duration { seconds: ttl_seconds, nanos: 0 }),
        }],
    }
}

pub fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn bearer(credential: &proto::IssuedCredential) -> String {
    match credential.credential.as_ref().and_then(|c| c.kind.as_ref()) {
        Some(proto::credential::Kind::BearerToken(token)) => token.token.clone(),
        other => panic!("expected a bearer token, got {other:?}"),
    }
}
