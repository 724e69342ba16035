use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::names::TAG_KEYS;
use crate::policy::{self, MAX_SESSION_POLICY_CHARS};

/// The shortest session STS issues.
pub const MIN_SESSION: Duration = Duration::from_secs(900);
/// The longest session STS issues (a role's `MaxSessionDuration` at most).
pub const MAX_SESSION: Duration = Duration::from_secs(12 * 3600);

/// `[providers.<name>]` with `kind = "aws-sts"`. Holds no secret: Writ's
/// own AWS credentials are read from the environment variables it names.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsStsConfig {
    /// The region whose STS Writ calls and signs for, e.g. `eu-west-1`.
    pub region: String,
    /// An STS endpoint other than the region's (a VPC endpoint, an emulator).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// The IAM endpoint for `revoke_by_token_issue_time`; AWS's global IAM
    /// endpoint if unset.
    #[serde(default)]
    pub iam_endpoint_url: Option<String>,
    /// The environment variables holding Writ's own access key, secret key
    /// and (optional) session token.
    #[serde(default = "defaults::access_key_id_env")]
    pub access_key_id_env: String,
    #[serde(default = "defaults::secret_access_key_env")]
    pub secret_access_key_env: String,
    #[serde(default = "defaults::session_token_env")]
    pub session_token_env: String,
    /// How long opening a connection to AWS may take.
    #[serde(with = "humantime_serde", default = "defaults::connect_timeout")]
    pub connect_timeout: Duration,
    /// How long one call to AWS may take, retries included.
    #[serde(with = "humantime_serde", default = "defaults::timeout")]
    pub timeout: Duration,
    /// Attempts per call, the first included; throttling, 5xx and network
    /// errors are retried with backoff.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// How far AWS's `Expiration` may fall after the lease's expiry (the
    /// time the call took plus the difference between Writ's and AWS's
    /// clocks) before the session is discarded as `Failed`.
    #[serde(with = "humantime_serde", default = "defaults::expiry_tolerance")]
    pub expiry_tolerance: Duration,
    pub roles: BTreeMap<String, RoleConfig>,
}

/// One Writ role: an IAM role to assume and the scopes an agent may ask for.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// `arn:aws:iam::<account>:role/<name>`.
    pub role_arn: String,
    /// At most the IAM role's `MaxSessionDuration`; within [15m, 12h].
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    #[serde(with = "humantime_serde", default = "defaults::default_ttl")]
    pub default_ttl: Duration,
    /// IAM policy statements (JSON) in every session policy of the role.
    #[serde(default)]
    pub statements: Option<String>,
    /// Scope name → IAM policy statements (JSON) added when asked for.
    #[serde(default)]
    pub scopes: BTreeMap<String, String>,
    /// Which of `writ:agent`, `writ:task`, `writ:owner` pass on to sessions
    /// this session assumes in turn (role chaining).
    #[serde(default)]
    pub transitive_tag_keys: Vec<String>,
    /// On revocation, deny every session of the IAM role issued before the
    /// revoked one's issue time (an inline role policy, `iam:PutRolePolicy`).
    #[serde(default)]
    pub revoke_by_token_issue_time: bool,
}

mod defaults {
    use std::time::Duration;

    pub fn access_key_id_env() -> String {
        "AWS_ACCESS_KEY_ID".into()
    }
    pub fn secret_access_key_env() -> String {
        "AWS_SECRET_ACCESS_KEY".into()
    }
    pub fn session_token_env() -> String {
        "AWS_SESSION_TOKEN".into()
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(3)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(20)
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn expiry_tolerance() -> Duration {
        Duration::from_secs(30)
    }
    pub fn default_ttl() -> Duration {
        Duration::from_secs(900)
    }
}

/// A role as the provider uses it: the configuration with its statements
/// parsed.
#[derive(Clone, Debug)]
pub struct Role {
    pub config: RoleConfig,
    pub statements: Vec<Value>,
    pub scopes: BTreeMap<String, Vec<Value>>,
}

impl Role {
    /// Whether sessions of the role carry a session policy: they do once the
    /// role configures `statements` or any scope; otherwise they have the
    /// IAM role's own permissions.
    pub fn narrows(&self) -> bool {
        !self.statements.is_empty() || !self.scopes.is_empty()
    }

    /// The session policy for these (offered) scopes, if the role narrows.
    pub fn session_policy<'a>(&'a self, scopes: impl IntoIterator<Item = &'a str>) -> Option<String> {
        if !self.narrows() {
            return None;
        }
        let granted: BTreeSet<&str> = scopes.into_iter().collect();
        let scoped = granted.into_iter().filter_map(|scope| self.scopes.get(scope)).flatten();
        Some(policy::session_policy(self.statements.iter().chain(scoped)))
    }
}

