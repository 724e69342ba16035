//! Real HTTP: every test that delivers starts a receiver on 127.0.0.1:0
//! that records what arrives and answers as scripted.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use chrono::{DateTime, TimeZone, Utc};
use ring::hmac;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::body::{Notice, event_id};
use super::signature::sign;
use super::*;
use crate::model::{Approval, ApprovalEnd, ApprovalGrant, ApprovalState, ApprovalVote};

const SECRET: &[u8] = b"an-example-signing-secret-0123456789abcdef";

fn created() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn approval(group: &str) -> Approval {
    Approval {
        id: Uuid::now_v7(),
        agent: "deploy-bot".to_owned(),
        task_id: "task-42".to_owned(),
        tool: "terraform".to_owned(),
        grants: vec![ApprovalGrant {
            provider: "aws".to_owned(),
            role: "admin".to_owned(),
            scopes: vec!["s3:*".to_owned()],
            ttl_seconds: Some(900),
        }],
        group: group.to_owned(),
        quorum: 2,
        policies: vec!["step-up-admin".to_owned()],
        policy_set: "prod".to_owned(),
        state: ApprovalState::Pending,
        created_at: created(),
        expires_at: created() + chrono::Duration::hours(1),
        collect_within_seconds: 600,
        votes: Vec::new(),
        approved_at: None,
        collect_by: None,
        collected_at: None,
        ended: None,
    }
}

fn vote(by: &str, approve: bool, minutes: i64) -> ApprovalVote {
    ApprovalVote {
        by: by.to_owned(),
        approve,
        reason: format!("{by} says so"),
        at: created() + chrono::Duration::minutes(minutes),
    }
}

/// A denied request with one vote each way: every optional part is set.
fn denied(group: &str) -> Approval {
    let mut approval = approval(group);
    approval.votes = vec![vote("alice", true, 1), vote("bob", false, 2)];
    approval.state = ApprovalState::Denied;
    approval.ended = Some(ApprovalEnd {
        at: created() + chrono::Duration::minutes(2),
        by: "bob".to_owned(),
        reason: "not today".to_owned(),
    });
    approval
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        first: Duration::from_millis(2),
        max: Duration::from_millis(20),
        give_up_after: Duration::from_secs(3600),
    }
}

fn secret_file(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn config(url: &str, secret_file: PathBuf) -> WebhookConfig {
    WebhookConfig { url: url.to_owned(), secret_file, format: WebhookFormat::Writ, groups: Vec::new() }
}

/// A secret file holding [`SECRET`] and a newline, as `echo` would write it.
fn good_secret(dir: &tempfile::TempDir) -> PathBuf {
    secret_file(dir, "secret", &[SECRET, b"\n"].concat())
}

struct Running {
    notifier: Notifier,
    stop: CancellationToken,
    worker: JoinHandle<()>,
}

impl Running {
    fn start(configs: &[WebhookConfig], retry: RetryPolicy) -> Self {
        let (notifier, deliveries) = Notifier::new(configs).unwrap();
        let stop = CancellationToken::new();
        let worker = tokio::spawn(deliveries.with_retry(retry).run(stop.clone()));
        Self { notifier, stop, worker }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.worker).await.unwrap().unwrap();
    }
}

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Checks the signature with [`verify`] and, independently, with ring
    /// over the raw bytes received.
    fn assert_signed_with(&self, secret: &[u8]) {
        let (timestamp, signature) = (self.header("writ-timestamp"), self.header("writ-signature"));
        verify(secret, timestamp, &self.body, signature, Utc::now(), DEFAULT_TOLERANCE).unwrap();
        let hex_tag = signature.strip_prefix("v1=").unwrap();
        assert_eq!(hex_tag.len(), 64, "{signature}");
        assert!(
            hex_tag.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)),
            "{signature}"
        );
        let message = [timestamp.as_bytes(), b".", &self.body].concat();
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        hmac::verify(&key, &message, &hex::decode(hex_tag).unwrap()).unwrap();
    }
}

