//! Tampering with a signed log in each way an attacker with write access
//! could, and the record each verification names.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::*;
use crate::audit::checkpoint::{Signer, generate_pkcs8};
use crate::audit::{AuditEvent, AuditLog};

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn event(n: usize) -> AuditEvent {
    AuditEvent {
        event: "issued",
        actor: "agent-a".into(),
        outcome: "ok",
        agent: Some("agent-a".into()),
        task: Some(format!("t-{n}")),
        lease: Some(Uuid::now_v7()),
        ..AuditEvent::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    pkcs8: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        Self { _dir: dir, path, pkcs8: generate_pkcs8().unwrap() }
    }

    fn signer(&self) -> Signer {
        Signer::from_pkcs8(&self.pkcs8, "replica-a").unwrap()
    }

    fn options(&self) -> VerifyOptions {
        VerifyOptions { keys: vec![self.signer().public_key()], ..VerifyOptions::default() }
    }

    /// Writes `batches` of records, a checkpoint after each.
    async fn write(&self, batches: &[usize]) {
        let log = AuditLog::open_signed(&self.path, &[3u8; 32], Some(self.signer()), now()).unwrap();
        let mut n = 0;
        for &records in batches {
            for _ in 0..records {
                n += 1;
                log.record(now(), event(n)).await.unwrap();
            }
            log.checkpoint(now()).await.unwrap();
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path).unwrap().lines().map(str::to_owned).collect()
    }

    fn rewrite(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&self.path, text).unwrap();
    }

    fn verify(&self) -> Result<Report, String> {
        verify_log(&self.path, &self.options())
    }
}

/// Recomputes every `prev` from the first line on, as someone rewriting
/// the log without the signing key would.
fn rechain(lines: &[String]) -> Vec<String> {
    let mut head = GENESIS.to_string();
    lines
        .iter()
        .map(|line| {
            let mut value: Value = serde_json::from_str(line).unwrap();
            value["prev"] = Value::String(head.clone());
            let text = serde_json::to_string(&value).unwrap();
            head = hex::encode(digest::digest(&digest::SHA256, text.as_bytes()));
            text
        })
        .collect()
}

#[tokio::test]
async fn a_signed_log_verifies_and_says_what_is_signed() {
    let f = Fixture::new();
    f.write(&[3, 2]).await;
    let report = f.verify().unwrap();
    assert_eq!((report.records, report.checkpoints, report.signed_through), (7, 2, 7));
    assert!(report.unproven.is_empty());
    assert_eq!(report.replica.as_deref(), Some("replica-a"));
    let lines = f.lines();
    let checkpoint: Value = serde_json::from_str(&lines[3]).unwrap();
    assert_eq!(checkpoint["event"], "checkpoint");
    assert_eq!(checkpoint["details"]["covers"], 3);
    // A second checkpoint with nothing new is not written.
    let log = AuditLog::open_signed(&f.path, &[3u8; 32], Some(f.signer()), now()).unwrap();
    log.checkpoint(now()).await.unwrap();
    drop(log);
    assert_eq!(f.lines().len(), 7);
    // Without keys, the chain alone.
    assert_eq!(verify_file(&f.path).unwrap(), 7);
}

#[tokio::test]
async fn an_edited_record_is_named() {
    let f = Fixture::new();
    f.write(&[4]).await;
    let mut lines = f.lines();
    lines[1] = lines[1].replace("\"outcome\":\"ok\"", "\"outcome\":\"deny\"");
    f.rewrite(&lines);
    let error = f.verify().unwrap_err();
    assert!(
        error.contains("record 3: its prev is not the hash of record 2: record 2 was changed"),
        "{error}"
    );
}

#[tokio::test]
async fn a_removed_or_reordered_record_is_named() {
    let f = Fixture::new();
    f.write(&[4]).await;
    let lines = f.lines();
    let mut removed = lines.clone();
    removed.remove(1);
    f.rewrite(&removed);
    let error = f.verify().unwrap_err();
    assert!(error.contains("record 2: sequence number 3 where 2 belongs"), "{error}");

    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    f.rewrite(&swapped);
    let error = f.verify().unwrap_err();
    assert!(error.contains("record 2: sequence number 3 where 2 belongs"), "{error}");
}

