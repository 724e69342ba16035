use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::*;
use crate::dev::DevIssuer;

/// A JWKS server whose key set can be swapped, counting fetches.
struct KeyServer {
    issuer: String,
    fetches: Arc<AtomicUsize>,
    jwks: Arc<std::sync::Mutex<Value>>,
}

async fn key_server() -> KeyServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let fetches = Arc::new(AtomicUsize::new(0));
    let jwks = Arc::new(std::sync::Mutex::new(json!({ "keys": [] })));
    let discovery = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
    let (count, keys) = (fetches.clone(), jwks.clone());
    let router = Router::new()
        .route("/.well-known/openid-configuration", get(move || async move { Json(discovery) }))
        .route(
            "/jwks",
            get(move || {
                count.fetch_add(1, Ordering::SeqCst);
                let body = keys.lock().unwrap().clone();
                async move { Json(body) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    KeyServer { issuer, fetches, jwks }
}

fn verifier(issuer: &str) -> Verifier {
    let limits = Limits { jwks_refresh_interval: Duration::from_secs(3600), ..Limits::default() };
    let config = IssuerConfig { issuer: issuer.into(), jwks_url: None, algorithms: vec![] };
    Verifier::new("writ", &limits, &[config]).unwrap()
}

#[tokio::test]
async fn a_rotated_key_is_fetched_but_bogus_kids_cannot_flood_the_issuer() {
    let server = key_server().await;
    let first = DevIssuer::generate(&server.issuer).unwrap();
    *server.jwks.lock().unwrap() = first.jwks();
    let verifier = verifier(&server.issuer);
    assert!(verifier.warm_up().await.is_empty());
    let now = Utc::now();
    let token = first.mint("agent", "writ", Duration::from_secs(60), now).unwrap();
    assert_eq!(verifier.verify(&token, now).await.unwrap().subject, "agent");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);

    // The issuer rotates: the unknown kid triggers one refresh.
    let second = DevIssuer::generate(&server.issuer).unwrap();
    *server.jwks.lock().unwrap() = second.jwks();
    let rotated = second.mint("agent", "writ", Duration::from_secs(60), now).unwrap();
    assert_eq!(verifier.verify(&rotated, now).await.unwrap().subject, "agent");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);

    // A flood of tokens with made-up kids costs no further fetches.
    let stranger = DevIssuer::generate(&server.issuer).unwrap();
    for _ in 0..50 {
        let bogus = stranger.mint("agent", "writ", Duration::from_secs(60), now).unwrap();
        assert!(matches!(verifier.verify(&bogus, now).await, Err(AuthError::UnknownKey(_))));
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn lifetimes_are_checked_against_the_given_time_with_leeway() {
    let server = key_server().await;
    let issuer = DevIssuer::generate(&server.issuer).unwrap();
    *server.jwks.lock().unwrap() = issuer.jwks();
    let verifier = verifier(&server.issuer);
    let minted_at = Utc::now();
    let token = issuer.mint("agent", "writ", Duration::from_secs(60), minted_at).unwrap();
    let leeway = chrono::Duration::seconds(30);
    let at = |offset: i64| minted_at + chrono::Duration::seconds(offset);
    assert!(verifier.verify(&token, at(60) + leeway).await.is_ok());
    assert_eq!(verifier.verify(&token, at(61) + leeway).await, Err(AuthError::Expired));
    assert_eq!(verifier.verify(&token, at(-31)).await, Err(AuthError::NotYetValid));
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    let server = key_server().await;
    let issuer = DevIssuer::generate(&server.issuer).unwrap();
    *server.jwks.lock().unwrap() = issuer.jwks();
    let verifier = verifier(&server.issuer);
    let now = Utc::now();
    let stranger = DevIssuer::generate("https://elsewhere.example").unwrap();
    let foreign = stranger.mint("agent", "writ", Duration::from_secs(60), now).unwrap();
    assert_eq!(
        verifier.verify(&foreign, now).await,
        Err(AuthError::UntrustedIssuer("https://elsewhere.example".into()))
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD
            .encode(json!({"iss": server.issuer, "sub": "a", "aud": "writ", "exp": 4e9}).to_string())
    );
    assert_eq!(verifier.verify(&none, now).await, Err(AuthError::Algorithm("none".into())));
    assert_eq!(verifier.verify("x".repeat(9000).as_str(), now).await, Err(AuthError::TooLarge(8192)));
    assert!(matches!(verifier.verify("a.b", now).await, Err(AuthError::Malformed(_))));
    let no_sub = issuer.mint_with("", "writ", Duration::from_secs(60), now, json!({})).unwrap();
    assert_eq!(verifier.verify(&no_sub, now).await, Err(AuthError::MissingClaim("sub".into())));
}
