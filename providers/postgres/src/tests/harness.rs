//! A throw-away database on the local PostgreSQL server for each test (from
//! `writ-test-peers`, which makes and drops it and looks at the roles the
//! provider makes there), and the provider's configuration for it.
//!
//! The server is `WRIT_TEST_POSTGRES` (a libpq connection string for a
//! superuser), by default `host=127.0.0.1 port=5432 user=postgres
//! dbname=postgres`.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use writ_test_peers::postgres::TestDatabase;
pub use writ_test_peers::postgres::scram_matches;

use crate::{GrantTo, PostgresConfig, PostgresProvider, RoleConfig};

/// The test database (see [`TestDatabase`]: its fields and ways to look
/// at roles are this type's too), with the provider configured for it.
/// The peers crate cannot know the provider's types (the provider depends
/// on it), so they are added here.
pub struct TestDb(TestDatabase);

impl Deref for TestDb {
    type Target = TestDatabase;

    fn deref(&self) -> &TestDatabase {
        &self.0
    }
}

impl TestDb {
    pub async fn create() -> Self {
        Self(TestDatabase::create().await)
    }

    pub fn config(&self) -> PostgresConfig {
        config(&self.admin_connection(), &self.name)
    }

    pub fn provider(&self) -> Arc<PostgresProvider> {
        Arc::new(PostgresProvider::new(self.config()).unwrap())
    }

    /// The configuration, with role `reader` granting to `grant_to`; with
    /// `grant_to = "login"` its `write` scope may also create tables in
    /// `app` (a group may not grant that: see `lets_members_create`).
    pub fn config_granting_to(&self, grant_to: GrantTo) -> PostgresConfig {
        let mut config = self.config();
        let reader = config.roles.get_mut("reader").unwrap();
        reader.grant_to = grant_to;
        if grant_to == GrantTo::Login {
            let write = reader.scopes.get_mut("write").unwrap();
            write.push("GRANT CREATE ON SCHEMA app TO {{role}}".to_string());
        }
        config
    }
}

/// Role `reader`: read `app`; scope `write`: insert into its tables (and,
/// see [`TestDb::config_granting_to`], create new ones).
pub fn config(admin_connection: &str, dbname: &str) -> PostgresConfig {
    let mut scopes = BTreeMap::new();
    scopes.insert(
        "write".to_string(),
        vec!["GRANT INSERT ON ALL TABLES IN SCHEMA app TO {{role}}".to_string()],
    );
    let mut roles = BTreeMap::new();
    roles.insert(
        "reader".to_string(),
        RoleConfig {
            grants: vec![
                format!("GRANT CONNECT ON DATABASE \"{dbname}\" TO {{{{role}}}}"),
                "GRANT USAGE ON SCHEMA app TO {{role}}".into(),
                "GRANT SELECT ON ALL TABLES IN SCHEMA app TO {{role}}".into(),
            ],
            scopes,
            max_ttl: Duration::from_secs(3600),
            default_ttl: Duration::from_secs(900),
            grant_to: GrantTo::Group,
        },
    );
    PostgresConfig {
        admin_connection: SecretString::from(admin_connection.to_string()),
        admin_password_file: None,
        connection: BTreeMap::new(),
        cleanup_databases: Vec::new(),
        reassign_owned_to: None,
        pool_size: 1,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
        group_refresh: Duration::from_secs(300),
        roles,
        tls: crate::PostgresTls::Disable,
        tls_ca_file: None,
    }
}
