//! Signed evidence end to end: a running Writ signs its audit chain's head
//! at an interval and at shutdown, and `writ audit verify --public-key`
//! proves a log (or a directory of replicas' logs) or names the record
//! that was tampered with.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::harness::{self, Harness};
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
    assert!(text(&output).contains("signed checkpoints of replica dev"), "{}", text(&output));

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
    assert!(text(&output).contains("no signed checkpoint in 3 records"), "{}", text(&output));

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
    b.stop().await.unwrap();
    h.stop_serving().await;
    let dir = h.config.audit.path.parent().unwrap().to_path_buf();
    let output = verify(&dir, &public_key(&h), &[]);
    assert!(output.status.success(), "{}", text(&output));
    let said = text(&output);
    assert!(said.contains("of replica dev") && said.contains("of replica replica-b"), "{said}");
    h.stop().await;
}
