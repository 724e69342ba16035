//! The `postgres` provider through Writ: an agent's database login is
//! created for its task, can do what the role grants and nothing more, and
//! is gone, open session included, when the workflow closes the task.

use crate::harness::{self, authed};
use crate::postgres_support::{PgDatabase, login};
use writ::api::proto;

/// The group roles the provider made for `db` (their comment names the
/// database), with their members.
async fn groups(db: &PgDatabase) -> Vec<(String, Vec<String>)> {
    let rows = db
        .superuser()
        .await
        .query(
            "SELECT g.rolname::text, coalesce(array_agg(r.rolname::text) FILTER (WHERE r.rolname IS NOT NULL), '{}')
             FROM pg_roles g
             LEFT JOIN pg_auth_members m ON m.roleid = g.oid LEFT JOIN pg_roles r ON r.oid = m.member
             WHERE g.rolname LIKE 'writ\\_g\\_%' AND strpos(shobj_description(g.oid, 'pg_authid'), $1) > 0
             GROUP BY 1",
            &[&format!("database \"{}\"", db.name)],
        )
        .await
        .unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

async fn with_analytics(db: &PgDatabase) -> harness::Harness {
    let settings = db.provider_settings();
    harness::start_with(Box::new(move |config, dir| {
        config
            .providers
            .insert("analytics".into(), writ::config::ProviderConfig { kind: "postgres".into(), settings });
        let policy = r#"
            @id("demo-agent-reads-analytics")
            permit (principal == Writ::Agent::"demo-agent", action == Writ::Action::"issue", resource == Writ::Role::"analytics/reader");
        "#;
        std::fs::write(dir.join("policies/analytics.cedar"), policy).unwrap();
    }))
    .await
}

pub(crate) fn password(issued: &proto::IssuedCredential) -> proto::Password {
    match issued.credential.as_ref().and_then(|c| c.kind.as_ref()) {
        Some(proto::credential::Kind::Password(password)) => password.clone(),
        other => panic!("expected a password, got {other:?}"),
    }
}

#[tokio::test]
async fn a_database_login_lives_exactly_as_long_as_its_task() {
    let db = PgDatabase::create().await;
    let h = with_analytics(&db).await;
    h.open_task("pg-1", "demo-agent", 600).await;
    let mut request = harness::issue_request("pg-1", "reader", &[], 300);
    request.grants[0].provider = "analytics".into();
    let issued = h.credentials().await.issue(authed(&h.agent(), request)).await.unwrap().into_inner();
    let lease = issued.credentials[0].lease.clone().unwrap();
    let login_ = password(&issued.credentials[0]);
    assert_eq!(login_.username, format!("writ_{}", lease.lease_id.replace('-', "")));
    assert_eq!(login_.connection["dbname"], db.name);
    // The role's privileges are on its group; the login is its member.
    let made = groups(&db).await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0].1, std::slice::from_ref(&login_.username));

    // What the role grants, and no more.
    let session = login(&login_.username, &login_.password, &login_.connection).await.unwrap();
    let rows = session.query("SELECT name FROM app.items ORDER BY id", &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), ["one", "two"]);
    let denied = session.query("SELECT * FROM private.secrets", &[]).await.unwrap_err();
    assert!(denied.to_string().contains("permission denied") || format!("{denied:?}").contains("42501"));
    let denied = session.execute("INSERT INTO app.items VALUES (3, 'three')", &[]).await.unwrap_err();
    assert!(format!("{denied:?}").contains("42501"), "{denied:?}");

    // Evidence, never the password.
    let audit = std::fs::read_to_string(&h.config.audit.path).unwrap();
    assert!(audit.contains("\"issued\""));
    assert!(!audit.contains(&login_.password), "the audit log holds no password");

    let closed = h
        .tasks()
        .await
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: "pg-1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((closed.revoked, closed.retrying), (1, 0));
    assert_eq!(h.lease(&lease.lease_id).await.state, proto::LeaseState::Revoked as i32);
    // The open session was ended, the role is gone, and it cannot log in.
    assert!(session.query("SELECT 1", &[]).await.is_err(), "the open session was terminated");
    assert!(!db.role_exists(&login_.username).await, "the role was dropped");
    assert!(login(&login_.username, &login_.password, &login_.connection).await.is_err());
    assert_eq!(groups(&db).await, [(made[0].0.clone(), vec![])], "the group stays, without members");
    let done = r#"writ_revocations_done_total{provider="analytics"}"#;
    assert_eq!(h.metric(done).await, 1.0);

    h.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn an_expired_database_lease_is_dropped_by_writ_not_left_to_valid_until() {
    let db = PgDatabase::create().await;
    let h = with_analytics(&db).await;
    h.open_task("pg-2", "demo-agent", 600).await;
    let mut request = harness::issue_request("pg-2", "reader", &[], 30);
    request.grants[0].provider = "analytics".into();
    let issued = h.credentials().await.issue(authed(&h.agent(), request)).await.unwrap().into_inner();
    let lease = issued.credentials[0].lease.clone().unwrap();
    let login_ = password(&issued.credentials[0]);
    let session = login(&login_.username, &login_.password, &login_.connection).await.unwrap();
    session.query("SELECT 1", &[]).await.unwrap();

    h.advance(31);
    let revoked = h.wait_for_state(&lease.lease_id, proto::LeaseState::Revoked).await;
    assert_eq!(revoked.revocation_reason, "expired");
    assert!(session.query("SELECT 1", &[]).await.is_err(), "the session did not outlive the lease");
    assert!(!db.role_exists(&login_.username).await);
    h.stop().await;
    db.drop().await;
}
