//! The RFC 8693 front door, `POST /oauth2/token`, driven by an OAuth
//! client no one here wrote: authlib's `OAuth2Session.fetch_token`
//! (`tests/peers/oauth_client/exchange.py`). A credential it gets is the
//! one gRPC `Issue` gives: introspected active, the same lease, the same
//! evidence; every refusal is an RFC 6749 §5.2 error. The form and size
//! rules are checked with plain HTTP requests.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use writ::api::proto;
use writ::clock::Clock;

use crate::harness::{self, Harness, authed};

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oauth_client")
}

/// Installs authlib unless it imports already (`.ci/run` installs it);
/// once per test binary.
fn authlib_installed() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let importable = || {
            std::process::Command::new("python3")
                .args(["-c", "import authlib, requests"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        if importable() {
            return Ok(());
        }
        let status = std::process::Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "-r"])
            .arg(peer_dir().join("requirements.txt"))
            .status()
            .map_err(|error| format!("cannot run python3 -m pip: {error}"))?;
        if status.success() && importable() { Ok(()) } else { Err(format!("pip install failed: {status}")) }
    });
    if let Err(message) = ready {
        panic!(
            "the authlib client cannot run: {message}; install python3 and pip, then `python3 -m pip install -r \
             tests/peers/oauth_client/requirements.txt`"
        );
    }
}

/// The authlib client, answering one exchange per line; killed when
/// dropped.
struct OAuthClient {
    _child: Child,
    requests: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

impl OAuthClient {
    async fn start(h: &Harness) -> Self {
        authlib_installed();
        let mut child = tokio::process::Command::new("python3")
            .arg(peer_dir().join("exchange.py"))
            .arg(h.http_url("/oauth2/token"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let requests = child.stdin.take().unwrap();
        let mut answers = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = Self::line(&mut answers).await;
        assert_eq!(ready["ready"], true, "{ready}");
        Self { _child: child, requests, answers }
    }

    async fn line(answers: &mut Lines<BufReader<ChildStdout>>) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), answers.next_line())
            .await
            .expect("the client answers within 30 s")
            .unwrap()
            .expect("the client is running");
        serde_json::from_str(&line).unwrap()
    }

    /// One `fetch_token` with these parameters beside the grant type.
    async fn exchange(&mut self, params: Value) -> Value {
        let line = json!({ "params": params }).to_string() + "\n";
        self.requests.write_all(line.as_bytes()).await.unwrap();
        let answer = Self::line(&mut self.answers).await;
        assert_eq!(answer["cache_control"], "no-store", "{answer}");
        assert_eq!(answer["pragma"], "no-cache", "{answer}");
        answer
    }
}

/// The parameters of a grant of `tokens/<role>` in `task_id`.
fn grant(h: &Harness, task_id: &str, role: &str, scope: &str, tool: &str) -> Value {
    json!({
        "subject_token": h.agent(),
        "subject_token_type": JWT,
        "audience": format!("tokens/{role}"),
        "scope": scope,
        "writ_task_id": task_id,
        "writ_tool": tool,
    })
}

/// The OAuth error authlib raised, after checking the raw answer says the
/// same with `status`.
fn refusal(answer: &Value, status: u16) -> (String, String) {
    assert!(answer.get("token").is_none(), "refused: {answer}");
    assert_eq!(answer["status"], status, "{answer}");
    assert_eq!(answer["body"]["error"], answer["error"], "{answer}");
    (answer["error"].as_str().unwrap().to_owned(), answer["description"].as_str().unwrap().to_owned())
}

fn assert_refused(answer: &Value, error: &str, words: &str) {
    let (code, description) = refusal(answer, 400);
    assert_eq!(code, error, "{answer}");
    assert!(description.contains(words), "{words:?} not in {description:?}");
}

/// The evidence of one task's history, without ids and times.
fn evidence(h: &Harness, task_id: &str) -> Vec<Value> {
    h.audit_lines()
        .into_iter()
        .filter(|line| line["task"] == task_id)
        .map(|line| {
            json!({
                "event": line["event"], "actor": line["actor"], "outcome": line["outcome"],
                "agent": line["agent"], "provider": line["provider"], "role": line["role"],
                "tool": line["tool"], "policies": line["policies"], "reason": line["reason"],
                "scopes": line["details"]["scopes"], "ttl_seconds": line["details"]["ttl_seconds"],
            })
        })
        .collect()
}

