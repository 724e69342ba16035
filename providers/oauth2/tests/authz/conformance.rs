//! The shared conformance suite, in each mode and with each client
//! authentication, checked at the server by introspection.

use chrono::Utc;
use writ_provider_api::CredentialShape;
use writ_provider_api::conformance;

use super::*;
use crate::peer::{Issuer, Options};

#[tokio::test]
async fn client_credentials_pass_the_conformance_suite() {
    let server = AuthServer::start(Options::default()).await;
    let provider = provider(&server).await;
    assert_eq!(provider.describe().shape, CredentialShape::Revocable);
    conformance::run(provider, grant("reader", &["orders:read"]), &Introspection(&server), Utc::now()).await;
}

#[tokio::test]
async fn token_exchange_passes_the_conformance_suite() {
    let issuer = Issuer::start(600).await;
    let server = AuthServer::start(Options { subject_issuer: Some(&issuer), ..Options::default() }).await;
    let provider = Arc::new(WithSubject {
        inner: provider(&server).await,
        subject_token: issuer.workload_token().await,
    });
    conformance::run(
        provider,
        grant("on-behalf", &["orders:read", "orders:write"]),
        &Introspection(&server),
        Utc::now(),
    )
    .await;
}

#[tokio::test]
async fn client_secret_post_with_explicit_endpoints_passes_the_conformance_suite() {
    let issuer = Issuer::start(600).await;
    let server = AuthServer::start(Options {
        auth_method: "client_secret_post",
        subject_issuer: Some(&issuer),
        ..Options::default()
    })
    .await;
    let secret = SecretFile::new(WRIT_SECRET);
    let settings = explicit(&server, &secret, "client_auth = \"client_secret_post\"");
    let provider = Arc::new(OAuth2Provider::connect(settings).await.unwrap());
    assert!(provider.endpoints().metadata.is_none());
    conformance::run(
        provider.clone(),
        grant("billing", &["billing:read"]),
        &Introspection(&server),
        Utc::now(),
    )
    .await;
    let exchanging = Arc::new(WithSubject { inner: provider, subject_token: issuer.workload_token().await });
    conformance::run(exchanging, grant("on-behalf", &["orders:read"]), &Introspection(&server), Utc::now())
        .await;
}

/// Without a revocation endpoint the same suite holds, minus "stops working
/// once revoked": revoke records intent, the token lives to its expiry.
#[tokio::test]
async fn expiry_only_passes_the_conformance_suite() {
    let server = AuthServer::start(Options { ttl: 120, revocation: false, ..Options::default() }).await;
    let provider = provider(&server).await;
    assert_eq!(provider.describe().shape, CredentialShape::ExpiryOnly);
    assert!(provider.endpoints().revocation.is_none());
    conformance::run(provider, grant("reader", &["orders:write"]), &Introspection(&server), Utc::now()).await;
}
