use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::sql::{self, ROLE_PLACEHOLDER};

/// `[providers.<name>]` with `kind = "postgres"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// How Writ logs in as its own admin role: libpq `key=value` pairs or a
    /// `postgres://` URL. Secret, since it may hold the admin password.
    #[serde(deserialize_with = "secret_string")]
    pub admin_connection: SecretString,
    /// A file holding the admin password, so that the configuration need not.
    /// Surrounding whitespace (a trailing newline) is ignored.
    #[serde(default)]
    pub admin_password_file: Option<PathBuf>,
    /// Connection hints handed to agents with each credential, over the
    /// `host`, `port` and `dbname` of `admin_connection` (set them when
    /// agents reach the database by another address).
    #[serde(default)]
    pub connection: BTreeMap<String, String>,
    /// Further databases where a minted role may come to own objects or
    /// hold privileges; revocation runs `REASSIGN OWNED`/`DROP OWNED` in
    /// each, besides the database of `admin_connection`.
    #[serde(default)]
    pub cleanup_databases: Vec<String>,
    /// Who inherits what a revoked role owned; the admin role if unset.
    #[serde(default)]
    pub reassign_owned_to: Option<String>,
    /// Admin connections per database.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long opening an admin connection, or waiting for a free one, may take.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// `statement_timeout` of the admin sessions, so a lock held elsewhere
    /// cannot stall a mint or revocation forever.
    #[serde(with = "humantime_serde", default = "default_statement_timeout")]
    pub statement_timeout: Duration,
    /// How long a group role counts as ready after Writ last ran its
    /// statements on it. The first mint after that runs them again, so a
    /// template like `GRANT SELECT ON ALL TABLES IN SCHEMA app` reaches
    /// tables created since.
    #[serde(with = "humantime_serde", default = "default_group_refresh")]
    pub group_refresh: Duration,
    pub roles: BTreeMap<String, RoleConfig>,
    /// TLS to the server: `"disable"` (the default) or `"verify-full"`:
    /// encrypted, the server's certificate chaining to `tls_ca_file` and
    /// naming the `host` of `admin_connection`.
    #[serde(default)]
    pub tls: PostgresTls,
    /// CA certificates (PEM) the server's certificate must chain to; needed
    /// with `tls = "verify-full"`.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

/// Whether admin connections use TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTls {
    /// Plaintext: for a server on the same host or a private link only.
    #[default]
    Disable,
    /// TLS required; the certificate is verified against `tls_ca_file` and
    /// the host name (libpq's `sslmode=verify-full`).
    VerifyFull,
}

/// Who a role's template statements are granted to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantTo {
    /// A group role per template (the role's `grants`, each scope), made
    /// once; each login is created as a member. Mints change no privileges
    /// and take no lock.
    #[default]
    Group,
    /// Every login, in the transaction that creates it, under the grant
    /// lock: for statements whose effect does not pass through membership,
    /// such as `ALTER ROLE {{role}} SET …` or `CONNECTION LIMIT`.
    Login,
}

/// One role: the grants every credential gets and the scopes an agent may
/// ask for on top.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Statements every credential's privileges come from, in order;
    /// `{{role}}` stands for the quoted name of the group role (or, with
    /// `grant_to = "login"`, of the login).
    #[serde(default)]
    pub grants: Vec<String>,
    /// Named grant sets, applied after `grants` only when asked for.
    #[serde(default)]
    pub scopes: BTreeMap<String, Vec<String>>,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    #[serde(with = "humantime_serde", default = "default_ttl")]
    pub default_ttl: Duration,
    /// Whether the statements go to group roles the logins join (the
    /// default) or to each login itself.
    #[serde(default)]
    pub grant_to: GrantTo,
}