async fn prod_task(h: &Harness, task_id: &str) {
    let request = proto::StartTaskRequest {
        task_id: task_id.into(),
        agent: "demo-agent".into(),
        context: Some(proto::TaskContext { environment: "prod".into(), ..Default::default() }),
        deadline: Some(writ::api::convert::timestamp(h.clock.now() + chrono::Duration::seconds(3600))),
    };
    h.tasks().await.start_task(authed(&h.workflow(), request)).await.unwrap();
}

async fn approve(h: &Harness, approver: u8, approval_id: &str) {
    let request = proto::DecideApprovalRequest { approval_id: approval_id.into(), reason: "checked".into() };
    h.approvals().await.approve(authed(&h.approver(approver), request)).await.unwrap();
}

#[tokio::test]
async fn authlib_exchanges_an_agent_token_for_the_credential_issue_gives() {
    let h = harness::start().await;
    let mut client = OAuthClient::start(&h).await;
    h.open_task("by-grpc", "demo-agent", 600).await;
    h.open_task("by-oauth", "demo-agent", 600).await;
    h.issue_orders_read("by-grpc", 60).await.unwrap();

    let mut params = grant(&h, "by-oauth", "orders-read", "orders:read", "orders.lookup");
    params["writ_ttl"] = json!("60");
    let answer = client.exchange(params).await;
    assert_eq!(answer["status"], 200, "{answer}");
    let token = &answer["token"];
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(token["expires_in"], 60);
    assert_eq!(token["scope"], "orders:read");
    assert_eq!(token["writ_task_id"], "by-oauth");
    assert!(token["expires_at"].is_number(), "authlib read expires_in: {token}");
    assert!(token.get("refresh_token").is_none(), "renewal is gRPC Renew: {token}");
    let access_token = token["access_token"].as_str().unwrap();

    // The token is live at Writ's introspection, and its lease is the
    // agent's, under the task it named.
    let introspected = h.introspect(access_token).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["scope"], "orders:read");
    assert_eq!(introspected["writ_task"], "by-oauth");
    assert_eq!(introspected["writ_role"], "orders-read");
    assert_eq!(introspected["sub"], "demo-agent");
    let lease = h.lease(token["writ_lease_id"].as_str().unwrap()).await;
    assert_eq!(lease.state(), proto::LeaseState::Active);
    assert_eq!((lease.agent.as_str(), lease.task_id.as_str()), ("demo-agent", "by-oauth"));
    assert_eq!(
        (lease.provider.as_str(), lease.role.as_str(), lease.tool.as_str()),
        ("tokens", "orders-read", "orders.lookup")
    );
    assert_eq!(lease.scopes, ["orders:read"]);

    // The same evidence as the gRPC issue: the decision, then the issuance.
    let by_grpc = evidence(&h, "by-grpc");
    let by_oauth = evidence(&h, "by-oauth");
    let events: Vec<&Value> = by_oauth.iter().map(|record| &record["event"]).collect();
    assert!(events.ends_with(&[&json!("decision"), &json!("issued")]), "{events:?}");
    assert_eq!(by_oauth, by_grpc);

    // A JWT when asked for one: the tokens provider signs its tokens.
    let mut params = grant(&h, "by-oauth", "orders-read", "", "orders.lookup");
    params["requested_token_type"] = json!(JWT);
    let answer = client.exchange(params).await;
    assert_eq!(answer["token"]["issued_token_type"], JWT, "{answer}");
    assert!(answer["token"].get("scope").is_none(), "no scope asked, none granted: {answer}");
    assert_eq!(answer["token"]["expires_in"], 300, "the role's default lifetime: {answer}");

    // A credential of another type than asked is not handed out: its lease
    // is released at once.
    let mut params = grant(&h, "by-oauth", "orders-read", "orders:read", "orders.lookup");
    params["requested_token_type"] = json!("urn:writ:params:oauth:token-type:aws-session");
    let answer = client.exchange(params).await;
    assert_refused(
        &answer,
        "invalid_target",
        "tokens/orders-read does not issue urn:writ:params:oauth:token-type:aws-session tokens",
    );
    let description = answer["description"].as_str().unwrap();
    let lease_id = description.split("lease ").nth(1).unwrap().split(' ').next().unwrap();
    let released = h.lease(lease_id).await;
    assert_eq!(released.revocation_reason, "released", "{released:?}");

    // A lifetime past the role's maximum is clamped, with Writ's notice.
    let mut params = grant(&h, "by-oauth", "orders-read", "orders:list", "orders.lookup");
    params["writ_ttl"] = json!("86400");
    let answer = client.exchange(params).await;
    let notices = answer["token"]["writ_notices"].to_string();
    assert!(notices.contains("ttl clamped to the role maximum"), "{answer}");
    assert!(answer["token"]["expires_in"].as_i64().unwrap() < 86400);

    // Closing the task revokes what the exchange issued, like any lease.
    let close = proto::CloseTaskRequest { task_id: "by-oauth".into() };
    h.tasks().await.close_task(authed(&h.workflow(), close)).await.unwrap();
    assert_eq!(h.introspect(access_token).await["active"], false);
    h.stop().await;
}

