//! The provider against the real PostgreSQL server of this machine (see
//! [`harness`]); every test makes and drops its own database.

mod groups;
mod harness;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio_postgres::error::SqlState;
use writ_provider_api::conformance::{self, Grant, Probe};

use super::*;
use harness::{TestDb, scram_matches};

/// Whether a minted login works: the role exists, may log in and has not
/// expired, its stored SCRAM verifier was made from this password, and a
/// session opened with the credential's connection hints runs as it.
///
/// The local server uses `trust` authentication for 127.0.0.1, so the
/// login itself would succeed with any password: the verifier check is
/// what proves the password is the role's. Editing `pg_hba.conf` of a shared
/// server from a test is not safe, so the two checks stand in for a
/// password login.
struct LoginWorks<'a>(&'a TestDb);

#[async_trait]
impl Probe for LoginWorks<'_> {
    async fn is_live(&self, credential: &Credential, _request: &MintRequest) -> bool {
        let Credential::Password { username, password, connection } = credential else {
            panic!("the postgres provider mints passwords, got {credential:?}")
        };
        let Some(role) = self.0.role(username).await else { return false };
        if !role.can_login || !role.valid_now || !scram_matches(&role.verifier, password.expose_secret()) {
            return false;
        }
        match self.0.login(username, password.expose_secret(), connection).await {
            Ok(session) => {
                let row = session.query_one("SELECT current_user::text", &[]).await.unwrap();
                row.get::<_, String>(0) == *username
            }
            Err(_) => false,
        }
    }
}

/// A server that is not there (nothing listens on port 1).
const NOWHERE: &str = "host=127.0.0.1 port=1 user=writ dbname=app";

fn reader(scopes: &[&str]) -> Grant {
    Grant { role: "reader".into(), scopes: scopes.iter().map(|scope| scope.to_string()).collect() }
}

fn request(scopes: &[&str], ttl: Duration) -> MintRequest {
    conformance::request(&reader(scopes), Utc::now(), ttl)
}

fn revocation(request: &MintRequest, handle: RevocationHandle) -> RevokeRequest {
    RevokeRequest { lease_id: request.lease_id, role: request.role.clone(), handle }
}

fn password_of(credential: &Credential) -> (&str, &str, &BTreeMap<String, String>) {
    match credential {
        Credential::Password { username, password, connection } => {
            (username.as_str(), password.expose_secret(), connection)
        }
        other => panic!("expected a password, got {other:?}"),
    }
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let db = TestDb::create().await;
    conformance::run(db.provider(), reader(&["write"]), &LoginWorks(&db), Utc::now()).await;
}

#[tokio::test]
async fn passes_the_conformance_suite_without_scopes() {
    let db = TestDb::create().await;
    conformance::run(db.provider(), reader(&[]), &LoginWorks(&db), Utc::now()).await;
}

#[tokio::test]
async fn passes_the_conformance_suite_granting_to_logins() {
    let db = TestDb::create().await;
    let provider = Arc::new(PostgresProvider::new(db.config_granting_to(GrantTo::Login)).unwrap());
    conformance::run(provider, reader(&["write"]), &LoginWorks(&db), Utc::now()).await;
}

#[tokio::test]
async fn a_login_can_do_what_its_grants_say_and_no_more() {
    let db = TestDb::create().await;
    can_do_what_its_grants_say_and_no_more(&db, db.provider(), false).await;
}

#[tokio::test]
async fn a_login_granted_to_directly_can_do_what_its_grants_say_and_no_more() {
    let db = TestDb::create().await;
    let provider = Arc::new(PostgresProvider::new(db.config_granting_to(GrantTo::Login)).unwrap());
    can_do_what_its_grants_say_and_no_more(&db, provider, true).await;
}

