//! Runs the provider against the example Python plugin in
//! `tests/peers/external_provider` (started by `writ-test-peers`): the
//! conformance suite over TCP and a Unix socket, the error mapping, a
//! plugin that went away, and the bearer token. Needs `python3`; the plugin's
//! requirements are installed once if `grpc` is not importable.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use writ_provider_api::conformance::{self, Grant, Probe};
use writ_provider_api::{Credential, MintRequest, Provider, ProviderError};
use writ_provider_external::{ExternalConfig, ExternalProvider};
use writ_test_peers::plugin::PythonPlugin;

async fn connect(endpoint: &str) -> Arc<ExternalProvider> {
    Arc::new(ExternalProvider::connect(ExternalConfig::new(endpoint)).await.unwrap())
}

fn grant() -> Grant {
    Grant { role: "reports-read".into(), scopes: vec!["reports:read".into()] }
}

/// Asks the plugin's optional `Introspect` whether a key is live.
struct Introspect(Arc<ExternalProvider>);

#[async_trait]
impl Probe for Introspect {
    async fn is_live(&self, credential: &Credential, _request: &MintRequest) -> bool {
        self.0.introspect(credential).await.unwrap()
    }
}

#[tokio::test]
async fn passes_the_conformance_suite_over_tcp() {
    let plugin = PythonPlugin::start();
    let provider = connect(&plugin.endpoint).await;
    assert_eq!(provider.plugin_name(), "api-key");
    assert_eq!(provider.describe().kind, "external");
    conformance::run(provider.clone(), grant(), &Introspect(provider), Utc::now()).await;
}

#[tokio::test]
async fn passes_the_conformance_suite_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix:{}", dir.path().join("plugin.sock").display());
    let plugin = PythonPlugin::listening(&listen, &[]);
    let provider = connect(&plugin.endpoint).await;
    conformance::run(provider.clone(), grant(), &Introspect(provider), Utc::now()).await;
}

#[tokio::test]
async fn plugin_errors_map_to_refused_with_the_plugins_message() {
    let plugin = PythonPlugin::start();
    let provider = connect(&plugin.endpoint).await;
    let mut request = conformance::request(&grant(), Utc::now(), Duration::from_secs(60));
    request.role = "payroll-admin".into();
    match provider.mint(&request).await {
        Err(ProviderError::Refused(message)) => assert!(message.contains("payroll-admin"), "{message}"),
        other => panic!("an unknown role is refused, got {other:?}"),
    }
    // `intent` cannot ask the plugin, so it refuses from the cached roles.
    let lease = uuid::Uuid::now_v7();
    assert!(
        matches!(provider.intent(lease, "payroll-admin"), Err(ProviderError::Refused(m)) if m.contains("payroll-admin"))
    );
    let handle = provider.intent(lease, "reports-read").unwrap();
    assert_eq!(handle.expose(), format!("apikey_{}", lease.simple()));
}

#[tokio::test]
async fn a_plugin_that_is_down_is_unavailable() {
    let mut plugin = PythonPlugin::start();
    let provider = connect(&plugin.endpoint).await;
    provider.health().await.unwrap();
    plugin.stop();
    match provider.health().await {
        Err(error @ ProviderError::Unavailable(_)) => assert!(error.is_retryable()),
        other => panic!("a plugin that went away is unavailable, got {other:?}"),
    }
    let request = conformance::request(&grant(), Utc::now(), Duration::from_secs(60));
    assert!(matches!(provider.mint(&request).await, Err(ProviderError::Unavailable(_))));
    let error = ExternalProvider::connect(ExternalConfig::new(plugin.endpoint.clone())).await.unwrap_err();
    assert!(error.contains("cannot reach plugin"), "{error}");
}

#[tokio::test]
async fn the_bearer_token_is_sent_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "plugin-s3cret\n").unwrap();
    let plugin = PythonPlugin::start_with(0, &["--token-file", token_file.to_str().unwrap()]);

    let error = ExternalProvider::connect(ExternalConfig::new(plugin.endpoint.clone())).await.unwrap_err();
    assert!(error.contains("Unauthenticated"), "a call without the token fails: {error}");

    let mut config = ExternalConfig::new(plugin.endpoint.clone());
    config.token_file = Some(token_file);
    let provider = ExternalProvider::connect(config.clone()).await.unwrap();
    provider.health().await.unwrap();
    let printed = format!("{provider:?} {config:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("<redacted>"), "{printed}");
}
