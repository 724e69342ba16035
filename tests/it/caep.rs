//! Security Event Tokens (RFC 8417, CAEP `session-revoked`) pushed (RFC
//! 8935) to a receiver this test runs: one for each lease whose task
//! closed or whose agent was suspended, one for the suspended agent, none
//! for a lease that simply expired; a receiver that fails first gets the
//! same SET again; every SET verifies with npm `jose` against Writ's JWKS
//! and carries no secret.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use writ::api::proto;

use crate::harness::{self, Harness, authed, bearer};

const ISSUER: &str = "https://writ.test";
const AUDIENCE: &str = "https://receiver.test";
const RECEIVER_TOKEN: &str = "receiver-secret-7f3a";

/// What the receiver was sent: (Content-Type, Authorization, body,
/// whether it accepted it).
type Received = Arc<Mutex<Vec<(String, String, String, bool)>>>;

/// A push receiver answering 503 to its first POST, 202 after.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let header = |name: &str| {
                    headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned()
                };
                let mut log = log.lock().unwrap();
                let accepted = !log.is_empty();
                log.push((header("content-type"), header("authorization"), body, accepted));
                if accepted { StatusCode::ACCEPTED } else { StatusCode::SERVICE_UNAVAILABLE }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

async fn with_caep(url: String) -> Harness {
    harness::start_with(Box::new(move |config, dir| {
        let key =
            writ_provider_jwt::SigningKey::generate(writ_provider_jwt::SigningAlgorithm::ES256).unwrap();
        key.save(&dir.join("caep.pk8")).unwrap();
        std::fs::write(dir.join("receiver.token"), format!("{RECEIVER_TOKEN}\n")).unwrap();
        config.caep = Some(writ::caep::CaepConfig {
            issuer: ISSUER.into(),
            signing_key_file: dir.join("caep.pk8"),
            receivers: vec![writ::caep::ReceiverConfig {
                url,
                audience: AUDIENCE.into(),
                providers: Vec::new(),
                token_file: Some(dir.join("receiver.token")),
            }],
        });
    }))
    .await
}

/// The SETs the receiver accepted so far, verified by `jose`, as their
/// payloads.
async fn verified(h: &Harness, received: &Received) -> Vec<serde_json::Value> {
    let bodies: Vec<(String, String, String, bool)> = received.lock().unwrap().clone();
    let mut payloads: Vec<serde_json::Value> = Vec::new();
    for (content_type, authorization, body, accepted) in bodies {
        assert_eq!(content_type, "application/secevent+jwt");
        assert_eq!(authorization, format!("Bearer {RECEIVER_TOKEN}"));
        let jwks = h.http_url("/caep/jwks.json");
        let payload =
            crate::peers::jose_verify_typed(&jwks, ISSUER, AUDIENCE, &body, Some("secevent+jwt")).await;
        if accepted && !payloads.iter().any(|seen| seen["jti"] == payload["jti"]) {
            payloads.push(payload);
        }
    }
    payloads
}

/// Waits until `count` distinct SETs have arrived.
async fn wait_for(h: &Harness, received: &Received, count: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let payloads = verified(h, received).await;
        if payloads.len() >= count || tokio::time::Instant::now() > deadline {
            return payloads;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn event(payload: &serde_json::Value) -> &serde_json::Value {
    &payload["events"]["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]
}

#[tokio::test]
async fn revoked_sessions_are_pushed_as_signed_security_event_tokens() {
    let (url, received) = receiver().await;
    let h = with_caep(url).await;

    // A task closed: its lease's session is revoked.
    h.open_task("c-1", "demo-agent", 600).await;
    let closed = h.issue_orders_read("c-1", 300).await.unwrap();
    let close = proto::CloseTaskRequest { task_id: "c-1".into() };
    h.tasks().await.close_task(authed(&h.workflow(), close)).await.unwrap();
    let first = wait_for(&h, &received, 1).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(received.lock().unwrap().len() >= 2, "the receiver's 503 was retried");
    let set = &first[0];
    let lease_id = closed.lease.as_ref().unwrap().lease_id.clone();
    assert_eq!(set["sub_id"]["format"], "complex");
    assert_eq!(set["sub_id"]["session"], serde_json::json!({ "format": "opaque", "id": lease_id }));
    assert_eq!(set["sub_id"]["user"]["id"], "demo-agent");
    assert_eq!(set["txn"], "c-1");
    assert_eq!(event(set)["reason_admin"]["en"], "task_closed");
    assert_eq!(event(set)["initiating_entity"], "system");
    assert_eq!(event(set)["writ"]["provider"], "tokens");
    let retried: Vec<String> = received.lock().unwrap().iter().map(|(_, _, body, _)| body.clone()).collect();
    assert_eq!(retried[0], retried[1], "a retry sends the same SET");

    // An expiry is no early end: no SET. The suspension's leases are.
    h.open_task("c-2", "demo-agent", 600).await;
    let expiring = h.issue_orders_read("c-2", 30).await.unwrap();
    let kept = h.issue_orders_read("c-2", 300).await.unwrap();
    h.advance(31);
    h.wait_for_state(&expiring.lease.as_ref().unwrap().lease_id, proto::LeaseState::Revoked).await;
    let suspend = proto::SuspendAgentRequest {
        agents: Some(proto::AgentSelector { agent: "demo-agent".into(), ..Default::default() }),
        reason: "INC-77 secret words".into(),
    };
    h.admin().await.suspend_agent(authed(&h.operator(), suspend)).await.unwrap();
    let all = wait_for(&h, &received, 3).await;
    assert_eq!(all.len(), 3, "{all:?}");
    let sessions: Vec<&serde_json::Value> = all.iter().map(|set| &set["sub_id"]["session"]["id"]).collect();
    assert!(
        !sessions.contains(&&serde_json::json!(expiring.lease.as_ref().unwrap().lease_id)),
        "no SET for an expiry"
    );
    let kept_id = kept.lease.as_ref().unwrap().lease_id.clone();
    let for_kept = all
        .iter()
        .find(|set| set["sub_id"]["session"]["id"] == kept_id.as_str())
        .expect("the suspended lease");
    assert_eq!(event(for_kept)["reason_admin"]["en"], "agent_suspended");
    assert_eq!(event(for_kept)["initiating_entity"], "admin");
    let for_agent =
        all.iter().find(|set| set["sub_id"].get("session").is_none()).expect("a SET for the agent");
    assert_eq!(for_agent["sub_id"]["user"], serde_json::json!({ "format": "opaque", "id": "demo-agent" }));

    // No secret in any SET: not the credentials, not the operator's words,
    // not the receiver's token.
    let everything: String = received.lock().unwrap().iter().map(|(_, _, body, _)| body.clone()).collect();
    for set in &all {
        let text = set.to_string();
        for secret in [bearer(&closed), bearer(&kept), bearer(&expiring)] {
            assert!(!text.contains(&secret), "a credential in a SET");
        }
        assert!(!text.contains("INC-77") && !text.contains(RECEIVER_TOKEN), "{text}");
    }
    assert!(!everything.contains(RECEIVER_TOKEN));
    h.stop().await;
}

/// Without `[caep]` there is no JWKS and nothing is sent.
#[tokio::test]
async fn caep_is_off_unless_configured() {
    let h = harness::start().await;
    let response = reqwest::get(h.http_url("/caep/jwks.json")).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);
    h.stop().await;
}
