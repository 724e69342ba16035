//! The PostgreSQL server's own ceiling for what the `postgres` provider
//! does per lease, measured without Writ: the same mint transaction
//! (`CREATE ROLE … LOGIN PASSWORD <SCRAM verifier> VALID UNTIL …` and the
//! `reader` role's three `GRANT`s, under the same grant lock), then
//! `GRANT role TO CURRENT_USER` (a non-superuser
//! admin needs it, as in the provider), `DROP OWNED` + `DROP ROLE`, from as many admin connections as the load
//! has callers (at most 32).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio_postgres::NoTls;

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

pub async fn raw_ddl(db: &PgDatabase, concurrency: usize, duration: Duration) {
    // PostgreSQL's default max_connections is 100; leave room for others.
    let connections = concurrency.min(32);
    let mut clients = Vec::new();
    for _ in 0..connections {
        let (client, connection) = tokio_postgres::connect(&db.admin_connection(), NoTls).await.unwrap();
        tokio::spawn(connection);
        clients.push(Arc::new(client));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for client in &clients {
        let (client, stop, database) = (client.clone(), stop.clone(), db.name.clone());
        workers.spawn(async move {
            let mut created = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let role = format!("writ_raw_{}", uuid::Uuid::now_v7().simple());
                let until = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
                let sql = format!(
                    "BEGIN;
                     CREATE ROLE \"{role}\" LOGIN PASSWORD '{}' VALID UNTIL '{until}';
                     SELECT pg_advisory_xact_lock({ACL_LOCK});
                     GRANT CONNECT ON DATABASE \"{database}\" TO \"{role}\";
                     GRANT USAGE ON SCHEMA app TO \"{role}\";
                     GRANT SELECT ON ALL TABLES IN SCHEMA app TO \"{role}\";
                     COMMIT;",
                    verifier()
                );
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
    let create_elapsed = started.elapsed();
    let total = created.len();

    let started = Instant::now();
    let per_client = total.div_ceil(connections).max(1);
    let mut workers = tokio::task::JoinSet::new();
    for (client, roles) in clients.iter().zip(created.chunks(per_client).map(<[String]>::to_vec)) {
        let client = client.clone();
        workers.spawn(async move {
            for role in roles {
                let sql = format!(
                    "GRANT \"{role}\" TO CURRENT_USER; BEGIN; SELECT pg_advisory_xact_lock({ACL_LOCK}); \
                     DROP OWNED BY \"{role}\"; COMMIT; DROP ROLE \"{role}\";"
                );
                client.batch_execute(&sql).await.unwrap();
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let drop_elapsed = started.elapsed();
    println!("== raw PostgreSQL DDL over {connections} admin connections, no Writ");
    println!(
        "create      {total} roles (CREATE ROLE + 3 GRANTs, one transaction each) in {:.2}s: {:.0}/s",
        create_elapsed.as_secs_f64(),
        total as f64 / create_elapsed.as_secs_f64()
    );
    println!(
        "drop        {total} roles (DROP OWNED + DROP ROLE) in {:.2}s: {:.0}/s",
        drop_elapsed.as_secs_f64(),
        total as f64 / drop_elapsed.as_secs_f64()
    );
}
