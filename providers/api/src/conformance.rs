//! The conformance suite every provider must pass.
//!
//! A provider's own tests build it against its real peer (a signing key, a
//! PostgreSQL server, `moto`, …), describe how to check a credential at
//! that peer with a [`Probe`], and call [`run`]. The suite panics with a
//! precise message on the first broken promise; it is test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Credential, CredentialShape, MintRequest, Provider, ProviderError, RenewRequest, RevokeRequest};

/// Checks a credential against the provider's real peer.
#[async_trait]
pub trait Probe: Send + Sync {
    /// Whether the credential works at the peer right now.
    async fn is_live(&self, credential: &Credential, request: &MintRequest) -> bool;
}

/// The grant the suite mints with: a role the provider offers and scopes it
/// accepts.
pub struct Grant {
    pub role: String,
    pub scopes: Vec<String>,
}

/// Runs every check against `provider`. `now` is the time the suite
/// pretends it is; providers whose peer checks expiry against the real clock
/// should pass `Utc::now()`.
pub async fn run(provider: Arc<dyn Provider>, grant: Grant, probe: &dyn Probe, now: DateTime<Utc>) {
    describes_itself(provider.as_ref(), &grant);
    intent_is_deterministic(provider.as_ref(), &grant);
    refuses_an_unknown_role(provider.as_ref(), &grant, now).await;
    refuses_an_unknown_scope(provider.as_ref(), &grant, now).await;
    mints_renews_and_revokes(provider.as_ref(), &grant, probe, now).await;
    revoking_what_was_never_minted_succeeds(provider.as_ref(), &grant).await;
    provider.health().await.expect("a provider under test reports healthy");
}

pub fn request(grant: &Grant, now: DateTime<Utc>, ttl: Duration) -> MintRequest {
    MintRequest {
        lease_id: Uuid::now_v7(),
        agent: "conformance-agent".into(),
        owner: "owner@example.com".into(),
        task_id: "conformance-task".into(),
        role: grant.role.clone(),
        scopes: grant.scopes.clone(),
        issued_at: now,
        expires_at: now + chrono::Duration::from_std(ttl).unwrap(),
        subject_token: None,
    }
}

fn describes_itself(provider: &dyn Provider, grant: &Grant) {
    let description = provider.describe();
    assert!(!description.kind.is_empty(), "a provider names its kind");
    let role = description
        .role(&grant.role)
        .unwrap_or_else(|| panic!("the role {:?} under test is described", grant.role));
    assert!(role.min_ttl <= role.default_ttl, "min_ttl <= default_ttl");
    assert!(role.default_ttl <= role.max_ttl, "default_ttl <= max_ttl");
    assert!(!role.max_ttl.is_zero(), "max_ttl is positive");
    for scope in &grant.scopes {
        assert!(role.scopes.contains(scope), "scope {scope:?} under test is offered");
    }
}

fn intent_is_deterministic(provider: &dyn Provider, grant: &Grant) {
    let lease = Uuid::now_v7();
    let first = provider.intent(lease, &grant.role).expect("intent for a known role");
    let again = provider.intent(lease, &grant.role).expect("intent for a known role");
    assert_eq!(first, again, "the intent handle depends on the lease id alone");
    let other = provider.intent(Uuid::now_v7(), &grant.role).expect("intent for a known role");
    assert_ne!(first, other, "two leases get two handles");
}

async fn refuses_an_unknown_role(provider: &dyn Provider, grant: &Grant, now: DateTime<Utc>) {
    let mut request = request(grant, now, Duration::from_secs(900));
    request.role = "no-such-role-for-conformance".into();
    match provider.mint(&request).await {
        Err(ProviderError::Refused(message)) => {
            assert!(message.contains("no-such-role-for-conformance"), "names the role: {message}")
        }
        other => panic!("an unknown role is refused, got {other:?}"),
    }
}

async fn refuses_an_unknown_scope(provider: &dyn Provider, grant: &Grant, now: DateTime<Utc>) {
    let mut request = request(grant, now, Duration::from_secs(900));
    request.scopes = vec!["scope-no-role-offers".into()];
    match provider.mint(&request).await {
        Err(ProviderError::Refused(message)) => {
            assert!(message.contains("scope-no-role-offers"), "names the scope: {message}")
        }
        other => panic!("a scope the role does not offer is refused, got {other:?}"),
    }
}

async fn mints_renews_and_revokes(
    provider: &dyn Provider,
    grant: &Grant,
    probe: &dyn Probe,
    now: DateTime<Utc>,
) {
    let description = provider.describe();
    let role = description.role(&grant.role).unwrap();
    let request = request(grant, now, role.min_ttl.max(Duration::from_secs(900)).min(role.max_ttl));
    let minted = provider.mint(&request).await.expect("mint succeeds");
    assert!(minted.expires_at <= request.expires_at, "never outlives the requested expiry");
    assert!(minted.expires_at > now, "is alive when minted");
    let printed = format!("{minted:?}");
    for secret in minted.credential.secrets() {
        assert!(!secret.is_empty(), "secrets are not empty");
        assert!(!printed.contains(secret), "Debug output hides secrets: {printed}");
    }
    assert!(probe.is_live(&minted.credential, &request).await, "a minted credential works");

    let mut renewal = request.clone();
    renewal.issued_at = now + chrono::Duration::seconds(1);
    renewal.expires_at = request.expires_at + chrono::Duration::seconds(60);
    match provider.renew(&RenewRequest { mint: renewal.clone(), handle: minted.handle.clone() }).await {
        Ok(renewed) => {
            assert!(renewed.expires_at <= renewal.expires_at, "renewal never outlives the ask");
            let credential = renewed.credential.as_ref().unwrap_or(&minted.credential);
            assert!(probe.is_live(credential, &renewal).await, "a renewed credential works");
        }
        Err(ProviderError::Refused(message)) => {
            assert!(!message.is_empty(), "a provider that cannot renew says why")
        }
        Err(other) => panic!("renew either works or is refused, got {other:?}"),
    }

    let revoke = RevokeRequest {
        lease_id: request.lease_id,
        role: request.role.clone(),
        handle: minted.handle.clone(),
    };
    provider.revoke(&revoke).await.expect("revoke succeeds");
    provider.revoke(&revoke).await.expect("revoke is idempotent");
    if description.shape == CredentialShape::Revocable {
        assert!(
            !probe.is_live(&minted.credential, &request).await,
            "a revocable credential stops working once revoked"
        );
    }
}

async fn revoking_what_was_never_minted_succeeds(provider: &dyn Provider, grant: &Grant) {
    let lease_id = Uuid::now_v7();
    let handle = provider.intent(lease_id, &grant.role).unwrap();
    provider
        .revoke(&RevokeRequest { lease_id, role: grant.role.clone(), handle })
        .await
        .expect("revoking a lease that was never minted succeeds");
}
