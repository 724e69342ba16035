//! Workload identity at the gRPC edge: bad tokens are refused with a clear
//! UNAUTHENTICATED and leave no trace; unknown identities become sightings;
//! each API admits only its own audience.

use std::time::Duration;

use axum::response::IntoResponse as _;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use writ::api::proto;
use writ::clock::Clock;
use writ::dev::DevIssuer;

use crate::harness::{self, authed};

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_and_record_nothing() {
    let h = harness::start().await;
    h.open_task("id-1", "demo-agent", 600).await;
    let now = h.clock.now();
    let issuer = h.issuer.issuer().to_string();
    let valid = h.agent();
    let (header, _, signature) = {
        let mut parts = valid.split('.');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        )
    };
    let claims = json!({ "iss": issuer, "sub": writ::dev::AGENT_SUBJECT, "aud": "writ", "exp": now.timestamp() + 600 });

    // HS256 keyed with the issuer's own public key (the classic confusion).
    let public_key = h.issuer.jwks().to_string();
    let hs_message = format!("{}.{}", b64(&json!({ "alg": "HS256", "kid": h.issuer.kid() })), b64(&claims));
    let hs_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public_key.as_bytes());
    let hs_token =
        format!("{hs_message}.{}", URL_SAFE_NO_PAD.encode(ring::hmac::sign(&hs_key, hs_message.as_bytes())));

    let impostor = DevIssuer::generate(&issuer).unwrap();
    let cases = [
        ("wrong audience", h.issuer.mint(writ::dev::AGENT_SUBJECT, "not-writ", Duration::from_secs(600), now).unwrap(), "audience"),
        (
            "expired",
            h.issuer
                .mint_with(writ::dev::AGENT_SUBJECT, "writ", Duration::from_secs(600), now, json!({ "exp": now.timestamp() - 3600, "iat": now.timestamp() - 7200, "nbf": now.timestamp() - 7200 }))
                .unwrap(),
            "expired",
        ),
        ("alg none", format!("{}.{}.", b64(&json!({ "alg": "none" })), b64(&claims)), "\"none\" is not allowed"),
        ("HS256 with the public key", hs_token, "\"HS256\" is not allowed"),
        ("unknown kid", impostor.mint(writ::dev::AGENT_SUBJECT, "writ", Duration::from_secs(600), now).unwrap(), "no key"),
        ("tampered payload", format!("{header}.{}.{signature}", b64(&json!({ "iss": issuer, "sub": "agent:other", "aud": "writ", "exp": now.timestamp() + 600 }))), "signature"),
        ("garbage", "not-a-jwt".to_string(), "malformed"),
    ];
    for (name, token, text) in cases {
        let status = h.issue_with(&token).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{name}: {status:?}");
        assert!(status.message().contains(text), "{name}: {:?} should mention {text:?}", status.message());
    }
    let missing = h
        .credentials()
        .await
        .issue(tonic::Request::new(harness::issue_request("id-1", "orders-read", &[], 60)))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    assert!(missing.message().contains("Bearer"));

    let sightings = h
        .admin()
        .await
        .list_sightings(authed(&h.operator(), proto::ListSightingsRequest::default()))
        .await
        .unwrap();
    assert!(sightings.into_inner().sightings.is_empty(), "refused tokens are not sightings");
    let leases = h
        .admin()
        .await
        .list_leases(authed(&h.operator(), proto::ListLeasesRequest::default()))
        .await
        .unwrap();
    assert!(leases.into_inner().leases.is_empty());
    // Besides the configured agents seeded at start, only the task.
    let seeded =
        |line: &serde_json::Value| line["event"] == "agent_registered" && line["actor"] == "configuration";
    assert!(
        h.audit_lines().iter().all(|line| line["event"] == "task_started" || seeded(line)),
        "no decision was recorded"
    );
    h.stop().await;
}