impl AwsStsConfig {
    /// Checks everything that can be checked without AWS.
    pub fn validate(&self) -> Result<(), String> {
        self.roles().map(drop)
    }

    /// The validated roles, statements parsed.
    pub(crate) fn roles(&self) -> Result<BTreeMap<String, Role>, String> {
        let region_ok = !self.region.is_empty()
            && self.region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region_ok {
            return Err(format!("region {:?} is not an AWS region name such as \"eu-west-1\"", self.region));
        }
        for (field, url) in
            [("endpoint_url", &self.endpoint_url), ("iam_endpoint_url", &self.iam_endpoint_url)]
        {
            if let Some(url) = url {
                check_url(url).map_err(|e| format!("{field} {url:?}: {e}"))?;
            }
        }
        let variables = [
            ("access_key_id_env", &self.access_key_id_env),
            ("secret_access_key_env", &self.secret_access_key_env),
            ("session_token_env", &self.session_token_env),
        ];
        for (field, name) in variables {
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("{field} {name:?} is not an environment variable name"));
            }
        }
        if variables.iter().map(|(_, name)| name).collect::<BTreeSet<_>>().len() != variables.len() {
            return Err("access_key_id_env, secret_access_key_env and session_token_env must differ".into());
        }
        if self.connect_timeout.is_zero() {
            return Err("connect_timeout must be positive".into());
        }
        if self.timeout < Duration::from_secs(1) {
            return Err("timeout must be at least 1s".into());
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err("max_attempts must be within [1, 10]".into());
        }
        if self.expiry_tolerance > Duration::from_secs(300) {
            return Err("expiry_tolerance must be at most 5m".into());
        }
        if self.roles.is_empty() {
            return Err("at least one role is required".into());
        }
        self.roles.iter().map(|(name, role)| Ok((name.clone(), role.compile(name)?))).collect()
    }

    /// Whether any role revokes by `aws:TokenIssueTime`, so an IAM client is needed.
    pub fn uses_iam(&self) -> bool {
        self.roles.values().any(|role| role.revoke_by_token_issue_time)
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with https:// (or http:// for a local emulator)")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || url.chars().any(char::is_whitespace) {
        return Err("must name a host".into());
    }
    Ok(())
}

impl RoleConfig {
    fn compile(&self, name: &str) -> Result<Role, String> {
        let valid_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            return Err(format!("role {name:?}: names are letters, digits and -_."));
        }
        check_role_arn(&self.role_arn)
            .map_err(|e| format!("role {name:?}: role_arn {:?}: {e}", self.role_arn))?;
        if self.max_ttl < MIN_SESSION || self.max_ttl > MAX_SESSION || self.max_ttl.subsec_nanos() != 0 {
            return Err(format!(
                "role {name:?}: max_ttl must be whole seconds within [15m, 12h] (what STS issues), and at \
                 most the IAM role's MaxSessionDuration"
            ));
        }
        if self.default_ttl < MIN_SESSION || self.default_ttl > self.max_ttl {
            return Err(format!("role {name:?}: default_ttl must be within [15m, max_ttl]"));
        }
        let statements = match &self.statements {
            Some(text) => {
                policy::parse_statements(text).map_err(|e| format!("role {name:?}: statements {e}"))?
            }
            None => Vec::new(),
        };
        let mut scopes = BTreeMap::new();
        for (scope, text) in &self.scopes {
            if scope.is_empty() || scope.chars().any(char::is_whitespace) {
                return Err(format!("role {name:?}: scope {scope:?} must be one non-empty word"));
            }
            let parsed =
                policy::parse_statements(text).map_err(|e| format!("role {name:?}: scope {scope:?} {e}"))?;
            scopes.insert(scope.clone(), parsed);
        }
        let mut seen = BTreeSet::new();
        for key in &self.transitive_tag_keys {
            if !TAG_KEYS.contains(&key.as_str()) {
                return Err(format!(
                    "role {name:?}: transitive_tag_keys: {key:?} is not one of {}",
                    TAG_KEYS.join(", ")
                ));
            }
            if !seen.insert(key) {
                return Err(format!("role {name:?}: transitive_tag_keys: {key:?} is listed twice"));
            }
        }
        let role = Role { config: self.clone(), statements, scopes };
        // The longest policy a grant can carry is the one with every scope.
        if let Some(longest) = role.session_policy(role.scopes.keys().map(String::as_str)) {
            let length = longest.chars().count();
            if length > MAX_SESSION_POLICY_CHARS {
                return Err(format!(
                    "role {name:?}: the session policy with every scope is {length} characters, over AWS's \
                     limit of {MAX_SESSION_POLICY_CHARS}; shorten the statements or split the role"
                ));
            }
        }
        Ok(role)
    }
}