/// `creates`: whether the `write` scope may create tables (only a role
/// that grants to its logins may grant that).
async fn can_do_what_its_grants_say_and_no_more(db: &TestDb, provider: Arc<PostgresProvider>, creates: bool) {
    let read = request(&[], Duration::from_secs(600));
    let minted = provider.mint(&read).await.unwrap();
    let (username, password, connection) = password_of(&minted.credential);
    assert_eq!(username, sql::role_name(read.lease_id));
    assert_eq!(connection["host"], "127.0.0.1");
    assert_eq!(connection["port"], "5432");
    assert_eq!(connection["dbname"], db.name);
    let stored = db.role(username).await.unwrap();
    assert!(scram_matches(&stored.verifier, password), "the role's password is the one handed out");
    assert!(!scram_matches(&stored.verifier, "not-the-password"));
    let session = db.login(username, password, connection).await.unwrap();
    let count: i64 = session.query_one("SELECT count(*) FROM app.items", &[]).await.unwrap().get(0);
    assert_eq!(count, 2);
    for denied in [
        "INSERT INTO app.items VALUES (3, 'three')",
        "UPDATE app.items SET name = 'x'",
        "DELETE FROM app.items",
        "SELECT * FROM private.secrets",
        "CREATE TABLE app.mine (id int)",
    ] {
        let error = session.batch_execute(denied).await.unwrap_err();
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{denied}: {error}");
    }

    let write = request(&["write"], Duration::from_secs(600));
    let writer = provider.mint(&write).await.unwrap();
    let (username, password, connection) = password_of(&writer.credential);
    let session = db.login(username, password, connection).await.unwrap();
    session.batch_execute("INSERT INTO app.items VALUES (3, 'three')").await.unwrap();
    let created = session.batch_execute("CREATE TABLE app.mine (id int)").await;
    if creates {
        created.unwrap();
    } else {
        assert_eq!(created.unwrap_err().code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
        // Nor as one of its groups, which a member may become.
        let groups = db.memberships(username).await;
        assert_eq!(groups.len(), 2, "the role's group and the write scope's");
        for group in groups {
            session.batch_execute(&format!("SET ROLE \"{group}\"")).await.unwrap();
            let error = session.batch_execute("CREATE TABLE app.grouped (id int)").await.unwrap_err();
            assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "as {group}: {error}");
            session.batch_execute("RESET ROLE").await.unwrap();
        }
    }
    for denied in
        ["UPDATE app.items SET name = 'x'", "DELETE FROM app.items", "SELECT * FROM private.secrets"]
    {
        let error = session.batch_execute(denied).await.unwrap_err();
        assert_eq!(error.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{denied}: {error}");
    }

    provider.revoke(&revocation(&read, minted.handle)).await.unwrap();
    provider.revoke(&revocation(&write, writer.handle)).await.unwrap();
}

#[tokio::test]
async fn revocation_ends_open_sessions_and_keeps_what_they_made() {
    let db = TestDb::create().await;
    let provider = Arc::new(PostgresProvider::new(db.config_granting_to(GrantTo::Login)).unwrap());
    let request = request(&["write"], Duration::from_secs(600));
    let minted = provider.mint(&request).await.unwrap();
    let (username, password, connection) = password_of(&minted.credential);

    let idle = db.login(username, password, connection).await.unwrap();
    let in_transaction = db.login(username, password, connection).await.unwrap();
    in_transaction.batch_execute("CREATE TABLE app.made_by_agent (id int)").await.unwrap();
    in_transaction.batch_execute("BEGIN; INSERT INTO app.items VALUES (9, 'pending')").await.unwrap();

    provider.revoke(&revocation(&request, minted.handle.clone())).await.unwrap();

    for session in [&idle, &in_transaction] {
        let error = session.batch_execute("SELECT 1").await.unwrap_err();
        assert!(
            error.is_closed() || error.code() == Some(&SqlState::ADMIN_SHUTDOWN),
            "a session of a revoked role is gone: {error}"
        );
    }
    assert!(db.role(username).await.is_none(), "the role is dropped");
    let error = db.login(username, password, connection).await.unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION), "{error}");

    let superuser = db.superuser().await;
    let owner: String = superuser
        .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 'made_by_agent'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, db.admin, "what the role made is handed to the admin role");
    let pending: i64 =
        superuser.query_one("SELECT count(*) FROM app.items WHERE id = 9", &[]).await.unwrap().get(0);
    assert_eq!(pending, 0, "the open transaction was rolled back");
}