#[tokio::test]
async fn an_unknown_identity_becomes_a_sighting() {
    let h = harness::start().await;
    let rogue = h.token("agent:shadow");
    for _ in 0..2 {
        let status = h.issue_with(&rogue).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("not registered"), "{status:?}");
    }
    h.advance(5);
    let status = h.issue_with(&h.token("agent:shadow")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let sightings = h
        .admin()
        .await
        .list_sightings(authed(&h.operator(), proto::ListSightingsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .sightings;
    assert_eq!(sightings.len(), 1);
    let sighting = &sightings[0];
    assert_eq!(
        (sighting.subject.as_str(), sighting.issuer.as_str(), sighting.count),
        ("agent:shadow", h.issuer.issuer(), 3)
    );
    assert_eq!(sighting.last_seen.unwrap().seconds - sighting.first_seen.unwrap().seconds, 5);
    h.stop().await;
}

#[tokio::test]
async fn each_api_admits_only_its_audience() {
    let h = harness::start().await;
    let start =
        proto::StartTaskRequest { task_id: "aud-1".into(), agent: "demo-agent".into(), ..Default::default() };
    let status = h.tasks().await.start_task(authed(&h.agent(), start)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("workflow role"), "{status:?}");
    let status = h
        .admin()
        .await
        .list_leases(authed(&h.agent(), proto::ListLeasesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let status = h
        .admin()
        .await
        .list_leases(authed(&h.workflow(), proto::ListLeasesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("operator"), "{status:?}");
    let status = h.issue_with(&h.workflow()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("not an agent"), "{status:?}");
    h.stop().await;
}

impl harness::Harness {
    pub async fn issue_with(&self, token: &str) -> Result<proto::IssueResponse, tonic::Status> {
        let request = harness::issue_request("id-1", "orders-read", &["orders:read"], 60);
        self.credentials().await.issue(authed(token, request)).await.map(tonic::Response::into_inner)
    }
}

#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_not_unauthenticated() {
    let down = "http://127.0.0.1:9".to_string();
    let issuer_url = down.clone();
    let h = harness::start_with(Box::new(move |config, _| {
        config.issuers.push(writ::config::IssuerConfig {
            issuer: issuer_url,
            jwks_url: None,
            algorithms: vec![],
            ca_file: None,
            token_file: None,
        });
    }))
    .await;
    let unreachable = DevIssuer::generate(&down).unwrap();
    let token = unreachable.mint("agent:demo", "writ", Duration::from_secs(600), h.clock.now()).unwrap();
    let status = h.issue_with(&token).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("try again later"), "{status:?}");
    h.stop().await;
}

#[tokio::test]
async fn health_reports_serving_and_unknown_services_are_refused() {
    let h = harness::start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", h.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut serving = false;
    for _ in 0..40 {
        let request = tonic_health::pb::HealthCheckRequest { service: "writ.v1.CredentialService".into() };
        let status = health.check(request).await.map(|response| response.into_inner().status).ok();
        if status == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(serving, "health reports SERVING");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<proto::ListLeasesRequest, proto::ListLeasesResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/writ.v2.AdminService/ListLeases");
    let status =
        grpc.unary(tonic::Request::new(proto::ListLeasesRequest::default()), path, codec).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    h.stop().await;
}

#[tokio::test]
async fn reflection_lists_writ_services_without_a_token() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let h = harness::start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", h.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
    for expected in
        ["writ.v1.CredentialService", "writ.v1.TaskService", "writ.v1.AdminService", "grpc.health.v1.Health"]
    {
        assert!(names.iter().any(|name| name == expected), "{expected} in {names:?}");
    }
    h.stop().await;
}

/// An issuer whose keys are served over TLS by a private CA and only to
/// authenticated callers (a Kubernetes API server): with `ca_file` and
/// `token_file` Writ fetches them and verifies tokens; without the CA, or
/// without the token, it cannot, and says the issuer is unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_issuer_s_keys_are_fetched_with_its_ca_and_a_token() {
    use std::sync::Arc;
    let ca = crate::certs::TestCa::new("cluster CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = ca.server(&[]).write(dir.path(), "apiserver");
    let ca_file = ca.write(dir.path(), "ca.crt");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "writs-own-service-account-token\n").unwrap();

    // The issuer: its discovery and JWKS over TLS, for bearer callers only.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://localhost:{}", listener.local_addr().unwrap().port());
    let issuer = Arc::new(DevIssuer::generate(&url).unwrap());
    let tls = writ::tls::TlsConfig {
        cert_file,
        key_file,
        client_ca_file: None,
        reload_interval: Duration::from_secs(10),
        require_bound_agent_tokens: false,
    };
    let tls = Arc::new(writ::tls::ServerTls::load(&tls, chrono::Utc::now()).unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let incoming =
        writ::tls::TlsIncoming::start(listener, tls, writ::tls::Listener::Http, stop.clone()).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let router = issuer.router().layer(axum::middleware::from_fn({
        let seen = seen.clone();
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let seen = seen.clone();
            async move {
                let authorization = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                seen.lock().unwrap().push(authorization.clone());
                if authorization != "Bearer writs-own-service-account-token" {
                    return axum::http::StatusCode::UNAUTHORIZED.into_response();
                }
                next.run(request).await
            }
        }
    }));
    tokio::spawn(async move { axum::serve(incoming, router).await });

    let start = |ca: bool, token: bool| {
        let (url, ca_file, token_file) = (url.clone(), ca_file.clone(), token_file.clone());
        harness::start_with(Box::new(move |config, _| {
            config.issuers.push(writ::config::IssuerConfig {
                issuer: url,
                jwks_url: None,
                algorithms: vec![],
                ca_file: ca.then_some(ca_file),
                token_file: token.then_some(token_file),
            });
        }))
    };
    let sighted = "system:serviceaccount:agents:unregistered";

    let h = start(true, true).await;
    let token = issuer.mint(sighted, "writ", Duration::from_secs(600), h.clock.now()).unwrap();
    let status = h.issue_with(&token).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "verified, then not registered: {status:?}");
    assert!(status.message().contains("not registered"), "{status:?}");
    assert!(seen.lock().unwrap().iter().all(|seen| seen == "Bearer writs-own-service-account-token"));
    h.stop().await;

    for (ca, token) in [(false, true), (true, false)] {
        let h = start(ca, token).await;
        let jwt = issuer.mint(sighted, "writ", Duration::from_secs(600), h.clock.now()).unwrap();
        let status = h.issue_with(&jwt).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "ca {ca}, token {token}: {status:?}");
        h.stop().await;
    }
    stop.cancel();
}
