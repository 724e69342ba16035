//! A throw-away database on the local PostgreSQL server for each test, with
//! an admin role set up as `docs/providers/postgres.md` asks (no superuser:
//! `CREATEROLE`, plus what it passes on `WITH GRANT OPTION`), and ways to
//! look at the roles Writ's `postgres` provider makes there.
//!
//! The server is `WRIT_TEST_POSTGRES` (a libpq connection string for a
//! superuser), by default `host=127.0.0.1 port=5432 user=postgres
//! dbname=postgres`. Only the database side lives here: the provider's
//! configuration types belong to its crate, which depends on this one for
//! its tests.

use std::collections::BTreeMap;
use std::ops::Index;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac, pbkdf2};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// What to do when the server cannot be reached.
const INSTALL: &str = "start PostgreSQL on 127.0.0.1:5432 with a trusted `postgres` superuser \
                       (`.ci/run` does), or point WRIT_TEST_POSTGRES at one";

/// The test server's superuser connection string.
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

/// Logs in as `username` with `password` where a minted credential's
/// connection hints (`host`, `port`, `dbname`) say.
pub async fn login<Hints>(
    username: &str,
    password: &str,
    connection: &Hints,
) -> Result<Client, tokio_postgres::Error>
where
    Hints: for<'key> Index<&'key str, Output = String> + ?Sized,
{
    let settings = format!(
        "host={} port={} dbname={} user={username} password={password}",
        &connection["host"], &connection["port"], &connection["dbname"]
    );
    let (client, connection) = tokio_postgres::connect(&settings, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `CREATE DATABASE` from one template, one at a time: PostgreSQL refuses a
/// copy of a template while another session uses it.
static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A database with schema `app` (table `items`, two rows) that minted roles
/// may be granted, schema `private` (table `secrets`, one row) that they
/// may not, no `CONNECT` for `PUBLIC`, and its admin role. Dropped, with
/// what Writ left in it, when the value is dropped.
pub struct TestDatabase {
    pub name: String,
    /// The admin role; a test may also make `<admin>_heir`, which is
    /// dropped with it.
    pub admin: String,
}

impl TestDatabase {
    /// Creates the database and its admin role. The admin may pass on
    /// `CONNECT` on the database, `USAGE` and `CREATE` on `app`, and
    /// `SELECT` and `INSERT` on its tables.
    pub async fn create() -> Self {
        let id = Uuid::now_v7().simple().to_string();
        let db = Self { name: format!("writ_test_{id}"), admin: format!("writ_test_admin_{id}") };
        {
            let _one_at_a_time = CREATING.lock().await;
            let superuser = connect("").await.unwrap_or_else(|error| {
                panic!("the test PostgreSQL server is not reachable ({error}); {INSTALL}")
            });
            // Separately: CREATE DATABASE cannot run in the implicit
            // transaction of a multi-statement query.
            superuser.batch_execute(&format!("CREATE ROLE \"{}\" LOGIN CREATEROLE", db.admin)).await.unwrap();
            superuser.batch_execute(&format!("CREATE DATABASE \"{}\"", db.name)).await.unwrap();
        }
        db.superuser()
            .await
            .batch_execute(&format!(
                "CREATE SCHEMA app;
                 CREATE TABLE app.items (id int PRIMARY KEY, name text NOT NULL);
                 INSERT INTO app.items VALUES (1, 'one'), (2, 'two');
                 CREATE SCHEMA private;
                 CREATE TABLE private.secrets (value text);
                 INSERT INTO private.secrets VALUES ('hidden');
                 REVOKE CONNECT ON DATABASE \"{1}\" FROM PUBLIC;
                 GRANT CONNECT ON DATABASE \"{1}\" TO \"{0}\" WITH GRANT OPTION;
                 GRANT USAGE, CREATE ON SCHEMA app TO \"{0}\" WITH GRANT OPTION;
                 GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA app TO \"{0}\" WITH GRANT OPTION;",
                db.admin, db.name
            ))
            .await
            .unwrap();
        db
    }

    /// A superuser session in the test database.
    pub async fn superuser(&self) -> Client {
        connect(&format!("dbname={}", self.name)).await.unwrap()
    }

    /// A session as the admin role, in the test database.
    pub async fn as_admin(&self) -> Client {
        connect(&format!("user={} dbname={}", self.admin, self.name)).await.unwrap()
    }

    /// The admin's connection string, as the provider is configured with it.
    pub fn admin_connection(&self) -> String {
        format!("host=127.0.0.1 port=5432 user={} dbname={}", self.admin, self.name)
    }

    /// Settings of Writ's `postgres` provider, as Writ reads them from its
    /// configuration file: role `reader` may read `app`.
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
        toml::from_str(&text).expect("the provider settings are TOML")
    }

    /// Logs in as `username` with a provider credential's connection hints
    /// (see [`login`]).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        connection: &BTreeMap<String, String>,
    ) -> Result<Client, tokio_postgres::Error> {
        login(username, password, connection).await
    }

    /// Whether a role of that name exists on the server.
    pub async fn role_exists(&self, name: &str) -> bool {
        self.role_oid(name).await.is_some()
    }

    /// The catalog id of a role, to tell a role from one made again.
    pub async fn role_oid(&self, name: &str) -> Option<u32> {
        self.superuser()
            .await
            .query_opt("SELECT oid FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .unwrap()
            .map(|row| row.get(0))
    }

    /// The role as the catalog has it, if it exists.
    pub async fn role(&self, name: &str) -> Option<RoleState> {
        let row = self
            .superuser()
            .await
            .query_opt(
                "SELECT rolcanlogin, rolvaliduntil > now(),
                        (extract(epoch FROM rolvaliduntil) * 1000000)::int8, rolpassword
                 FROM pg_authid WHERE rolname = $1",
                &[&name],
            )
            .await
            .unwrap()?;
        Some(RoleState {
            can_login: row.get(0),
            valid_now: row.get::<_, Option<bool>>(1).unwrap_or(false),
            valid_until_micros: row.get(2),
            verifier: row.get::<_, Option<String>>(3).unwrap_or_default(),
        })
    }

    /// The group roles the provider made for this database (their comment
    /// names it), with their comment, by name.
    pub async fn groups(&self) -> BTreeMap<String, String> {
        self.superuser()
            .await
            .query(
                "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles
                 WHERE rolname LIKE 'writ\\_g\\_%' AND NOT rolcanlogin
                   AND strpos(shobj_description(oid, 'pg_authid'), $1) > 0",
                &[&format!("database \"{}\"", self.name)],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    /// The roles `role` is a direct member of, by name.
    pub async fn memberships(&self, role: &str) -> Vec<String> {
        self.superuser()
            .await
            .query(
                "SELECT g.rolname::text FROM pg_auth_members m
                 JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
                 WHERE r.rolname = $1 ORDER BY 1",
                &[&role],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// How many privileges `role` holds itself, on any object in any
    /// database (`pg_shdepend` records each grantee of an ACL entry).
    pub async fn direct_privileges(&self, role: &str) -> i64 {
        self.superuser()
            .await
            .query_one(
                "SELECT count(*) FROM pg_shdepend
                 WHERE refclassid = 'pg_authid'::regclass AND deptype = 'a'
                   AND refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)",
                &[&role],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// The grantees of the privileges on table `table`, with what each holds
    /// (`aclexplode`), by name.
    pub async fn table_grantees(&self, table: &str) -> BTreeMap<String, Vec<String>> {
        let mut grantees = BTreeMap::<String, Vec<String>>::new();
        let rows = self
            .superuser()
            .await
            .query(
                "SELECT a.grantee::regrole::text, a.privilege_type
                 FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = $1::text::regclass ORDER BY 1, 2",
                &[&table],
            )
            .await
            .unwrap();
        for row in rows {
            grantees
                .entry(row.get::<_, String>(0).trim_matches('"').to_string())
                .or_default()
                .push(row.get(1));
        }
        grantees
    }

    /// Drops the database now; for callers that end it explicitly (the
    /// same happens when it is dropped).
    pub async fn drop(self) {}
}

impl Drop for TestDatabase {
    /// Drops the database, its admin and any role a failed test left behind,
    /// on a thread of its own (with its own runtime) so it also runs while a
    /// test panics and from any runtime.
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = self.admin.clone();
        let teardown = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                // Roles Writ minted that still hold privileges or objects
                // here or are members of its groups, and then the group
                // roles made for this database (their comment names it);
                // none if the database was never made.
                let mut leftovers = Vec::new();
                if let Ok(in_db) = connect(&format!("dbname={name}")).await {
                    leftovers = in_db
                        .query(
                            "WITH groups AS (SELECT oid, rolname FROM pg_roles
                                             WHERE rolname LIKE 'writ\\_g\\_%'
                                               AND strpos(shobj_description(oid, 'pg_authid'), $1) > 0),
                                  logins AS (SELECT r.rolname FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
                                             WHERE d.refclassid = 'pg_authid'::regclass
                                               AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                                             UNION
                                             SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
                                             WHERE m.roleid IN (SELECT oid FROM groups))
                             SELECT rolname FROM (SELECT DISTINCT rolname, 0 AS o FROM logins WHERE rolname ~ '^writ_[0-9a-f]{32}$'
                                                  UNION ALL SELECT rolname, 1 FROM groups) r ORDER BY o",
                            &[&format!("database \"{name}\"")],
                        )
                        .await
                        .unwrap()
                        .iter()
                        .map(|row| row.get::<_, String>(0))
                        .collect();
                }
                let superuser = connect("").await.unwrap();
                superuser
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .unwrap();
                for role in leftovers.iter().chain([&admin, &format!("{admin}_heir")]) {
                    superuser
                        .execute(
                            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = $1",
                            &[role],
                        )
                        .await
                        .unwrap();
                    superuser.batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\"")).await.unwrap();
                }
            });
        });
        if teardown.join().is_err() && !std::thread::panicking() {
            panic!("dropping the test database {} failed", self.name);
        }
    }
}

