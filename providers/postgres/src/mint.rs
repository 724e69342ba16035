//! Creating a lease's login, in one of two ways (`grant_to`):
//!
//! - **in groups** (the default): the role's group roles are made ready
//!   (`groups.rs`), then one statement, `CREATE ROLE … LOGIN … IN ROLE
//!   <groups>`, creates the login as their member. No object's privileges
//!   change, so mints need no lock and commit in parallel.
//! - **with grants**: `CREATE ROLE` and then every template statement run
//!   on the login itself, in one transaction holding the grant lock.

use chrono::{DateTime, Utc};
use writ_provider_api::ProviderError;

use crate::groups::{Group, Groups};
use crate::pools::Pools;
use crate::{error, sql, sql_text};

/// The login to create.
pub struct Login<'a> {
    /// `writ_<lease id>`.
    pub name: &'a str,
    pub quoted: String,
    /// `CREATE ROLE … LOGIN INHERIT PASSWORD <verifier> VALID UNTIL …`,
    /// without memberships. Holds the SCRAM verifier: never logged, never
    /// in an error.
    create: String,
}

impl<'a> Login<'a> {
    pub fn new(name: &'a str, verifier: &str, expires_at: DateTime<Utc>) -> Result<Self, ProviderError> {
        let quoted = sql::quote_ident(name).map_err(sql_text)?;
        let create = format!(
            "CREATE ROLE {quoted} LOGIN INHERIT PASSWORD {} VALID UNTIL {}",
            sql::quote_literal(verifier).map_err(sql_text)?,
            sql::timestamp_literal(expires_at).map_err(sql_text)?,
        );
        Ok(Self { name, quoted, create })
    }
}

/// Creates `login` as a member of `groups`, making each group ready first.
/// A group dropped behind Writ's back makes `CREATE ROLE` fail as
/// `undefined_object`: Writ then forgets the groups were ready, makes them
/// so again and tries once more.
pub async fn in_groups(
    pools: &Pools,
    known: &Groups,
    login: &Login<'_>,
    groups: &[&Group],
    now: DateTime<Utc>,
) -> Result<(), ProviderError> {
    let mut create = login.create.clone();
    if !groups.is_empty() {
        let names: Vec<&str> = groups.iter().map(|group| group.quoted()).collect();
        create.push_str(" IN ROLE ");
        create.push_str(&names.join(", "));
    }
    let mut retried = false;
    loop {
        for group in groups {
            known.ensure(pools, group, now).await?;
        }
        // A simple query: one round trip. The text is Writ's own (quoted
        // names, a literal verifier and timestamp), one statement. The
        // connection goes back to the pool before any retry: ensuring
        // needs one too.
        let created = pools.primary().await?.batch_execute(&create).await;
        match created {
            Err(e) if !retried && !groups.is_empty() && error::is_undefined_object(&e) => {
                tracing::warn!("a group role of the login is missing; creating it again");
                groups.iter().for_each(|group| group.forget());
                retried = true;
            }
            other => return other.map_err(|e| error::postgres(e, &format!("creating role {}", login.name))),
        }
    }
}

/// Creates `login` and runs `statements` on it, in one transaction under
/// the grant lock; `role` names Writ's role in messages.
pub async fn with_grants(
    pools: &Pools,
    login: &Login<'_>,
    statements: &[&String],
    role: &str,
) -> Result<(), ProviderError> {
    let name = login.name;
    let mut client = pools.primary().await?;
    let transaction =
        client.transaction().await.map_err(|e| error::postgres(e, "starting the mint transaction"))?;
    transaction
        .execute(login.create.as_str(), &[])
        .await
        .map_err(|e| error::postgres(e, &format!("creating role {name}")))?;
    // Concurrent GRANTs on one object fail with "tuple concurrently
    // updated" (they rewrite the same catalog row); take turns.
    if !statements.is_empty() {
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&sql::ACL_LOCK])
            .await
            .map_err(|e| error::postgres(e, "waiting for the grant lock"))?;
    }
    for (index, statement) in statements.iter().enumerate() {
        transaction.execute(sql::render(statement, &login.quoted).as_str(), &[]).await.map_err(|e| {
            error::postgres(e, &format!("grant {} of {} for role {role:?}", index + 1, statements.len()))
        })?;
    }
    transaction.commit().await.map_err(|e| error::postgres(e, &format!("committing role {name}")))
}
