use std::sync::Arc;
use std::time::Duration;

use writ_provider_api::conformance::{self, Grant, Probe};

use super::*;

fn config() -> JwtConfig {
    let mut roles = BTreeMap::new();
    roles.insert(
        "orders-read".to_string(),
        RoleConfig {
            audience: "orders-api".into(),
            scopes: vec!["orders:read".into(), "orders:list".into()],
            max_ttl: Duration::from_secs(900),
            default_ttl: Duration::from_secs(300),
        },
    );
    JwtConfig {
        issuer: "https://writ.test/tokens".into(),
        algorithm: SigningAlgorithm::ES256,
        key_file: "unused".into(),
        roles,
    }
}

fn provider(algorithm: SigningAlgorithm) -> Arc<JwtProvider> {
    let key = SigningKey::generate(algorithm).unwrap();
    Arc::new(JwtProvider::new(config(), &key).unwrap())
}

/// Checks a token the way a resource server using introspection would.
struct Introspect(Arc<JwtProvider>);

#[async_trait]
impl Probe for Introspect {
    async fn is_live(&self, credential: &Credential, request: &MintRequest) -> bool {
        let token = credential.secrets()[0].to_string();
        match self.0.verify(&token, request.issued_at) {
            Ok(verified) => {
                assert_eq!(verified.lease_id, request.lease_id);
                assert_eq!(verified.claims["sub"], request.agent.as_str());
                assert_eq!(verified.claims["aud"], "orders-api");
                assert_eq!(verified.claims["writ_task"], request.task_id.as_str());
                assert_eq!(verified.claims["scope"], request.scopes.join(" ").as_str());
                true
            }
            Err(_) => false,
        }
    }
}

#[tokio::test]
async fn es256_provider_passes_the_conformance_suite() {
    let provider = provider(SigningAlgorithm::ES256);
    let grant = Grant { role: "orders-read".into(), scopes: vec!["orders:read".into()] };
    conformance::run(provider.clone(), grant, &Introspect(provider), Utc::now()).await;
}

#[tokio::test]
async fn eddsa_provider_passes_the_conformance_suite() {
    let provider = provider(SigningAlgorithm::EdDSA);
    let grant = Grant { role: "orders-read".into(), scopes: vec!["orders:list".into()] };
    conformance::run(provider.clone(), grant, &Introspect(provider), Utc::now()).await;
}

#[tokio::test]
async fn an_expired_token_does_not_verify() {
    let provider = provider(SigningAlgorithm::ES256);
    let grant = Grant { role: "orders-read".into(), scopes: vec![] };
    let now = Utc::now();
    let request = conformance::request(&grant, now, Duration::from_secs(60));
    let minted = provider.mint(&request).await.unwrap();
    let token = minted.credential.secrets()[0].to_string();
    assert!(provider.verify(&token, now + chrono::Duration::seconds(59)).is_ok());
    let error = provider.verify(&token, now + chrono::Duration::seconds(60)).unwrap_err();
    assert_eq!(error, "token expired");
}

#[tokio::test]
async fn another_providers_token_does_not_verify() {
    let first = provider(SigningAlgorithm::ES256);
    let second = provider(SigningAlgorithm::ES256);
    let grant = Grant { role: "orders-read".into(), scopes: vec![] };
    let request = conformance::request(&grant, Utc::now(), Duration::from_secs(60));
    let minted = first.mint(&request).await.unwrap();
    assert!(second.verify(minted.credential.secrets()[0], Utc::now()).is_err());
}

#[test]
fn keys_round_trip_through_a_file_and_stay_redacted() {
    let dir = std::env::temp_dir().join(format!("writ-jwt-key-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("signing.pk8");
    let key = SigningKey::generate(SigningAlgorithm::EdDSA).unwrap();
    key.save(&path).unwrap();
    let loaded = SigningKey::load(SigningAlgorithm::EdDSA, &path).unwrap();
    assert_eq!(format!("{loaded:?}"), "SigningKey(EdDSA, <redacted>)");
    assert!(SigningKey::load(SigningAlgorithm::ES256, &path).is_err(), "algorithm must match");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn inconsistent_configuration_is_refused() {
    let mut bad = config();
    bad.roles.get_mut("orders-read").unwrap().default_ttl = Duration::from_secs(3600);
    let key = SigningKey::generate(SigningAlgorithm::ES256).unwrap();
    let error = JwtProvider::new(bad, &key).unwrap_err();
    assert!(error.contains("default_ttl"), "{error}");
}
