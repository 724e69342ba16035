//! Signed evidence end to end: a running Writ signs its audit chain's head
//! at an interval and at shutdown, and `writ audit verify --public-key`
//! proves a log (or a directory of replicas' logs) or names the record
//! that was tampered with.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use writ::api::proto;
use writ::clock::Clock;

use crate::harness::{self, Harness, authed};
use crate::redis_support::RedisServer;
use crate::replicas::{on_redis, second_replica};

fn writ(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_writ")).args(args).output().unwrap()
}

fn public_key(h: &Harness) -> PathBuf {
    h.config.audit.signing_key_file.as_ref().expect("writ dev signs its audit log").with_extension("pub.pem")
}

fn verify(path: &Path, key: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["audit", "verify", path.to_str().unwrap(), "--public-key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    writ(&args)
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

async fn some_history(h: &Harness, task_id: &str) {
    h.open_task(task_id, "demo-agent", 600).await;
    h.issue_orders_read(task_id, 60).await.unwrap();
}

#[tokio::test]
async fn a_stopped_writ_leaves_a_log_that_verifies_and_tampering_is_named() {
    let mut h = harness::start().await;
    some_history(&h, "e-1").await;
    h.stop_serving().await;
    let (log, key) = (h.config.audit.path.clone(), public_key(&h));
    let lines = h.audit_lines();
    assert_eq!(lines.last().unwrap()["event"], "checkpoint", "the last word at shutdown");
    assert_eq!(lines.last().unwrap()["details"]["replica"], "dev");

    let output = verify(&log, &key, &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("1 signed checkpoint of replica dev"), "{}", text(&output));

    // A copy with its second record edited: the verification names it.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("audit.jsonl");
    let original = std::fs::read_to_string(&log).unwrap();
    let mut edited: Vec<String> = original.lines().map(str::to_owned).collect();
    edited[1] = edited[1].replacen("\"outcome\":\"", "\"outcome\":\"x", 1);
    std::fs::write(&copy, edited.join("\n") + "\n").unwrap();
    let output = verify(&copy, &key, &[]);
    assert!(!output.status.success());
    assert!(text(&output).contains("record 3: its prev is not the hash of record 2"), "{}", text(&output));

    // Cut before the final checkpoint (the only one): nothing is proven.
    let kept: Vec<&str> = original.lines().collect();
    std::fs::write(&copy, kept[..kept.len() - 1].join("\n") + "\n").unwrap();
    let output = verify(&copy, &key, &[]);
    assert!(!output.status.success());
    let expected = format!("no signed checkpoint in {} records", kept.len() - 1);
    assert!(text(&output).contains(&expected), "{}", text(&output));

    // Another key proves nothing.
    let other = dir.path().join("other.pk8");
    let made = writ(&["audit", "keygen", "--out", other.to_str().unwrap()]);
    assert!(made.status.success(), "{}", text(&made));
    let output = verify(&log, &other.with_extension("pub.pem"), &[]);
    assert!(!output.status.success());
    assert!(text(&output).contains("which was not given"), "{}", text(&output));
    // The key file's own public key is what `writ dev` wrote.
    let printed =
        writ(&["audit", "public-key", h.config.audit.signing_key_file.as_ref().unwrap().to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&printed.stdout), std::fs::read_to_string(&key).unwrap());
    h.stop().await;
}

#[tokio::test]
async fn checkpoints_are_signed_while_writ_runs() {
    let h = harness::start_with(Box::new(|config, _| {
        config.audit.checkpoint_interval = Duration::from_secs(1);
    }))
    .await;
    some_history(&h, "e-2").await;
    let mut signed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if h.audit_lines().last().is_some_and(|line| line["event"] == "checkpoint") {
            signed = true;
            break;
        }
    }
    assert!(signed, "a checkpoint within the interval: {:?}", h.audit_lines().last());
    let output = verify(&h.config.audit.path, &public_key(&h), &[]);
    assert!(output.status.success(), "a live log with a signed head: {}", text(&output));
    // Idle, the log does not grow with checkpoints of checkpoints.
    let count = h.audit_lines().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(h.audit_lines().len(), count);
    h.stop().await;
}

/// Two replicas on Redis, each with its own log naming itself: the
/// directory verifies as a whole.
#[tokio::test]
async fn a_directory_of_two_replicas_logs_verifies() {
    let redis = RedisServer::start();
    let mut h = on_redis(&redis).await;
    let b = second_replica(&h).await;
    some_history(&h, "e-3").await;
    crate::replicas::issue_via(b.grpc_addr, &h.agent(), "e-3").await;
    b.stop().await.unwrap();
    h.stop_serving().await;
    let dir = h.config.audit.path.parent().unwrap().to_path_buf();
    let output = verify(&dir, &public_key(&h), &["--replica", "dev", "--replica", "replica-b"]);
    assert!(output.status.success(), "{}", text(&output));
    let said = text(&output);
    assert!(said.contains("of replica dev") && said.contains("of replica replica-b"), "{said}");
    h.stop().await;
}

async fn export(
    h: &Harness,
    token: &str,
    request: proto::ExportAuditRequest,
) -> Result<Vec<proto::AuditRecord>, tonic::Status> {
    let mut stream = h.audit().await.export_audit(authed(token, request)).await?.into_inner();
    let mut records = Vec::new();
    while let Some(record) = stream.message().await? {
        records.push(record);
    }
    Ok(records)
}

/// Auditors stream the evidence, filtered, over the API; nobody else can.
#[tokio::test]
async fn auditors_export_records_by_agent_task_owner_and_time() {
    let h = harness::start().await;
    some_history(&h, "x-1").await;
    let middle = h.clock.now();
    h.advance(30); // less than the lease's 60 s: nothing expires between
    some_history(&h, "x-2").await;
    let auditor = h.auditor();

    let all = export(&h, &auditor, proto::ExportAuditRequest::default()).await.unwrap();
    let lines = h.audit_lines();
    assert_eq!(all.len(), lines.len());
    for (record, line) in all.iter().zip(&lines) {
        assert_eq!(serde_json::from_str::<serde_json::Value>(&record.json).unwrap(), *line, "as written");
        assert_eq!(record.replica, "dev");
    }
    let on_disk = std::fs::read_to_string(&h.config.audit.path).unwrap();
    assert_eq!(all[0].json, on_disk.lines().next().unwrap(), "byte for byte, so it hashes into the chain");

    let task = proto::ExportAuditRequest { task_id: "x-2".into(), ..Default::default() };
    let records = export(&h, &auditor, task).await.unwrap();
    assert!(!records.is_empty() && records.iter().all(|record| record.task_id == "x-2"), "{records:?}");
    let since = proto::ExportAuditRequest {
        since: Some(writ::api::convert::timestamp(h.clock.now())),
        ..Default::default()
    };
    assert_eq!(export(&h, &auditor, since).await.unwrap().len(), records.len(), "the second task's records");
    let until = proto::ExportAuditRequest {
        until: Some(writ::api::convert::timestamp(middle + chrono::Duration::seconds(1))),
        ..Default::default()
    };
    assert_eq!(export(&h, &auditor, until).await.unwrap().len(), all.len() - records.len());
    let issued = proto::ExportAuditRequest {
        event: "issued".into(),
        owner: "you@example.com".into(),
        ..Default::default()
    };
    let records = export(&h, &auditor, issued).await.unwrap();
    assert_eq!(records.iter().map(|r| r.agent.as_str()).collect::<Vec<_>>(), ["demo-agent", "demo-agent"]);
    let other = proto::ExportAuditRequest { agent: "someone-else".into(), ..Default::default() };
    assert!(export(&h, &auditor, other).await.unwrap().is_empty());

    // Bad input and the wrong callers change nothing and say why.
    let owner = proto::ExportAuditRequest { owner: "nobody@example.com".into(), ..Default::default() };
    assert_eq!(export(&h, &auditor, owner).await.unwrap_err().code(), tonic::Code::NotFound);
    let backwards = proto::ExportAuditRequest {
        since: Some(writ::api::convert::timestamp(h.clock.now())),
        until: Some(writ::api::convert::timestamp(middle)),
        ..Default::default()
    };
    let refused = export(&h, &auditor, backwards).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (tonic::Code::InvalidArgument, "until must be after since")
    );
    for token in [h.operator(), h.agent(), h.approver(1)] {
        let refused = export(&h, &token, proto::ExportAuditRequest::default()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("auditor"), "{refused:?}");
    }

    // The CLI prints the same lines.
    // (Not std's Command: the server runs on this test's one thread.)
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(["audit", "export", "--agent", "demo-agent", "--event", "issued", "--since", "1000d"])
        .env("WRIT_ENDPOINT", format!("http://{}", h.grpc_addr()))
        .env("WRIT_TOKEN", &auditor)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let printed: Vec<&str> = std::str::from_utf8(&output.stdout).unwrap().lines().collect();
    assert_eq!(printed, records_json(&h, "issued"));
    h.stop().await;
}

