//! Configuration: one TOML file, unknown fields refused, a few environment
//! overrides, validated before any port is bound. See
//! `docs/configuration.md` for every field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::store::StoreConfig;

/// Environment variables that override the file.
pub const ENV_LISTEN: &str = "WRIT_LISTEN";
pub const ENV_HTTP_LISTEN: &str = "WRIT_HTTP_LISTEN";
/// Switches the store to a single Redis at this URL (containers, replicas).
pub const ENV_REDIS_URL: &str = "WRIT_REDIS_URL";
/// Where this replica writes its audit log; every replica needs its own.
pub const ENV_AUDIT_PATH: &str = "WRIT_AUDIT_PATH";
/// The name this replica's signed audit checkpoints carry.
pub const ENV_REPLICA: &str = "WRIT_REPLICA";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub store: StoreConfig,
    pub audit: AuditConfig,
    pub sealing: SealingConfig,
    pub policy: PolicyConfig,
    #[serde(default)]
    pub revocation: RevocationConfig,
    #[serde(default, rename = "issuers")]
    pub issuers: Vec<IssuerConfig>,
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// Security Event Tokens to downstream receivers; off when absent.
    #[serde(default)]
    pub caep: Option<crate::caep::CaepConfig>,
    /// Log format and OTLP traces.
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryConfig,
}

/// `[approvals]`: step-up approvals. Policies name the groups
/// (`@step_up("<group>")`); the groups name their approvers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// How long a request waits for its quorum before it expires.
    #[serde(with = "humantime_serde", default = "defaults::approval_timeout")]
    pub timeout: Duration,
    /// How long the agent has to collect an approved request.
    #[serde(with = "humantime_serde", default = "defaults::approval_timeout")]
    pub collect_within: Duration,
    /// The most undecided requests one agent may have at once.
    #[serde(default = "defaults::max_pending_approvals")]
    pub max_pending_per_agent: usize,
    /// Group → the names of `[[services]]` with the `approver` role in it.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Where requests and their outcomes are announced (signed).
    #[serde(default)]
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            timeout: defaults::approval_timeout(),
            collect_within: defaults::approval_timeout(),
            max_pending_per_agent: defaults::max_pending_approvals(),
            groups: BTreeMap::new(),
            webhooks: Vec::new(),
        }
    }
}

impl ApprovalsConfig {
    /// The settings the broker works with.
    pub fn settings(&self) -> crate::domain::ApprovalSettings {
        crate::domain::ApprovalSettings {
            groups: self
                .groups
                .iter()
                .map(|(group, members)| (group.clone(), members.iter().cloned().collect()))
                .collect(),
            timeout: self.timeout,
            collect_within: self.collect_within,
            max_pending_per_agent: self.max_pending_per_agent,
        }
    }