/// Records every request and answers with the scripted statuses, then
/// with `otherwise`.
#[derive(Clone)]
struct Receiver {
    requests: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
    otherwise: u16,
}

impl Receiver {
    fn new(answers: &[u16], otherwise: u16) -> Self {
        Self {
            requests: Arc::default(),
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
            otherwise,
        }
    }

    async fn start(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        self.serve(listener);
        addr
    }

    fn serve(&self, listener: TcpListener) {
        let router = Router::new().fallback(record).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
    }

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

async fn record(State(receiver): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    receiver.requests.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
    });
    let code = receiver.answers.lock().unwrap().pop_front().unwrap_or(receiver.otherwise);
    StatusCode::from_u16(code).unwrap()
}

/// Waits for `condition`, failing after a generous 20 s.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value.as_object().unwrap().keys().map(String::as_str).collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

#[tokio::test]
async fn a_notice_is_signed_and_carries_only_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(&[], 200);
    let addr = receiver.start().await;
    let running = Running::start(&[config(&format!("http://{addr}/hooks/writ"), good_secret(&dir))], fast());
    let approval = denied("ops");
    let at = created() + chrono::Duration::minutes(2);
    running.notifier.send(WebhookEvent::Denied, &approval, at);
    wait_until("the delivery", || running.notifier.stats().delivered == 1).await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/hooks/writ");
    assert_eq!(request.header("content-type"), "application/json");
    request.assert_signed_with(SECRET);

    let body = request.json();
    assert_eq!(keys(&body), set(&["id", "type", "at", "approval"]));
    assert_eq!(body["type"], "approval.denied");
    assert_eq!(body["id"], request.header("writ-event-id"));
    let id = Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(DateTime::parse_from_rfc3339(body["at"].as_str().unwrap()).unwrap(), at);

    let sent = &body["approval"];
    let documented = [
        "id",
        "agent",
        "task_id",
        "tool",
        "grants",
        "group",
        "quorum",
        "state",
        "created_at",
        "expires_at",
        "approvals",
        "votes",
        "collect_by",
        "ended",
    ];
    assert_eq!(keys(sent), set(&documented));
    assert_eq!(sent["id"], approval.id.to_string());
    assert_eq!(sent["agent"], "deploy-bot");
    assert_eq!(sent["task_id"], "task-42");
    assert_eq!(sent["tool"], "terraform");
    assert_eq!(sent["group"], "ops");
    assert_eq!(sent["quorum"], 2);
    assert_eq!(sent["state"], "denied");
    assert_eq!(sent["approvals"], 1);
    assert_eq!(sent["collect_by"], Value::Null);
    assert_eq!(DateTime::parse_from_rfc3339(sent["created_at"].as_str().unwrap()).unwrap(), created());
    let grant = &sent["grants"][0];
    assert_eq!(keys(grant), set(&["provider", "role", "scopes", "ttl_seconds"]));
    assert_eq!(grant["scopes"], serde_json::json!(["s3:*"]));
    assert_eq!(grant["ttl_seconds"], 900);
    let votes = sent["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 2);
    for vote in votes {
        assert_eq!(keys(vote), set(&["by", "approve", "reason", "at"]));
    }
    assert_eq!(votes[1]["by"], "bob");
    assert_eq!(votes[1]["approve"], false);
    assert_eq!(keys(&sent["ended"]), set(&["at", "by", "reason"]));
    assert_eq!(sent["ended"]["reason"], "not today");
    running.stop().await;
}

#[tokio::test]
async fn the_slack_format_posts_a_signed_text() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(&[], 200);
    let addr = receiver.start().await;
    let mut slack = config(&format!("http://{addr}/services/T0/B0/token"), good_secret(&dir));
    slack.format = WebhookFormat::Slack;
    let running = Running::start(&[slack], fast());
    let approval = approval("ops");
    running.notifier.send(WebhookEvent::Requested, &approval, created());
    wait_until("the delivery", || running.notifier.stats().delivered == 1).await;

    let request = &receiver.requests()[0];
    request.assert_signed_with(SECRET);
    let body = request.json();
    assert_eq!(keys(&body), set(&["text"]));
    let text = body["text"].as_str().unwrap();
    for expected in
        ["requested", "`deploy-bot`", "`task-42`", "`ops`", "`aws`/`admin`", &approval.id.to_string()]
    {
        assert!(text.contains(expected), "{expected:?} not in {text:?}");
    }
    assert!(!text.contains('\n'), "{text:?}");
    running.stop().await;
}