fn records_json(h: &Harness, event: &str) -> Vec<String> {
    let text = std::fs::read_to_string(&h.config.audit.path).unwrap();
    text.lines().filter(|line| line.contains(&format!("\"event\":\"{event}\""))).map(str::to_owned).collect()
}

/// The access report on a scripted history: what each agent was issued in
/// the window and under which tools, what the policy would allow it but it
/// never used, dormant agents, and unknown identities.
#[tokio::test]
async fn the_access_report_shows_use_unused_permissions_dormancy_and_sightings() {
    let h = harness::start_with(Box::new(crate::suspension::with_more_agents)).await;
    h.open_task("r-0", "demo-agent", 3600).await;
    h.issue_orders_read("r-0", 300).await.unwrap(); // before the window
    h.advance(60);
    let since = h.clock.now();
    h.open_task("r-1", "demo-agent", 3600).await;
    let mut credentials = h.credentials().await;
    for tool in ["orders.lookup", "orders.lookup", "orders.refund"] {
        let mut request = harness::issue_request("r-1", "orders-read", &["orders:read"], 300);
        request.tool = tool.into();
        credentials.issue(authed(&h.agent(), request)).await.unwrap();
    }
    let shadow = h.token("shadow-bot");
    let refused =
        credentials.issue(authed(&shadow, harness::issue_request("r-1", "orders-read", &[], 60))).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
    h.advance(1);

    let request =
        proto::ReportAccessRequest { since: Some(writ::api::convert::timestamp(since)), until: None };
    let report = h.audit().await.report_access(authed(&h.auditor(), request)).await.unwrap().into_inner();
    let by_name = |name: &str| report.agents.iter().find(|agent| agent.agent == name).unwrap().clone();
    let demo = by_name("demo-agent");
    assert_eq!((demo.issuances, demo.dormant, demo.team.as_str()), (3, false, "demo-team"), "{demo:?}");
    assert_eq!(demo.used.len(), 1);
    let used = &demo.used[0];
    assert_eq!((used.provider.as_str(), used.role.as_str(), used.count), ("tokens", "orders-read", 3));
    assert_eq!(
        (used.scopes.clone(), used.tools.clone()),
        (vec!["orders:read".to_string()], vec!["orders.lookup".to_string(), "orders.refund".to_string()])
    );
    // In a dev task with the refund tool, refunds-only-in-dev would allow
    // orders-admin: never used.
    assert_eq!(demo.allowed_unused, ["tokens/orders-admin"]);
    let team_bot = by_name("team-bot");
    assert!(team_bot.dormant && team_bot.issuances == 0, "{team_bot:?}");
    assert_eq!(team_bot.allowed_unused, ["tokens/orders-read"], "its own policy, never used");
    let helper = by_name("helper-bot");
    assert!(helper.dormant && helper.allowed_unused.is_empty(), "{helper:?}");
    assert!(
        report.sightings.iter().any(|sighting| sighting.subject == "shadow-bot"),
        "{:?}",
        report.sightings
    );

    // Bad input and other callers.
    let missing = proto::ReportAccessRequest::default();
    let refused = h.audit().await.report_access(authed(&h.auditor(), missing)).await.unwrap_err();
    assert_eq!((refused.code(), refused.message()), (tonic::Code::InvalidArgument, "since is required"));
    let refused = h.audit().await.report_access(authed(&h.operator(), request)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // The CLI, as JSON.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(["report", "access", "--since", &since.to_rfc3339(), "--json"])
        .env("WRIT_ENDPOINT", format!("http://{}", h.grpc_addr()))
        .env("WRIT_TOKEN", h.auditor())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let dormant: Vec<&str> = json["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|agent| agent["dormant"] == true)
        .map(|agent| agent["agent"].as_str().unwrap())
        .collect();
    assert_eq!(dormant, ["helper-bot", "team-bot"]);
    assert_eq!(json["agents"][0]["used"][0]["count"], 3);
    h.stop().await;
}
