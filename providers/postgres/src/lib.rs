//! PostgreSQL logins as credentials: one login role per lease, created on
//! mint and dropped on revocation.
//!
//! - **Names.** The role is `writ_` and the lease id's 32 hex digits
//!   ([`sql::role_name`]), so [`Provider::intent`] names it before anything
//!   exists and a role left behind by a crash is revoked by name. The
//!   revocation handle is that name.
//! - **Privileges** (`groups.rs`). By default (`grant_to = "group"`) each
//!   template of a role (its `grants`, each scope) is run once on a
//!   `NOLOGIN` group role named after the template's fingerprint, created
//!   when first needed and refreshed every `group_refresh`. With
//!   `grant_to = "login"` the templates run on every login instead.
//! - **Mint** (`mint.rs`) creates the login with `CREATE ROLE … LOGIN
//!   PASSWORD … VALID UNTIL … IN ROLE <groups>`, one statement and no lock;
//!   or, granting to logins, `CREATE ROLE` and the templates' statements in
//!   one transaction under the grant lock (`sql::ACL_LOCK`). `{{role}}` is
//!   replaced by the quoted name of the group or the login. The password
//!   comes from `ring`'s CSPRNG; only its SCRAM-SHA-256 verifier is sent,
//!   so the plain password is never in a statement, a server log or
//!   `pg_stat_activity`.
//! - **Renew** moves `VALID UNTIL`; the credential itself is unchanged.
//! - **Revoke** (`revoke.rs`) blocks new logins, terminates the role's open
//!   sessions and waits for them to end, hands what the role owns to the
//!   admin role and drops its privileges in every managed database, then
//!   drops the role. Each step tolerates the role being gone, so revocation
//!   is idempotent. `VALID UNTIL` only stops new logins: sessions opened
//!   before the expiry outlive it, and only revocation ends them.
//!
//! Admin connections come from one `deadpool-postgres` pool per managed
//! database, over plain TCP or a Unix socket (`pools.rs`). Failures are
//! mapped once (`error.rs`): no connection → `Unavailable`, SQL errors that
//! retrying will not fix → `Failed`, an unknown role or scope → `Refused`.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod config;
mod error;
mod groups;
mod mint;
mod pools;
mod revoke;
pub mod sql;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use secrecy::{ExposeSecret, SecretString};
use tracing::Instrument;
use uuid::Uuid;
use writ_provider_api::{
    Credential, CredentialShape, MintRequest, Minted, Provider, ProviderDescription, ProviderError,
    RenewRequest, Renewed, RevocationHandle, RevokeRequest, RoleDescription,
};

pub use config::{GrantTo, PostgresConfig, PostgresTls, RoleConfig};

use groups::Groups;
use pools::Pools;

/// The `kind` this provider is configured with.
pub const KIND: &str = "postgres";

/// The shortest lifetime a role is minted with; `VALID UNTIL` has no
/// practical lower bound.
const MIN_TTL: Duration = Duration::from_secs(1);

pub struct PostgresProvider {
    config: PostgresConfig,
    /// Admin connections: the configured database's, where roles are made,
    /// and each cleanup database's, used only by revocation.
    pools: Pools,
    /// The group roles of the `grant_to = "group"` roles, and which of them
    /// are known to be ready.
    groups: Groups,
    /// Connection hints every credential carries (host, port, dbname, …).
    connection: BTreeMap<String, String>,
    /// Source of passwords. `SystemRandom` is the OS CSPRNG; it holds no state.
    rng: SystemRandom,
}

