//! Building the provider: discovery, the client secret, and what must never
//! show in `Debug` output.

use std::time::Duration;

use super::*;
use crate::peer::Options;

async fn connect_error(settings: OAuth2Config) -> String {
    match OAuth2Provider::connect(settings).await {
        Err(message) => message,
        Ok(provider) => panic!("expected an error, built {provider:?}"),
    }
}

#[tokio::test]
async fn endpoints_are_discovered_from_the_issuer() {
    let server = AuthServer::start(Options::default()).await;
    let provider = provider(&server).await;
    let endpoints = provider.endpoints();
    assert_eq!(endpoints.token.as_str(), server.token_endpoint);
    assert_eq!(endpoints.revocation.as_ref().map(|url| url.as_str()), server.revocation_endpoint.as_deref());
    // oidc-provider serves OpenID metadata only: the RFC 8414 place was
    // tried first and the OpenID one used.
    assert_eq!(
        endpoints.metadata.as_ref().unwrap().as_str(),
        format!("{}/.well-known/openid-configuration", server.issuer)
    );
    provider.health().await.unwrap();

    let no_revocation = AuthServer::start(Options { revocation: false, ..Options::default() }).await;
    let provider = super::provider(&no_revocation).await;
    assert!(provider.endpoints().revocation.is_none());
}

#[tokio::test]
async fn discovery_refuses_metadata_of_another_issuer_and_an_absent_server() {
    let server = AuthServer::start(Options::default()).await;
    let secret = SecretFile::new(WRIT_SECRET);
    // The same server under another name: its metadata names 127.0.0.1.
    let mut renamed = discovered(&server, &secret, "");
    renamed.issuer = Some(server.issuer.replace("127.0.0.1", "localhost"));
    let message = connect_error(renamed).await;
    assert!(message.contains(&format!("is for issuer \"{}\"", server.issuer)), "{message}");

    let mut absent = discovered(&server, &secret, "");
    absent.issuer = Some("http://127.0.0.1:1".into());
    let message = connect_error(absent).await;
    assert!(message.contains("cannot fetch the metadata of issuer http://127.0.0.1:1/"), "{message}");
}

#[tokio::test]
async fn the_client_secret_comes_from_the_environment_or_a_file_and_must_be_there() {
    let server = AuthServer::start(Options::default()).await;
    let secret = SecretFile::new(WRIT_SECRET);

    let mut unset = discovered(&server, &secret, "");
    unset.client_secret_file = None;
    unset.client_secret_env = Some("WRIT_TEST_OAUTH2_SECRET_THAT_IS_NOT_SET".into());
    assert_eq!(
        connect_error(unset).await,
        "client_secret_env: WRIT_TEST_OAUTH2_SECRET_THAT_IS_NOT_SET is not set"
    );

    let empty = SecretFile::new("  ");
    let message = connect_error(discovered(&server, &empty, "")).await;
    assert!(message.starts_with("client_secret_file") && message.ends_with("is empty"), "{message}");

    let mut missing = discovered(&server, &secret, "");
    missing.client_secret_file = Some("/nonexistent/writ/secret".into());
    assert!(connect_error(missing).await.starts_with("client_secret_file /nonexistent/writ/secret:"));

    // A wrong secret is the operator's to fix, not a refusal of the agent.
    let wrong = SecretFile::new("not-the-secret");
    let provider = OAuth2Provider::connect(discovered(&server, &wrong, "")).await.unwrap();
    match provider.mint(&request("reader", &["orders:read"], Duration::from_secs(600))).await {
        Err(ProviderError::Failed(message)) => {
            assert!(message.contains("invalid_client") && !message.contains("not-the-secret"), "{message}")
        }
        other => panic!("a wrong client secret is a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_settings_are_refused_before_any_request() {
    let secret = SecretFile::new(WRIT_SECRET);
    let base = format!("client_id = \"writ\"\nclient_secret_file = \"{}\"\n", secret.path());
    let cases = [
        (
            "token_url = \"http://as.example.com/token\"",
            "token_url http://as.example.com/token must use https",
        ),
        ("issuer = \"https://as.example.com\"\ntoken_url = \"https://as.example.com/t\"", "not both"),
        ("token_url = \"https://writ:s3cret@as.example.com/token\"", "must not carry credentials"),
    ];
    for (endpoints, expected) in cases {
        let settings = config(&format!("{endpoints}\n{base}{}", roles()));
        let message = connect_error(settings).await;
        assert!(message.contains(expected) && !message.contains("s3cret"), "{expected}: {message}");
    }
    let unknown: Result<OAuth2Config, _> = toml::from_str(&format!(
        "token_url = \"https://as.example.com/t\"\nclient_secret = \"x\"\n{base}{}",
        roles()
    ));
    assert!(unknown.unwrap_err().to_string().contains("unknown field `client_secret`"));
}

#[tokio::test]
async fn debug_output_never_shows_the_secret_or_a_token() {
    let server = AuthServer::start(Options::default()).await;
    let provider = provider(&server).await;
    let request = request("reader", &["orders:read"], Duration::from_secs(600));
    let minted = provider.mint(&request).await.unwrap();
    let printed = format!("{provider:?} {minted:?} {:?}", minted.handle);
    assert!(printed.contains("OAuth2Provider") && printed.contains(&server.token_endpoint), "{printed}");
    for secret in [WRIT_SECRET, token_of(&minted)] {
        assert!(!printed.contains(secret), "{printed}");
    }
}