#[test]
fn slack_text_escapes_markup_for_every_event() {
    let mut approval = denied("ops");
    approval.agent = "<!channel> & `friends`".to_owned();
    for event in WebhookEvent::ALL {
        let notice = Notice::new(event, &approval, created(), Vec::new());
        let body: Value = serde_json::from_slice(&notice.render(WebhookFormat::Slack).unwrap()).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("&lt;!channel&gt; &amp; 'friends'"), "{text}");
        assert!(!text.contains('<'), "{text}");
    }
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_event_id_until_it_answers_2xx() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(&[503, 503], 200);
    let addr = receiver.start().await;
    let running = Running::start(&[config(&format!("http://{addr}/"), good_secret(&dir))], fast());
    running.notifier.send(WebhookEvent::Requested, &approval("ops"), created());
    wait_until("the delivery", || running.notifier.stats().delivered == 1).await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    let ids: BTreeSet<_> =
        requests.iter().map(|request| request.header("writ-event-id").to_owned()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    for request in &requests {
        request.assert_signed_with(SECRET);
        assert_eq!(request.body, requests[0].body);
    }
    let stats = running.notifier.stats();
    assert_eq!(stats, DeliveryStats { delivered: 1, retried: 2, dropped: 0, queue_full: 0, pending: 0 });
    running.stop().await;
}

#[tokio::test]
async fn a_refusing_receiver_is_still_retried() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(&[400, 401], 200);
    let addr = receiver.start().await;
    let running = Running::start(&[config(&format!("http://{addr}/"), good_secret(&dir))], fast());
    running.notifier.send(WebhookEvent::Approved, &approval("ops"), created());
    wait_until("the delivery", || running.notifier.stats().delivered == 1).await;
    assert_eq!(receiver.count(), 3);
    assert_eq!(running.notifier.stats().retried, 2);
    running.stop().await;
}

#[tokio::test]
async fn a_receiver_that_is_down_at_first_still_gets_the_notice() {
    let dir = tempfile::tempdir().unwrap();
    // A free port, with nothing listening on it for now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let running = Running::start(&[config(&format!("http://{addr}/late"), good_secret(&dir))], fast());
    running.notifier.send(WebhookEvent::Requested, &approval("ops"), created());
    wait_until("failed attempts", || running.notifier.stats().retried >= 2).await;
    assert_eq!(running.notifier.stats().delivered, 0);

    let receiver = Receiver::new(&[], 200);
    receiver.serve(TcpListener::bind(addr).await.unwrap());
    wait_until("the delivery", || running.notifier.stats().delivered == 1).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    requests[0].assert_signed_with(SECRET);
    assert_eq!(requests[0].json()["type"], "approval.requested");
    running.stop().await;
}

#[tokio::test]
async fn a_notice_too_old_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(&[], 500);
    let addr = receiver.start().await;
    let retry = RetryPolicy { give_up_after: Duration::from_millis(50), ..fast() };
    let running = Running::start(&[config(&format!("http://{addr}/"), good_secret(&dir))], retry);
    running.notifier.send(WebhookEvent::Requested, &approval("ops"), created());
    wait_until("the drop", || running.notifier.stats().dropped == 1).await;
    let stats = running.notifier.stats();
    assert_eq!((stats.delivered, stats.pending), (0, 0));
    assert!(receiver.count() >= 1);
    running.stop().await;
}