#[tokio::test]
async fn a_role_left_by_a_crash_is_revoked_by_its_intent() {
    let db = TestDb::create().await;
    let provider = db.provider();
    let request = request(&[], Duration::from_secs(600));
    let intent = provider.intent(request.lease_id, &request.role).unwrap();
    let minted = provider.mint(&request).await.unwrap();
    assert_eq!(minted.handle, intent, "the handle is known before minting");
    let (username, ..) = password_of(&minted.credential);
    let username = username.to_string();
    drop(minted); // Writ died before recording the lease as active.

    let recovered = provider.intent(request.lease_id, &request.role).unwrap();
    provider.revoke(&revocation(&request, recovered)).await.unwrap();
    assert!(db.role(&username).await.is_none());
}

#[tokio::test]
async fn revocation_is_idempotent_and_never_touches_another_role() {
    let db = TestDb::create().await;
    let provider = db.provider();
    let request = request(&[], Duration::from_secs(600));
    let minted = provider.mint(&request).await.unwrap();
    let (username, ..) = password_of(&minted.credential);

    let other_lease = Uuid::now_v7();
    let swapped =
        RevokeRequest { lease_id: other_lease, role: request.role.clone(), handle: minted.handle.clone() };
    match provider.revoke(&swapped).await {
        Err(ProviderError::Failed(message)) => {
            assert!(message.contains(&other_lease.to_string()), "{message}")
        }
        other => panic!("a handle of another lease is refused, got {other:?}"),
    }
    let foreign = RevokeRequest { handle: RevocationHandle::new(db.admin.clone()), ..swapped };
    assert!(matches!(provider.revoke(&foreign).await, Err(ProviderError::Failed(_))));
    assert!(db.role(username).await.is_some(), "nothing was dropped");

    for _ in 0..3 {
        provider.revoke(&revocation(&request, minted.handle.clone())).await.unwrap();
    }
    assert!(db.role(username).await.is_none());

    let never = request_for_new_lease();
    let handle = provider.intent(never.lease_id, &never.role).unwrap();
    provider.revoke(&revocation(&never, handle)).await.unwrap();

    // A role that is no longer configured can still be revoked.
    let removed = RevokeRequest { role: "removed-from-config".into(), ..revocation(&request, minted.handle) };
    provider.revoke(&removed).await.unwrap();
}

fn request_for_new_lease() -> MintRequest {
    request(&[], Duration::from_secs(60))
}

#[tokio::test]
async fn renewal_moves_valid_until() {
    let db = TestDb::create().await;
    let provider = db.provider();
    let request = request(&[], Duration::from_secs(600));
    let minted = provider.mint(&request).await.unwrap();
    let (username, ..) = password_of(&minted.credential);
    let before = db.role(username).await.unwrap().valid_until_micros.unwrap();
    assert_eq!(before, minted.expires_at.timestamp_micros());

    let mut renewal = request.clone();
    renewal.issued_at = Utc::now();
    renewal.expires_at = renewal.issued_at + chrono::Duration::minutes(30);
    let renewed =
        provider.renew(&RenewRequest { mint: renewal.clone(), handle: minted.handle.clone() }).await.unwrap();
    assert!(renewed.credential.is_none(), "the login is extended in place");
    assert_eq!(renewed.expires_at, sql::to_postgres_precision(renewal.expires_at));
    let after = db.role(username).await.unwrap().valid_until_micros.unwrap();
    assert_eq!(after, renewed.expires_at.timestamp_micros());
    assert!(after > before);

    renewal.expires_at = renewal.issued_at + chrono::Duration::hours(5);
    let capped =
        provider.renew(&RenewRequest { mint: renewal.clone(), handle: minted.handle.clone() }).await.unwrap();
    assert_eq!(capped.expires_at, sql::to_postgres_precision(renewal.issued_at + chrono::Duration::hours(1)));
    assert_eq!(
        db.role(username).await.unwrap().valid_until_micros.unwrap(),
        capped.expires_at.timestamp_micros()
    );

    provider.revoke(&revocation(&request, minted.handle.clone())).await.unwrap();
    match provider.renew(&RenewRequest { mint: renewal, handle: minted.handle }).await {
        Err(ProviderError::Refused(message)) => assert!(message.contains(username), "{message}"),
        other => panic!("renewing a revoked login is refused, got {other:?}"),
    }
}