impl std::fmt::Debug for PostgresProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProvider")
            .field("connection", &self.connection)
            .field("roles", &self.config.roles.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PostgresProvider {
    /// Builds the provider. Reads `admin_password_file` if set; opens no
    /// connection yet (the pools connect on first use), so Writ starts even
    /// while the database is down. Fails if the configuration is invalid.
    pub fn new(config: PostgresConfig) -> Result<Self, String> {
        config.validate()?;
        let mut admin = config.admin_pg_config()?;
        if let Some(path) = &config.admin_password_file {
            let password = std::fs::read_to_string(path)
                .map_err(|e| format!("admin_password_file {}: {e}", path.display()))?;
            admin.password(password.trim());
        }
        if admin.get_application_name().is_none() {
            admin.application_name("writ");
        }
        let connection = connection_hints(&admin, &config.connection);
        let pools = Pools::new(&admin, &config)?;
        let groups = Groups::new(pools.primary_name(), &config.roles, config.group_refresh)?;
        Ok(Self { config, pools, groups, connection, rng: SystemRandom::new() })
    }

    fn role(&self, name: &str) -> Result<&RoleConfig, ProviderError> {
        self.config
            .roles
            .get(name)
            .ok_or_else(|| ProviderError::Refused(format!("the postgres provider has no role {name:?}")))
    }

    /// The role's grants, then those of each scope asked for, in order.
    fn statements<'a>(
        role: &'a RoleConfig,
        request: &'a MintRequest,
    ) -> Result<Vec<&'a String>, ProviderError> {
        let mut statements: Vec<&String> = role.grants.iter().collect();
        for scope in &request.scopes {
            let grants = role.scopes.get(scope).ok_or_else(|| {
                ProviderError::Refused(format!(
                    "the role {:?} does not offer the scope {scope:?}",
                    request.role
                ))
            })?;
            statements.extend(grants);
        }
        Ok(statements)
    }

    /// The role name a handle stands for, if it is one Writ minted for this
    /// lease. Anything else is refused, so no damaged or swapped handle can
    /// make Writ alter or drop another role.
    fn handle_role_name(handle: &RevocationHandle, lease_id: Uuid) -> Result<String, ProviderError> {
        let name = sql::role_name(lease_id);
        if handle.expose() == name {
            Ok(name)
        } else {
            Err(ProviderError::Failed(format!(
                "the revocation handle of lease {lease_id} is not its role name"
            )))
        }
    }
}

/// The expiry to set: as asked, but no further than `max_ttl` from issue,
/// at PostgreSQL's precision.
fn expiry(
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    max_ttl: Duration,
) -> Result<DateTime<Utc>, ProviderError> {
    if expires_at <= issued_at {
        return Err(ProviderError::Refused("the requested expiry is not after the issue time".into()));
    }
    let longest = chrono::Duration::from_std(max_ttl).ok().and_then(|ttl| issued_at.checked_add_signed(ttl));
    let capped = longest.map_or(expires_at, |longest| expires_at.min(longest));
    Ok(sql::to_postgres_precision(capped))
}

/// Host, port and database of the admin connection, under whatever the
/// configuration sets.
fn connection_hints(
    admin: &tokio_postgres::Config,
    configured: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut hints = BTreeMap::new();
    match admin.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => {
            hints.insert("host".to_string(), host.clone());
        }
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => {
            hints.insert("host".to_string(), path.display().to_string());
        }
        None => {
            if let Some(address) = admin.get_hostaddrs().first() {
                hints.insert("host".to_string(), address.to_string());
            }
        }
    }
    hints.insert("port".to_string(), admin.get_ports().first().copied().unwrap_or(5432).to_string());
    // libpq's default database is the one named like the user.
    if let Some(dbname) = admin.get_dbname().or(admin.get_user()) {
        hints.insert("dbname".to_string(), dbname.to_string());
    }
    hints.extend(configured.iter().map(|(key, value)| (key.clone(), value.clone())));
    hints
}

/// The SCRAM-SHA-256 verifier of `password` (4096 iterations, RFC 7677),
/// computed on a blocking thread: 4096 rounds of PBKDF2 take about 1.5 ms
/// of CPU, far too long to hold an async worker (docs/performance.md).
async fn scram_verifier(password: &SecretString) -> Result<String, ProviderError> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || {
        postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes())
    })
    .await
    .map_err(|_| ProviderError::Failed("computing the password's SCRAM verifier failed".into()))
}

fn sql_text(error: sql::SqlTextError) -> ProviderError {
    ProviderError::Failed(format!("cannot build the SQL statement: {error}"))
}

#[async_trait]
impl Provider for PostgresProvider {
    fn describe(&self) -> ProviderDescription {
        let roles = self
            .config
            .roles
            .iter()
            .map(|(name, role)| RoleDescription {
                name: name.clone(),
                max_ttl: role.max_ttl,
                default_ttl: role.default_ttl,
                min_ttl: MIN_TTL,
                scopes: role.scopes.keys().cloned().collect(),
            })
            .collect();
        ProviderDescription { kind: KIND.into(), shape: CredentialShape::Revocable, roles }
    }

