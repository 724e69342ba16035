//! Input hardening at the gRPC edge: errors quote only a short, escaped
//! prefix of what the caller sent; the token size limit is the configured
//! one, not the transport's; TTLs, durations, timestamps and free text are
//! refused rather than bent; and a provider's own error text stays in the
//! log.

use tonic::Code;
use writ::api::proto;
use writ::clock::Clock;

use crate::harness::{self, authed};

/// The most an error message may take, whatever the caller sent.
const BRIEF: usize = 300;

fn assert_brief(status: &tonic::Status, code: Code, text: &str) {
    let message = status.message();
    let head: String = message.chars().take(200).collect();
    assert_eq!(status.code(), code, "{head}");
    assert!(message.len() < BRIEF, "{} bytes: {head}…", message.len());
    assert!(message.contains(text), "{head:?} should mention {text:?}");
}

fn ttl(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

fn start_request(h: &harness::Harness, task_id: &str, agent: &str) -> proto::StartTaskRequest {
    proto::StartTaskRequest {
        task_id: task_id.into(),
        agent: agent.into(),
        context: Some(proto::TaskContext { environment: "dev".into(), ..Default::default() }),
        deadline: Some(writ::api::convert::timestamp(h.clock.now() + chrono::Duration::seconds(600))),
    }
}

#[tokio::test]
async fn release_and_renew_with_a_huge_lease_id_answer_briefly() {
    let h = harness::start().await;
    let huge = "x".repeat(20_000);
    let released = h
        .credentials()
        .await
        .release(authed(&h.agent(), proto::ReleaseRequest { lease_id: huge.clone() }))
        .await
        .unwrap_err();
    assert_brief(&released, Code::InvalidArgument, "is not a UUID");
    assert!(released.message().starts_with(&format!("lease_id \"{}…\"", "x".repeat(64))), "{released:?}");
    let renewed = h
        .credentials()
        .await
        .renew(authed(&h.agent(), proto::RenewRequest { lease_id: huge, ttl: None }))
        .await
        .unwrap_err();
    assert_brief(&renewed, Code::InvalidArgument, "is not a UUID");
    h.stop().await;
}

#[tokio::test]
async fn names_the_caller_chose_are_quoted_briefly() {
    let h = harness::start().await;
    h.open_task("names-1", "demo-agent", 600).await;
    let issue = |provider: String, role: &str, scopes: &[String]| {
        let mut request = harness::issue_request("names-1", role, &[], 60);
        request.grants[0].provider = provider;
        request.grants[0].scopes = scopes.to_vec();
        request
    };
    let status = h
        .credentials()
        .await
        .issue(authed(&h.agent(), issue("p".repeat(10_000), "orders-read", &[])))
        .await
        .unwrap_err();
    assert_brief(&status, Code::InvalidArgument, "at most 128 bytes");
    let cases = [
        // 42 right-to-left overrides fit the 128-byte limit; escaped, each
        // takes 8 characters.
        (issue("\u{202e}".repeat(42), "orders-read", &[]), Code::NotFound, "is not configured"),
        (issue("tokens".into(), &"r".repeat(128), &[]), Code::NotFound, "has no role"),
        (
            issue("tokens".into(), "orders-read", &["s".repeat(128)]),
            Code::InvalidArgument,
            "does not offer scope",
        ),
    ];
    for (request, code, text) in cases {
        let status = h.credentials().await.issue(authed(&h.agent(), request)).await.unwrap_err();
        assert_brief(&status, code, text);
        assert!(status.message().contains("…\""), "marked as cut: {:?}", status.message());
    }

    let mut tasks = h.tasks().await;
    let status = tasks
        .start_task(authed(&h.workflow(), start_request(&h, "names-2", &"a".repeat(20_000))))
        .await
        .unwrap_err();
    assert_brief(&status, Code::NotFound, "is not registered");
    let mut request = start_request(&h, "names-3", "demo-agent");
    request.context.as_mut().unwrap().labels.insert("k".repeat(20_000), "v".into());
    let status = tasks.start_task(authed(&h.workflow(), request)).await.unwrap_err();
    assert_brief(&status, Code::InvalidArgument, "label key");
    h.stop().await;
}

/// A bearer token of `bytes` bytes: long, and not a JWT.
fn token_of(bytes: usize) -> String {
    "t".repeat(bytes)
}

async fn introspect_with(h: &harness::Harness, bearer: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(h.http_url("/providers/tokens/introspect"))
        .bearer_auth(bearer)
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_token_over_the_default_limit_gets_writs_own_answer_not_the_transports() {
    let h = harness::start().await;
    let status = h.issue_with(&token_of(20 * 1024)).await.unwrap_err();
    assert_brief(&status, Code::Unauthenticated, "token is larger than the 8192-byte limit");
    let (code, body) = introspect_with(&h, &token_of(20 * 1024)).await;
    assert_eq!(code, reqwest::StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error_description"], "token is larger than the 8192-byte limit");
    h.stop().await;
}

#[tokio::test]
async fn a_raised_token_limit_is_honoured_by_the_transport() {
    let h = harness::start_with(Box::new(|config, _| config.limits.max_token_bytes = 65_536)).await;
    // Under the limit: read, and refused for what it is.
    let status = h.issue_with(&token_of(40 * 1024)).await.unwrap_err();
    assert_brief(&status, Code::Unauthenticated, "malformed token");
    // Over it: refused by Writ's check, with its message.
    let status = h.issue_with(&token_of(70 * 1024)).await.unwrap_err();
    assert_brief(&status, Code::Unauthenticated, "token is larger than the 65536-byte limit");
    let (code, body) = introspect_with(&h, &token_of(70 * 1024)).await;
    assert_eq!(code, reqwest::StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error_description"], "token is larger than the 65536-byte limit");
    h.stop().await;
}

#[tokio::test]
async fn a_token_limit_the_listeners_cannot_honour_is_refused_by_the_configuration() {
    let h = harness::start().await;
    let mut config = h.config.clone();
    config.limits.max_token_bytes = 256 * 1024;
    config.validate().unwrap();
    config.limits.max_token_bytes = 256 * 1024 + 1;
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("limits.max_token_bytes must be 256 to 262144"), "{error}");
    h.stop().await;
}

#[tokio::test]
async fn a_ttl_below_the_role_minimum_is_refused() {
    let h = harness::start().await;
    h.open_task("min-1", "demo-agent", 600).await;
    let mut request = harness::issue_request("min-1", "orders-read", &["orders:read"], 0);
    request.grants[0].ttl = ttl(0, 500_000_000);
    let status = h.credentials().await.issue(authed(&h.agent(), request)).await.unwrap_err();
    assert_brief(&status, Code::InvalidArgument, "at least the role's minimum credential lifetime of 1s");

    let issued = h.issue_orders_read("min-1", 60).await.unwrap();
    let lease_id = issued.lease.unwrap().lease_id;
    let renew = proto::RenewRequest { lease_id, ttl: ttl(0, 1_000) };
    let status = h.credentials().await.renew(authed(&h.agent(), renew)).await.unwrap_err();
    assert_brief(&status, Code::InvalidArgument, "at least the role's minimum credential lifetime of 1s");
    h.stop().await;
}

#[tokio::test]
async fn durations_and_timestamps_outside_the_protobuf_range_are_refused() {
    let h = harness::start().await;
    h.open_task("range-1", "demo-agent", 3600).await;
    let mut request = harness::issue_request("range-1", "orders-read", &["orders:read"], 0);
    request.grants[0].ttl = ttl(315_576_000_001, 0);
    let status = h.credentials().await.issue(authed(&h.agent(), request.clone())).await.unwrap_err();
    assert_brief(
        &status,
        Code::InvalidArgument,
        "grants[0].ttl is not a valid duration: seconds must be within ±315576000000",
    );
    // The largest valid duration is clamped like any long one.
    request.grants[0].ttl = ttl(315_576_000_000, 999_999_999);
    let issued = h.credentials().await.issue(authed(&h.agent(), request)).await.unwrap().into_inner();
    let issued = &issued.credentials[0];
    assert_eq!(issued.notices, ["ttl clamped to the role maximum of 900s"]);

    let lease_id = issued.lease.clone().unwrap().lease_id;
    let renew = proto::RenewRequest { lease_id, ttl: ttl(60, 1_000_000_000) };
    let status = h.credentials().await.renew(authed(&h.agent(), renew)).await.unwrap_err();
    assert_brief(
        &status,
        Code::InvalidArgument,
        "ttl is not a valid duration: nanos must be within ±999999999",
    );

    let mut start = start_request(&h, "range-2", "demo-agent");
    start.deadline.as_mut().unwrap().nanos = 1_500_000_000;
    let status = h.tasks().await.start_task(authed(&h.workflow(), start)).await.unwrap_err();
    assert_brief(
        &status,
        Code::InvalidArgument,
        "deadline is not a valid timestamp: nanos must be 0 to 999999999",
    );
    let mut start = start_request(&h, "range-3", "demo-agent");
    start.deadline = Some(prost_types::Timestamp { seconds: 253_402_300_800, nanos: 0 });
    let status = h.tasks().await.start_task(authed(&h.workflow(), start)).await.unwrap_err();
    assert_brief(
        &status,
        Code::InvalidArgument,
        "must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
    );
    h.stop().await;
}

#[tokio::test]
async fn tools_and_task_context_must_be_printable() {
    let h = harness::start().await;
    h.open_task("text-1", "demo-agent", 600).await;
    let mut request = harness::issue_request("text-1", "orders-read", &["orders:read"], 60);
    for (tool, text) in [
        ("orders.lookup\u{202e}pukool", "character 14 is U+202E"),
        ("orders\u{200b}.lookup", "character 7 is U+200B"),
        ("orders.lookup\u{e0041}", "character 14 is U+E0041"),
    ] {
        request.tool = tool.into();
        let status = h.credentials().await.issue(authed(&h.agent(), request.clone())).await.unwrap_err();
        assert_brief(&status, Code::InvalidArgument, text);
        assert!(status.message().starts_with("tool must be printable"), "{status:?}");
    }
    // The limit counts characters: 200 two-byte characters are fine.
    request.tool = "é".repeat(200);
    let issued = h.credentials().await.issue(authed(&h.agent(), request.clone())).await.unwrap();
    assert_eq!(issued.into_inner().credentials[0].lease.as_ref().unwrap().tool, "é".repeat(200));
    request.tool = "é".repeat(257);
    let status = h.credentials().await.issue(authed(&h.agent(), request)).await.unwrap_err();
    assert_brief(&status, Code::InvalidArgument, "tool is longer than 256 characters");

    let mut tasks = h.tasks().await;
    let mut start = start_request(&h, "text-2", "demo-agent");
    start.context.as_mut().unwrap().purpose = "refund order 42\u{2066}".into();
    let status = tasks.start_task(authed(&h.workflow(), start)).await.unwrap_err();
    assert_brief(&status, Code::InvalidArgument, "context.purpose must be printable: character 16 is U+2066");
    let mut start = start_request(&h, "text-3", "demo-agent");
    start.context.as_mut().unwrap().labels.insert("team".into(), "bill\u{feff}ing".into());
    let status = tasks.start_task(authed(&h.workflow(), start)).await.unwrap_err();
    assert_brief(&status, Code::InvalidArgument, "label \"team\" must be printable: character 5 is U+FEFF");
    h.stop().await;
}

/// The example Python plugin as provider `reports`.
async fn with_reports(endpoint: String) -> harness::Harness {
    harness::start_with(Box::new(move |config, dir| harness::add_reports_provider(config, dir, &endpoint)))
        .await
}

#[tokio::test]
async fn a_providers_refusal_and_outage_reach_the_agent_without_the_providers_text() {
    let plugin = crate::peers::PythonPlugin::start();
    let h = with_reports(plugin.endpoint.clone()).await;
    // Writ's clock a day behind: the plugin refuses an expiry in its past
    // ("expires_at is in the past").
    h.advance(-86_400);
    h.open_task("refused-1", "demo-agent", 600).await;
    let status = h
        .credentials()
        .await
        .issue(authed(&h.agent(), harness::reports_request("refused-1")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status.message(),
        "provider \"reports\" refused the grant; an operator can see why in Writ's log"
    );

    h.advance(86_400);
    drop(plugin);
    h.open_task("down-1", "demo-agent", 600).await;
    let status = h
        .credentials()
        .await
        .issue(authed(&h.agent(), harness::reports_request("down-1")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "provider \"reports\" is unavailable; nothing was issued or changed; try again later"
    );
    h.stop().await;
}