#[tokio::test]
async fn mint_caps_the_lifetime_and_refuses_a_past_expiry() {
    let db = TestDb::create().await;
    let provider = db.provider();
    let long = request(&[], Duration::from_secs(5 * 3600));
    let minted = provider.mint(&long).await.unwrap();
    assert_eq!(minted.expires_at, sql::to_postgres_precision(long.issued_at + chrono::Duration::hours(1)));
    provider.revoke(&revocation(&long, minted.handle)).await.unwrap();

    let mut backwards = request(&[], Duration::from_secs(60));
    backwards.expires_at = backwards.issued_at;
    assert!(matches!(provider.mint(&backwards).await, Err(ProviderError::Refused(_))));
    assert!(db.role(&sql::role_name(backwards.lease_id)).await.is_none());
}

#[tokio::test]
async fn a_failing_grant_leaves_no_role_behind() {
    let db = TestDb::create().await;
    let mut config = db.config();
    let reader = config.roles.get_mut("reader").unwrap();
    reader.grants.push("GRANT SELECT ON app.missing TO {{role}}".into());
    let provider = PostgresProvider::new(config).unwrap();
    let request = request(&[], Duration::from_secs(60));
    match provider.mint(&request).await {
        Err(ProviderError::Failed(message)) => {
            assert!(message.contains("grant 4 of 4") && message.contains("42P01"), "{message}")
        }
        other => panic!("a grant that cannot run fails the mint, got {other:?}"),
    }
    assert!(db.role(&sql::role_name(request.lease_id)).await.is_none(), "the transaction rolled back");

    let mut config = db.config();
    config.roles.get_mut("reader").unwrap().grants =
        vec!["GRANT SELECT ON private.secrets TO {{role}}".into()];
    let provider = PostgresProvider::new(config).unwrap();
    match provider.mint(&request).await {
        Err(ProviderError::Failed(message)) => assert!(message.contains("42501"), "{message}"),
        other => panic!("the admin cannot grant what it does not hold, got {other:?}"),
    }
}

