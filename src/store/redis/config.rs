//! How to reach Redis, from configuration.

use std::path::PathBuf;
use std::time::Duration;

use redis::IntoConnectionInfo;
use serde::Deserialize;

/// The Redis lease store's settings: one node (`url`) or a Redis Cluster
/// (`cluster_nodes`), and a namespace, so that several Writ deployments can
/// share one Redis.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// A single node (or a proxy in front of a primary), e.g.
    /// `redis://:password@10.0.0.5:6379/0`.
    #[serde(default)]
    pub url: Option<String>,
    /// Some nodes of a Redis Cluster, e.g. `redis://10.0.0.5:6379`; the rest
    /// of the cluster is discovered from them.
    #[serde(default)]
    pub cluster_nodes: Vec<String>,
    /// Every key starts `writ:{<namespace>`. The braces are a Redis
    /// Cluster hash tag: with one shard, all of one deployment's keys share
    /// one slot.
    #[serde(default = "defaults::namespace")]
    pub namespace: String,
    /// How many hash tags (shards) the namespace's tasks, leases and
    /// approval requests are spread over: 1 (the default) keeps them in one
    /// slot; more spreads the writes over a Redis Cluster's primaries (a
    /// few per primary is a good start). Every replica must say the same:
    /// the namespace records its count, and a store configured otherwise
    /// refuses to open. `writ store reshard` moves a namespace to another
    /// count (docs/operations.md, "Sharding on Redis").
    #[serde(default = "defaults::shards")]
    pub shards: u16,
    /// How long to wait for a TCP connection (and handshake) to a node.
    #[serde(with = "humantime_serde", default = "defaults::connect_timeout")]
    pub connect_timeout: Duration,
    /// How long to wait for the answer to one command.
    #[serde(with = "humantime_serde", default = "defaults::response_timeout")]
    pub response_timeout: Duration,
    /// The most one store call may take, waiting for a reconnection or a
    /// cluster redirect included. Past it the call fails `Unavailable`: with
    /// Redis down, Writ refuses quickly rather than hangs.
    #[serde(with = "humantime_serde", default = "defaults::operation_timeout")]
    pub operation_timeout: Duration,
    /// How long a revoked or failed lease stays in Redis (readable, listed)
    /// after it finished. Then the expiry sweeper forgets it: its record and
    /// index entries go, so Redis holds what is live plus this much
    /// history. The audit log is the lasting record.
    #[serde(with = "humantime_serde", default = "defaults::finished_retention")]
    pub finished_retention: Duration,
    /// With `rediss://` URLs: CA certificates (PEM) Redis's certificate must
    /// chain to, instead of the system's roots. The host name in the URL
    /// must match the certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// With `rediss://` URLs: a client certificate (PEM) to present, for a
    /// Redis with `tls-auth-clients yes`; needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PEM), readable by Writ's user only.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl RedisConfig {
    /// A single node at `url`, with the defaults.
    pub fn single(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            cluster_nodes: Vec::new(),
            namespace: defaults::namespace(),
            shards: defaults::shards(),
            connect_timeout: defaults::connect_timeout(),
            response_timeout: defaults::response_timeout(),
            operation_timeout: defaults::operation_timeout(),
            finished_retention: defaults::finished_retention(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }

    /// Whether the nodes are reached over TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.url.iter().chain(&self.cluster_nodes).any(|url| url.starts_with("rediss:"))
    }

    /// Resolves the certificate paths against `base` (the configuration
    /// file's directory).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        for path in
            [&mut self.ca_file, &mut self.client_cert_file, &mut self.client_key_file].into_iter().flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// A Redis Cluster reached through `nodes`, with the defaults.
    pub fn cluster(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { url: None, cluster_nodes: nodes.into_iter().map(Into::into).collect(), ..Self::single("") }
    }

    /// Checks what can be checked without the network. The message names
    /// the field, relative to the store's table.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.url, self.cluster_nodes.is_empty()) {
            (Some(_), false) => return Err("set url or cluster_nodes, not both".into()),
            (None, true) => return Err("set url (one node) or cluster_nodes (Redis Cluster)".into()),
            _ => {}
        }
        let urls: Vec<&String> = self.url.iter().chain(&self.cluster_nodes).collect();
        for url in &urls {
            if url.starts_with("rediss:") && url.contains('#') {
                // The redis crate reads `#insecure` as "skip verification".
                return Err(format!(
                    "{:?}: a rediss:// URL with a fragment (#insecure) would not verify Redis's \
                     certificate; remove it and set ca_file",
                    redact(url)
                ));
            }
            url.as_str().into_connection_info().map_err(|error| {
                format!("{:?} is not a usable Redis URL ({})", redact(url), error.category())
            })?;
        }
        if self.tls() && urls.iter().any(|url| !url.starts_with("rediss:")) {
            return Err("use rediss:// for every node or for none".into());
        }
        if !self.tls() && (self.ca_file.is_some() || self.client_cert_file.is_some()) {
            return Err("ca_file and client_cert_file need rediss:// URLs (TLS)".into());
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err("client_cert_file and client_key_file go together".into());
        }
        // An empty tag (`{}`) would hash the whole key, scattering the
        // namespace over every slot; a brace would end the tag early.
        if self.namespace.is_empty() || self.namespace.contains(['{', '}']) {
            return Err("namespace must be non-empty and contain no { or }".into());
        }
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            return Err(format!("shards must be between 1 and {MAX_SHARDS}"));
        }
        let timeouts = [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("operation_timeout", self.operation_timeout),
            ("finished_retention", self.finished_retention),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, timeout)| timeout.is_zero()) {
            return Err(format!("{name} must be more than zero"));
        }
        Ok(())
    }
}