#[tokio::test]
async fn a_log_rewritten_from_the_top_fails_at_its_first_checkpoint() {
    let f = Fixture::new();
    f.write(&[3, 3]).await;
    let mut lines = f.lines();
    // Record 2 edited, every later hash recomputed: the chain holds, the
    // checkpoint over record 3 does not.
    lines[1] = lines[1].replace("\"outcome\":\"ok\"", "\"outcome\":\"deny\"");
    let rewritten = rechain(&lines);
    f.rewrite(&rewritten);
    assert!(verify_file(&f.path).is_ok(), "the chain alone cannot tell");
    let error = f.verify().unwrap_err();
    assert!(
        error.contains(
            "record 4: the checkpoint signed record 3 with another hash: records 1 to 3 were changed"
        ),
        "{error}"
    );

    // Editing the checkpoint's head to match breaks its signature.
    let head = serde_json::from_str::<Value>(&rewritten[3]).unwrap()["prev"].as_str().unwrap().to_owned();
    let mut forged: Value = serde_json::from_str(&rewritten[3]).unwrap();
    forged["details"]["head"] = Value::String(head);
    let mut lines = rewritten.clone();
    lines[3] = serde_json::to_string(&forged).unwrap();
    f.rewrite(&rechain(&lines));
    let error = f.verify().unwrap_err();
    assert!(error.contains("record 4: a checkpoint whose signature does not verify"), "{error}");

    // Dropping every checkpoint leaves nothing signed.
    let unsigned: Vec<String> =
        lines.iter().filter(|line| !line.contains("\"event\":\"checkpoint\"")).cloned().collect();
    let renumbered: Vec<String> = unsigned
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let mut value: Value = serde_json::from_str(line).unwrap();
            value["seq"] = Value::from(index + 1);
            serde_json::to_string(&value).unwrap()
        })
        .collect();
    f.rewrite(&rechain(&renumbered));
    let error = f.verify().unwrap_err();
    assert!(error.contains("no signed checkpoint in 6 records"), "{error}");
}

#[tokio::test]
async fn a_log_cut_short_is_detected() {
    let f = Fixture::new();
    f.write(&[3, 3]).await;
    let lines = f.lines();
    // Cut inside the second batch: records no checkpoint covers.
    f.rewrite(&lines[..6]);
    let error = f.verify().unwrap_err();
    assert!(error.contains("records 5 to 6 come after the last checkpoint (record 4)"), "{error}");
    let live = VerifyOptions { allow_live_tail: true, ..f.options() };
    let report = verify_log(&f.path, &live).unwrap();
    assert_eq!((report.signed_through, report.unproven), (4, vec![(5, 6)]));

    // Cut right after a checkpoint: only a checkpoint seen elsewhere tells.
    f.rewrite(&lines[..4]);
    assert!(f.verify().is_ok());
    let expected = VerifyOptions { at_least: Some((8, None)), ..f.options() };
    let error = verify_log(&f.path, &expected).unwrap_err();
    assert!(error.contains("signed records end at 4, before record 8"), "{error}");

    // A last line cut in the middle, or only its end of line.
    let mut text = lines.join("\n");
    text.truncate(text.len() - 10);
    std::fs::write(&f.path, text).unwrap();
    let error = f.verify().unwrap_err();
    assert!(error.contains("record 8: the last line has no end"), "{error}");
    std::fs::write(&f.path, lines.join("\n")).unwrap();
    let error = f.verify().unwrap_err();
    assert!(error.contains("record 8: the last line has no end"), "{error}");

    // Cut right after a checkpoint, then extended with made-up records:
    // the hash of the checkpoint seen elsewhere tells.
    let head = hex::encode(digest::digest(&digest::SHA256, lines[6].as_bytes()));
    f.rewrite(&lines);
    let known = VerifyOptions { at_least: Some((7, Some(head.clone()))), ..f.options() };
    assert!(verify_log(&f.path, &known).is_ok());
    // Another log signed with the same key (say, one the attacker made
    // Writ write after cutting this one) has another record 7.
    let other = Fixture { pkcs8: f.pkcs8.clone(), ..Fixture::new() };
    other.write(&[3, 3]).await;
    let error = verify_log(&other.path, &known).unwrap_err();
    assert!(error.contains(&format!("record 7 does not hash to {head}")), "{error}");
}