#[tokio::test]
async fn refusals_are_rfc_6749_errors_that_say_what_to_fix() {
    let h = harness::start().await;
    let mut client = OAuthClient::start(&h).await;
    h.open_task("t-1", "demo-agent", 600).await;
    let ok = || grant(&h, "t-1", "orders-read", "orders:read", "orders.lookup");

    // Policy denies: unwilling to issue for that audience (RFC 8693 §2.2.2).
    let answer = client.exchange(grant(&h, "t-1", "orders-admin", "orders:refund", "orders.lookup")).await;
    assert_refused(
        &answer,
        "invalid_target",
        "no policy permits agent \"demo-agent\" to issue tokens/orders-admin",
    );
    let denial = h.audit_lines().into_iter().rev().find(|line| line["event"] == "decision").unwrap();
    assert_eq!((denial["outcome"].as_str(), denial["role"].as_str()), (Some("deny"), Some("orders-admin")));

    // Targets, scopes and tasks Writ does not know.
    let mut params = ok();
    params["audience"] = json!("vault/db-admin");
    assert_refused(&client.exchange(params).await, "invalid_target", "provider \"vault\" is not configured");
    let mut params = ok();
    params["audience"] = json!("tokens/no-such-role");
    assert_refused(
        &client.exchange(params).await,
        "invalid_target",
        "provider \"tokens\" has no role \"no-such-role\"",
    );
    let mut params = ok();
    params["audience"] = json!("orders-api");
    assert_refused(&client.exchange(params).await, "invalid_target", "is not <provider>/<role>");
    let mut params = ok();
    params["scope"] = json!("orders:read orders:delete");
    assert_refused(&client.exchange(params).await, "invalid_scope", "does not offer scope \"orders:delete\"");
    let mut params = ok();
    params["writ_task_id"] = json!("no-such-task");
    assert_refused(&client.exchange(params).await, "invalid_grant", "task \"no-such-task\" not found");
    let mut params = ok();
    params["writ_ttl"] = json!("0");
    assert_refused(&client.exchange(params).await, "invalid_request", "ttl must be positive");
    let mut params = ok();
    params.as_object_mut().unwrap().remove("writ_tool");
    assert_refused(&client.exchange(params).await, "invalid_request", "writ_tool is missing");
    let mut params = ok();
    params["writ_tool"] = json!("orders\u{202e}.lookup");
    assert_refused(&client.exchange(params).await, "invalid_request", "tool must be printable");

    // The subject token: missing, not a JWT, another audience, an unknown
    // identity (recorded as a sighting): all invalid_request (RFC 8693
    // §2.2.2). A service's valid token is not an agent's.
    let mut params = ok();
    params.as_object_mut().unwrap().remove("subject_token");
    assert_refused(&client.exchange(params).await, "invalid_request", "subject_token is missing");
    let mut params = ok();
    params["subject_token"] = json!("not-a-jwt");
    assert_refused(
        &client.exchange(params).await,
        "invalid_request",
        "subject_token is not accepted: malformed token",
    );
    let mut params = ok();
    let elsewhere =
        h.issuer.mint(writ::dev::AGENT_SUBJECT, "another-audience", Duration::from_secs(60), h.clock.now());
    params["subject_token"] = json!(elsewhere.unwrap());
    assert_refused(
        &client.exchange(params).await,
        "invalid_request",
        "token audience does not include \"writ\"",
    );
    let mut params = ok();
    params["subject_token"] = json!(h.token("agent:shadow"));
    assert_refused(&client.exchange(params).await, "invalid_request", "is not registered with Writ");
    let sightings =
        h.admin().await.list_sightings(authed(&h.operator(), proto::ListSightingsRequest::default())).await;
    let sightings = sightings.unwrap().into_inner().sightings;
    assert!(sightings.iter().any(|sighting| sighting.subject == "agent:shadow"), "{sightings:?}");
    let mut params = ok();
    params["subject_token_type"] = json!(ACCESS_TOKEN);
    assert_refused(&client.exchange(params).await, "invalid_request", "subject_token_type");
    let mut params = ok();
    params["subject_token"] = json!(h.operator());
    assert_refused(
        &client.exchange(params).await,
        "unauthorized_client",
        "\"demo-operator\" is a service, not an agent",
    );

    // Another grant type; delegation.
    let mut params = ok();
    params["grant_type"] = json!("client_credentials");
    assert_refused(&client.exchange(params).await, "unsupported_grant_type", TOKEN_EXCHANGE);
    let mut params = ok();
    params["actor_token"] = json!(h.agent());
    params["actor_token_type"] = json!(JWT);
    assert_refused(&client.exchange(params).await, "invalid_request", "actor_token is not supported");

    // Nothing was issued by any of them.
    let leases =
        h.admin().await.list_leases(authed(&h.operator(), proto::ListLeasesRequest::default())).await;
    assert!(leases.unwrap().into_inner().leases.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_step_up_grant_is_pending_until_approved_then_collected_once() {
    let h = harness::start().await;
    let mut client = OAuthClient::start(&h).await;
    prod_task(&h, "prod-1").await;
    let refund = grant(&h, "prod-1", "orders-admin", "orders:refund", "orders.refund");

    let answer = client.exchange(refund.clone()).await;
    assert_refused(
        &answer,
        "authorization_pending",
        "needs approval by group \"orders-approvers\" (0 of 2 so far)",
    );
    let approval_id = answer["body"]["writ_approval_id"].as_str().unwrap().to_owned();
    assert_eq!(answer["body"]["writ_approval_expires_in"], 900, "{answer}");
    // Asking again while it waits answers the same request.
    let again = client.exchange(refund.clone()).await;
    assert_eq!(again["body"]["writ_approval_id"], approval_id.as_str());

    // Polling with the approval id, like RFC 8628's device code.
    let poll =
        json!({ "subject_token": h.agent(), "subject_token_type": JWT, "writ_approval_id": approval_id });
    assert_refused(&client.exchange(poll.clone()).await, "authorization_pending", "(0 of 2 so far)");
    approve(&h, 1, &approval_id).await;
    assert_refused(&client.exchange(poll.clone()).await, "authorization_pending", "(1 of 2 so far)");
    approve(&h, 2, &approval_id).await;
    let answer = client.exchange(poll.clone()).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["token"]["scope"], "orders:refund");
    let introspected = h.introspect(answer["token"]["access_token"].as_str().unwrap()).await;
    assert_eq!(
        (introspected["active"].as_bool(), introspected["writ_role"].as_str()),
        (Some(true), Some("orders-admin"))
    );
    assert_refused(&client.exchange(poll).await, "invalid_grant", "was collected already");

    // Denied by an approver.
    let answer = client.exchange(refund).await;
    let denied_id = answer["body"]["writ_approval_id"].as_str().unwrap().to_owned();
    assert_ne!(denied_id, approval_id);
    let request =
        proto::DecideApprovalRequest { approval_id: denied_id.clone(), reason: "not this one".into() };
    h.approvals().await.deny(authed(&h.approver(1), request)).await.unwrap();
    let poll =
        json!({ "subject_token": h.agent(), "subject_token_type": JWT, "writ_approval_id": denied_id });
    assert_refused(&client.exchange(poll).await, "access_denied", "was denied by \"demo-approver-1\"");
    let unknown = json!({ "subject_token": h.agent(), "subject_token_type": JWT, "writ_approval_id": "0199a0b0-0000-7000-8000-000000000000" });
    assert_refused(&client.exchange(unknown).await, "invalid_grant", "not found for agent \"demo-agent\"");
    h.stop().await;
}

#[tokio::test]
async fn a_suspended_agent_is_refused_until_resumed() {
    let h = harness::start().await;
    let mut client = OAuthClient::start(&h).await;
    h.open_task("s-1", "demo-agent", 600).await;
    let selector = || Some(proto::AgentSelector { agent: "demo-agent".into(), ..Default::default() });
    let suspend = proto::SuspendAgentRequest { agents: selector(), reason: "incident drill".into() };
    h.admin().await.suspend_agent(authed(&h.operator(), suspend)).await.unwrap();

    let answer = client.exchange(grant(&h, "s-1", "orders-read", "orders:read", "orders.lookup")).await;
    assert_refused(&answer, "invalid_grant", "agent \"demo-agent\" is suspended since");

    let resume = proto::ResumeAgentRequest { agents: selector(), reason: "drill over".into() };
    h.admin().await.resume_agent(authed(&h.operator(), resume)).await.unwrap();
    let answer = client.exchange(grant(&h, "s-1", "orders-read", "orders:read", "orders.lookup")).await;
    assert_eq!(answer["status"], 200, "{answer}");
    h.stop().await;
}

/// A token request for the demo agent's `orders-read` in task `f-1`.
fn base_form<'a>(agent: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", agent),
        ("subject_token_type", JWT),
        ("audience", "tokens/orders-read"),
        ("writ_task_id", "f-1"),
        ("writ_tool", "orders.lookup"),
    ];
    fields.extend_from_slice(extra);
    fields
}