#[tokio::test]
async fn groups_choose_the_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new(&[], 200);
    let addr = receiver.start().await;
    let mut ops_only = config(&format!("http://{addr}/ops"), good_secret(&dir));
    ops_only.groups = vec!["ops".to_owned()];
    let every_group = config(&format!("http://{addr}/all"), good_secret(&dir));
    let running = Running::start(&[ops_only, every_group], fast());
    running.notifier.send(WebhookEvent::Requested, &approval("finance"), created());
    running.notifier.send(WebhookEvent::Requested, &approval("ops"), created());
    wait_until("the deliveries", || running.notifier.stats().delivered == 3).await;

    let groups_at = |path: &str| -> Vec<String> {
        let requests = receiver.requests().into_iter().filter(|request| request.path == path);
        let mut groups: Vec<_> = requests
            .map(|request| request.json()["approval"]["group"].as_str().unwrap().to_owned())
            .collect();
        groups.sort();
        groups
    };
    assert_eq!(groups_at("/ops"), ["ops"]);
    assert_eq!(groups_at("/all"), ["finance", "ops"]);
    assert_eq!(running.notifier.stats().pending, 0);
    running.stop().await;
}

#[tokio::test]
async fn a_request_of_no_configured_group_is_not_queued() {
    let dir = tempfile::tempdir().unwrap();
    let mut ops_only = config("http://127.0.0.1:9/ops", good_secret(&dir));
    ops_only.groups = vec!["ops".to_owned()];
    let (notifier, _deliveries) = Notifier::new(&[ops_only]).unwrap();
    notifier.send(WebhookEvent::Requested, &approval("finance"), created());
    assert_eq!(notifier.stats(), DeliveryStats::default());
    notifier.send(WebhookEvent::Requested, &approval("ops"), created());
    assert_eq!(notifier.stats().pending, 1);
}

#[tokio::test]
async fn shutdown_stops_the_worker_promptly_mid_attempt() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    // A retry would wait an hour: only a prompt stop ends the worker.
    let retry = RetryPolicy { first: Duration::from_secs(3600), max: Duration::from_secs(3600), ..fast() };
    let running = Running::start(&[config(&format!("http://{addr}/"), good_secret(&dir))], retry);
    running.notifier.send(WebhookEvent::Requested, &approval("ops"), created());
    wait_until("the attempt", || accepted.load(Ordering::SeqCst) >= 1).await;

    let notifier = running.notifier.clone();
    running.stop().await;
    assert_eq!(notifier.stats().pending, 1, "the undelivered notice is counted");
    // Sending after the stop neither blocks nor fails.
    notifier.send(WebhookEvent::Cancelled, &approval("ops"), created());
    assert_eq!(notifier.stats().pending, 1);
}

#[tokio::test]
async fn without_webhooks_send_is_a_no_op_and_the_worker_waits_for_shutdown() {
    let (notifier, deliveries) = Notifier::new(&[]).unwrap();
    notifier.send(WebhookEvent::Requested, &approval("ops"), created());
    Notifier::disabled().send(WebhookEvent::Voted, &approval("ops"), created());
    assert_eq!(notifier.stats(), DeliveryStats::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(deliveries.run(stop.clone()));
    tokio::task::yield_now().await;
    assert!(!worker.is_finished());
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), worker).await.unwrap().unwrap();
}