/// Records added while Writ was stopped are never signed as its own: the
/// next start names them unproven, and verification says so.
#[tokio::test]
async fn records_added_while_writ_was_stopped_stay_unproven() {
    let f = Fixture::new();
    f.write(&[3]).await;
    let mut lines = f.lines();
    let mut forged: Value = serde_json::from_str(&lines[0]).unwrap();
    forged["seq"] = Value::from(5);
    forged["prev"] = Value::String(hex::encode(digest::digest(&digest::SHA256, lines[3].as_bytes())));
    forged["task"] = Value::String("made-up".into());
    lines.push(serde_json::to_string(&forged).unwrap());
    f.rewrite(&lines);

    // Writ starts again: a chain_resumed record and a checkpoint.
    let log = AuditLog::open_signed(&f.path, &[3u8; 32], Some(f.signer()), now()).unwrap();
    log.record(now(), event(9)).await.unwrap();
    log.checkpoint(now()).await.unwrap();
    drop(log);
    let after: Vec<Value> = f.lines().iter().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(after[5]["event"], "chain_resumed");
    assert_eq!(
        (after[5]["details"]["unproven_from"].as_u64(), after[5]["details"]["unproven_to"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(after[6]["event"], "checkpoint");
    let error = f.verify().unwrap_err();
    assert!(error.contains("records 5 to 5 were found unsigned when Writ restarted"), "{error}");
    let live = VerifyOptions { allow_live_tail: true, ..f.options() };
    let error = verify_log(&f.path, &live).unwrap_err();
    assert!(error.contains("--allow-restarts"), "a live log's tail is not a restart's gap: {error}");
    let accepting = VerifyOptions { allow_restarts: true, ..f.options() };
    let report = verify_log(&f.path, &accepting).unwrap();
    assert_eq!((report.unproven, report.signed_through, report.records), (vec![(5, 5)], 9, 9));

    // A chain_resumed record that does not name those records is refused.
    let mut lines = f.lines();
    lines[5] = lines[5].replace("\"unproven_from\":5", "\"unproven_from\":6");
    f.rewrite(&rechain(&lines));
    let error = verify_log(&f.path, &accepting).unwrap_err();
    assert!(error.contains("record 6: a chain_resumed record that does not name"), "{error}");
}

#[tokio::test]
async fn writ_refuses_to_sign_over_a_broken_chain_or_another_replicas_log() {
    let f = Fixture::new();
    f.write(&[2]).await;
    let mut lines = f.lines();
    let original = lines.clone();
    lines[0] = lines[0].replace("\"outcome\":\"ok\"", "\"outcome\":\"no\"");
    f.rewrite(&lines);
    let error = AuditLog::open_signed(&f.path, &[3u8; 32], Some(f.signer()), now()).unwrap_err();
    assert!(error.to_string().contains("record 2: its prev is not the hash of record 1"), "{error}");
    assert!(error.to_string().contains("does not sign over a broken chain"), "{error}");

    // A record and a checkpoint made up while Writ was stopped, the
    // checkpoint in Writ's own key id with a signature that is not Writ's.
    let mut forged = original.clone();
    let mut record: Value = serde_json::from_str(&original[0]).unwrap();
    record["seq"] = Value::from(4);
    record["prev"] = Value::String(hex::encode(digest::digest(&digest::SHA256, original[2].as_bytes())));
    forged.push(serde_json::to_string(&record).unwrap());
    let mut fake: Value = serde_json::from_str(&original[2]).unwrap();
    fake["seq"] = Value::from(5);
    fake["prev"] = Value::String(hex::encode(digest::digest(&digest::SHA256, forged[3].as_bytes())));
    fake["details"]["covers"] = Value::from(4);
    fake["details"]["head"] = fake["prev"].clone();
    forged.push(serde_json::to_string(&fake).unwrap());
    f.rewrite(&forged);
    let error = AuditLog::open_signed(&f.path, &[3u8; 32], Some(f.signer()), now()).unwrap_err();
    assert!(error.to_string().contains("record 5: a checkpoint whose signature does not verify"), "{error}");

    f.rewrite(&original);
    let other = Signer::from_pkcs8(&f.pkcs8, "replica-b").unwrap();
    let error = AuditLog::open_signed(&f.path, &[3u8; 32], Some(other), now()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("checkpoints name replica \"replica-a\", but this replica is \"replica-b\""),
        "{error}"
    );
}

#[tokio::test]
async fn the_last_checkpoints_own_line_is_checked_and_an_empty_log_proves_nothing() {
    let f = Fixture::new();
    f.write(&[2]).await;
    let lines = f.lines();
    for edit in [
        lines[2].replace("\"actor\":\"writ\"", "\"actor\":\"mallory\""),
        lines[2].replace("\"outcome\":\"ok\"", "\"outcome\":\"ok\",\"note\":\"hi\""),
        lines[2].replacen("\"ts\":\"2027", "\"ts\":\"2028", 1),
        lines[2].replace("\"replica\":", "\"extra\":1,\"replica\":"),
        lines[2].replace("\"event\":", "\"task\":\"t-1\",\"event\":"),
    ] {
        assert_ne!(edit, lines[2]);
        let mut edited = lines.clone();
        edited[2] = edit;
        f.rewrite(&edited);
        let error = f.verify().unwrap_err();
        assert!(error.contains("record 3: a checkpoint"), "{error}");
    }
    // A field the signature does not cover, added at the top level: only
    // the byte-for-byte comparison can tell.
    let mut edited = lines.clone();
    edited[2] = lines[2].replace("\"event\":", "\"task\":\"t-1\",\"event\":");
    f.rewrite(&edited);
    let error = f.verify().unwrap_err();
    assert!(
        error.contains("record 3: a checkpoint record with fields its signature does not cover"),
        "{error}"
    );
    std::fs::write(&f.path, "").unwrap();
    let error = f.verify().unwrap_err();
    assert!(error.contains("the log is empty"), "{error}");
    assert!(verify_log(&f.path, &VerifyOptions { allow_live_tail: true, ..f.options() }).is_ok());
}

#[tokio::test]
async fn a_closed_log_takes_nothing_more() {
    let f = Fixture::new();
    let log = AuditLog::open_signed(&f.path, &[3u8; 32], Some(f.signer()), now()).unwrap();
    log.checkpoint(now()).await.unwrap();
    assert!(f.lines().is_empty(), "no checkpoint of an empty log");
    log.record(now(), event(1)).await.unwrap();
    log.close(now()).await.unwrap();
    let refused = log.record(now(), event(2)).await.unwrap_err();
    assert!(refused.to_string().contains("closed"), "{refused}");
    assert_eq!(f.verify().unwrap().records, 2, "the record and the final checkpoint");
}

#[tokio::test]
async fn rotated_keys_verify_with_every_key_given() {
    let f = Fixture::new();
    f.write(&[2]).await;
    let old = f.signer().public_key();
    let next = Signer::from_pkcs8(&generate_pkcs8().unwrap(), "replica-a").unwrap();
    let new = next.public_key();
    let log = AuditLog::open_signed(&f.path, &[3u8; 32], Some(next), now()).unwrap();
    log.record(now(), event(9)).await.unwrap();
    log.checkpoint(now()).await.unwrap();
    drop(log);

    let both = VerifyOptions { keys: vec![old.clone(), new.clone()], ..VerifyOptions::default() };
    assert_eq!(verify_log(&f.path, &both).unwrap().checkpoints, 2);
    let only_new = VerifyOptions { keys: vec![new], ..VerifyOptions::default() };
    let error = verify_log(&f.path, &only_new).unwrap_err();
    assert!(error.contains(&format!("record 3: a checkpoint signed by key {:?}", old.key_id())), "{error}");
}

#[tokio::test]
async fn a_directory_of_replicas_logs_is_verified_whole() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = generate_pkcs8().unwrap();
    for replica in ["replica-a", "replica-b"] {
        let signer = Signer::from_pkcs8(&pkcs8, replica).unwrap();
        let log = AuditLog::open_signed(
            &dir.path().join(format!("{replica}.jsonl")),
            &[3u8; 32],
            Some(signer),
            now(),
        )
        .unwrap();
        log.record(now(), event(1)).await.unwrap();
        log.checkpoint(now()).await.unwrap();
    }
    let key = Signer::from_pkcs8(&pkcs8, "x").unwrap().public_key();
    let options = VerifyOptions { keys: vec![key], ..VerifyOptions::default() };
    let reports = verify_path(dir.path(), &options).unwrap();
    let expected =
        VerifyOptions { replicas: vec!["replica-a".into(), "replica-z".into()], ..options.clone() };
    let error = verify_path(dir.path(), &expected).unwrap_err();
    assert!(error.contains("no log of replica \"replica-z\""), "{error}");
    let one = VerifyOptions { at_least: Some((1, None)), ..options.clone() };
    assert!(verify_path(dir.path(), &one).unwrap_err().contains("--at-least is for one log"));
    let replicas: Vec<_> = reports.iter().map(|report| report.replica.clone().unwrap()).collect();
    assert_eq!(replicas, ["replica-a", "replica-b"]);

    // A copy of one replica's log claims its replica twice.
    std::fs::copy(dir.path().join("replica-a.jsonl"), dir.path().join("replica-c.jsonl")).unwrap();
    let error = verify_path(dir.path(), &options).unwrap_err();
    assert!(error.contains("both claim replica \"replica-a\""), "{error}");

    // One bad log fails the directory, naming the file and the record.
    let bad = dir.path().join("replica-c.jsonl");
    let text = std::fs::read_to_string(&bad).unwrap().replace("\"outcome\":\"ok\"", "\"outcome\":\"deny\"");
    std::fs::write(&bad, text).unwrap();
    let error = verify_path(dir.path(), &options).unwrap_err();
    assert!(error.contains("replica-c.jsonl: record 2"), "{error}");

    let empty = tempfile::tempdir().unwrap();
    assert!(verify_path(empty.path(), &options).unwrap_err().contains("no audit logs"));
}

/// OpenSSL, an implementation no one here wrote, reads the public key and
/// verifies a checkpoint's signature over its message.
#[tokio::test]
async fn openssl_verifies_a_checkpoint() {
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        panic!("openssl is needed for this test (apt-get install openssl)");
    }
    let f = Fixture::new();
    f.write(&[1]).await;
    let checkpoint: Value = serde_json::from_str(&f.lines()[1]).unwrap();
    let details: crate::audit::checkpoint::Checkpoint =
        serde_json::from_value(checkpoint["details"].clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (pem, message, signature) =
        (dir.path().join("key.pem"), dir.path().join("message"), dir.path().join("signature"));
    std::fs::write(&pem, f.signer().public_key().to_pem()).unwrap();
    let text = format!(
        "writ-audit-checkpoint-v1\n{}\n{}\n{}\n{}\n{}\n",
        details.replica, details.key_id, details.covers, details.head, details.at
    );
    std::fs::write(&message, text).unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&details.signature).unwrap();
    std::fs::write(&signature, bytes).unwrap();
    let verify = |message: &std::path::Path| {
        std::process::Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
            .arg(&pem)
            .arg("-rawin")
            .arg("-in")
            .arg(message)
            .arg("-sigfile")
            .arg(&signature)
            .output()
            .unwrap()
    };
    let output = verify(&message);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let other = dir.path().join("other");
    std::fs::write(&other, "writ-audit-checkpoint-v1\nsomething else\n").unwrap();
    assert!(!verify(&other).status.success(), "and refuses another message");
}
