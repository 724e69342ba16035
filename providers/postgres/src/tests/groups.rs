//! Group roles (`grant_to = "group"`, the default): made once per template,
//! shared by the logins, refreshed, made again when dropped; and the
//! per-login alternative.

use super::*;

/// The names the test configuration's templates get in `db`.
fn group_names(db: &TestDb) -> (String, String) {
    let config = db.config();
    let reader = &config.roles["reader"];
    (
        sql::group_name(&db.name, "reader", "grants", &reader.grants),
        sql::group_name(&db.name, "reader", "scope write", &reader.scopes["write"]),
    )
}

async fn can_read(db: &TestDb, credential: &Credential, table: &str) -> bool {
    let (username, password, connection) = password_of(credential);
    let session = db.login(username, password, connection).await.unwrap();
    match session.batch_execute(&format!("SELECT * FROM {table}")).await {
        Ok(()) => true,
        Err(error) if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => false,
        Err(error) => panic!("reading {table}: {error}"),
    }
}

/// A request issued `later` after `request`, as the broker's clock says.
fn issued_later(scopes: &[&str], at: DateTime<Utc>, later: Duration) -> MintRequest {
    conformance::request(
        &reader(scopes),
        at + chrono::Duration::from_std(later).unwrap(),
        Duration::from_secs(600),
    )
}

