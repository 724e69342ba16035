//! `writ exec` end to end: the real `writ` binary runs real commands
//! (`sh`, `psql`, Python with boto3) with credentials from a real Writ, and
//! the test checks what the command saw, what `writ exec` printed (never a
//! secret), how it exited, and that every lease was released after.
//!
//! Commands write what they saw into a directory of the test (`$OUT`),
//! never to their output: `writ exec`'s stdout and stderr are the
//! command's too, and the test asserts that no secret is in them.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use writ::api::proto;
use writ::clock::Clock as _;
use writ_test_peers::moto::{self, ACCOUNT, Moto, REGION};

use crate::harness::{self, Harness, authed};
use crate::postgres_support::PgDatabase;

/// `writ exec` as the demo agent, with `args` before `--` and `command`
/// after, its output captured.
fn writ_exec(h: &Harness, args: &[&str], command: &[&str]) -> tokio::process::Command {
    let mut exec = tokio::process::Command::new(env!("CARGO_BIN_EXE_writ"));
    exec.arg("exec")
        .args(args)
        .arg("--")
        .args(command)
        .env("WRIT_ENDPOINT", format!("http://{}", h.grpc_addr()))
        .env("WRIT_TOKEN", h.agent())
        .env("WRIT_LOG", "warn")
        .env_remove("WRIT_TASK_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    exec
}

async fn finish(exec: &mut tokio::process::Command) -> Output {
    let output = exec.output();
    tokio::time::timeout(Duration::from_secs(60), output).await.expect("writ exec ends").unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What `writ exec` (and its command) printed never holds a secret.
fn assert_never_printed(output: &Output, secrets: &[&str]) {
    let printed = format!("{}{}", text(&output.stdout), text(&output.stderr));
    for secret in secrets {
        assert!(secret.len() >= 8, "a real secret to look for: {secret:?}");
        assert!(!printed.contains(secret), "a secret was printed: {printed}");
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

/// The leases of a task, as an operator sees them.
async fn task_leases(h: &Harness, task_id: &str) -> Vec<proto::Lease> {
    let request = proto::ListLeasesRequest { task_id: task_id.into(), ..Default::default() };
    h.admin().await.list_leases(authed(&h.operator(), request)).await.unwrap().into_inner().leases
}

/// The one lease of the task, once it is released and revoked.
async fn released(h: &Harness, task_id: &str) -> proto::Lease {
    let leases = task_leases(h, task_id).await;
    assert_eq!(leases.len(), 1, "{leases:?}");
    let lease = h.wait_for_state(&leases[0].lease_id, proto::LeaseState::Revoked).await;
    assert_eq!(lease.revocation_reason, "released", "{lease:?}");
    lease
}

/// The claims of a JWT (unverified: the test only reads which lease it is).
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
        .unwrap()
}

#[tokio::test]
async fn exec_puts_a_bearer_token_in_its_variable_without_the_agents_own_and_releases_it() {
    let h = harness::start().await;
    h.open_task("exec-token", "demo-agent", 600).await;
    let out = tempfile::tempdir().unwrap();
    let script = r#"printf %s "$WRIT_TOKEN_TOKENS_ORDERS_READ" > "$OUT/token"
        printf %s "${WRIT_TOKEN-unset}" > "$OUT/workload"
        printf %s "$WRIT_TASK_ID" > "$OUT/task"
        echo "the command ran""#;
    let output = finish(
        writ_exec(
            &h,
            &[
                "--task",
                "exec-token",
                "--tool",
                "orders.lookup",
                "--grant",
                "tokens/orders-read:orders:read@5m",
            ],
            &["sh", "-c", script],
        )
        .env("OUT", out.path()),
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(text(&output.stdout), "the command ran\n");
    assert_eq!(text(&output.stderr), "", "nothing to say");

    let token = read(out.path(), "token");
    assert_eq!(read(out.path(), "workload"), "unset", "the agent's own token is not the command's");
    assert_eq!(read(out.path(), "task"), "exec-token");
    let lease = released(&h, "exec-token").await;
    assert_eq!(claims(&token)["jti"], lease.lease_id, "the token of the lease");
    assert_eq!(claims(&token)["scope"], "orders:read");
    assert_eq!(h.introspect(&token).await["active"], false, "released means revoked");
    assert_never_printed(&output, &[&token]);

    // Asked to, the command keeps the agent's token.
    h.open_task("exec-keep", "demo-agent", 600).await;
    let output = finish(
        writ_exec(
            &h,
            &[
                "--task",
                "exec-keep",
                "--tool",
                "orders.lookup",
                "--grant",
                "tokens/orders-read",
                "--keep-workload-token",
            ],
            &["sh", "-c", r#"test -n "$WRIT_TOKEN""#],
        )
        .env("OUT", out.path()),
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    released(&h, "exec-keep").await;
    h.stop().await;
}

#[tokio::test]
async fn exec_to_file_writes_private_files_in_a_private_directory_that_goes_away() {
    let h = harness::start().await;
    h.open_task("exec-file", "demo-agent", 600).await;
    let out = tempfile::tempdir().unwrap();
    let credentials = out.path().join("credentials");
    let script = r#"f="$WRIT_TOKEN_TOKENS_ORDERS_READ_FILE"
        stat -c %a "$f" > "$OUT/mode"
        stat -c %a "$WRIT_CREDENTIALS_DIR" > "$OUT/dir-mode"
        printf %s "$WRIT_CREDENTIALS_DIR" > "$OUT/dir"
        printf %s "$f" > "$OUT/file"
        cp "$f" "$OUT/token"
        printf %s "${WRIT_TOKEN_TOKENS_ORDERS_READ-unset}" > "$OUT/variable""#;
    let to_file = credentials.to_str().unwrap();
    let output = finish(
        writ_exec(
            &h,
            &[
                "--task",
                "exec-file",
                "--tool",
                "orders.lookup",
                "--grant",
                "tokens/orders-read@5m",
                "--to-file",
                to_file,
            ],
            &["sh", "-c", script],
        )
        .env("OUT", out.path()),
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(read(out.path(), "mode").trim(), "600");
    assert_eq!(read(out.path(), "dir-mode").trim(), "700");
    assert_eq!(read(out.path(), "dir"), to_file);
    assert_eq!(read(out.path(), "file"), format!("{to_file}/tokens_orders_read.token"));
    assert_eq!(read(out.path(), "variable"), "unset", "the token is only in its file");
    assert!(!credentials.exists(), "the directory is removed when the command ends");
    let token = read(out.path(), "token");
    let lease = released(&h, "exec-file").await;
    assert_eq!(claims(&token)["jti"], lease.lease_id);
    assert_never_printed(&output, &[&token]);

    // A directory that exists is not writ exec's to remove: refused before
    // anything is issued.
    std::fs::create_dir(&credentials).unwrap();
    let output = finish(&mut writ_exec(
        &h,
        &[
            "--task",
            "exec-file",
            "--tool",
            "orders.lookup",
            "--grant",
            "tokens/orders-read",
            "--to-file",
            to_file,
        ],
        &["true"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    assert!(text(&output.stderr).contains("exists"), "{output:?}");
    assert_eq!(task_leases(&h, "exec-file").await.len(), 1, "nothing more was issued");
    assert!(credentials.exists(), "and the directory was left alone");
    h.stop().await;
}

#[tokio::test]
async fn exec_renews_before_expiry_and_rewrites_the_token_file() {
    let h = harness::start().await;
    h.open_task("exec-renew", "demo-agent", 600).await;
    let out = tempfile::tempdir().unwrap();
    let credentials = out.path().join("credentials");
    // The command waits (at most 15 s) until its token file changes.
    let script = r#"f="$WRIT_TOKEN_TOKENS_ORDERS_READ_FILE"
        cp "$f" "$OUT/first"
        i=0
        while cmp -s "$f" "$OUT/first"; do
            i=$((i + 1)); [ "$i" -gt 150 ] && exit 3
            sleep 0.1
        done
        cp "$f" "$OUT/second""#;
    let mut exec = writ_exec(
        &h,
        &[
            "--task",
            "exec-renew",
            "--tool",
            "orders.lookup",
            "--grant",
            "tokens/orders-read:orders:read@4s",
            "--to-file",
            credentials.to_str().unwrap(),
        ],
        &["sh", "-c", script],
    );
    let running = exec.env("OUT", out.path()).spawn().unwrap();
    // Once the lease is issued, Writ's clock moves 2 s: the renewal, due
    // after 2/3 of the 4 s, extends it to 2 + 4 s after its issue.
    // Issued: active, not merely recorded (a lease is listed from the
    // moment it is recorded, before its credential is minted).
    let lease = loop {
        if let Some(lease) =
            task_leases(&h, "exec-renew").await.pop().filter(|lease| lease.issued_at.is_some())
        {
            break lease;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    h.advance(2);
    let output =
        tokio::time::timeout(Duration::from_secs(60), running.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(0), "the token file changed: {output:?}");

    let (first, second) = (read(out.path(), "first"), read(out.path(), "second"));
    assert_ne!(first, second);
    assert_eq!(claims(&second)["jti"], lease.lease_id, "a new token for the same lease");
    let issued_at = lease.issued_at.unwrap().seconds;
    assert_eq!(claims(&first)["exp"], issued_at + 4);
    assert_eq!(claims(&second)["exp"], issued_at + 6, "renewed at Writ's +2 s for 4 s");
    let hashed = h.running().broker.audit().lease_hash(lease.lease_id.parse().unwrap());
    let audit = h.audit_lines();
    assert!(audit.iter().any(|line| line["event"] == "renewed" && line["lease"] == hashed.as_str()));
    let revoked = released(&h, "exec-renew").await;
    assert_eq!(revoked.expires_at.unwrap().seconds, issued_at + 6, "the lease was extended");
    assert!(!credentials.exists());
    assert_never_printed(&output, &[&first, &second]);
    h.stop().await;
}

#[tokio::test]
async fn exec_exits_with_the_commands_status_and_128_plus_its_signal() {
    let h = harness::start().await;
    let grant = ["--tool", "orders.lookup", "--grant", "tokens/orders-read"];
    h.open_task("exec-status", "demo-agent", 600).await;
    let output = finish(&mut writ_exec(
        &h,
        &[&["--task", "exec-status"][..], &grant].concat(),
        &["sh", "-c", "exit 7"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(7), "{output:?}");
    released(&h, "exec-status").await;

    // Killed outright: writ exec still releases, and says how it ended.
    h.open_task("exec-killed", "demo-agent", 600).await;
    let output = finish(&mut writ_exec(
        &h,
        &[&["--task", "exec-killed"][..], &grant].concat(),
        &["sh", "-c", "kill -9 $$"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(128 + 9), "{output:?}");
    released(&h, "exec-killed").await;

    // A command that does not exist: 127, and the lease is given back.
    h.open_task("exec-missing", "demo-agent", 600).await;
    let output = finish(&mut writ_exec(
        &h,
        &[&["--task", "exec-missing"][..], &grant].concat(),
        &["writ-no-such-command"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(127), "{output:?}");
    assert!(text(&output.stderr).contains("writ-no-such-command: command not found"), "{output:?}");
    released(&h, "exec-missing").await;
    h.stop().await;
}

#[tokio::test]
async fn sigterm_to_exec_reaches_the_command_and_everything_is_given_back() {
    let h = harness::start().await;
    h.open_task("exec-term", "demo-agent", 600).await;
    let out = tempfile::tempdir().unwrap();
    let credentials = out.path().join("credentials");
    let mut exec = writ_exec(
        &h,
        &[
            "--task",
            "exec-term",
            "--tool",
            "orders.lookup",
            "--grant",
            "tokens/orders-read",
            "--to-file",
            credentials.to_str().unwrap(),
        ],
        &["sh", "-c", r#"touch "$OUT/started"; exec sleep 30"#],
    );
    let started = std::time::Instant::now();
    let running = exec.env("OUT", out.path()).spawn().unwrap();
    while !out.path().join("started").exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = rustix::process::Pid::from_raw(running.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let output =
        tokio::time::timeout(Duration::from_secs(20), running.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(128 + 15), "the command died of the SIGTERM: {output:?}");
    assert!(started.elapsed() < Duration::from_secs(25), "not after the command's 30 s");
    assert!(!credentials.exists(), "the directory is removed");
    released(&h, "exec-term").await;
    h.stop().await;
}

#[tokio::test]
async fn a_refused_grant_starts_nothing_and_says_why() {
    let h = harness::start().await;
    h.open_task("exec-denied", "demo-agent", 600).await;
    let out = tempfile::tempdir().unwrap();
    let output = finish(
        writ_exec(
            &h,
            &[
                "--task",
                "exec-denied",
                "--tool",
                "orders.lookup",
                "--grant",
                "tokens/orders-admin:orders:refund",
            ],
            &["sh", "-c", r#"touch "$OUT/started""#],
        )
        .env("OUT", out.path()),
    )
    .await;
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("PermissionDenied: no policy permits agent \"demo-agent\""), "{stderr}");
    assert!(!out.path().join("started").exists(), "the command never ran");
    assert!(task_leases(&h, "exec-denied").await.is_empty());

    // Two grants that would share a variable are refused before Writ is asked.
    let output = finish(&mut writ_exec(
        &h,
        &[
            "--task",
            "exec-denied",
            "--tool",
            "orders.lookup",
            "--grant",
            "tokens/orders-read",
            "--grant",
            "tokens/orders-read:orders:list",
        ],
        &["true"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    assert!(text(&output.stderr).contains("would share the name TOKENS_ORDERS_READ"), "{output:?}");
    assert!(task_leases(&h, "exec-denied").await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn exec_waits_for_approvers_when_asked_and_otherwise_names_the_request() {
    let h = harness::start().await;
    let request = proto::StartTaskRequest {
        task_id: "exec-prod".into(),
        agent: "demo-agent".into(),
        context: Some(proto::TaskContext { environment: "prod".into(), ..Default::default() }),
        deadline: Some(writ::api::convert::timestamp(h.clock.now() + chrono::Duration::seconds(3600))),
    };
    h.tasks().await.start_task(authed(&h.workflow(), request)).await.unwrap();
    let args =
        ["--task", "exec-prod", "--tool", "orders.refund", "--grant", "tokens/orders-admin:orders:refund@2m"];

    let output = finish(&mut writ_exec(&h, &args, &["true"])).await;
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("approval required") && stderr.contains("--wait-approval"), "{stderr}");
    let id =
        stderr.split("approval ").nth(2).and_then(|rest| rest.split_whitespace().next()).unwrap().to_string();

    // Asking again while the request is pending waits on the same one.
    let waiting = writ_exec(
        &h,
        &[&args[..], &["--wait-approval", "1m"]].concat(),
        &["sh", "-c", r#"test -n "$WRIT_TOKEN_TOKENS_ORDERS_ADMIN""#],
    )
    .spawn()
    .unwrap();
    // Approve once the second Issue has met the pending request (each Issue
    // records a step-up decision).
    for _ in 0..500 {
        let asked = h
            .audit_lines()
            .iter()
            .filter(|line| line["event"] == "decision" && line["outcome"] == "step_up")
            .count();
        if asked == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (approver, reason) in [(1, "refund OPS-43 checked"), (2, "agreed")] {
        let vote = proto::DecideApprovalRequest { approval_id: id.clone(), reason: reason.into() };
        h.approvals().await.approve(authed(&h.approver(approver), vote)).await.unwrap();
    }
    let output =
        tokio::time::timeout(Duration::from_secs(60), waiting.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(text(&output.stderr).contains(&format!("approval {id} approved")), "{output:?}");
    released(&h, "exec-prod").await;
    h.stop().await;
}

/// Writ with the `postgres` provider `analytics` on `db`: role `reader`.
async fn with_analytics(db: &PgDatabase) -> Harness {
    let settings = db.provider_settings();
    harness::start_with(Box::new(move |config, dir| {
        config.providers.insert("analytics".into(), writ::config::ProviderConfig { kind: "postgres".into(), settings });
        let policy = r#"
            @id("demo-agent-reads-analytics")
            permit (principal == Writ::Agent::"demo-agent", action == Writ::Action::"issue", resource == Writ::Role::"analytics/reader");
        "#;
        std::fs::write(dir.join("policies/analytics.cedar"), policy).unwrap();
    }))
    .await
}

#[tokio::test]
async fn psql_logs_in_with_the_login_from_its_variables_or_a_pgpass_file_and_the_login_is_dropped_after() {
    let db = PgDatabase::create().await;
    let h = with_analytics(&db).await;
    let out = tempfile::tempdir().unwrap();
    let query = "select current_user, count(*) from app.items";
    for (task_id, to_file) in [("exec-pg-env", None), ("exec-pg-file", Some(out.path().join("credentials")))]
    {
        h.open_task(task_id, "demo-agent", 600).await;
        let mut args = vec!["--task", task_id, "--tool", "db.query", "--grant", "analytics/reader@5m"];
        if let Some(dir) = &to_file {
            args.extend(["--to-file", dir.to_str().unwrap()]);
        }
        // What the command inherits must not redirect its login.
        let script = format!(
            r#"psql -X -A -t -v ON_ERROR_STOP=1 -c '{query}' || exit $?
            password="$PGPASSWORD"; [ -n "$PGPASSFILE" ] && password="$(cut -d: -f5 "$PGPASSFILE")"
            printf %s "$password" > "$OUT/password"
            [ -z "$PGSERVICE" ] && [ -z "$PGHOSTADDR" ] || exit 9"#
        );
        let output = finish(
            writ_exec(&h, &args, &["sh", "-c", &script])
                .env("OUT", out.path())
                .env("PGSERVICE", "writ-no-such-service")
                .env("PGHOSTADDR", "192.0.2.1")
                .env("PGPASSWORD", "not-the-password"),
        )
        .await;
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let lease = released(&h, task_id).await;
        let login = format!("writ_{}", lease.lease_id.replace('-', ""));
        assert_eq!(text(&output.stdout), format!("{login}|2\n"), "psql ran as the lease's login");
        assert!(!db.role_exists(&login).await, "the login was dropped when the command ended");
        let password = read(out.path(), "password");
        assert_never_printed(&output, &[&password]);
        assert!(to_file.is_none_or(|dir| !dir.exists()));
    }
    h.stop().await;
    db.drop().await;
}

const AWS_ROLE: &str = "writ-reports";
/// As in `aws_sts.rs`: variables cargo sets stand in for Writ's own AWS
/// keys, which moto does not check.
const WRIT_KEY_ENV: &str = "CARGO_PKG_NAME";
const WRIT_SECRET_ENV: &str = "CARGO_MANIFEST_DIR";

/// moto with the IAM role Writ assumes, and Writ with provider `aws`.
async fn with_aws() -> (Moto, Harness) {
    let moto = Moto::start().await;
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "AWS": format!("arn:aws:iam::{ACCOUNT}:root") },
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        }],
    });
    moto.iam(moto::setup_credentials())
        .create_role()
        .role_name(AWS_ROLE)
        .assume_role_policy_document(trust.to_string())
        .max_session_duration(3600)
        .send()
        .await
        .unwrap();
    let settings = format!(
        r#"
region = "{REGION}"
endpoint_url = "{url}"
access_key_id_env = "{WRIT_KEY_ENV}"
secret_access_key_env = "{WRIT_SECRET_ENV}"
session_token_env = "WRIT_IT_EXEC_NO_SESSION_TOKEN"
max_attempts = 1

[roles.reports]
role_arn = "arn:aws:iam::{ACCOUNT}:role/{AWS_ROLE}"
max_ttl = "1h"
"#,
        url = moto.url(),
    );
    let settings: toml::Table = toml::from_str(&settings).unwrap();
    let h = harness::start_with(Box::new(move |config, dir| {
        config.providers.insert("aws".into(), writ::config::ProviderConfig { kind: "aws-sts".into(), settings });
        let policy = r#"
            @id("demo-agent-gets-aws-reports")
            permit (principal == Writ::Agent::"demo-agent", action == Writ::Action::"issue", resource == Writ::Role::"aws/reports");
        "#;
        std::fs::write(dir.join("policies/aws.cedar"), policy).unwrap();
    }))
    .await;
    (moto, h)
}

#[tokio::test]
async fn boto3_calls_aws_as_the_leases_session_from_variables_or_a_credentials_file() {
    let (moto, h) = with_aws().await;
    let out = tempfile::tempdir().unwrap();
    let python = r#"
import os, boto3
sts = boto3.client("sts", endpoint_url=os.environ["MOTO_URL"], region_name="eu-west-1")
print(sts.get_caller_identity()["Arn"])
session = boto3.Session().get_credentials().get_frozen_credentials()
open(os.path.join(os.environ["OUT"], "secret"), "w").write(session.secret_key + "\n" + session.token)
open(os.path.join(os.environ["OUT"], "in-environment"), "w").write(str("AWS_SECRET_ACCESS_KEY" in os.environ))
"#;
    for (task_id, to_file) in
        [("exec-aws-env", None), ("exec-aws-file", Some(out.path().join("credentials")))]
    {
        h.open_task(task_id, "demo-agent", 3600).await;
        let mut args = vec!["--task", task_id, "--tool", "reports.export", "--grant", "aws/reports@15m"];
        if let Some(dir) = &to_file {
            args.extend(["--to-file", dir.to_str().unwrap()]);
        }
        // Inherited AWS settings must not win over the session.
        let output = finish(
            writ_exec(&h, &args, &["python3", "-c", python])
                .env("OUT", out.path())
                .env("MOTO_URL", moto.url())
                .env("AWS_PROFILE", "writ-no-such-profile")
                .env("AWS_ACCESS_KEY_ID", "AKIAINHERITEDINHERIT")
                .env("AWS_SECRET_ACCESS_KEY", "inherited-secret"),
        )
        .await;
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let lease = released(&h, task_id).await;
        let session_name = format!("writ-{}", lease.lease_id.replace('-', ""));
        assert_eq!(
            text(&output.stdout),
            format!("arn:aws:sts::{ACCOUNT}:assumed-role/{AWS_ROLE}/{session_name}\n"),
            "the command called AWS as the lease's session"
        );
        assert_eq!(read(out.path(), "in-environment"), if to_file.is_some() { "False" } else { "True" });
        let secret = read(out.path(), "secret");
        let (secret_key, session_token) = secret.split_once('\n').unwrap();
        assert_never_printed(&output, &[secret_key, session_token]);
        assert!(to_file.is_none_or(|dir| !dir.exists()));
    }
    h.stop().await;
}

#[tokio::test]
async fn the_rust_client_gives_rust_agents_the_same_leases() {
    use writ_client::{Client, Credential, Grant, Token};
    let h = harness::start().await;
    h.open_task("client-1", "demo-agent", 600).await;
    let client = Client::builder(format!("http://{}", h.grpc_addr()))
        .token(Token::fixed(h.agent()))
        .connect()
        .await
        .unwrap();
    let grant: Grant = "tokens/orders-read:orders:read@1m".parse().unwrap();
    let mut leases = client.leases("client-1", "orders.lookup", std::slice::from_ref(&grant)).await.unwrap();
    let lease = leases.remove(0);
    let Credential::Bearer(token) = lease.credential() else { panic!("a bearer token") };
    let token = writ_client::ExposeSecret::expose_secret(&token.token).to_string();
    assert_eq!(h.introspect(&token).await["active"], true);
    assert!(!format!("{lease:?}").contains(&token), "Debug redacts");
    let released = lease.release().await.unwrap();
    assert_eq!(released.state(), writ_client::proto::LeaseState::Revoking);
    released_lease(&h, &released.lease_id).await;

    // A dropped lease is released too.
    let dropped = client.leases("client-1", "orders.lookup", &[grant]).await.unwrap().remove(0);
    let id = dropped.id().to_string();
    drop(dropped);
    released_lease(&h, &id).await;

    let denied = client.leases("client-1", "orders.lookup", &["tokens/orders-admin".parse().unwrap()]).await;
    let error = denied.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied), "{error}");
    assert!(!error.is_retryable());
    h.stop().await;
}

async fn released_lease(h: &Harness, lease_id: &str) {
    let lease = h.wait_for_state(lease_id, proto::LeaseState::Revoked).await;
    assert_eq!(lease.revocation_reason, "released");
}
