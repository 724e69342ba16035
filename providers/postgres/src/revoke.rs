//! Taking a login back, in an order that leaves no way in:
//!
//! 1. `GRANT role TO CURRENT_USER` and `ALTER ROLE … NOLOGIN`, as one
//!    implicit transaction (one simple query, two statements). From here no
//!    new session can start, and the admin role has the privileges of the
//!    role, which a non-superuser needs for every later step: terminating
//!    its sessions, `REASSIGN OWNED` and `DROP OWNED`.
//! 2. `pg_terminate_backend` on each of its sessions, waiting until each has
//!    ended, then a check that none is left.
//! 3. In every managed database, as one implicit transaction: `REASSIGN
//!    OWNED BY role TO <admin>` (what it created stays, owned by the admin)
//!    and `DROP OWNED BY role` (its privileges go). A login granted to
//!    directly (`grant_to = "login"`) holds the grant lock (see
//!    `sql::ACL_LOCK`) for this; a member of group roles has no privileges
//!    of its own on shared objects, and does not.
//! 4. `DROP ROLE IF EXISTS`.
//!
//! Every step may find the role already gone (never minted, or revoked by a
//! concurrent call): that ends the revocation successfully.

use std::time::Duration;

use deadpool_postgres::Client;
use writ_provider_api::ProviderError;

use crate::pools::Pools;
use crate::{error, sql, sql_text};

/// Why a step stopped.
enum Stop {
    /// A statement failed while doing the named thing; maybe because the role
    /// is gone.
    Statement(tokio_postgres::Error, String),
    Provider(ProviderError),
}

impl From<ProviderError> for Stop {
    fn from(error: ProviderError) -> Self {
        Self::Provider(error)
    }
}

fn failed(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Stop {
    let what = what.into();
    move |error| Stop::Statement(error, what)
}

/// Revokes the login `name`. `reassign_to` names the heir of what the role
/// owned (the admin role if `None`); `statement_timeout` bounds the wait
/// for sessions to end; `take_lock` says whether dropping what it owns takes
/// the grant lock.
pub async fn revoke(
    pools: &Pools,
    name: &str,
    reassign_to: Option<&str>,
    statement_timeout: Duration,
    take_lock: bool,
) -> Result<(), ProviderError> {
    let client = pools.primary().await?;
    if !role_exists(&client, name).await? {
        tracing::info!("the PostgreSQL role is already gone");
        return Ok(());
    }
    match steps(pools, &client, name, reassign_to, statement_timeout, take_lock).await {
        Ok(terminated) => {
            tracing::info!(terminated_sessions = terminated, "revoked a PostgreSQL login");
            Ok(())
        }
        Err(Stop::Provider(error)) => Err(error),
        Err(Stop::Statement(error, what)) => {
            if error::is_undefined_object(&error) && !role_exists(&client, name).await? {
                tracing::info!("the PostgreSQL role was dropped by someone else meanwhile");
                return Ok(());
            }
            Err(error::postgres(error, &format!("revoking role {name}: {what}")))
        }
    }
}

/// Runs the four steps; returns how many sessions were terminated.
async fn steps(
    pools: &Pools,
    client: &Client,
    name: &str,
    reassign_to: Option<&str>,
    statement_timeout: Duration,
    take_lock: bool,
) -> Result<u64, Stop> {
    let quoted = sql::quote_ident(name).map_err(sql_text)?;
    let heir = match reassign_to {
        Some(heir) => sql::quote_ident(heir).map_err(sql_text)?,
        None => "CURRENT_USER".to_string(),
    };

    client
        .batch_execute(&format!("GRANT {quoted} TO CURRENT_USER; ALTER ROLE {quoted} NOLOGIN"))
        .await
        .map_err(failed("blocking new logins"))?;

    let terminated = terminate_sessions(client, name, statement_timeout).await?;

    // One simple query with several statements runs as one transaction.
    // With `take_lock` it takes the grant lock first, as minting to logins
    // does: both rewrite the ACLs of the same objects, which PostgreSQL
    // cannot do concurrently.
    let lock =
        if take_lock { format!("SELECT pg_advisory_xact_lock({}); ", sql::ACL_LOCK) } else { String::new() };
    let drop_owned = format!("{lock}REASSIGN OWNED BY {quoted} TO {heir}; DROP OWNED BY {quoted}");
    // The primary database on the connection already held: a pool of one
    // must not wait for itself.
    client
        .batch_execute(&drop_owned)
        .await
        .map_err(failed(format!("dropping what it owns in database {:?}", pools.primary_name())))?;
    for database in pools.cleanup() {
        database
            .get()
            .await?
            .batch_execute(&drop_owned)
            .await
            .map_err(failed(format!("dropping what it owns in database {:?}", database.name)))?;
    }

    client
        .batch_execute(&format!("DROP ROLE IF EXISTS {quoted}"))
        .await
        .map_err(failed("dropping the role"))?;
    Ok(terminated)
}

/// Terminates every session of the role, waiting for each to end (at most
/// half the statement timeout each), and fails as retryable if any is left.
async fn terminate_sessions(client: &Client, name: &str, statement_timeout: Duration) -> Result<u64, Stop> {
    let wait_ms = i64::try_from((statement_timeout / 2).as_millis()).unwrap_or(i64::MAX);
    let terminated: i64 = client
        .query_one(
            // Materialized first, so the planner cannot call
            // pg_terminate_backend on a session before checking its user.
            "WITH sessions AS MATERIALIZED \
               (SELECT pid FROM pg_catalog.pg_stat_activity WHERE usename = $1) \
             SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid, $2)) FROM sessions",
            &[&name, &wait_ms],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(failed("terminating its sessions"))?;
    let left: i64 = client
        .query_one("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = $1", &[&name])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(failed("counting its sessions"))?;
    if left > 0 {
        return Err(Stop::Provider(ProviderError::Unavailable(format!(
            "revoking role {name}: {left} of its sessions did not end yet"
        ))));
    }
    Ok(u64::try_from(terminated).unwrap_or_default())
}

async fn role_exists(client: &Client, name: &str) -> Result<bool, ProviderError> {
    let row = client
        .query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[&name])
        .await
        .map_err(|e| error::postgres(e, &format!("looking up role {name}")))?;
    Ok(row.is_some())
}
