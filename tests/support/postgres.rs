//! A throw-away database on the local PostgreSQL server, with an admin role
//! set up as `docs/providers/postgres.md` asks (no superuser: `CREATEROLE`
//! plus what it passes on, `WITH GRANT OPTION`), for end-to-end tests and
//! the load tool.
//!
//! The server is `WRIT_TEST_POSTGRES` (a libpq connection string for a
//! superuser), by default `host=127.0.0.1 port=5432 user=postgres
//! dbname=postgres`.
#![allow(dead_code)]

use tokio_postgres::{Client, NoTls};

pub fn server() -> String {
    std::env::var("WRIT_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into())
}

/// Connects with `settings` layered over the test server's.
pub async fn connect(settings: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(&format!("{} {settings}", server()), NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A database with schema `app` (table `items`) that minted roles may be
/// granted and schema `private` (table `secrets`) that they may not.
pub struct PgDatabase {
    pub name: String,
    pub admin: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let db = Self { name: format!("writ_e2e_{id}"), admin: format!("writ_e2e_admin_{id}") };
        let superuser = connect("").await.expect("the test PostgreSQL server is reachable");
        superuser.batch_execute(&format!("CREATE ROLE \"{}\" LOGIN CREATEROLE", db.admin)).await.unwrap();
        superuser.batch_execute(&format!("CREATE DATABASE \"{}\"", db.name)).await.unwrap();
        db.superuser()
            .await
            .batch_execute(&format!(
                "CREATE SCHEMA app;
                 CREATE TABLE app.items (id int PRIMARY KEY, name text NOT NULL);
                 INSERT INTO app.items VALUES (1, 'one'), (2, 'two');
                 CREATE SCHEMA private;
                 CREATE TABLE private.secrets (value text);
                 REVOKE CONNECT ON DATABASE \"{1}\" FROM PUBLIC;
                 GRANT CONNECT ON DATABASE \"{1}\" TO \"{0}\" WITH GRANT OPTION;
                 GRANT USAGE ON SCHEMA app TO \"{0}\" WITH GRANT OPTION;
                 GRANT SELECT ON ALL TABLES IN SCHEMA app TO \"{0}\" WITH GRANT OPTION;",
                db.admin, db.name
            ))
            .await
            .unwrap();
        db
    }

    pub async fn superuser(&self) -> Client {
        connect(&format!("dbname={}", self.name)).await.unwrap()
    }

    pub fn admin_connection(&self) -> String {
        format!("host=127.0.0.1 port=5432 user={} dbname={}", self.admin, self.name)
    }

    /// The provider's settings: role `reader` may read `app`.
    pub fn provider_settings(&self) -> toml::Table {
        let text = format!(
            r#"
            admin_connection = "{}"
            pool_size = 8
            [roles.reader]
            grants = [
                "GRANT CONNECT ON DATABASE \"{}\" TO {{{{role}}}}",
                "GRANT USAGE ON SCHEMA app TO {{{{role}}}}",
                "GRANT SELECT ON ALL TABLES IN SCHEMA app TO {{{{role}}}}",
            ]
            max_ttl = "1h"
            default_ttl = "15m"
            "#,
            self.admin_connection(),
            self.name
        );
        toml::from_str(&text).unwrap()
    }

    /// Whether a role of that name exists on the server.
    pub async fn role_exists(&self, name: &str) -> bool {
        let superuser = self.superuser().await;
        let row = superuser.query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&name]).await;
        row.unwrap().get::<_, i64>(0) == 1
    }

    /// Drops the database, then the group roles the provider made for it
    /// (their comment names it; nothing depends on them once the database
    /// is gone) and the admin role. Best effort.
    pub async fn drop(self) {
        if let Ok(superuser) = connect("").await {
            let groups: Vec<String> = superuser
                .query(
                    "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'writ\\_g\\_%' \
                     AND strpos(shobj_description(oid, 'pg_authid'), $1) > 0",
                    &[&format!("database \"{}\"", self.name)],
                )
                .await
                .map(|rows| rows.iter().map(|row| row.get(0)).collect())
                .unwrap_or_default();
            let _ = superuser
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
                .await;
            for group in groups {
                let _ = superuser.batch_execute(&format!("DROP ROLE IF EXISTS \"{group}\"")).await;
            }
            let _ = superuser.batch_execute(&format!("DROP ROLE IF EXISTS \"{}\"", self.admin)).await;
        }
    }
}

/// Logs in as a minted role with the credential's connection hints.
pub async fn login(
    username: &str,
    password: &str,
    connection: &std::collections::HashMap<String, String>,
) -> Result<Client, tokio_postgres::Error> {
    let settings = format!(
        "host={} port={} dbname={} user={username} password={password}",
        connection["host"], connection["port"], connection["dbname"]
    );
    let (client, connection) = tokio_postgres::connect(&settings, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}