/// A role as `pg_authid` has it.
pub struct RoleState {
    pub can_login: bool,
    /// `rolvaliduntil > now()`.
    pub valid_now: bool,
    /// `rolvaliduntil`, in microseconds since the epoch.
    pub valid_until_micros: Option<i64>,
    /// `rolpassword`: the SCRAM-SHA-256 verifier.
    pub verifier: String,
}

/// Whether `verifier` (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`)
/// was made from `password` (RFC 5802). The local server trusts every
/// connection from 127.0.0.1, so logging in proves nothing about the
/// password; this does.
pub fn scram_matches(verifier: &str, password: &str) -> bool {
    let parsed = (|| {
        let (parameters, keys) = verifier.strip_prefix("SCRAM-SHA-256$")?.split_once('$')?;
        let (iterations, salt) = parameters.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        Some((
            iterations.parse::<std::num::NonZeroU32>().ok()?,
            STANDARD.decode(salt).ok()?,
            stored_key,
            server_key,
        ))
    })();
    let Some((iterations, salt, stored_key, server_key)) = parsed else { return false };
    let mut salted = [0u8; 32];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, password.as_bytes(), &mut salted);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    STANDARD.encode(digest::digest(&digest::SHA256, client_key.as_ref())) == stored_key
        && STANDARD.encode(hmac::sign(&key, b"Server Key")) == server_key
}
