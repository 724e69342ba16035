//! Group roles: where the privileges of `grant_to = "group"` roles live.
//!
//! Each template of such a role (its `grants`, and each scope) has one
//! `NOLOGIN` group role, named after a fingerprint of the template
//! ([`sql::group_name`]) and holding what the template grants. A login is
//! created as a member of the groups of its grant, so minting changes no
//! object's privileges and needs no lock.
//!
//! Writ makes a group ready ("ensures" it) before the first mint that needs
//! it, and again once `group_refresh` has passed: in one transaction under
//! the grant lock (`sql::ACL_LOCK`), it creates the group if it does not
//! exist and runs the template's statements on it. The lock serializes this
//! with every other change of privileges Writ makes, and with other Writ
//! replicas doing the same, so the existence check cannot race.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use writ_provider_api::ProviderError;

use crate::config::{GrantTo, RoleConfig};
use crate::pools::Pools;
use crate::{error, sql, sql_text};

/// One template's group role.
pub struct Group {
    /// `writ_g_…`.
    pub name: String,
    quoted: String,
    /// Writ's role it serves, for messages.
    role: String,
    /// Which template of the role: `grants` or `scope <name>`.
    template: String,
    statements: Vec<String>,
    /// `COMMENT ON ROLE` text, so an operator reading the catalog can tell
    /// what the group is for.
    comment: String,
    /// The issue time of the mint that last ran the statements on the group;
    /// `None` until one has, and again once a mint found the group missing.
    /// Read by every mint, written by the one that ensures.
    ensured_at: Mutex<Option<DateTime<Utc>>>,
    /// Held while ensuring, so that the mints finding the group stale at once
    /// wait for one of them to make it ready instead of each doing it.
    ensuring: tokio::sync::Mutex<()>,
}

/// The groups of one role: its `grants` (none if it has no statements) and
/// each scope's.
struct RoleGroups {
    grants: Option<Group>,
    scopes: BTreeMap<String, Group>,
}

/// The groups of every `grant_to = "group"` role, named once when the
/// provider is built.
pub struct Groups {
    roles: BTreeMap<String, RoleGroups>,
    /// `group_refresh`.
    refresh: Duration,
}

impl Groups {
    /// Names the groups of the roles in `database`, the admin connection's.
    pub fn new(
        database: &str,
        roles: &BTreeMap<String, RoleConfig>,
        refresh: Duration,
    ) -> Result<Self, String> {
        let roles = roles
            .iter()
            .filter(|(_, role)| role.grant_to == GrantTo::Group)
            .map(|(name, role)| {
                let grants = (!role.grants.is_empty())
                    .then(|| Group::new(database, name, "grants", &role.grants))
                    .transpose()?;
                let scopes = role
                    .scopes
                    .iter()
                    .map(|(scope, statements)| {
                        Ok((
                            scope.clone(),
                            Group::new(database, name, &format!("scope {scope}"), statements)?,
                        ))
                    })
                    .collect::<Result<_, String>>()?;
                Ok((name.clone(), RoleGroups { grants, scopes }))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { roles, refresh })
    }

    /// The groups a login of `role` with `scopes` joins, or `None` if the
    /// role grants to logins. An unknown scope is refused.
    pub fn of(&self, role: &str, scopes: &[String]) -> Result<Option<Vec<&Group>>, ProviderError> {
        let Some(groups) = self.roles.get(role) else { return Ok(None) };
        let mut joined: Vec<&Group> = groups.grants.iter().collect();
        for scope in scopes {
            let group = groups.scopes.get(scope).ok_or_else(|| {
                ProviderError::Refused(format!("the role {role:?} does not offer the scope {scope:?}"))
            })?;
            if !joined.iter().any(|already| already.name == group.name) {
                joined.push(group);
            }
        }
        Ok(Some(joined))
    }

    /// Makes `group` ready if it is not, or no longer is, at `now`.
    pub async fn ensure(
        &self,
        pools: &Pools,
        group: &Group,
        now: DateTime<Utc>,
    ) -> Result<(), ProviderError> {
        if group.is_ready(now, self.refresh) {
            return Ok(());
        }
        let _ensuring = group.ensuring.lock().await;
        // Another mint may have done it while this one waited.
        if group.is_ready(now, self.refresh) {
            return Ok(());
        }
        group.create_and_grant(pools).await?;
        *group.ensured_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
        Ok(())
    }
}

impl Group {
    fn new(database: &str, role: &str, template: &str, statements: &[String]) -> Result<Self, String> {
        let name = sql::group_name(database, role, template, statements);
        let quoted = sql::quote_ident(&name).map_err(|e| format!("group role {name}: {e}"))?;
        let comment = format!(
            "Writ: privileges of role {role:?} ({template}) for its logins in database {database:?}; \
             members come and go with leases"
        );
        Ok(Self {
            name,
            quoted,
            role: role.to_string(),
            template: template.to_string(),
            statements: statements.to_vec(),
            comment,
            ensured_at: Mutex::new(None),
            ensuring: tokio::sync::Mutex::new(()),
        })
    }

    /// The group's name, quoted for SQL text.
    pub fn quoted(&self) -> &str {
        &self.quoted
    }

    /// Whether the statements ran on the group less than `refresh` before
    /// `now` (or after it: mints do not arrive in issue order).
    fn is_ready(&self, now: DateTime<Utc>, refresh: Duration) -> bool {
        let ensured_at = *self.ensured_at.lock().unwrap_or_else(PoisonError::into_inner);
        let refresh = chrono::Duration::from_std(refresh).unwrap_or(chrono::Duration::MAX);
        ensured_at.is_some_and(|at| (now - at).abs() < refresh)
    }

    /// Forgets that the group was ready: it is gone (dropped outside Writ),
    /// and the next mint creates it again.
    pub fn forget(&self) {
        *self.ensured_at.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Creates the group if it does not exist and runs its statements on
    /// it, in one transaction under the grant lock.
    async fn create_and_grant(&self, pools: &Pools) -> Result<(), ProviderError> {
        let name = &self.name;
        let mut client = pools.primary().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(|e| error::postgres(e, &format!("ensuring group role {name}")))?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&sql::ACL_LOCK])
            .await
            .map_err(|e| error::postgres(e, "waiting for the grant lock"))?;
        let exists = transaction
            .query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[name])
            .await
            .map_err(|e| error::postgres(e, &format!("looking up group role {name}")))?
            .is_some();
        if !exists {
            let create = format!(
                "CREATE ROLE {0} NOLOGIN; COMMENT ON ROLE {0} IS {1}",
                self.quoted,
                sql::quote_literal(&self.comment).map_err(sql_text)?
            );
            transaction
                .batch_execute(&create)
                .await
                .map_err(|e| error::postgres(e, &format!("creating group role {name}")))?;
        }
        let count = self.statements.len();
        for (index, statement) in self.statements.iter().enumerate() {
            transaction.execute(sql::render(statement, &self.quoted).as_str(), &[]).await.map_err(|e| {
                error::postgres(
                    e,
                    &format!(
                        "grant {} of {count} for role {:?} ({}) on group role {name}",
                        index + 1,
                        self.role,
                        self.template
                    ),
                )
            })?;
        }
        transaction
            .commit()
            .await
            .map_err(|e| error::postgres(e, &format!("committing group role {name}")))?;
        tracing::info!(group = %name, template = %self.template, created = !exists, grants = count, "ensured a PostgreSQL group role");
        Ok(())
    }
}
