//! Taking tokens back with RFC 7009, idempotently, and what the intent
//! handle can and cannot do.

use std::time::Duration;

use super::*;
use crate::peer::{Issuer, Options};

#[tokio::test]
async fn a_revoked_token_is_inactive_and_revoking_again_succeeds() {
    let issuer = Issuer::start(600).await;
    let server = AuthServer::start(Options { subject_issuer: Some(&issuer), ..Options::default() }).await;
    let provider = provider(&server).await;

    let own = request("reader", &["orders:read"], Duration::from_secs(600));
    let mut exchange = request("on-behalf", &["orders:read"], Duration::from_secs(600));
    exchange.subject_token = Some(issuer.workload_token().await);
    for request in [own, exchange] {
        let minted = provider.mint(&request).await.unwrap();
        let token = token_of(&minted);
        assert_eq!(server.introspect(token).await["active"], true);
        let revoke = revocation(&request, minted.handle.clone());
        provider.revoke(&revoke).await.unwrap();
        assert_eq!(server.introspect(token).await, serde_json::json!({ "active": false }));
        provider.revoke(&revoke).await.expect("revoking twice succeeds");
    }
}

#[tokio::test]
async fn revoking_by_the_intent_handle_succeeds_and_touches_nothing() {
    let server = AuthServer::start(Options::default()).await;
    let provider = provider(&server).await;

    // Never minted: nothing to do.
    let lease_id = uuid::Uuid::now_v7();
    let intent = provider.intent(lease_id, "reader").unwrap();
    provider.revoke(&RevokeRequest { lease_id, role: "reader".into(), handle: intent }).await.unwrap();

    // Minted, but Writ crashed before recording the token: the intent names
    // none, so the token lives to its own expiry (it never left Writ).
    let request = request("reader", &["orders:read"], Duration::from_secs(600));
    let intent = provider.intent(request.lease_id, "reader").unwrap();
    let minted = provider.mint(&request).await.unwrap();
    assert_ne!(minted.handle, intent, "the minted handle carries the token");
    provider.revoke(&revocation(&request, intent)).await.unwrap();
    assert_eq!(server.introspect(token_of(&minted)).await["active"], true);
    provider.revoke(&revocation(&request, minted.handle.clone())).await.unwrap();
    assert_eq!(server.introspect(token_of(&minted)).await["active"], false);
}

#[tokio::test]
async fn a_handle_of_another_lease_is_refused_without_revoking() {
    let server = AuthServer::start(Options::default()).await;
    let provider = provider(&server).await;
    let first = request("reader", &["orders:read"], Duration::from_secs(600));
    let minted = provider.mint(&first).await.unwrap();
    let other = request("reader", &["orders:read"], Duration::from_secs(600));
    match provider.revoke(&revocation(&other, minted.handle.clone())).await {
        Err(ProviderError::Failed(message)) => {
            assert!(message.contains("another lease") && !message.contains(token_of(&minted)), "{message}")
        }
        result => panic!("a swapped handle is refused, got {result:?}"),
    }
    assert_eq!(server.introspect(token_of(&minted)).await["active"], true);
}

#[tokio::test]
async fn a_lease_of_a_role_since_removed_is_still_revoked() {
    let server = AuthServer::start(Options::default()).await;
    let provider = provider(&server).await;
    let request = request("reader", &["orders:read"], Duration::from_secs(600));
    let minted = provider.mint(&request).await.unwrap();
    let mut revoke = revocation(&request, minted.handle.clone());
    revoke.role = "a-role-no-longer-configured".into();
    provider.revoke(&revoke).await.unwrap();
    assert_eq!(server.introspect(token_of(&minted)).await["active"], false);
}

#[tokio::test]
async fn without_a_revocation_endpoint_revoke_records_intent_only() {
    let server = AuthServer::start(Options { revocation: false, ..Options::default() }).await;
    let provider = provider(&server).await;
    let request = request("reader", &["orders:read"], Duration::from_secs(900));
    let minted = provider.mint(&request).await.unwrap();
    provider.revoke(&revocation(&request, minted.handle.clone())).await.unwrap();
    assert_eq!(server.introspect(token_of(&minted)).await["active"], true, "expiry-only: it lives on");
}