#[tokio::test]
async fn logins_join_one_group_per_template_and_hold_no_privileges_of_their_own() {
    let db = TestDb::create().await;
    let provider = db.provider();
    let (grants, write) = group_names(&db);
    let mut minted = Vec::new();
    for scopes in [&[][..], &[], &["write"], &["write", "write"]] {
        let request = request(scopes, Duration::from_secs(600));
        minted.push((provider.mint(&request).await.unwrap(), request));
    }

    let groups = db.groups().await;
    assert_eq!(groups.keys().cloned().collect::<Vec<_>>(), sorted([grants.clone(), write.clone()]));
    assert!(groups[&grants].contains("role \"reader\" (grants)"), "{}", groups[&grants]);
    assert!(groups[&write].contains("role \"reader\" (scope write)"), "{}", groups[&write]);
    // The templates ran on the groups, and only on them.
    let grantees = db.table_grantees("app.items").await;
    assert_eq!(grantees[&grants], ["SELECT"]);
    assert_eq!(grantees[&write], ["INSERT"]);
    assert_eq!(grantees.len(), 4, "the owner, the admin and the two groups: {grantees:?}");

    let superuser = db.superuser().await;
    for (index, (minted, request)) in minted.iter().enumerate() {
        let (username, ..) = password_of(&minted.credential);
        let expected = if request.scopes.is_empty() {
            vec![grants.clone()]
        } else {
            sorted([grants.clone(), write.clone()])
        };
        assert_eq!(db.memberships(username).await, expected, "login {index}");
        assert_eq!(db.direct_privileges(username).await, 0, "login {index} holds no privileges itself");
        // What it may do comes through membership.
        let row = superuser
            .query_one(
                "SELECT has_table_privilege($1, 'app.items', 'SELECT'), has_table_privilege($1, 'app.items', 'INSERT'),
                        has_table_privilege($1, 'private.secrets', 'SELECT'), has_database_privilege($1, current_database(), 'CONNECT')",
                &[&username],
            )
            .await
            .unwrap();
        let privileges: (bool, bool, bool, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(privileges, (true, !request.scopes.is_empty(), false, true), "login {index}");
    }

    for (minted, request) in minted {
        provider.revoke(&revocation(&request, minted.handle)).await.unwrap();
    }
    assert_eq!(db.groups().await.len(), 2, "revocation leaves the groups");
    assert!(db.memberships(&grants).await.is_empty());
}

fn sorted<const N: usize>(mut names: [String; N]) -> Vec<String> {
    names.sort();
    names.to_vec()
}

/// Two Writ replicas (two providers, one configuration) minting at once
/// for a template no group exists for yet: one group, every mint works.
#[tokio::test]
async fn replicas_racing_to_make_a_group_make_one() {
    let db = TestDb::create().await;
    let mut config = db.config();
    config.pool_size = 4;
    let replicas = [
        Arc::new(PostgresProvider::new(config.clone()).unwrap()),
        Arc::new(PostgresProvider::new(config).unwrap()),
    ];
    let mut minting = tokio::task::JoinSet::new();
    for index in 0..16 {
        let provider = replicas[index % 2].clone();
        minting.spawn(async move {
            let request = request(&["write"], Duration::from_secs(600));
            provider.mint(&request).await.map(|minted| (request, minted))
        });
    }
    let mut minted = Vec::new();
    while let Some(joined) = minting.join_next().await {
        minted.push(joined.unwrap().expect("every mint succeeds"));
    }
    assert_eq!(db.groups().await.len(), 2);
    for (request, minted) in minted {
        replicas[0].revoke(&revocation(&request, minted.handle)).await.unwrap();
    }
}

/// Within `group_refresh` a ready group is used as it is; after it, the
/// next mint runs the template again, which reaches tables made since,
/// for the new login and for the logins already minted.
#[tokio::test]
async fn a_group_is_refreshed_once_group_refresh_has_passed() {
    let db = TestDb::create().await;
    let mut config = db.config();
    config.group_refresh = Duration::from_secs(300);
    let provider = PostgresProvider::new(config).unwrap();
    let (grants, _) = group_names(&db);
    let start = Utc::now();

    let first = provider.mint(&issued_later(&[], start, Duration::ZERO)).await.unwrap();
    let oid = db.role_oid(&grants).await.unwrap();
    db.superuser()
        .await
        .batch_execute(&format!(
            "CREATE TABLE app.later (id int); GRANT SELECT ON app.later TO \"{}\" WITH GRANT OPTION",
            db.admin
        ))
        .await
        .unwrap();

    let soon = provider.mint(&issued_later(&[], start, Duration::from_secs(299))).await.unwrap();
    assert!(can_read(&db, &soon.credential, "app.items").await);
    assert!(!can_read(&db, &soon.credential, "app.later").await, "the template did not run again yet");
    assert_eq!(db.role_oid(&grants).await, Some(oid), "the same group");

    let after = provider.mint(&issued_later(&[], start, Duration::from_secs(300))).await.unwrap();
    assert!(can_read(&db, &after.credential, "app.later").await, "the template ran again");
    assert!(can_read(&db, &first.credential, "app.later").await, "for the earlier logins too");
    assert_eq!(db.role_oid(&grants).await, Some(oid), "still the same group");
}

#[tokio::test]
async fn a_changed_template_gets_a_new_group_and_the_old_one_keeps_its_members() {
    let db = TestDb::create().await;
    let before = db.provider();
    let old_request = request(&[], Duration::from_secs(600));
    let old = before.mint(&old_request).await.unwrap();
    let (old_group, _) = group_names(&db);

    let mut config = db.config();
    config
        .roles
        .get_mut("reader")
        .unwrap()
        .grants
        .push("GRANT UPDATE ON ALL TABLES IN SCHEMA app TO {{role}}".into());
    let new_group = sql::group_name(&db.name, "reader", "grants", &config.roles["reader"].grants);
    assert_ne!(new_group, old_group);
    let after = PostgresProvider::new(config).unwrap();
    let new_request = request(&[], Duration::from_secs(600));
    let new = after.mint(&new_request).await.unwrap();

    assert_eq!(
        db.groups().await.into_keys().collect::<Vec<_>>(),
        sorted([old_group.clone(), new_group.clone()])
    );
    let (old_login, ..) = password_of(&old.credential);
    let (new_login, ..) = password_of(&new.credential);
    assert_eq!(db.memberships(old_login).await, std::slice::from_ref(&old_group));
    assert_eq!(db.memberships(new_login).await, [new_group]);
    assert!(can_read(&db, &old.credential, "app.items").await, "the old login keeps what it had");

    after.revoke(&revocation(&old_request, old.handle)).await.unwrap();
    after.revoke(&revocation(&new_request, new.handle)).await.unwrap();
    assert!(db.memberships(&old_group).await.is_empty(), "no members once the old leases end");
    assert_eq!(db.table_grantees("app.items").await[&old_group], ["SELECT"], "but its privileges stay");
}

#[tokio::test]
async fn a_group_dropped_behind_writs_back_is_made_again() {
    let db = TestDb::create().await;
    let provider = db.provider();
    let (grants, _) = group_names(&db);
    let first_request = request(&[], Duration::from_secs(600));
    let first = provider.mint(&first_request).await.unwrap();
    let oid = db.role_oid(&grants).await.unwrap();
    provider.revoke(&revocation(&first_request, first.handle)).await.unwrap();
    // As docs/providers/postgres.md says: as the admin role, which granted
    // what the group holds (a superuser's DROP OWNED leaves others' grants).
    db.as_admin()
        .await
        .batch_execute(&format!(
            "GRANT \"{grants}\" TO CURRENT_USER; DROP OWNED BY \"{grants}\"; DROP ROLE \"{grants}\""
        ))
        .await
        .unwrap();

    // The provider still takes the group for ready.
    let again = provider.mint(&request(&[], Duration::from_secs(600))).await.unwrap();
    let remade = db.role_oid(&grants).await.expect("the group exists again");
    assert_ne!(remade, oid);
    let (username, ..) = password_of(&again.credential);
    assert_eq!(db.memberships(username).await, [grants]);
    assert!(can_read(&db, &again.credential, "app.items").await);
}

#[tokio::test]
async fn a_failing_template_leaves_neither_login_nor_group() {
    let db = TestDb::create().await;
    let mut config = db.config();
    config.roles.get_mut("reader").unwrap().grants.push("GRANT SELECT ON app.missing TO {{role}}".into());
    let provider = PostgresProvider::new(config).unwrap();
    let request = request(&[], Duration::from_secs(60));
    match provider.mint(&request).await {
        Err(ProviderError::Failed(message)) => {
            assert!(message.contains("grant 4 of 4") && message.contains("42P01"), "{message}")
        }
        other => panic!("a template that cannot run fails the mint, got {other:?}"),
    }
    assert!(db.role(&sql::role_name(request.lease_id)).await.is_none());
    assert!(db.groups().await.is_empty(), "the group's transaction rolled back");
}

/// `grant_to = "login"`: the templates run on each login, as before group
/// roles; the login holds its privileges itself and no group is made.
#[tokio::test]
async fn granting_to_logins_gives_each_login_its_own_privileges() {
    let db = TestDb::create().await;
    let provider = PostgresProvider::new(db.config_granting_to(GrantTo::Login)).unwrap();
    let read = request(&[], Duration::from_secs(600));
    let write = request(&["write"], Duration::from_secs(600));
    let reader = provider.mint(&read).await.unwrap();
    let writer = provider.mint(&write).await.unwrap();
    assert!(db.groups().await.is_empty());
    let (reader_name, ..) = password_of(&reader.credential);
    let (writer_name, ..) = password_of(&writer.credential);
    assert!(db.memberships(reader_name).await.is_empty());
    let grantees = db.table_grantees("app.items").await;
    assert_eq!(grantees[reader_name], ["SELECT"]);
    assert_eq!(grantees[writer_name], ["INSERT", "SELECT"]);
    assert!(db.direct_privileges(reader_name).await >= 3, "database, schema and table");

    provider.revoke(&revocation(&read, reader.handle)).await.unwrap();
    provider.revoke(&revocation(&write, writer.handle)).await.unwrap();
    let grantees = db.table_grantees("app.items").await;
    assert!(!grantees.contains_key(reader_name) && !grantees.contains_key(writer_name), "{grantees:?}");
}

/// A template that only works on the login itself, which group mode
/// refuses at load.
#[tokio::test]
async fn granting_to_logins_runs_statements_that_act_on_the_role_itself() {
    let db = TestDb::create().await;
    let mut config = db.config_granting_to(GrantTo::Login);
    config.roles.get_mut("reader").unwrap().grants.push("ALTER ROLE {{role}} CONNECTION LIMIT 1".into());
    let provider = PostgresProvider::new(config.clone()).unwrap();
    let request = request(&[], Duration::from_secs(600));
    let minted = provider.mint(&request).await.unwrap();
    let (username, ..) = password_of(&minted.credential);
    let limit: i32 = db
        .superuser()
        .await
        .query_one("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", &[&username])
        .await
        .unwrap()
        .get(0);
    assert_eq!(limit, 1);
    provider.revoke(&revocation(&request, minted.handle)).await.unwrap();

    config.roles.get_mut("reader").unwrap().grant_to = GrantTo::Group;
    let error = PostgresProvider::new(config).unwrap_err();
    assert!(error.contains("grants[3]") && error.contains("grant_to = \"login\""), "{error}");
}