#[tokio::test]
async fn revocation_cleans_up_in_every_managed_database() {
    let db = TestDb::create().await;
    let other = TestDb::create().await;
    // By default every role may connect to a database, and databases made
    // before PostgreSQL 15 let everyone create in `public`: a minted role
    // can own objects in a database its templates never mention.
    other
        .superuser()
        .await
        .batch_execute(&format!(
            "GRANT CONNECT ON DATABASE \"{}\" TO PUBLIC; GRANT CREATE ON SCHEMA public TO PUBLIC",
            other.name
        ))
        .await
        .unwrap();
    let request = request(&[], Duration::from_secs(600));
    let provider = db.provider();
    let minted = provider.mint(&request).await.unwrap();
    let (username, password, connection) = password_of(&minted.credential);
    let mut elsewhere = connection.clone();
    elsewhere.insert("dbname".into(), other.name.clone());
    let session = db.login(username, password, &elsewhere).await.unwrap();
    session.batch_execute("CREATE TABLE public.stray (id int)").await.unwrap();

    // Without the other database in cleanup_databases the role cannot be
    // dropped; it is locked out all the same.
    match provider.revoke(&revocation(&request, minted.handle.clone())).await {
        Err(ProviderError::Failed(message)) => {
            assert!(message.contains("2BP01") && message.contains(&other.name), "{message}")
        }
        other => panic!("a role owning objects elsewhere cannot be dropped, got {other:?}"),
    }
    let role = db.role(username).await.expect("the role is still there");
    assert!(!role.can_login, "but it can no longer log in");
    assert!(session.batch_execute("SELECT 1").await.is_err(), "and its session is gone");

    let mut config = db.config();
    config.cleanup_databases = vec![other.name.clone()];
    let provider = PostgresProvider::new(config).unwrap();
    provider.health().await.unwrap();
    provider.revoke(&revocation(&request, minted.handle)).await.unwrap();
    assert!(db.role(username).await.is_none());
    let owner: String = other
        .superuser()
        .await
        .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 'stray'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, db.admin);
}

#[tokio::test]
async fn a_privilege_granted_outside_writ_blocks_the_drop_but_not_the_lockout() {
    let db = TestDb::create().await;
    let provider = db.provider();
    let request = request(&[], Duration::from_secs(600));
    let minted = provider.mint(&request).await.unwrap();
    let (username, ..) = password_of(&minted.credential);
    let superuser = db.superuser().await;
    superuser.batch_execute(&format!("GRANT SELECT ON private.secrets TO \"{username}\"")).await.unwrap();

    // DROP OWNED run by a non-superuser revokes only what it could have
    // granted; a superuser's grant stays and keeps the role alive.
    match provider.revoke(&revocation(&request, minted.handle.clone())).await {
        Err(ProviderError::Failed(message)) => assert!(message.contains("2BP01"), "{message}"),
        other => panic!("expected the drop to fail, got {other:?}"),
    }
    assert!(!db.role(username).await.unwrap().can_login);

    superuser.batch_execute(&format!("REVOKE ALL ON private.secrets FROM \"{username}\"")).await.unwrap();
    provider.revoke(&revocation(&request, minted.handle)).await.unwrap();
    assert!(db.role(username).await.is_none());
}

#[tokio::test]
async fn what_a_role_owned_goes_to_the_configured_heir() {
    let db = TestDb::create().await;
    let heir = format!("{}_heir", db.admin);
    // REASSIGN OWNED needs the privileges of the heir as well.
    db.superuser()
        .await
        .batch_execute(&format!("CREATE ROLE \"{heir}\"; GRANT \"{heir}\" TO \"{}\"", db.admin))
        .await
        .unwrap();
    let mut config = db.config_granting_to(GrantTo::Login);
    config.reassign_owned_to = Some(heir.clone());
    let provider = PostgresProvider::new(config).unwrap();
    let request = request(&["write"], Duration::from_secs(600));
    let minted = provider.mint(&request).await.unwrap();
    let (username, password, connection) = password_of(&minted.credential);
    let session = db.login(username, password, connection).await.unwrap();
    session.batch_execute("CREATE TABLE app.inherited (id int)").await.unwrap();
    provider.revoke(&revocation(&request, minted.handle)).await.unwrap();
    let owner: String = db
        .superuser()
        .await
        .query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = 'inherited'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, heir);
}

