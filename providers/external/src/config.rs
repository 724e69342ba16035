use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[providers.<name>]` with `kind = "external"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Where the plugin listens: `http://host:port`, or `unix:/path/to.sock`
    /// for a Unix domain socket. `https` is not supported yet.
    pub endpoint: String,
    /// The deadline of each call, and of connecting.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// A file holding a token sent to the plugin as `authorization: Bearer
    /// <token>` on every call. The path is not secret; the token is read at
    /// start and never printed.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Where to reach the plugin, parsed from [`ExternalConfig::endpoint`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Http(String),
    Unix(PathBuf),
}

impl ExternalConfig {
    /// A config with the default timeout and no token.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self { endpoint: endpoint.into(), timeout: default_timeout(), token_file: None }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.target()?;
        if self.timeout.is_zero() {
            return Err("timeout must be positive".into());
        }
        if self.token_file.as_ref().is_some_and(|path| path.as_os_str().is_empty()) {
            return Err("token_file must not be empty when set".into());
        }
        Ok(())
    }

    pub(crate) fn target(&self) -> Result<Target, String> {
        let endpoint = self.endpoint.trim();
        if let Some(path) = endpoint.strip_prefix("unix:") {
            // Accept both `unix:/run/p.sock` and `unix:///run/p.sock`.
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.starts_with('/') {
                return Err(format!("endpoint {endpoint:?}: a unix socket path must be absolute"));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if endpoint.starts_with("http://") {
            return Ok(Target::Http(endpoint.to_string()));
        }
        if endpoint.starts_with("https://") {
            // Not built with TLS yet: say so now rather than fail to connect.
            return Err(format!(
                "endpoint {endpoint:?}: https is not supported yet; use a unix socket, localhost, or a local mTLS sidecar"
            ));
        }
        Err(format!("endpoint {endpoint:?}: expected http://host:port or unix:/path"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_rejects_unknown_fields() {
        let config: ExternalConfig =
            serde_json::from_str(r#"{"endpoint": "http://127.0.0.1:7600"}"#).unwrap();
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert!(config.token_file.is_none());
        config.validate().unwrap();
        let typo = serde_json::from_str::<ExternalConfig>(r#"{"endpoint": "http://x:1", "tiemout": "1s"}"#);
        assert!(typo.is_err());
        let config: ExternalConfig =
            serde_json::from_str(r#"{"endpoint": "http://x:1", "timeout": "250ms", "token_file": "/t"}"#)
                .unwrap();
        assert_eq!(config.timeout, Duration::from_millis(250));
    }

    #[test]
    fn endpoints() {
        let target = |endpoint: &str| ExternalConfig::new(endpoint).target();
        assert_eq!(target("http://127.0.0.1:7600").unwrap(), Target::Http("http://127.0.0.1:7600".into()));
        assert_eq!(target("unix:/run/p.sock").unwrap(), Target::Unix("/run/p.sock".into()));
        assert_eq!(target("unix:///run/p.sock").unwrap(), Target::Unix("/run/p.sock".into()));
        assert!(target("unix:relative.sock").is_err());
        assert!(target("127.0.0.1:7600").is_err());
        assert!(target("https://plugin:7600").is_err());
        let mut config = ExternalConfig::new("http://x:1");
        config.timeout = Duration::ZERO;
        assert!(config.validate().is_err());
    }
}
