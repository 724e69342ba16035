//! The PostgreSQL server's own ceiling for what the `postgres` provider
//! does per lease, measured without Writ, from as many admin connections as
//! the load has callers (at most 32), in both of the provider's shapes:
//!
//! - **group** (`grant_to = "group"`, the default): the `reader` role's three
//!   `GRANT`s run once on a group role; each lease is one statement,
//!   `CREATE ROLE … LOGIN INHERIT PASSWORD <SCRAM verifier> VALID UNTIL … IN
//!   ROLE <group>`, with no lock; taking it back is `GRANT role TO
//!   CURRENT_USER` (a non-superuser admin needs it, as in the provider),
//!   `REASSIGN OWNED` + `DROP OWNED` without the lock, `DROP ROLE`.
//! - **login** (`grant_to = "login"`): `CREATE ROLE` and the three `GRANT`s
//!   in one transaction under the grant lock; taking it back takes the lock
//!   for `DROP OWNED`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio_postgres::{Client, NoTls};

pub use crate::pg_support::PgDatabase;

/// The provider's grant lock (`writ_provider_postgres` `sql::ACL_LOCK`):
/// concurrent GRANTs on one object fail with "tuple concurrently updated",
/// so the raw statements take turns exactly as the provider does.
const ACL_LOCK: i64 = 0x7772_6974_2061_636c;

/// A well-formed SCRAM-SHA-256 verifier from random bytes: the server stores
/// it as is, so no hashing cost is counted on either side.
fn verifier() -> String {
    let bytes = |n: usize| STANDARD.encode((0..n).map(|_| fastrand::u8(..)).collect::<Vec<u8>>());
    format!("SCRAM-SHA-256$4096:{}${}:{}", bytes(16), bytes(32), bytes(32))
}

/// The `reader` role's template with `{{role}}` as `role`.
fn grants(database: &str, role: &str) -> String {
    format!(
        "GRANT CONNECT ON DATABASE \"{database}\" TO \"{role}\";
         GRANT USAGE ON SCHEMA app TO \"{role}\";
         GRANT SELECT ON ALL TABLES IN SCHEMA app TO \"{role}\";"
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Group,
    Login,
}

pub async fn raw_ddl(db: &PgDatabase, concurrency: usize, duration: Duration) {
    // PostgreSQL's default max_connections is 100; leave room for others.
    let connections = concurrency.min(32);
    let mut clients = Vec::new();
    for _ in 0..connections {
        let (client, connection) = tokio_postgres::connect(&db.admin_connection(), NoTls).await.unwrap();
        tokio::spawn(connection);
        clients.push(Arc::new(client));
    }
    let group = format!("writ_raw_g_{}", uuid::Uuid::now_v7().simple());
    clients[0]
        .batch_execute(&format!("CREATE ROLE \"{group}\" NOLOGIN; {}", grants(&db.name, &group)))
        .await
        .unwrap();
    println!("== raw PostgreSQL DDL over {connections} admin connections, no Writ");
    for shape in [Shape::Group, Shape::Login] {
        let (created, elapsed) = create_all(&clients, &db.name, &group, shape, duration).await;
        let total = created.len();
        let what = match shape {
            Shape::Group => "CREATE ROLE … IN ROLE <group>, one statement",
            Shape::Login => "CREATE ROLE + 3 GRANTs under the lock, one transaction",
        };
        println!(
            "create      {total} roles ({what}) in {:.2}s: {:.0}/s",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
        let elapsed = drop_all(&clients, created, shape).await;
        let what = match shape {
            Shape::Group => "REASSIGN/DROP OWNED without the lock + DROP ROLE",
            Shape::Login => "DROP OWNED under the lock + DROP ROLE",
        };
        println!(
            "drop        {total} roles ({what}) in {:.2}s: {:.0}/s",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
    }
    drop_groups(&clients[0], &db.name, &group).await;
}

/// Creates logins from every client for `duration`; returns their names.
async fn create_all(
    clients: &[Arc<Client>],
    database: &str,
    group: &str,
    shape: Shape,
    duration: Duration,
) -> (Vec<String>, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for client in clients {
        let (client, stop, database, group) =
            (client.clone(), stop.clone(), database.to_string(), group.to_string());
        workers.spawn(async move {
            let mut created = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let role = format!("writ_raw_{}", uuid::Uuid::now_v7().simple());
                let until = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
                let login = format!(
                    "CREATE ROLE \"{role}\" LOGIN INHERIT PASSWORD '{}' VALID UNTIL '{until}'",
                    verifier()
                );
                let sql = match shape {
                    Shape::Group => format!("{login} IN ROLE \"{group}\""),
                    Shape::Login => format!(
                        "BEGIN; {login}; SELECT pg_advisory_xact_lock({ACL_LOCK}); {} COMMIT;",
                        grants(&database, &role)
                    ),
                };
                client.batch_execute(&sql).await.unwrap();
                created.push(role);
            }
            created
        });
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut created = Vec::new();
    while let Some(Ok(mut roles)) = workers.join_next().await {
        created.append(&mut roles);
    }
    (created, started.elapsed())
}

/// Drops `roles`, spread over the clients, as the provider's revocation does
/// (without its session checks).
async fn drop_all(clients: &[Arc<Client>], roles: Vec<String>, shape: Shape) -> Duration {
    let started = Instant::now();
    let per_client = roles.len().div_ceil(clients.len()).max(1);
    let mut workers = tokio::task::JoinSet::new();
    for (client, roles) in clients.iter().zip(roles.chunks(per_client).map(<[String]>::to_vec)) {
        let client = client.clone();
        workers.spawn(async move {
            for role in roles {
                let sql = match shape {
                    Shape::Group => format!(
                        "GRANT \"{role}\" TO CURRENT_USER; BEGIN; REASSIGN OWNED BY \"{role}\" TO CURRENT_USER; \
                         DROP OWNED BY \"{role}\"; COMMIT; DROP ROLE \"{role}\";"
                    ),
                    Shape::Login => format!(
                        "GRANT \"{role}\" TO CURRENT_USER; BEGIN; SELECT pg_advisory_xact_lock({ACL_LOCK}); \
                         REASSIGN OWNED BY \"{role}\" TO CURRENT_USER; DROP OWNED BY \"{role}\"; COMMIT; \
                         DROP ROLE \"{role}\";"
                    ),
                };
                client.batch_execute(&sql).await.unwrap();
            }
        });
    }
    while workers.join_next().await.is_some() {}
    started.elapsed()
}

/// Drops the raw group and the group roles Writ made for this database
/// (their comment names it), as the admin role that granted what they hold.
async fn drop_groups(admin: &Client, database: &str, raw_group: &str) {
    let rows = admin
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'writ\\_g\\_%' \
             AND strpos(shobj_description(oid, 'pg_authid'), $1) > 0",
            &[&format!("database \"{database}\"")],
        )
        .await
        .unwrap();
    let names = rows.iter().map(|row| row.get::<_, String>(0)).chain([raw_group.to_string()]);
    for group in names {
        admin
            .batch_execute(&format!(
                "GRANT \"{group}\" TO CURRENT_USER; DROP OWNED BY \"{group}\"; DROP ROLE \"{group}\""
            ))
            .await
            .unwrap();
    }
}
