//! Traces and logs of a real `writ dev` process: spans arrive at an OTLP
//! receiver this test starts (the OpenTelemetry protocol's own generated
//! gRPC service), continue the caller's W3C trace, and have child spans for
//! identity, policy, store, provider and audit; JSON log lines carry the
//! task, agent and trace id, and no token or credential appears anywhere
//! in what Writ printed.
//!
//! Its own test binary: it runs the `writ` binary, whose global subscriber
//! and tracer provider are process-wide.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use writ::api::proto;

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn writ() -> Command {
    Command::new(env!("CARGO_BIN_EXE_writ"))
}

fn token(dir: &Path, issuer: SocketAddr, who: &str) -> String {
    let out = writ()
        .args(["token", "--data-dir"])
        .arg(dir)
        .args(["--issuer-listen", &issuer.to_string(), who])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn request<T>(message: T, token: &str, traceparent: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(traceparent) = traceparent {
        request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    }
    request
}

fn grant(role: &str, scope: &str) -> proto::IssueRequest {
    proto::IssueRequest {
        task_id: "traced-1".into(),
        tool: "orders.lookup".into(),
        grants: vec![proto::GrantRequest {
            provider: "tokens".into(),
            role: role.into(),
            scopes: vec![scope.into()],
            ttl: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_spans_reach_an_otlp_receiver_and_logs_carry_the_ids() {
    let receiver = Receiver::default();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = otlp.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(otlp)),
    );

    let dir = tempfile::tempdir().unwrap();
    let (grpc, http, issuer) = (free_addr(), free_addr(), free_addr());
    let log_path = dir.path().join("writ.log");
    let child = writ()
        .args(["dev", "--data-dir"])
        .arg(dir.path().join("dev"))
        .args(["--listen", &grpc.to_string(), "--http-listen", &http.to_string()])
        .args(["--issuer-listen", &issuer.to_string()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp_addr}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("WRIT_LOG_JSON", "true")
        .env("WRIT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut writ_process = Killed(child);
    let channel = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tonic::transport::Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await {
                Ok(channel) => break channel,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(error) => {
                    panic!("writ dev did not start: {error}\n{}", std::fs::read_to_string(&log_path).unwrap())
                }
            }
        }
    };
    let data = dir.path().join("dev");
    let (agent, workflow) = (token(&data, issuer, "agent"), token(&data, issuer, "workflow"));
    let start = proto::StartTaskRequest {
        task_id: "traced-1".into(),
        agent: "demo-agent".into(),
        context: Some(proto::TaskContext { environment: "dev".into(), ..Default::default() }),
        deadline: Some(writ::api::convert::timestamp(chrono::Utc::now() + chrono::Duration::hours(1))),
    };
    proto::task_service_client::TaskServiceClient::new(channel.clone())
        .start_task(request(start, &workflow, None))
        .await
        .unwrap();

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{caller_span}-01");
    let mut credentials = proto::credential_service_client::CredentialServiceClient::new(channel);
    let issued = credentials
        .issue(request(grant("orders-read", "orders:read"), &agent, Some(&traceparent)))
        .await
        .expect("issued")
        .into_inner();
    let credential = match issued.credentials[0].credential.as_ref().and_then(|c| c.kind.as_ref()) {
        Some(proto::credential::Kind::BearerToken(token)) => token.token.clone(),
        other => panic!("a bearer token, got {other:?}"),
    };
    let denied = credentials
        .issue(request(grant("orders-admin", "orders:refund"), &agent, Some(&traceparent)))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    // SIGTERM: Writ shuts down and sends the spans it still holds.
    let pid = writ_process.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while writ_process.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "writ dev did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let spans = receiver.spans.lock().unwrap().clone();
    let hex = |bytes: &[u8]| bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>();
    let issues: Vec<&Span> = spans
        .iter()
        .filter(|span| span.name == "writ.v1.CredentialService/Issue" && hex(&span.trace_id) == trace)
        .collect();
    assert_eq!(
        issues.len(),
        2,
        "both issues, in the caller's trace: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for issue in &issues {
        assert_eq!(hex(&issue.parent_span_id), caller_span, "the caller's span is the parent");
    }
    let allowed = issues
        .iter()
        .find(|issue| {
            spans.iter().any(|span| span.parent_span_id == issue.span_id && span.name == "provider")
        })
        .expect("the allowed issue minted");
    let children: Vec<&str> = spans
        .iter()
        .filter(|span| span.parent_span_id == allowed.span_id)
        .map(|span| span.name.as_str())
        .collect();
    for name in ["identity", "policy", "store", "provider", "audit"] {
        assert!(children.contains(&name), "a {name} span under the issuance: {children:?}");
    }
    assert_eq!(children.iter().filter(|name| **name == "store").count(), 2, "recorded, then activated");

    let log = std::fs::read_to_string(&log_path).unwrap();
    let failed: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["message"].as_str().is_some_and(|m| m.starts_with("call failed")))
        .collect();
    let line = failed.first().unwrap_or_else(|| panic!("a JSON line for the denied call:\n{log}"));
    assert_eq!(line["span"]["trace_id"], trace, "{line}");
    assert_eq!(line["span"]["agent"], "demo-agent", "{line}");
    assert_eq!(line["span"]["task"], "\"traced-1\"", "{line}");
    assert_eq!(line["level"], "INFO");
    for secret in [&agent, &workflow, &credential] {
        assert!(!log.contains(secret.as_str()), "a token or credential in Writ's log");
    }
}
