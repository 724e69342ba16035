//! The AWS clients Writ calls with its own identity: STS always, IAM only
//! when a role revokes by `aws:TokenIssueTime`.
//!
//! Both share one HTTP client: hyper 1 with rustls on `ring` (no aws-lc),
//! trusting the system's root certificates. Writ's credentials are read
//! once, here, from the environment variables the configuration names.

use std::fmt;

use aws_sdk_sts::config::retry::RetryConfig;
use aws_sdk_sts::config::timeout::TimeoutConfig;
use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::config::AwsStsConfig;

/// Writ's own AWS credentials. The SDK keeps its copy zeroized on drop and
/// redacted in `Debug`; this type never prints the keys either.
pub struct OwnCredentials(Credentials);

impl fmt::Debug for OwnCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnCredentials")
            .field("access_key_id", &self.0.access_key_id())
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.0.session_token().map(|_| "<redacted>"))
            .finish()
    }
}

impl OwnCredentials {
    /// Reads the variables `config` names through `env` (the process
    /// environment in production). A missing access or secret key is an
    /// error naming the variable; an unset or empty session token means none.
    pub fn from_env(config: &AwsStsConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let required = |name: &str, field: &str| {
            env(name).filter(|value| !value.is_empty()).ok_or_else(|| {
                format!("the environment variable {name} ({field}) must hold Writ's own AWS credentials")
            })
        };
        let access_key_id = required(&config.access_key_id_env, "access_key_id_env")?;
        let secret_access_key = required(&config.secret_access_key_env, "secret_access_key_env")?;
        let session_token = env(&config.session_token_env).filter(|token| !token.is_empty());
        Ok(Self(Credentials::new(access_key_id, secret_access_key, session_token, None, "writ-environment")))
    }

    pub fn access_key_id(&self) -> &str {
        self.0.access_key_id()
    }
}

/// The HTTP client of both AWS clients.
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https()
}

fn timeouts(config: &AwsStsConfig) -> TimeoutConfig {
    TimeoutConfig::builder().connect_timeout(config.connect_timeout).operation_timeout(config.timeout).build()
}

pub fn sts(
    config: &AwsStsConfig,
    credentials: &OwnCredentials,
    http: SharedHttpClient,
) -> aws_sdk_sts::Client {
    let mut builder = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::v2026_01_12())
        .region(Region::new(config.region.clone()))
        .credentials_provider(credentials.0.clone())
        .http_client(http)
        .timeout_config(timeouts(config))
        .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts));
    if let Some(url) = &config.endpoint_url {
        builder = builder.endpoint_url(url.clone());
    }
    aws_sdk_sts::Client::from_conf(builder.build())
}

pub fn iam(
    config: &AwsStsConfig,
    credentials: &OwnCredentials,
    http: SharedHttpClient,
) -> aws_sdk_iam::Client {
    let mut builder = aws_sdk_iam::Config::builder()
        .behavior_version(aws_sdk_iam::config::BehaviorVersion::v2026_01_12())
        .region(aws_sdk_iam::config::Region::new(config.region.clone()))
        .credentials_provider(credentials.0.clone())
        .http_client(http)
        .timeout_config(timeouts(config))
        .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts));
    if let Some(url) = &config.iam_endpoint_url {
        builder = builder.endpoint_url(url.clone());
    }
    aws_sdk_iam::Client::from_conf(builder.build())
}