fn default_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_pool_size() -> usize {
    4
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_statement_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_group_refresh() -> Duration {
    Duration::from_secs(300)
}

fn secret_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SecretString, D::Error> {
    String::deserialize(deserializer).map(SecretString::from)
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("admin_connection", &"<redacted>")
            .field("admin_password_file", &self.admin_password_file)
            .field("connection", &self.connection)
            .field("cleanup_databases", &self.cleanup_databases)
            .field("reassign_owned_to", &self.reassign_owned_to)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("group_refresh", &self.group_refresh)
            .field("roles", &self.roles)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl PostgresConfig {
    /// Checks everything that can be checked without the database. Error
    /// messages never repeat `admin_connection`.
    pub fn validate(&self) -> Result<(), String> {
        let admin = self.admin_pg_config()?;
        if admin.get_user().is_none_or(str::is_empty) {
            return Err("admin_connection must name a user".into());
        }
        if admin.get_hosts().is_empty() && admin.get_hostaddrs().is_empty() {
            return Err("admin_connection must name a host".into());
        }
        if self.admin_password_file.is_some() && admin.get_password().is_some() {
            return Err("give the admin password in admin_connection or admin_password_file, not both".into());
        }
        if self.pool_size == 0 {
            return Err("pool_size must be at least 1".into());
        }
        if self.connect_timeout.is_zero() {
            return Err("connect_timeout must be positive".into());
        }
        if self.statement_timeout < Duration::from_secs(1) {
            return Err("statement_timeout must be at least 1s".into());
        }
        if self.group_refresh < Duration::from_secs(1) {
            return Err("group_refresh must be at least 1s".into());
        }
        if let Some(key) = self.connection.keys().find(|key| key.trim().is_empty()) {
            return Err(format!("connection hint {key:?}: names must not be empty"));
        }
        let mut databases = BTreeSet::new();
        for database in &self.cleanup_databases {
            sql::quote_ident(database).map_err(|e| format!("cleanup_databases {database:?}: {e}"))?;
            if !databases.insert(database) || admin.get_dbname() == Some(database.as_str()) {
                return Err(format!("cleanup_databases {database:?}: listed twice"));
            }
        }
        if let Some(target) = &self.reassign_owned_to {
            sql::quote_ident(target).map_err(|e| format!("reassign_owned_to {target:?}: {e}"))?;
        }
        match (self.tls, &self.tls_ca_file, admin.get_ssl_mode()) {
            (PostgresTls::VerifyFull, None, _) => {
                return Err(
                    "tls = \"verify-full\" needs tls_ca_file (the CA the server's certificate chains to)"
                        .into(),
                );
            }
            (PostgresTls::Disable, Some(_), _) => {
                return Err("tls_ca_file is set but tls is \"disable\": set tls = \"verify-full\"".into());
            }
            (PostgresTls::Disable, None, tokio_postgres::config::SslMode::Require) => {
                return Err(
                    "admin_connection asks for sslmode=require, which would not verify the server: set \
                     tls = \"verify-full\" and tls_ca_file instead"
                        .into(),
                );
            }
            (PostgresTls::VerifyFull, Some(_), _) => {
                let unix_socket = admin
                    .get_hosts()
                    .iter()
                    .any(|host| !matches!(host, tokio_postgres::config::Host::Tcp(_)));
                if unix_socket || admin.get_hosts().is_empty() {
                    return Err("tls = \"verify-full\" needs admin_connection to name its server by host name over TCP (the name the certificate is checked against)".into());
                }
            }
            _ => {}
        }
        if self.roles.is_empty() {
            return Err("at least one role is required".into());
        }
        self.roles.iter().try_for_each(|(name, role)| role.validate(name))
    }

    /// The admin connection settings, without the password file applied.
    pub(crate) fn admin_pg_config(&self) -> Result<tokio_postgres::Config, String> {
        // The parser's message may quote part of the string, which may be
        // the password: say only that it did not parse.
        tokio_postgres::Config::from_str(self.admin_connection.expose_secret()).map_err(|_| {
            "admin_connection is not a valid connection string (libpq key=value pairs or a postgres:// URL)"
                .to_string()
        })
    }
}

impl RoleConfig {
    fn validate(&self, name: &str) -> Result<(), String> {
        let valid_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            return Err(format!("role {name:?}: names are letters, digits and -_."));
        }
        if self.max_ttl < Duration::from_secs(1) {
            return Err(format!("role {name:?}: max_ttl must be at least 1s"));
        }
        if self.default_ttl < Duration::from_secs(1) || self.default_ttl > self.max_ttl {
            return Err(format!("role {name:?}: default_ttl must be within [1s, max_ttl]"));
        }
        for (index, statement) in self.grants.iter().enumerate() {
            self.validate_statement(statement).map_err(|e| format!("role {name:?}: grants[{index}]: {e}"))?;
        }
        for (scope, statements) in &self.scopes {
            if scope.is_empty() || scope.chars().any(char::is_whitespace) {
                return Err(format!("role {name:?}: scope {scope:?} must be one non-empty word"));
            }
            if statements.is_empty() {
                return Err(format!("role {name:?}: scope {scope:?} has no statements"));
            }
            for (index, statement) in statements.iter().enumerate() {
                self.validate_statement(statement)
                    .map_err(|e| format!("role {name:?}: scopes.{scope}[{index}]: {e}"))?;
            }
        }
        Ok(())
    }

    fn validate_statement(&self, statement: &str) -> Result<(), String> {
        validate_statement(statement)?;
        if self.grant_to == GrantTo::Group {
            if let Some(what) = not_inherited(statement) {
                return Err(format!(
                    "{what} acts on the role itself and does not pass to the members of a group role; \
                     set grant_to = \"login\" for this role"
                ));
            }
            if let Some(what) = lets_members_create(statement) {
                return Err(format!(
                    "{what} would let a lease SET ROLE to the group role and create objects the group \
                     owns, which outlive the lease and serve every later lease of the role; \
                     set grant_to = \"login\" for this role (its logins then own what they create, \
                     and revocation takes it away)"
                ));
            }
        }
        Ok(())
    }
}

/// What in a statement would not reach a login through membership of the
/// group it is run on, if anything: role attributes and settings
/// (`ALTER ROLE {{role}} …`) and default privileges for objects the role
/// creates (`ALTER DEFAULT PRIVILEGES FOR ROLE {{role}}`). A check of the
/// common forms, not a parser.
fn not_inherited(statement: &str) -> Option<&'static str> {
    let words: Vec<String> = statement
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let placeholder = ROLE_PLACEHOLDER.to_ascii_uppercase();
    let is_role_keyword = |word: &String| word == "ROLE" || word == "USER";
    if let [alter, role, name, ..] = words.as_slice()
        && alter == "ALTER"
        && is_role_keyword(role)
        && *name == placeholder
    {
        return Some("ALTER ROLE {{role}}");
    }
    // ALTER DEFAULT PRIVILEGES FOR ROLE a, b, … IN SCHEMA … GRANT …
    let default_privileges = words.windows(2).any(|pair| pair[0] == "DEFAULT" && pair[1] == "PRIVILEGES");
    let for_roles = words.windows(2).position(|pair| pair[0] == "FOR" && is_role_keyword(&pair[1]));
    if let (true, Some(at)) = (default_privileges, for_roles) {
        let listed =
            words[at + 2..].iter().take_while(|word| !["IN", "GRANT", "REVOKE"].contains(&word.as_str()));
        if listed.into_iter().any(|word| *word == placeholder) {
            return Some("ALTER DEFAULT PRIVILEGES FOR ROLE {{role}}");
        }
    }
    None
}

