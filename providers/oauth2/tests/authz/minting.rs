//! What a minted token is good for, as the resource server sees it, and
//! what the server refuses.

use std::time::Duration;

use chrono::Utc;

use super::*;
use crate::peer::{AGENT, Issuer, Options, WRIT_CLIENT};

fn refusal(result: Result<Minted, ProviderError>) -> String {
    match result {
        Err(ProviderError::Refused(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_token_carries_the_grants_scopes_and_the_roles_resource_only() {
    let server = AuthServer::start(Options::default()).await;
    let provider = provider(&server).await;

    let read = request("reader", &["orders:read"], Duration::from_secs(600));
    let minted = provider.mint(&read).await.unwrap();
    let seen = server.introspect(token_of(&minted)).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["scope"], "orders:read", "only the scope asked for, not the role's others: {seen}");
    assert_eq!(seen["aud"], ORDERS, "bound to the role's resource: {seen}");
    assert_eq!(seen["client_id"], WRIT_CLIENT);

    let both = request("reader", &["orders:read", "orders:write"], Duration::from_secs(600));
    let seen = server.introspect(token_of(&provider.mint(&both).await.unwrap())).await;
    assert_eq!(seen["scope"], "orders:read orders:write", "{seen}");

    let billing = request("billing", &["billing:read"], Duration::from_secs(600));
    let seen = server.introspect(token_of(&provider.mint(&billing).await.unwrap())).await;
    assert_eq!((&seen["aud"], &seen["scope"]), (&BILLING.into(), &"billing:read".into()), "{seen}");
}

#[tokio::test]
async fn a_grant_must_name_a_scope_the_role_offers() {
    let server = AuthServer::start(Options::default()).await;
    let provider = provider(&server).await;
    let message = refusal(provider.mint(&request("reader", &[], Duration::from_secs(600))).await);
    assert!(message.contains("at least one of its scopes: orders:read, orders:write"), "{message}");
    let message =
        refusal(provider.mint(&request("reader", &["billing:read"], Duration::from_secs(600))).await);
    assert!(message.contains("does not offer the scope \"billing:read\""), "{message}");
}

#[tokio::test]
async fn what_the_server_will_not_grant_is_refused_with_its_reason() {
    let server = AuthServer::start(Options::default()).await;
    let provider = provider(&server).await;
    let message =
        refusal(provider.mint(&request("admin", &["orders:admin"], Duration::from_secs(600))).await);
    assert!(
        message.contains("invalid_scope") && message.contains("requested scope is not allowed"),
        "{message}"
    );
    let message =
        refusal(provider.mint(&request("elsewhere", &["orders:read"], Duration::from_secs(600))).await);
    assert!(message.contains("invalid_target"), "{message}");
    assert!(!message.contains(WRIT_SECRET), "{message}");
}

#[tokio::test]
async fn an_exchanged_token_names_the_agent_as_its_subject() {
    let issuer = Issuer::start(600).await;
    let server = AuthServer::start(Options { subject_issuer: Some(&issuer), ..Options::default() }).await;
    let provider = provider(&server).await;

    let mut exchange = request("on-behalf", &["orders:write"], Duration::from_secs(600));
    exchange.subject_token = Some(issuer.workload_token().await);
    let minted = provider.mint(&exchange).await.unwrap();
    let seen = server.introspect(token_of(&minted)).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["sub"], AGENT, "the agent is the subject: {seen}");
    assert_eq!(seen["act"]["sub"], WRIT_CLIENT, "Writ is the actor: {seen}");
    assert_eq!(seen["scope"], "orders:write", "{seen}");
    assert_eq!(seen["aud"], ORDERS, "{seen}");
    assert!(minted.expires_at <= exchange.expires_at && minted.expires_at > Utc::now());

    // Client credentials tokens have no agent in them.
    let own = provider.mint(&request("reader", &["orders:read"], Duration::from_secs(600))).await.unwrap();
    assert!(server.introspect(token_of(&own)).await.get("sub").is_none());
}

#[tokio::test]
async fn an_exchange_without_a_good_subject_token_is_refused() {
    let issuer = Issuer::start(600).await;
    let stranger = Issuer::start(600).await;
    let server = AuthServer::start(Options { subject_issuer: Some(&issuer), ..Options::default() }).await;
    let provider = provider(&server).await;

    let none = request("on-behalf", &["orders:read"], Duration::from_secs(600));
    let message = refusal(provider.mint(&none).await);
    assert!(message.contains("\"on-behalf\"") && message.contains("carries none"), "{message}");

    // Signed by another issuer, and not a JWT at all.
    let foreign = stranger.workload_token().await;
    for (subject_token, code) in [
        (foreign, "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"),
        (SecretString::from("not-a-jwt".to_string()), "ERR_JWS_INVALID"),
    ] {
        let mut bad = request("on-behalf", &["orders:read"], Duration::from_secs(600));
        bad.subject_token = Some(subject_token.clone());
        let message = refusal(provider.mint(&bad).await);
        assert!(message.contains("invalid_grant") && message.contains(code), "{message}");
        assert!(!message.contains(subject_token.expose_secret()), "the token stays out of the message");
    }
}

#[tokio::test]
async fn an_expired_subject_token_is_refused() {
    let issuer = Issuer::start(1).await;
    let server = AuthServer::start(Options { subject_issuer: Some(&issuer), ..Options::default() }).await;
    let provider = provider(&server).await;
    let subject_token = issuer.workload_token().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut late = request("on-behalf", &["orders:read"], Duration::from_secs(600));
    late.subject_token = Some(subject_token);
    let message = refusal(provider.mint(&late).await);
    assert!(message.contains("invalid_grant") && message.contains("ERR_JWT_EXPIRED"), "{message}");
}

#[tokio::test]
async fn the_lease_never_outlives_the_token_it_cannot_revoke() {
    let server = AuthServer::start(Options { ttl: 60, revocation: false, ..Options::default() }).await;
    let provider = provider(&server).await;

    // The token dies first: the lease ends when it surely has.
    let long = request("reader", &["orders:read"], Duration::from_secs(600));
    let minted = provider.mint(&long).await.unwrap();
    let latest = Utc::now() + chrono::Duration::seconds(60);
    assert!(
        minted.expires_at <= latest && minted.expires_at > long.issued_at + chrono::Duration::seconds(59)
    );

    // The token would outlive the lease and nothing can end it early.
    let short = request("reader", &["orders:read"], Duration::from_secs(30));
    let message = refusal(provider.mint(&short).await);
    assert!(message.contains("60s") && message.contains("min_ttl"), "{message}");
}

#[tokio::test]
async fn a_revocable_token_that_outlives_its_lease_ends_with_it() {
    let server = AuthServer::start(Options { ttl: 3600, ..Options::default() }).await;
    let provider = provider(&server).await;
    let short = request("reader", &["orders:read"], Duration::from_secs(60));
    let minted = provider.mint(&short).await.unwrap();
    assert_eq!(minted.expires_at, short.expires_at, "the lease ends as asked; Writ revokes the token then");
    let long = request("reader", &["orders:read"], Duration::from_secs(900));
    let server_short = AuthServer::start(Options { ttl: 300, ..Options::default() }).await;
    let minted = super::provider(&server_short).await.mint(&long).await.unwrap();
    assert!(minted.expires_at < long.expires_at, "a token that dies first ends the lease first");
    assert!(minted.expires_at <= Utc::now() + chrono::Duration::seconds(300));
}

#[tokio::test]
async fn renewal_is_refused_and_the_token_keeps_working() {
    let server = AuthServer::start(Options::default()).await;
    let provider = provider(&server).await;
    let mint = request("reader", &["orders:read"], Duration::from_secs(300));
    let minted = provider.mint(&mint).await.unwrap();
    let mut longer = mint.clone();
    longer.expires_at += chrono::Duration::seconds(300);
    match provider.renew(&RenewRequest { mint: longer, handle: minted.handle.clone() }).await {
        Err(ProviderError::Refused(message)) => {
            assert!(message.contains("cannot be extended") && message.contains("new grant"), "{message}")
        }
        other => panic!("renewal is refused, got {other:?}"),
    }
    assert_eq!(server.introspect(token_of(&minted)).await["active"], true);
}