#[tokio::test]
async fn health_needs_an_admin_that_may_create_roles() {
    let db = TestDb::create().await;
    let provider = db.provider();
    provider.health().await.unwrap();
    db.superuser().await.batch_execute(&format!("ALTER ROLE \"{}\" NOCREATEROLE", db.admin)).await.unwrap();
    match provider.health().await {
        Err(ProviderError::Failed(message)) => assert!(message.contains("CREATEROLE"), "{message}"),
        other => panic!("an admin without CREATEROLE is unhealthy, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let mut config = harness::config("host=127.0.0.1 port=1 user=writ password=adm1n-s3cret", "app");
    config.connect_timeout = Duration::from_secs(2);
    let provider = PostgresProvider::new(config).unwrap();
    assert!(!format!("{provider:?}").contains("s3cret"));
    let request = request(&[], Duration::from_secs(60));
    for outcome in [
        provider.mint(&request).await.map(|_| ()),
        provider.health().await,
        provider.revoke(&revocation(&request, provider.intent(request.lease_id, "reader").unwrap())).await,
    ] {
        match outcome {
            Err(ProviderError::Unavailable(message)) => assert!(!message.contains("s3cret"), "{message}"),
            other => panic!("no server means retry later, got {other:?}"),
        }
    }
}

#[test]
fn unknown_roles_are_refused_before_any_connection() {
    let provider = PostgresProvider::new(harness::config(NOWHERE, "app")).unwrap();
    match provider.intent(Uuid::now_v7(), "nope") {
        Err(ProviderError::Refused(message)) => assert!(message.contains("nope"), "{message}"),
        other => panic!("{other:?}"),
    }
    let description = provider.describe();
    assert_eq!(description.kind, "postgres");
    assert_eq!(description.shape, CredentialShape::Revocable);
    assert_eq!(description.role("reader").unwrap().scopes, vec!["write".to_string()]);
}

#[test]
fn a_missing_password_file_is_named() {
    let mut config = harness::config(NOWHERE, "app");
    config.admin_password_file = Some("/nonexistent/writ-pg.password".into());
    let error = PostgresProvider::new(config).unwrap_err();
    assert!(error.contains("/nonexistent/writ-pg.password"), "{error}");
}

/// Many mints and revocations at once for one role, from a fresh provider:
/// in group mode they all need the same groups made first; granting to
/// logins, they all grant on (and later take privileges off) the same
/// objects, which PostgreSQL cannot do concurrently ("tuple concurrently
/// updated"). Every one must succeed.
#[tokio::test]
async fn concurrent_mints_and_revocations_of_one_role_all_succeed() {
    concurrent_mints_and_revocations(GrantTo::Group).await;
}

#[tokio::test]
async fn concurrent_mints_and_revocations_granting_to_logins_all_succeed() {
    concurrent_mints_and_revocations(GrantTo::Login).await;
}

async fn concurrent_mints_and_revocations(grant_to: GrantTo) {
    let db = TestDb::create().await;
    let mut config = db.config_granting_to(grant_to);
    config.pool_size = 8;
    // 24 callers share 8 connections, and the per-login shape takes turns
    // on the grant lock: on a loaded machine a caller can wait longer for a
    // connection than the default 5 s. This test is about correctness.
    config.connect_timeout = Duration::from_secs(60);
    let provider = Arc::new(PostgresProvider::new(config).unwrap());
    let mut minting = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let provider = provider.clone();
        minting.spawn(async move {
            let request = request(&["write"], Duration::from_secs(600));
            let minted = provider.mint(&request).await?;
            Ok::<_, ProviderError>((request, minted))
        });
    }
    let mut minted = Vec::new();
    while let Some(joined) = minting.join_next().await {
        minted.push(joined.unwrap().expect("a concurrent mint succeeds"));
    }
    let mut revoking = tokio::task::JoinSet::new();
    for (request, minted) in minted {
        let provider = provider.clone();
        revoking.spawn(async move {
            let (username, ..) = password_of(&minted.credential);
            let username = username.to_string();
            provider.revoke(&revocation(&request, minted.handle)).await.map(|()| username)
        });
    }
    while let Some(joined) = revoking.join_next().await {
        let username = joined.unwrap().expect("a concurrent revocation succeeds");
        assert!(db.role(&username).await.is_none(), "{username} was dropped");
    }
}