/// `arn:<partition>:iam::<12 digits>:role/[<path>/]<name>`.
fn check_role_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts.as_slice() else {
        return Err("is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)".into());
    };
    if *prefix != "arn" || partition.is_empty() || *service != "iam" || !region.is_empty() {
        return Err("is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)".into());
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err("the account must be 12 digits".into());
    }
    let name = crate::names::role_name(arn).filter(|_| resource.starts_with("role/"));
    let valid = name.is_some_and(|name| {
        name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    });
    if !valid {
        return Err("the resource must be role/<name>, the name up to 64 of [A-Za-z0-9_+=,.@-]".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration page, whose first TOML block is the example.
    const DOCS: &str = include_str!("../../../docs/providers/aws-sts.md");

    /// The example of `docs/providers/aws-sts.md`, as Writ reads it.
    fn example_text() -> &'static str {
        let (_, rest) = DOCS.split_once("```toml\n").unwrap();
        rest.split_once("```").unwrap().0
    }

    fn example_table() -> toml::Table {
        let document: toml::Table = toml::from_str(example_text()).unwrap();
        let mut table = document["providers"]["aws"].as_table().unwrap().clone();
        assert_eq!(table.remove("kind").unwrap().as_str(), Some(crate::KIND));
        table
    }

    pub fn example() -> AwsStsConfig {
        toml::Value::Table(example_table()).try_into().unwrap()
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let config = example();
        let roles = config.roles().unwrap();
        assert_eq!(roles["reports"].scopes.len(), 2);
        assert_eq!(roles["reports"].statements.len(), 1);
        assert_eq!(roles["reports"].config.max_ttl, Duration::from_secs(3600));
        assert!(!roles["deploy"].narrows());
        assert_eq!(roles["deploy"].config.default_ttl, MIN_SESSION);
        assert_eq!(config.access_key_id_env, "WRIT_AWS_ACCESS_KEY_ID");
        assert_eq!(config.max_attempts, 3);
        assert!(config.uses_iam());
    }

    #[test]
    fn defaults_name_the_standard_environment_variables() {
        let mut table = example_table();
        for key in ["access_key_id_env", "secret_access_key_env", "session_token_env", "endpoint_url"] {
            table.remove(key);
        }
        let config: AwsStsConfig = toml::Value::Table(table).try_into().unwrap();
        config.validate().unwrap();
        assert_eq!(config.access_key_id_env, "AWS_ACCESS_KEY_ID");
        assert_eq!(config.secret_access_key_env, "AWS_SECRET_ACCESS_KEY");
        assert_eq!(config.session_token_env, "AWS_SESSION_TOKEN");
        assert_eq!(config.endpoint_url, None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut table = example_table();
        table.insert("secret_access_key".into(), "s3cret".into());
        let error = toml::Value::Table(table).try_into::<AwsStsConfig>().unwrap_err();
        assert!(error.to_string().contains("secret_access_key"), "{error}");

        let mut table = example_table();
        table["roles"]["deploy"].as_table_mut().unwrap().insert("session_policy".into(), "{}".into());
        let error = toml::Value::Table(table).try_into::<AwsStsConfig>().unwrap_err();
        assert!(error.to_string().contains("session_policy"), "{error}");
    }

    #[test]
    fn the_session_policy_narrows_to_exactly_the_granted_scopes() {
        let roles = example().roles().unwrap();
        let reports = &roles["reports"];
        let actions = |scopes: &[&str]| -> Vec<Value> {
            let policy: Value =
                serde_json::from_str(&reports.session_policy(scopes.iter().copied()).unwrap()).unwrap();
            policy["Statement"].as_array().unwrap().iter().map(|s| s["Action"].clone()).collect()
        };
        assert_eq!(actions(&[]), [Value::from("s3:ListBucket")]);
        assert_eq!(actions(&["read"]), [Value::from("s3:ListBucket"), "s3:GetObject".into()]);
        let both = actions(&["write", "read", "read"]);
        assert_eq!(both.len(), 3, "each scope once, in name order: {both:?}");
        assert_eq!(both[1], "s3:GetObject");
        assert_eq!(both[2], serde_json::json!(["s3:PutObject", "s3:AbortMultipartUpload"]));
        assert_eq!(roles["deploy"].session_policy([]), None, "a role without statements does not narrow");
    }

    #[test]
    fn inconsistent_settings_are_refused_with_precise_messages() {
        type Breaks = fn(&mut AwsStsConfig);
        fn reports(config: &mut AwsStsConfig) -> &mut RoleConfig {
            config.roles.get_mut("reports").unwrap()
        }
        let checks: Vec<(Breaks, &str)> = vec![
            (|c| c.roles.clear(), "at least one role"),
            (|c| c.region = "EU West".into(), "region \"EU West\""),
            (
                |c| c.endpoint_url = Some("sts.amazonaws.com".into()),
                "endpoint_url \"sts.amazonaws.com\": must start",
            ),
            (
                |c| c.iam_endpoint_url = Some("https:///x".into()),
                "iam_endpoint_url \"https:///x\": must name a host",
            ),
            (|c| c.access_key_id_env = "MY KEY".into(), "access_key_id_env \"MY KEY\""),
            (|c| c.session_token_env = c.secret_access_key_env.clone(), "must differ"),
            (|c| c.max_attempts = 0, "max_attempts"),
            (|c| c.timeout = Duration::from_millis(10), "timeout must be at least 1s"),
            (|c| c.expiry_tolerance = Duration::from_secs(3600), "expiry_tolerance"),
            (
                |c| reports(c).max_ttl = Duration::from_secs(600),
                "role \"reports\": max_ttl must be whole seconds within [15m, 12h]",
            ),
            (|c| reports(c).max_ttl = Duration::from_secs(13 * 3600), "max_ttl must be"),
            (|c| reports(c).max_ttl = Duration::from_millis(3_600_500), "max_ttl must be whole seconds"),
            (|c| reports(c).default_ttl = Duration::from_secs(7200), "role \"reports\": default_ttl"),
            (
                |c| reports(c).default_ttl = Duration::from_secs(60),
                "default_ttl must be within [15m, max_ttl]",
            ),
            (|c| reports(c).role_arn = "arn:aws:iam::123:role/x".into(), "the account must be 12 digits"),
            (
                |c| reports(c).role_arn = "arn:aws:iam::123456789012:user/x".into(),
                "resource must be role/<name>",
            ),
            (|c| reports(c).role_arn = "arn:aws:s3:::bucket".into(), "is not an IAM role ARN"),
            (|c| reports(c).role_arn = "writ-reports".into(), "role_arn \"writ-reports\""),
            (|c| reports(c).statements = Some("{".into()), "role \"reports\": statements is not valid JSON"),
            (
                |c| _ = reports(c).scopes.insert("admin".into(), r#"{"Effect":"Allow","Action":"*"}"#.into()),
                "role \"reports\": scope \"admin\" statement 0: Resource (or NotResource) is required",
            ),
            (|c| _ = reports(c).scopes.insert("two words".into(), "[]".into()), "one non-empty word"),
            (
                |c| _ = reports(c).scopes.insert("none".into(), "[]".into()),
                "scope \"none\" has no statements",
            ),
            (|c| reports(c).transitive_tag_keys.push("team".into()), "\"team\" is not one of writ:agent"),
            (|c| reports(c).transitive_tag_keys.push("writ:agent".into()), "listed twice"),
        ];
        for (breaks, expected) in checks {
            let mut config = example();
            breaks(&mut config);
            let error = config.validate().unwrap_err();
            assert!(error.contains(expected), "expected {expected:?}: {error}");
        }
        let mut renamed = example();
        let role = renamed.roles.remove("deploy").unwrap();
        renamed.roles.insert("bad name".into(), role);
        assert!(renamed.validate().unwrap_err().contains("letters, digits"));
    }

    #[test]
    fn a_session_policy_over_the_aws_limit_is_refused_at_load() {
        let mut config = example();
        let statement = r#"{"Effect":"Allow","Action":"s3:GetObject",
            "Resource":"arn:aws:s3:::acme-reports/a-long-prefix-for-padding/*"}"#;
        for index in 0..20 {
            config.roles.get_mut("reports").unwrap().scopes.insert(format!("s{index}"), statement.into());
        }
        let error = config.validate().unwrap_err();
        assert!(error.contains("role \"reports\": the session policy with every scope is"), "{error}");
        assert!(error.contains("over AWS's limit of 2048"), "{error}");
        // Each scope alone fits; what matters is the sum.
        config
            .roles
            .get_mut("reports")
            .unwrap()
            .scopes
            .retain(|name, _| !name.starts_with('s') || name == "s1");
        config.validate().unwrap();
    }
}