    fn intent(&self, lease_id: Uuid, role: &str) -> Result<RevocationHandle, ProviderError> {
        self.role(role)?;
        Ok(RevocationHandle::new(sql::role_name(lease_id)))
    }

    async fn mint(&self, request: &MintRequest) -> Result<Minted, ProviderError> {
        let name = sql::role_name(request.lease_id);
        let span = tracing::info_span!("postgres.mint", role = %request.role, pg_role = %name);
        async {
            let role = self.role(&request.role)?;
            // Refuses an unknown scope before anything is made.
            let groups = self.groups.of(&request.role, &request.scopes)?;
            let statements = match groups {
                Some(_) => Vec::new(),
                None => Self::statements(role, request)?,
            };
            let expires_at = expiry(request.issued_at, request.expires_at, role.max_ttl)?;
            let password = sql::generate_password(&self.rng)
                .map_err(|_| ProviderError::Failed("the system random number generator failed".into()))?;
            let verifier = scram_verifier(&password).await?;
            let login = mint::Login::new(&name, &verifier, expires_at)?;
            match &groups {
                Some(groups) => {
                    mint::in_groups(&self.pools, &self.groups, &login, groups, request.issued_at).await?;
                    tracing::info!(%expires_at, groups = groups.len(), "minted a PostgreSQL login");
                }
                None => {
                    mint::with_grants(&self.pools, &login, &statements, &request.role).await?;
                    tracing::info!(%expires_at, grants = statements.len(), "minted a PostgreSQL login");
                }
            }

            Ok(Minted {
                credential: Credential::Password {
                    username: name.clone(),
                    password,
                    connection: self.connection.clone(),
                },
                expires_at,
                handle: RevocationHandle::new(name.clone()),
            })
        }
        .instrument(span)
        .await
    }

    async fn renew(&self, request: &RenewRequest) -> Result<Renewed, ProviderError> {
        let name = Self::handle_role_name(&request.handle, request.mint.lease_id)?;
        let span = tracing::info_span!("postgres.renew", role = %request.mint.role, pg_role = %name);
        async {
            let role = self.role(&request.mint.role)?;
            let expires_at = expiry(request.mint.issued_at, request.mint.expires_at, role.max_ttl)?;
            let alter = format!(
                "ALTER ROLE {} VALID UNTIL {}",
                sql::quote_ident(&name).map_err(sql_text)?,
                sql::timestamp_literal(expires_at).map_err(sql_text)?
            );
            let client = self.pools.primary().await?;
            let can_login: Option<bool> = client
                .query_opt("SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = $1", &[&name])
                .await
                .and_then(|row| row.map(|row| row.try_get(0)).transpose())
                .map_err(|e| error::postgres(e, &format!("looking up role {name}")))?;
            match can_login {
                None => {
                    return Err(ProviderError::Refused(format!(
                        "the PostgreSQL role {name} no longer exists"
                    )));
                }
                Some(false) => {
                    return Err(ProviderError::Refused(format!(
                        "the PostgreSQL role {name} is being revoked"
                    )));
                }
                Some(true) => {}
            }
            client.execute(alter.as_str(), &[]).await.map_err(|e| {
                if error::is_undefined_object(&e) {
                    ProviderError::Refused(format!("the PostgreSQL role {name} no longer exists"))
                } else {
                    error::postgres(e, &format!("renewing role {name}"))
                }
            })?;
            tracing::info!(%expires_at, "renewed a PostgreSQL login");
            Ok(Renewed { credential: None, expires_at })
        }
        .instrument(span)
        .await
    }

    async fn revoke(&self, request: &RevokeRequest) -> Result<(), ProviderError> {
        let name = Self::handle_role_name(&request.handle, request.lease_id)?;
        let span = tracing::info_span!("postgres.revoke", role = %request.role, pg_role = %name);
        // A login of a group role holds no privileges of its own: dropping
        // what it owns rewrites no shared privilege list and needs no turn
        // on the grant lock. A role no longer configured, or granting to
        // logins, takes the lock.
        let in_groups =
            self.config.roles.get(&request.role).is_some_and(|role| role.grant_to == GrantTo::Group);
        revoke::revoke(
            &self.pools,
            &name,
            self.config.reassign_owned_to.as_deref(),
            self.config.statement_timeout,
            !in_groups,
        )
        .instrument(span)
        .await
    }

    async fn health(&self) -> Result<(), ProviderError> {
        self.pools.check().await
    }
}

#[cfg(test)]
mod tests;