    fn validate(&self, services: &[ServiceConfig]) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        for (name, value) in
            [("approvals.timeout", self.timeout), ("approvals.collect_within", self.collect_within)]
        {
            if value.as_secs() < 1 || value.as_secs() > 7 * 24 * 3600 {
                return invalid(format!("{name} must be from 1s to 7 days"));
            }
        }
        if !(1..=1000).contains(&self.max_pending_per_agent) {
            return invalid("approvals.max_pending_per_agent must be 1 to 1000".into());
        }
        for (group, members) in &self.groups {
            let valid = !group.is_empty()
                && group.len() <= 64
                && group.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return invalid(format!(
                    "approval group {group:?} must be 1 to 64 letters, digits, -, _ or ."
                ));
            }
            if members.is_empty() {
                return invalid(format!("approval group {group:?} has no members"));
            }
            for member in members {
                match services.iter().find(|service| service.name == *member) {
                    None => {
                        return invalid(format!(
                            "approval group {group:?} names {member:?}, which is not in [[services]]"
                        ));
                    }
                    Some(service) if !service.roles.contains(&ServiceRole::Approver) => {
                        return invalid(format!(
                            "approval group {group:?} names {member:?}, which lacks the approver role"
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC address.
    pub listen: SocketAddr,
    /// HTTP address for the token providers' JWKS and introspection.
    pub http_listen: SocketAddr,
    /// The `aud` every workload token must carry.
    pub audience: String,
    /// How long shutdown waits for in-flight requests.
    #[serde(with = "humantime_serde", default = "defaults::shutdown_grace")]
    pub shutdown_grace: Duration,
    /// TLS on both listeners (`[server.tls]`): required unless `plaintext`.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
    /// Serve both listeners without TLS: for development on loopback only;
    /// logged as a warning at start.
    #[serde(default)]
    pub plaintext: bool,
}

/// The largest `limits.max_token_bytes`. The gRPC listener's HTTP/2
/// header-list limit follows the configured value
/// (`crate::server::header_list_limit`); the HTTP listener's HTTP/1 parser holds at
/// most about 400 KiB of request head, so larger tokens could not be
/// honoured there.
pub const MAX_TOKEN_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Workload tokens longer than this are refused unread.
    #[serde(default = "defaults::max_token_bytes")]
    pub max_token_bytes: usize,
    /// Tolerance for `exp`, `nbf` and `iat` against Writ's clock.
    #[serde(with = "humantime_serde", default = "defaults::clock_leeway")]
    pub clock_leeway: Duration,
    /// The furthest deadline a task may have.
    #[serde(with = "humantime_serde", default = "defaults::max_task_lifetime")]
    pub max_task_lifetime: Duration,
    #[serde(default = "defaults::max_grants")]
    pub max_grants_per_request: usize,
    /// The longest Writ waits for one provider call (mint, renew, revoke);
    /// a call that takes longer counts as the provider being unavailable.
    #[serde(with = "humantime_serde", default = "defaults::provider_timeout")]
    pub provider_timeout: Duration,
    /// How long `CloseTask` waits for revocations before it answers.
    #[serde(with = "humantime_serde", default = "defaults::close_wait")]
    pub close_wait: Duration,
    /// Minimum time between two JWKS refreshes of one issuer caused by an
    /// unknown `kid`.
    #[serde(with = "humantime_serde", default = "defaults::jwks_refresh_interval")]
    pub jwks_refresh_interval: Duration,
    /// How long fetched JWKS are trusted before they are fetched again.
    #[serde(with = "humantime_serde", default = "defaults::jwks_max_age")]
    pub jwks_max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_token_bytes: defaults::max_token_bytes(),
            clock_leeway: defaults::clock_leeway(),
            max_task_lifetime: defaults::max_task_lifetime(),
            max_grants_per_request: defaults::max_grants(),
            provider_timeout: defaults::provider_timeout(),
            close_wait: defaults::close_wait(),
            jwks_refresh_interval: defaults::jwks_refresh_interval(),
            jwks_max_age: defaults::jwks_max_age(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines file, appended to.
    pub path: PathBuf,
    /// 32+ random bytes keying the hashes that stand in for credential ids.
    pub key_file: PathBuf,
    /// A PKCS#8 Ed25519 key (`writ audit keygen` makes one) that signs the
    /// chain's head: every `checkpoint_interval` and at shutdown. Without
    /// it the chain is not signed.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    #[serde(default = "defaults::checkpoint_interval", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// The name this replica's checkpoints carry; every replica needs its
    /// own. Defaults to the host name.
    #[serde(default = "defaults::replica")]
    pub replica: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealingConfig {
    /// The first key seals; every key opens. Each file holds 32 raw bytes.
    pub keys: Vec<SealingKeyConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealingKeyConfig {
    pub id: String,
    pub file: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Cedar policy files, or directories of `*.cedar` files.
    pub paths: Vec<PathBuf>,
    /// Reload the policy files on SIGHUP (they can always be reloaded
    /// through `PolicyService`).
    #[serde(default = "defaults::reload_on_sighup")]
    pub reload_on_sighup: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// Base retry delay, doubled per attempt; each delay is then scaled by a
    /// random factor in [0.5, 1] (jitter).
    #[serde(with = "humantime_serde", default = "defaults::min_backoff")]
    pub min_backoff: Duration,
    #[serde(with = "humantime_serde", default = "defaults::max_backoff")]
    pub max_backoff: Duration,
    /// How long a worker owns a claimed revocation before another may retry.
    #[serde(with = "humantime_serde", default = "defaults::claim_timeout")]
    pub claim_timeout: Duration,
    /// Revocations in flight at once.
    #[serde(default = "defaults::revocation_concurrency")]
    pub concurrency: usize,
    /// A pending lease older than this is treated as abandoned and revoked.
    #[serde(with = "humantime_serde", default = "defaults::pending_timeout")]
    pub pending_timeout: Duration,
    /// Longest a background worker sleeps before it looks again.
    #[serde(with = "humantime_serde", default = "defaults::poll_interval")]
    pub poll_interval: Duration,
    /// The attempt from which a revocation the provider says can never
    /// succeed is given up (the lease becomes failed) instead of retried;
    /// the earlier ones are retried, in case the provider was wrong once.
    #[serde(default = "defaults::give_up_after")]
    pub give_up_after: u32,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self {
            min_backoff: defaults::min_backoff(),
            max_backoff: defaults::max_backoff(),
            claim_timeout: defaults::claim_timeout(),
            concurrency: defaults::revocation_concurrency(),
            pending_timeout: defaults::pending_timeout(),
            poll_interval: defaults::poll_interval(),
            give_up_after: defaults::give_up_after(),
        }
    }
}

/// A trusted issuer of workload identity tokens.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Compared exactly with the token's `iss`.
    pub issuer: String,
    /// Where the keys are; when absent, OIDC discovery at
    /// `<issuer>/.well-known/openid-configuration` names it.
    pub jwks_url: Option<String>,
    /// A subset of RS256, PS256, ES256, EdDSA; all four when absent.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// CA certificates (PEM) the issuer's discovery and JWKS endpoints are
    /// verified against, instead of the public web PKI: a Kubernetes API
    /// server's own CA (`/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A file holding a bearer token sent when fetching discovery and JWKS,
    /// read again for every fetch: Writ's own projected service-account
    /// token, where the API server serves its keys to authenticated callers
    /// only.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// How an identity is recognised: an exact subject, or claim values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityMatch {
    pub issuer: String,
    pub subject: Option<String>,
    /// Every listed claim must equal the given string.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub name: String,
    /// Who answers for the agent: required.
    pub owner: String,
    /// The team it belongs to, for inventory and for suspending a team's
    /// agents at once.
    #[serde(default)]
    pub team: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "defaults::risk_tier")]
    pub risk_tier: String,
    pub identity: IdentityMatch,
}

impl AgentConfig {
    /// The agent as the store keeps it: managed by configuration, made by
    /// `configuration` at `at`.
    pub fn record(&self, at: chrono::DateTime<chrono::Utc>) -> crate::model::AgentRecord {
        crate::model::AgentRecord {
            name: self.name.clone(),
            owner: self.owner.clone(),
            team: self.team.clone(),
            description: self.description.clone(),
            risk_tier: self.risk_tier.clone(),
            identity: self.identity.clone(),
            managed_by: crate::model::ManagedBy::Configuration,
            created_at: at,
            created_by: CONFIGURATION.into(),
            updated_at: at,
            updated_by: CONFIGURATION.into(),
            revision: 1,
            retired: None,
        }
    }
}

/// Who made the changes configuration makes, in records and evidence.
pub const CONFIGURATION: &str = "configuration";

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ServiceRole {
    /// Opens and closes tasks.
    Workflow,
    /// Lists leases and sightings.
    Operator,
    /// Introspects tokens Writ signed.
    ResourceServer,
    /// Owns the policy: reloads it and reads which set is in force
    /// (distinct from `operator`).
    PolicyAdmin,
    /// Decides step-up approval requests of the groups it is in.
    Approver,
    /// Reads the evidence: exports audit records (nothing else).
    Auditor,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    pub roles: Vec<ServiceRole>,
    /// The workload token it authenticates with; at least one of this and
    /// `certificate`.
    #[serde(default)]
    pub identity: Option<IdentityMatch>,
    /// The client certificate it may authenticate with instead (mTLS).
    #[serde(default)]
    pub certificate: Option<crate::tls::CertificateMatch>,
}

/// `[providers.<name>]`: a `kind` and the settings that kind reads. The
/// settings may hold secrets (a connection string with a password), so
/// `Debug` shows only their names.
#[derive(Clone, Deserialize)]
pub struct ProviderConfig {
    pub kind: String,
    #[serde(flatten)]
    pub settings: toml::Table,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<&String> = self.settings.keys().collect();
        f.debug_struct("ProviderConfig").field("kind", &self.kind).field("settings", &fields).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads, applies environment overrides, resolves relative paths
    /// against the file's directory, and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        config.apply_env()?;
        if let Some(base) = path.parent() {
            config.resolve_paths(base);
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self) -> Result<(), ConfigError> {
        if let Ok(value) = std::env::var(ENV_LISTEN) {
            self.server.listen =
                value.parse().map_err(|e| ConfigError::Invalid(format!("{ENV_LISTEN}={value:?}: {e}")))?;
        }
        if let Ok(value) = std::env::var(ENV_HTTP_LISTEN) {
            self.server.http_listen = value
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("{ENV_HTTP_LISTEN}={value:?}: {e}")))?;
        }
        self.apply_deployment_env();
        Ok(())
    }

    /// The overrides that say where a replica keeps its state, also honoured
    /// by `writ dev`: `WRIT_REDIS_URL`, `WRIT_AUDIT_PATH` and `WRIT_REPLICA`. Values are
    /// checked by [`Config::validate`] like any other.
    pub fn apply_deployment_env(&mut self) {
        if let Ok(url) = std::env::var(ENV_REDIS_URL) {
            let namespace = match &self.store {
                StoreConfig::Redis(redis) => Some(redis.namespace.clone()),
                StoreConfig::Embedded { .. } => None,
            };
            let mut redis = crate::store::RedisConfig::single(url);
            if let Some(namespace) = namespace {
                redis.namespace = namespace;
            }
            self.store = StoreConfig::Redis(redis);
        }
        if let Ok(path) = std::env::var(ENV_AUDIT_PATH) {
            self.audit.path = PathBuf::from(path);
        }
        if let Ok(replica) = std::env::var(ENV_REPLICA) {
            self.audit.replica = replica;
        }
    }

    /// Makes relative paths relative to the configuration file.
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        if let Some(tls) = &mut self.server.tls {
            tls.resolve_paths(base);
        }
        for issuer in &mut self.issuers {
            for path in [&mut issuer.ca_file, &mut issuer.token_file].into_iter().flatten() {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
        resolve(&mut self.audit.path);
        resolve(&mut self.audit.key_file);
        if let Some(path) = &mut self.audit.signing_key_file {
            resolve(path);
        }
        self.sealing.keys.iter_mut().for_each(|key| resolve(&mut key.file));
        self.policy.paths.iter_mut().for_each(resolve);
        self.approvals.webhooks.iter_mut().for_each(|hook| resolve(&mut hook.secret_file));
        match &mut self.store {
            StoreConfig::Embedded { path } => resolve(path),
            StoreConfig::Redis(redis) => redis.resolve_paths(base),
        }
        for provider in self.providers.values_mut() {
            for field in
                ["key_file", "token_file", "admin_password_file", "client_secret_file", "tls_ca_file"]
            {
                if let Some(toml::Value::String(value)) = provider.settings.get_mut(field)
                    && Path::new(value.as_str()).is_relative()
                {
                    *value = base.join(&*value).display().to_string();
                }
            }
        }
    }

    /// Checks what can be checked without touching the network or disk.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        match (&self.server.tls, self.server.plaintext) {
            (None, false) => {
                return invalid(
                    "server: TLS is required: set [server.tls] cert_file and key_file, or \
                     server.plaintext = true to serve without it (development on loopback only)"
                        .into(),
                );
            }
            (Some(_), true) => {
                return invalid("server: [server.tls] and server.plaintext = true exclude each other".into());
            }
            (Some(tls), false) => tls.validate().map_err(ConfigError::Invalid)?,
            (None, true) => {}
        }
        self.telemetry.validate().map_err(ConfigError::Invalid)?;
        if self.server.audience.trim().is_empty() {
            return invalid("server.audience must not be empty".into());
        }
        if let StoreConfig::Redis(redis) = &self.store {
            redis.validate().map_err(|e| ConfigError::Invalid(format!("store: {e}")))?;
        }
        if self.sealing.keys.is_empty() {
            return invalid("sealing.keys needs at least one key".into());
        }
        if self.policy.paths.is_empty() {
            return invalid("policy.paths needs at least one file or directory".into());
        }
        if !(256..=MAX_TOKEN_BYTES).contains(&self.limits.max_token_bytes) {
            return invalid(format!(
                "limits.max_token_bytes must be 256 to {MAX_TOKEN_BYTES} (256 KiB), the largest token both \
                 listeners can receive"
            ));
        }
        let durations = [
            ("limits.max_task_lifetime", self.limits.max_task_lifetime),
            ("limits.jwks_refresh_interval", self.limits.jwks_refresh_interval),
            ("revocation.claim_timeout", self.revocation.claim_timeout),
            ("revocation.pending_timeout", self.revocation.pending_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, value)| value.as_secs() < 1) {
            return invalid(format!("{name} must be at least 1s"));
        }
        // Upper bounds keep every `now + duration` far from overflow.
        const DAY: u64 = 24 * 3600;
        let bounded = [
            ("limits.max_task_lifetime", self.limits.max_task_lifetime, 366 * DAY),
            ("limits.clock_leeway", self.limits.clock_leeway, 3600),
            ("limits.provider_timeout", self.limits.provider_timeout, 3600),
            ("limits.close_wait", self.limits.close_wait, 3600),
            ("limits.jwks_refresh_interval", self.limits.jwks_refresh_interval, DAY),
            ("limits.jwks_max_age", self.limits.jwks_max_age, 30 * DAY),
            ("revocation.max_backoff", self.revocation.max_backoff, DAY),
            ("revocation.claim_timeout", self.revocation.claim_timeout, DAY),
            ("revocation.pending_timeout", self.revocation.pending_timeout, DAY),
            ("revocation.poll_interval", self.revocation.poll_interval, 3600),
            ("server.shutdown_grace", self.server.shutdown_grace, 3600),
        ];
        if let Some((name, _, max)) = bounded.iter().find(|(_, value, max)| value.as_secs() > *max) {
            return invalid(format!("{name} must be at most {max}s"));
        }
        if self.limits.provider_timeout.is_zero() {
            return invalid("limits.provider_timeout must be positive".into());
        }
        if self.revocation.poll_interval < Duration::from_millis(10) {
            return invalid("revocation.poll_interval must be at least 10ms".into());
        }
        let mut key_ids = std::collections::HashSet::new();
        if let Some(key) = self.sealing.keys.iter().find(|key| key.id.is_empty() || !key_ids.insert(&key.id))
        {
            return invalid(format!("sealing key id {:?} is empty or used twice", key.id));
        }
        if self.revocation.give_up_after == 0 {
            return invalid("revocation.give_up_after must be at least 1".into());
        }
        if self.revocation.concurrency == 0 {
            return invalid("revocation.concurrency must be at least 1".into());
        }
        if self.revocation.min_backoff.is_zero() || self.revocation.min_backoff > self.revocation.max_backoff
        {
            return invalid("revocation.min_backoff must be within (0, max_backoff]".into());
        }
        let mut issuers = std::collections::HashSet::new();
        for issuer in &self.issuers {
            if !issuers.insert(issuer.issuer.as_str()) {
                return invalid(format!("issuer {:?} is listed twice", issuer.issuer));
            }
            for algorithm in &issuer.algorithms {
                if crate::identity::parse_algorithm(algorithm).is_none() {
                    return invalid(format!(
                        "issuer {:?}: algorithm {algorithm:?} is not one of RS256, PS256, ES256, EdDSA",
                        issuer.issuer
                    ));
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        let principals =
            self.agents.iter().map(|agent| &agent.name).chain(self.services.iter().map(|s| &s.name));
        for name in principals {
            if name.trim().is_empty() || !names.insert(name.as_str()) {
                return invalid(format!("principal name {name:?} is empty or used twice"));
            }
        }
        let identities = self.agents.iter().map(|agent| (&agent.name, &agent.identity)).chain(
            self.services.iter().filter_map(|service| Some((&service.name, service.identity.as_ref()?))),
        );
        for (name, identity) in identities {
            if !issuers.contains(identity.issuer.as_str()) {
                return invalid(format!(
                    "principal {name:?} names issuer {:?}, which is not in [[issuers]]",
                    identity.issuer
                ));
            }
            if identity.subject.is_none() && identity.claims.is_empty() {
                return invalid(format!("principal {name:?} needs identity.subject or identity.claims"));
            }
        }
        crate::audit::checkpoint::check_replica(&self.audit.replica)
            .map_err(|e| ConfigError::Invalid(format!("audit.replica: {e}")))?;
        if self.audit.checkpoint_interval < Duration::from_secs(1)
            || self.audit.checkpoint_interval.as_secs() > 24 * 3600
        {
            return invalid("audit.checkpoint_interval must be 1s to 24h".into());
        }
        if let Some(agent) = self.agents.iter().find(|agent| agent.owner.trim().is_empty()) {
            return invalid(format!(
                "agent {:?} has no owner; every agent needs one who answers for it",
                agent.name
            ));
        }
        for service in &self.services {
            if service.roles.is_empty() {
                return invalid(format!("service {:?} has no roles", service.name));
            }
            if service.identity.is_none() && service.certificate.is_none() {
                return invalid(format!(
                    "service {:?} needs identity (a workload token) or certificate (mTLS)",
                    service.name
                ));
            }
            if let Some(certificate) = &service.certificate {
                certificate
                    .validate()
                    .map_err(|e| ConfigError::Invalid(format!("service {:?}: {e}", service.name)))?;
                if self.server.tls.as_ref().is_none_or(|tls| tls.client_ca_file.is_none()) {
                    return invalid(format!(
                        "service {:?} is identified by a client certificate, which needs \
                         server.tls.client_ca_file (the CA its certificate chains to)",
                        service.name
                    ));
                }
            }
        }
        self.approvals.validate(&self.services)?;
        for name in self.providers.keys() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return invalid(format!("provider name {name:?} must be letters, digits, - or _"));
            }
        }
        Ok(())
    }
}

pub(crate) mod defaults {
    use std::time::Duration;