/// Whether a statement grants the right to create objects in a schema or
/// database (`CREATE`, or `ALL [PRIVILEGES]`, `ON SCHEMA` or `ON
/// DATABASE`), and how it does. On PostgreSQL 15 every member of a role may
/// `SET ROLE` to it, so in a group what a member creates can belong to the
/// group (ADR 0006). A check of the `GRANT … ON …` form, not a parser:
/// membership grants (`GRANT role TO …`) and table privileges pass.
fn lets_members_create(statement: &str) -> Option<String> {
    let words: Vec<String> = statement
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    if words.first().map(String::as_str) != Some("GRANT") {
        return None;
    }
    let on = words.iter().position(|word| word == "ON")?;
    let privileges = &words[1..on];
    let creates = privileges.iter().any(|word| word == "CREATE" || word == "ALL");
    let object = words.get(on + 1).map(String::as_str);
    match object {
        Some(kind @ ("SCHEMA" | "DATABASE")) if creates => {
            let privilege = if privileges.iter().any(|word| word == "CREATE") { "CREATE" } else { "ALL" };
            Some(format!("GRANT {privilege} ON {kind}"))
        }
        _ => None,
    }
}

/// A grant template is one statement that names the minted role through
/// the only placeholder there is. Each is sent on its own through the
/// extended query protocol, which runs at most one statement; refusing `;`
/// as well makes a pasted script fail here, at start-up, and not halfway
/// through a mint.
fn validate_statement(statement: &str) -> Result<(), String> {
    if statement.trim().is_empty() {
        return Err("a statement must not be empty".into());
    }
    if statement.contains('\0') {
        return Err("a statement must not contain a NUL character".into());
    }
    if statement.contains(';') {
        return Err("one statement each, without ';'".into());
    }
    let rest = statement.replace(ROLE_PLACEHOLDER, "");
    if rest.contains("{{") || rest.contains("}}") {
        return Err(format!("the only placeholder is {ROLE_PLACEHOLDER}"));
    }
    if rest.len() == statement.len() {
        return Err(format!("a statement must name the minted role as {ROLE_PLACEHOLDER}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of `docs/providers/postgres.md`, as Writ reads it.
    const EXAMPLE: &str = r#"
[providers.analytics]
kind = "postgres"
admin_connection = "host=db.internal.example port=5432 user=writ_admin password=adm1n-s3cret dbname=analytics"
cleanup_databases = ["reporting"]
pool_size = 4
connect_timeout = "5s"
statement_timeout = "30s"
group_refresh = "5m"

[providers.analytics.connection]
host = "analytics-db.example.com"

[providers.analytics.roles.reader]
grants = [
    "GRANT CONNECT ON DATABASE analytics TO {{role}}",
    "GRANT USAGE ON SCHEMA app TO {{role}}",
    "GRANT SELECT ON ALL TABLES IN SCHEMA app TO {{role}}",
]
max_ttl = "1h"
default_ttl = "15m"

[providers.analytics.roles.reader.scopes]
write = ["GRANT INSERT, UPDATE ON ALL TABLES IN SCHEMA app TO {{role}}"]

[providers.analytics.roles.report]
grant_to = "login"   # ALTER ROLE acts on the login itself, not through a group
grants = [
    "GRANT CONNECT ON DATABASE analytics TO {{role}}",
    "GRANT USAGE ON SCHEMA app TO {{role}}",
    "GRANT SELECT ON ALL TABLES IN SCHEMA app TO {{role}}",
    "ALTER ROLE {{role}} SET statement_timeout = '5min'",
]
max_ttl = "8h"
"#;

    /// Parses the example the way Writ does: `kind` belongs to Writ's own
    /// table, the rest to the provider.
    fn example_table() -> toml::Table {
        let document: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let mut table = document["providers"]["analytics"].as_table().unwrap().clone();
        assert_eq!(table.remove("kind").unwrap().as_str(), Some(crate::KIND));
        table
    }

    fn example() -> PostgresConfig {
        toml::Value::Table(example_table()).try_into().unwrap()
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let config = example();
        config.validate().unwrap();
        assert_eq!(config.roles["reader"].grants.len(), 3);
        assert_eq!(config.roles["reader"].max_ttl, Duration::from_secs(3600));
        assert_eq!(config.roles["reader"].grant_to, GrantTo::Group);
        assert_eq!(config.roles["report"].grant_to, GrantTo::Login);
        assert_eq!(config.group_refresh, Duration::from_secs(300));
        assert_eq!(config.pool_size, 4);
        assert_eq!(config.statement_timeout, Duration::from_secs(30));
    }

    #[test]
    fn debug_output_and_errors_hide_the_admin_password() {
        let config = example();
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret"), "{printed}");

        let mut unparsable = example();
        unparsable.admin_connection = SecretString::from("host=db password='s3cret".to_string());
        let error = unparsable.validate().unwrap_err();
        assert!(error.contains("admin_connection") && !error.contains("s3cret"), "{error}");
        unparsable.admin_connection = SecretString::from("host=db s3cret=x".to_string());
        let error = unparsable.validate().unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");

        let mut twice = example();
        twice.admin_password_file = Some("/etc/writ/pg.password".into());
        let error = twice.validate().unwrap_err();
        assert!(error.contains("not both") && !error.contains("s3cret"), "{error}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut table = example_table();
        table.insert("admin_url".into(), "postgres://x".into());
        let error = toml::Value::Table(table).try_into::<PostgresConfig>().unwrap_err();
        assert!(error.to_string().contains("admin_url"), "{error}");
    }

    #[test]
    fn templates_are_checked_when_the_configuration_loads() {
        let cases = [
            ("", "must not be empty"),
            ("   ", "must not be empty"),
            ("GRANT SELECT ON t TO {{role}}; DROP TABLE t", "without ';'"),
            ("GRANT SELECT ON t TO {{role}};", "without ';'"),
            ("GRANT SELECT ON t TO {{ role }}", "only placeholder"),
            ("GRANT SELECT ON t TO {{name}}", "only placeholder"),
            ("GRANT SELECT ON t TO {{role}} -- {{", "only placeholder"),
            ("GRANT SELECT ON t TO PUBLIC", "must name the minted role"),
            ("GRANT SELECT ON t TO {{role}}\0", "NUL"),
        ];
        for (statement, expected) in cases {
            let mut config = example();
            config.roles.get_mut("reader").unwrap().grants.push(statement.into());
            let error = config.validate().unwrap_err();
            assert!(error.contains(expected) && error.contains("grants[3]"), "{statement:?}: {error}");

            let mut config = example();
            config.roles.get_mut("reader").unwrap().scopes.insert("extra".into(), vec![statement.into()]);
            let error = config.validate().unwrap_err();
            assert!(error.contains(expected) && error.contains("scopes.extra[0]"), "{statement:?}: {error}");
        }
    }

    #[test]
    fn roles_grant_to_groups_unless_told_otherwise() {
        let mut table = example_table();
        assert!(table.remove("group_refresh").is_some());
        let config: PostgresConfig = toml::Value::Table(table.clone()).try_into().unwrap();
        assert_eq!(config.roles["reader"].grant_to, GrantTo::Group);
        assert_eq!(config.group_refresh, Duration::from_secs(300));

        table.insert("group_refresh".into(), "10m".into());
        let reader = table["roles"]["reader"].as_table().unwrap().clone();
        for (value, expected) in [("login", GrantTo::Login), ("group", GrantTo::Group)] {
            let mut role = reader.clone();
            role.insert("grant_to".into(), value.into());
            let mut table = table.clone();
            table["roles"].as_table_mut().unwrap().insert("reader".into(), role.into());
            let config: PostgresConfig = toml::Value::Table(table).try_into().unwrap();
            config.validate().unwrap();
            assert_eq!(config.roles["reader"].grant_to, expected);
            assert_eq!(config.group_refresh, Duration::from_secs(600));
        }

        let mut role = reader.clone();
        role.insert("grant_to".into(), "both".into());
        table["roles"].as_table_mut().unwrap().insert("reader".into(), role.into());
        let error = toml::Value::Table(table).try_into::<PostgresConfig>().unwrap_err().to_string();
        assert!(error.contains("both") && error.contains("`group`") && error.contains("`login`"), "{error}");
    }

    #[test]
    fn statements_that_act_on_the_role_itself_need_grant_to_login() {
        for statement in [
            "ALTER ROLE {{role}} SET search_path = app",
            "alter user {{role}} CONNECTION LIMIT 2",
            "ALTER ROLE {{role}} IN DATABASE analytics SET work_mem = '64MB'",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {{role}} IN SCHEMA app GRANT SELECT ON TABLES TO PUBLIC",
            "ALTER DEFAULT PRIVILEGES FOR USER admin, {{role}} GRANT SELECT ON TABLES TO PUBLIC",
        ] {
            let mut config = example();
            config.roles.get_mut("reader").unwrap().grants.push(statement.into());
            let error = config.validate().unwrap_err();
            assert!(
                error.contains("grants[3]") && error.contains("grant_to = \"login\""),
                "{statement}: {error}"
            );
            config.roles.get_mut("reader").unwrap().grant_to = GrantTo::Login;
            config.validate().unwrap();
        }
        for passes_through_membership in [
            "ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO {{role}}",
            "GRANT analytics_readers TO {{role}}",
            "GRANT SELECT ON TABLE role TO {{role}}",
        ] {
            let mut config = example();
            config.roles.get_mut("reader").unwrap().grants.push(passes_through_membership.into());
            config.validate().unwrap();
        }
    }

    #[test]
    fn rights_to_create_objects_need_grant_to_login() {
        for statement in [
            "GRANT CREATE ON SCHEMA app TO {{role}}",
            "grant usage, create on schema app to {{role}}",
            "GRANT ALL ON SCHEMA app TO {{role}}",
            "GRANT ALL PRIVILEGES ON SCHEMA app, staging TO {{role}}",
            "GRANT CREATE ON DATABASE analytics TO {{role}}",
            "GRANT ALL ON DATABASE analytics TO {{role}}",
        ] {
            let mut config = example();
            config.roles.get_mut("reader").unwrap().scopes.insert("make".into(), vec![statement.into()]);
            let error = config.validate().unwrap_err();
            assert!(
                error.contains("scopes.make[0]")
                    && error.contains("SET ROLE")
                    && error.contains("grant_to = \"login\""),
                "{statement}: {error}"
            );
            config.roles.get_mut("reader").unwrap().grant_to = GrantTo::Login;
            config.validate().unwrap();
        }
        for harmless in [
            "GRANT ALL ON ALL TABLES IN SCHEMA app TO {{role}}",
            "GRANT ALL ON TABLE app.items TO {{role}}",
            "GRANT USAGE ON SCHEMA app TO {{role}}",
            "GRANT TEMPORARY ON DATABASE analytics TO {{role}}",
            "GRANT CONNECT ON DATABASE analytics TO {{role}}",
            "GRANT INSERT (created) ON app.items TO {{role}}",
        ] {
            let mut config = example();
            config.roles.get_mut("reader").unwrap().grants.push(harmless.into());
            config.validate().unwrap_or_else(|error| panic!("{harmless}: {error}"));
        }
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        type Breaks = fn(&mut PostgresConfig);
        let checks: [(Breaks, &str); 11] = [
            (|c| c.roles.clear(), "at least one role"),
            (|c| c.roles.get_mut("reader").unwrap().default_ttl = Duration::from_secs(7200), "default_ttl"),
            (|c| c.roles.get_mut("reader").unwrap().max_ttl = Duration::ZERO, "max_ttl"),
            (
                |c| _ = c.roles.get_mut("reader").unwrap().scopes.insert("two words".into(), vec![]),
                "one non-empty word",
            ),
            (
                |c| _ = c.roles.get_mut("reader").unwrap().scopes.insert("empty".into(), vec![]),
                "no statements",
            ),
            (|c| c.pool_size = 0, "pool_size"),
            (|c| c.group_refresh = Duration::from_millis(500), "group_refresh must be at least 1s"),
            (|c| c.cleanup_databases.push("analytics".into()), "listed twice"),
            (|c| c.reassign_owned_to = Some("a\0b".into()), "NUL"),
            (|c| c.admin_connection = SecretString::from("dbname=app".to_string()), "must name a user"),
            (
                |c| c.admin_connection = SecretString::from("user=writ dbname=app".to_string()),
                "must name a host",
            ),
        ];
        for (breaks, expected) in checks {
            let mut config = example();
            breaks(&mut config);
            let error = config.validate().unwrap_err();
            assert!(error.contains(expected), "expected {expected:?}: {error}");
        }
        let mut renamed = example();
        let role = renamed.roles.remove("reader").unwrap();
        renamed.roles.insert("bad name".into(), role);
        assert!(renamed.validate().unwrap_err().contains("letters, digits"));
    }
}