/// Passwords in URLs are not printed.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(redact))
            .field("cluster_nodes", &self.cluster_nodes.iter().map(|url| redact(url)).collect::<Vec<_>>())
            .field("namespace", &self.namespace)
            .field("shards", &self.shards)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("finished_retention", &self.finished_retention)
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .finish()
    }
}

/// `url` with any credentials (`user:password@`) replaced.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}<redacted>{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The most shards a namespace may have: far more than a cluster has
/// primaries, few enough that a sweep over all of them stays cheap.
pub const MAX_SHARDS: u16 = 1024;

mod defaults {
    use std::time::Duration;

    pub fn namespace() -> String {
        "writ".into()
    }

    pub fn shards() -> u16 {
        1
    }

    pub fn connect_timeout() -> Duration {
        Duration::from_millis(500)
    }

    pub fn response_timeout() -> Duration {
        Duration::from_millis(500)
    }

    pub fn operation_timeout() -> Duration {
        Duration::from_secs(1)
    }

    pub fn finished_retention() -> Duration {
        Duration::from_secs(24 * 60 * 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_refuses_unknown_fields() {
        let config: RedisConfig = toml::from_str(r#"url = "redis://127.0.0.1:6379""#).unwrap();
        assert_eq!(config.namespace, "writ");
        assert_eq!(config.operation_timeout, Duration::from_secs(1));
        config.validate().unwrap();
        let config: RedisConfig = toml::from_str(
            "cluster_nodes = [\"redis://a:7000\", \"redis://b:7000\"]\nnamespace = \"prod\"\n\
             response_timeout = \"250ms\"",
        )
        .unwrap();
        assert_eq!(config.response_timeout, Duration::from_millis(250));
        config.validate().unwrap();
        assert!(toml::from_str::<RedisConfig>("url = \"redis://x\"\nnamspace = \"typo\"").is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(RedisConfig::cluster(Vec::<String>::new()).validate().is_err(), "no server");
        let mut both = RedisConfig::single("redis://a:1");
        both.cluster_nodes.push("redis://b:1".into());
        assert!(both.validate().unwrap_err().contains("not both"));
        assert!(RedisConfig::single("http://a:1").validate().is_err());
        RedisConfig::single("rediss://a:1").validate().expect("TLS with the system's roots");
        assert!(RedisConfig::single("rediss://a:1/#insecure").validate().unwrap_err().contains("verify"));
        let mut mixed = RedisConfig::cluster(["rediss://a:1", "redis://b:1"]);
        assert!(mixed.validate().unwrap_err().contains("every node"));
        mixed.cluster_nodes.pop();
        mixed.client_cert_file = Some("c.pem".into());
        assert!(mixed.validate().unwrap_err().contains("together"));
        let plain = RedisConfig { ca_file: Some("ca.pem".into()), ..RedisConfig::single("redis://a:1") };
        assert!(plain.validate().unwrap_err().contains("rediss://"));
        let mut braces = RedisConfig::single("redis://a:1");
        braces.namespace = "a}b".into();
        assert!(braces.validate().unwrap_err().contains("namespace"));
        braces.namespace = String::new();
        assert!(braces.validate().is_err());
        let mut shards = RedisConfig::single("redis://a:1");
        shards.shards = 0;
        assert!(shards.validate().unwrap_err().contains("shards"));
        shards.shards = 1025;
        assert!(shards.validate().is_err());
        shards.shards = 12;
        shards.validate().unwrap();
        let mut zero = RedisConfig::single("redis://a:1");
        zero.operation_timeout = Duration::ZERO;
        assert!(zero.validate().unwrap_err().contains("operation_timeout"));
    }

    #[test]
    fn debug_hides_passwords() {
        let config = RedisConfig::single("redis://user:hunter2@db:6379/0");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis://<redacted>@db:6379/0"), "{shown}");
    }
}