    pub fn checkpoint_interval() -> Duration {
        Duration::from_secs(60)
    }
    /// The host name (a pod's name on Kubernetes), or `writ` where it
    /// cannot be read. A host name that is not a valid replica name fails
    /// validation (never silently replaced: two replicas would share it).
    pub fn replica() -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "writ".into())
    }

    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_token_bytes() -> usize {
        8 * 1024
    }
    pub fn clock_leeway() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_task_lifetime() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn max_grants() -> usize {
        8
    }
    pub fn provider_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn close_wait() -> Duration {
        Duration::from_secs(2)
    }
    pub fn jwks_refresh_interval() -> Duration {
        Duration::from_secs(10)
    }
    pub fn jwks_max_age() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn min_backoff() -> Duration {
        Duration::from_millis(500)
    }
    pub fn max_backoff() -> Duration {
        Duration::from_secs(300)
    }
    pub fn claim_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn reload_on_sighup() -> bool {
        true
    }
    pub fn give_up_after() -> u32 {
        3
    }
    pub fn revocation_concurrency() -> usize {
        64
    }
    pub fn pending_timeout() -> Duration {
        Duration::from_secs(120)
    }
    pub fn poll_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn approval_timeout() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn max_pending_approvals() -> usize {
        20
    }
    pub fn risk_tier() -> String {
        "medium".into()
    }
}