#[test]
fn verify_refuses_a_wrong_secret_an_old_timestamp_and_a_changed_body() {
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
    let now = Utc::now();
    let body = br#"{"id":"x","type":"approval.requested"}"#;
    let timestamp = now.timestamp();
    let signature = sign(&key, timestamp, body);
    let stamp = timestamp.to_string();
    let check = |secret: &[u8], stamp: &str, body: &[u8], signature: &str| {
        verify(secret, stamp, body, signature, now, DEFAULT_TOLERANCE)
    };
    check(SECRET, &stamp, body, &signature).unwrap();
    check(SECRET, &stamp, body, &format!("v1={}, {signature}", "00".repeat(32))).unwrap();

    let wrong = b"another-signing-secret-0123456789abcdef";
    assert!(matches!(check(wrong, &stamp, body, &signature), Err(WebhookError::BadSignature)));
    let tampered = br#"{"id":"x","type":"approval.approved"}"#;
    assert!(matches!(check(SECRET, &stamp, tampered, &signature), Err(WebhookError::BadSignature)));
    // The signature covers the timestamp: another one does not verify.
    let later = (timestamp + 1).to_string();
    assert!(matches!(check(SECRET, &later, body, &signature), Err(WebhookError::BadSignature)));
    // Correctly signed, but too old, or too far ahead.
    for skew in [-301, 301] {
        let stamp = (timestamp + skew).to_string();
        let signature = sign(&key, timestamp + skew, body);
        let refused = check(SECRET, &stamp, body, &signature);
        assert!(matches!(refused, Err(WebhookError::StaleTimestamp { .. })), "{refused:?}");
    }
    let just_in_time = sign(&key, timestamp - 300, body);
    check(SECRET, &(timestamp - 300).to_string(), body, &just_in_time).unwrap();

    assert!(matches!(check(SECRET, "yesterday", body, &signature), Err(WebhookError::InvalidTimestamp)));
    assert!(matches!(check(SECRET, "", body, &signature), Err(WebhookError::InvalidTimestamp)));
    assert!(matches!(check(SECRET, &stamp, body, "v0=abc"), Err(WebhookError::MissingSignature)));
    assert!(matches!(check(SECRET, &stamp, body, "v1=not-hex"), Err(WebhookError::BadSignature)));
}