/// Plain HTTP: what a client library would not send.
#[tokio::test]
async fn only_bounded_form_posts_without_client_credentials_are_read() {
    let h = harness::start().await;
    h.open_task("f-1", "demo-agent", 600).await;
    let url = h.http_url("/oauth2/token");
    let http = reqwest::Client::new();
    let agent = h.agent();
    let form = |extra: &[(&'static str, &'static str)]| base_form(&agent, extra);
    let secret = agent.as_str();
    let read = move |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        assert!(!text.contains(secret), "the subject token is never echoed: {text}");
        (status, headers, serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
    };

    let (status, headers, body) = read(http.post(&url).form(&form(&[])).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (headers["cache-control"].to_str().unwrap(), headers["pragma"].to_str().unwrap()),
        ("no-store", "no-cache")
    );

    // JSON is not a token request; neither is a GET.
    let (status, headers, body) =
        read(http.post(&url).json(&json!({"grant_type": TOKEN_EXCHANGE})).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("application/x-www-form-urlencoded"));
    assert_eq!(headers["cache-control"], "no-store", "errors are not cached either");
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);

    // Bounded: the token limit (8 KiB in writ dev) plus 16 KiB of room.
    let padding = "x".repeat(8192 + 16 * 1024);
    let padded = base_form(&agent, &[("padding", &padding)]);
    let (status, _, body) = read(http.post(&url).form(&padded).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("invalid_request")), "{body}");
    let long_token = "x".repeat(9000);
    let fields = base_form(&long_token, &[]);
    let (status, _, body) = read(http.post(&url).form(&fields).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    assert!(
        body["error_description"].as_str().unwrap().contains("larger than the 8192-byte limit"),
        "{body}"
    );

    // Client authentication Writ cannot check is refused, in its scheme.
    let response =
        http.post(&url).basic_auth("client", Some("secret")).form(&form(&[])).send().await.unwrap();
    let (status, headers, body) = read(response).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    assert_eq!(headers["www-authenticate"], "Basic realm=\"writ\"");
    let response = http.post(&url).bearer_auth(h.agent()).form(&form(&[])).send().await.unwrap();
    let (status, headers, _) = read(response).await;
    assert_eq!((status, headers["www-authenticate"].to_str().unwrap()), (401, "Bearer realm=\"writ\""));
    let (status, _, body) =
        read(http.post(&url).form(&form(&[("client_secret", "s")])).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");

    // Each parameter once; an unknown one is ignored (RFC 6749 §3.2).
    let (status, _, body) =
        read(http.post(&url).form(&form(&[("writ_tool", "other")])).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("writ_tool is sent more than once"));
    let (status, _, body) =
        read(http.post(&url).form(&form(&[("client_id", "x"), ("state", "y")])).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) =
        read(http.post(&url).form(&form(&[("resource", "https://orders.example")])).send().await.unwrap())
            .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")), "{body}");

    // Malformed encoding is refused, not replaced.
    let response = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type={TOKEN_EXCHANGE}&subject_token=%FF"))
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(response).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    h.stop().await;
}
