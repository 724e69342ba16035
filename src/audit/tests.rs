use super::*;

fn event(lease: Uuid) -> AuditEvent {
    AuditEvent {
        event: "issued",
        actor: "agent-a".into(),
        outcome: "ok",
        agent: Some("agent-a".into()),
        task: Some("t-1".into()),
        lease: Some(lease),
        policies: vec!["p1".into()],
        ..AuditEvent::default()
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

#[tokio::test]
async fn records_chain_across_reopen_and_hide_lease_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let key = [7u8; 32];
    let lease = Uuid::now_v7();
    {
        let log = AuditLog::open(&path, &key).unwrap();
        for _ in 0..3 {
            log.record(now(), event(lease)).await.unwrap();
        }
        assert_eq!(log.lease_hash(lease), lease_hash(&hmac::Key::new(hmac::HMAC_SHA256, &key), lease));
    }
    let log = AuditLog::open(&path, &key).unwrap();
    let mut concurrent = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let log = log.clone();
        concurrent.spawn(async move { log.record(now(), event(lease)).await });
    }
    while let Some(result) = concurrent.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(verify_file(&path).unwrap(), 53);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&lease.to_string()), "lease ids appear only hashed");
    assert!(text.contains(&log.lease_hash(lease)));
}

#[tokio::test]
async fn an_edited_or_deleted_line_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, &[1u8; 32]).unwrap();
    for _ in 0..4 {
        log.record(now(), event(Uuid::now_v7())).await.unwrap();
    }
    drop(log);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("\"outcome\":\"ok\"", "\"outcome\":\"deny\"", 1);
    std::fs::write(&path, &edited).unwrap();
    let error = verify_file(&path).unwrap_err();
    assert!(
        error.contains("record 2: its prev is not the hash of record 1"),
        "the record after the edit fails: {error}"
    );
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    assert!(verify_file(&path).is_err());
}

#[tokio::test]
async fn a_failed_write_refuses_every_later_write() {
    let log = AuditLog::open(Path::new("/dev/full"), &[1u8; 32]).unwrap();
    let error = log.record(now(), event(Uuid::now_v7())).await.unwrap_err();
    assert!(matches!(error, AuditError::Unavailable(_)));
    assert!(!log.is_healthy());
    assert!(log.record(now(), event(Uuid::now_v7())).await.is_err());
}

#[test]
fn a_short_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(AuditLog::open(&dir.path().join("a.jsonl"), &[0u8; 8]).is_err());
}

#[tokio::test]
async fn a_batch_is_recorded_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, &[3u8; 32]).unwrap();
    let leases: Vec<Uuid> = (0..300).map(|_| Uuid::now_v7()).collect();
    log.record_all_or_log(now(), leases.iter().map(|lease| event(*lease)).collect()).await;
    // Durable when it returns: another handle's record follows all of them.
    log.record(now(), event(Uuid::nil())).await.unwrap();
    assert_eq!(verify_file(&path).unwrap(), 301);
    let text = std::fs::read_to_string(&path).unwrap();
    let hashes: Vec<String> = leases.iter().map(|lease| log.lease_hash(*lease)).collect();
    let positions: Vec<usize> = hashes.iter().map(|hash| text.find(hash.as_str()).unwrap()).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "lines in the order given");
    log.record_all_or_log(now(), Vec::new()).await;
    assert_eq!(verify_file(&path).unwrap(), 301, "an empty batch writes nothing");
}