#[test]
fn a_short_secret_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let short = "only-31-bytes-of-secret-xxxxxxx";
    assert_eq!(short.len(), 31);
    let path = secret_file(&dir, "short", format!("{short}\r\n\n").as_bytes());
    let error = Notifier::new(&[config("https://hooks.example.com/x", path.clone())]).unwrap_err();
    assert!(matches!(error, WebhookError::SecretTooShort { length: 31, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("approvals.webhooks[0].secret_file"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(!message.contains(short), "{message}");
    assert!(!format!("{error:?}").contains(short));

    let exactly = secret_file(&dir, "exactly", b"exactly-32-bytes-of-secret-xxxxx\n");
    Notifier::new(&[config("https://hooks.example.com/x", exactly)]).unwrap();
}

#[test]
fn a_missing_secret_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let configs =
        [config("https://a.example.com/", good_secret(&dir)), config("https://b.example.com/", path.clone())];
    let error = Notifier::new(&configs).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("approvals.webhooks[1].secret_file"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn a_url_with_credentials_or_of_another_scheme_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = good_secret(&dir);
    for url in
        ["https://writ:hunter2-password@hooks.example.com/x", "https://hunter2-password@hooks.example.com/"]
    {
        let error = Notifier::new(&[config(url, secret.clone())]).unwrap_err();
        assert!(matches!(error, WebhookError::UrlHasCredentials { index: 0, .. }), "{error:?}");
        let shown = format!("{error} {error:?}");
        assert!(shown.contains("approvals.webhooks[0].url"), "{shown}");
        assert!(shown.contains("hooks.example.com"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains(std::str::from_utf8(SECRET).unwrap()), "{shown}");
    }
    let error = Notifier::new(&[config("ftp://hooks.example.com/x", secret.clone())]).unwrap_err();
    assert!(error.to_string().contains("must use http or https"), "{error}");
    let error = Notifier::new(&[config("hooks.example.com/x", secret.clone())]).unwrap_err();
    assert!(error.to_string().starts_with("approvals.webhooks[0].url is not a URL"), "{error}");
    let mut empty_group = config("https://hooks.example.com/x", secret);
    empty_group.groups = vec![String::new()];
    assert!(matches!(Notifier::new(&[empty_group]), Err(WebhookError::EmptyGroup { index: 0 })));
}

#[test]
fn debug_output_shows_neither_the_secret_nor_the_url_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = config("https://hooks.slack.com/services/T0/B0/XYZTOKEN?x=1", good_secret(&dir));
    let endpoint = Endpoint::new(0, &config).unwrap();
    let secret = std::str::from_utf8(SECRET).unwrap();
    for shown in [format!("{config:?}"), format!("{endpoint:?}")] {
        assert!(shown.contains("https://hooks.slack.com/…"), "{shown}");
        assert!(!shown.contains("XYZTOKEN"), "{shown}");
        assert!(!shown.contains(secret), "{shown}");
    }
    let (notifier, deliveries) = Notifier::new(&[config]).unwrap();
    assert_eq!(format!("{notifier:?}"), "Notifier { endpoints: 1 }");
    assert!(!format!("{deliveries:?}").contains("XYZTOKEN"));
}

#[test]
fn the_configuration_reads_from_toml() {
    let config: WebhookConfig = toml::from_str(
        r#"
        url = "https://hooks.example.com/writ"
        secret_file = "/etc/writ/webhook.secret"
        format = "slack"
        groups = ["ops", "security"]
        "#,
    )
    .unwrap();
    assert_eq!(config.format, WebhookFormat::Slack);
    assert_eq!(config.groups, ["ops", "security"]);
    let minimal: WebhookConfig =
        toml::from_str("url = \"https://hooks.example.com/\"\nsecret_file = \"/s\"\n").unwrap();
    assert_eq!(minimal.format, WebhookFormat::Writ);
    assert!(minimal.groups.is_empty());
    let unknown =
        toml::from_str::<WebhookConfig>("url = \"https://h/\"\nsecret_file = \"/s\"\nsecret = \"x\"\n");
    assert!(unknown.is_err());
    assert!(
        toml::from_str::<WebhookConfig>("url = \"https://h/\"\nsecret_file = \"/s\"\nformat = \"teams\"\n")
            .is_err()
    );
}

#[test]
fn event_ids_are_stable_per_event_and_distinct_between_events() {
    let mut approval = approval("ops");
    let requested = event_id(WebhookEvent::Requested, &approval, created());
    assert_eq!(requested.get_version_num(), 7);
    let (seconds, _) = requested.get_timestamp().unwrap().to_unix();
    assert_eq!(seconds as i64, created().timestamp());

    approval.votes.push(vote("alice", true, 1));
    let first_vote = event_id(WebhookEvent::Voted, &approval, Utc::now());
    // Re-sent later (after a restart, say): the same ids.
    assert_eq!(event_id(WebhookEvent::Requested, &approval, Utc::now()), requested);
    assert_eq!(event_id(WebhookEvent::Voted, &approval, Utc::now()), first_vote);

    approval.votes.push(vote("carol", true, 3));
    let second_vote = event_id(WebhookEvent::Voted, &approval, Utc::now());
    assert_ne!(first_vote, second_vote);

    let ids: BTreeSet<_> =
        WebhookEvent::ALL.iter().map(|event| event_id(*event, &approval, created())).collect();
    assert_eq!(ids.len(), WebhookEvent::ALL.len());
    let other = event_id(WebhookEvent::Requested, &self::approval("ops"), created());
    assert_ne!(other, requested, "another approval, another id");
}

#[test]
fn event_types_are_named() {
    let names: Vec<_> = WebhookEvent::ALL.iter().map(|event| event.as_str()).collect();
    assert_eq!(
        names,
        [
            "approval.requested",
            "approval.approved",
            "approval.denied",
            "approval.expired",
            "approval.cancelled",
            "approval.collected",
            "approval.voted"
        ]
    );
}

#[test]
fn the_retry_delay_doubles_from_first_up_to_max_with_jitter() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.delay(1, 1.0), Duration::from_secs(1));
    assert_eq!(policy.delay(2, 1.0), Duration::from_secs(2));
    assert_eq!(policy.delay(3, 1.0), Duration::from_secs(4));
    assert_eq!(policy.delay(9, 1.0), Duration::from_secs(256));
    assert_eq!(policy.delay(10, 1.0), Duration::from_secs(300));
    assert_eq!(policy.delay(u32::MAX, 1.0), Duration::from_secs(300));
    assert_eq!(policy.delay(1, 0.0), Duration::from_millis(500));
    for _ in 0..100 {
        let delay = policy.delay(4, fastrand::f64());
        assert!(delay >= Duration::from_secs(4) && delay <= Duration::from_secs(8), "{delay:?}");
    }
    assert_eq!(policy.give_up_after, Duration::from_secs(24 * 60 * 60));
}
