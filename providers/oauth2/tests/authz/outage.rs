//! A server that is down, hung or overloaded is "unavailable": Writ retries
//! mints and revocations later. Once it is back, everything works again.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::peer::Options;

fn unavailable<T: std::fmt::Debug>(result: Result<T, ProviderError>, what: &str) -> String {
    match result {
        Err(ProviderError::Unavailable(message)) => message,
        other => panic!("{what}: expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stopped_server_is_unavailable_until_it_is_back() {
    let mut server = AuthServer::start(Options::default()).await;
    let provider = provider(&server).await;
    let before = request("reader", &["orders:read"], Duration::from_secs(600));
    let minted = provider.mint(&before).await.unwrap();
    provider.health().await.unwrap();

    server.stop().await;
    let during = request("reader", &["orders:read"], Duration::from_secs(600));
    let message = unavailable(provider.mint(&during).await, "mint");
    assert!(message.contains("token request") && message.contains("onnection refused"), "{message}");
    let message = unavailable(provider.revoke(&revocation(&before, minted.handle.clone())).await, "revoke");
    assert!(message.contains("revocation"), "{message}");
    unavailable(provider.health().await, "health");

    server.restart().await;
    provider.health().await.unwrap();
    let after = request("reader", &["orders:read"], Duration::from_secs(600));
    let fresh = provider.mint(&after).await.unwrap();
    assert_eq!(server.introspect(token_of(&fresh)).await["active"], true);
    // The retried revocation now succeeds (this server forgot its tokens
    // when it stopped; RFC 7009 answers 200 for unknown tokens too).
    provider.revoke(&revocation(&before, minted.handle)).await.unwrap();
    provider.revoke(&revocation(&after, fresh.handle.clone())).await.unwrap();
    assert_eq!(server.introspect(token_of(&fresh)).await["active"], false);
}

/// How a stand-in server misbehaves.
#[derive(Clone, Copy)]
enum Trouble {
    /// Reads the request and answers this.
    Answers(&'static str),
    /// Reads the request and closes the connection without a word.
    HangsUp,
    /// Accepts and never answers.
    Hangs,
}

/// A stand-in for a server in trouble. oidc-provider cannot be made to do
/// any of this, and only the HTTP exchange matters here.
async fn troubled(trouble: Trouble) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            match trouble {
                Trouble::Answers(response) => {
                    let _ = stream.read(&mut buffer).await;
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
                Trouble::HangsUp => {
                    let _ = stream.read(&mut buffer).await;
                    drop(stream);
                }
                Trouble::Hangs => held.push(stream),
            }
        }
    });
    format!("http://{address}")
}

async fn explicit_provider(base: &str) -> OAuth2Provider {
    let secret = SecretFile::new(WRIT_SECRET);
    let settings = config(&format!(
        "token_url = \"{base}/token\"\nrevocation_url = \"{base}/revoke\"\nclient_id = \"writ\"\n\
         client_secret_file = \"{}\"\ntimeout = \"1s\"\n{}",
        secret.path(),
        roles()
    ));
    OAuth2Provider::connect(settings).await.unwrap()
}

#[tokio::test]
async fn overloaded_hung_and_hanging_up_servers_are_unavailable() {
    let overloaded = [
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n<h1>down</h1>",
        "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n\
         {\"error\":\"server_error\"}",
    ];
    for response in overloaded {
        let provider = explicit_provider(&troubled(Trouble::Answers(response)).await).await;
        let request = request("reader", &["orders:read"], Duration::from_secs(600));
        let message = unavailable(provider.mint(&request).await, response);
        assert!(message.contains("HTTP"), "{message}");
        let handle =
            writ_provider_api::RevocationHandle::new(format!("oauth2-token:{}:tok", request.lease_id));
        unavailable(provider.revoke(&revocation(&request, handle)).await, response);
        unavailable(provider.health().await, response);
    }

    let provider = explicit_provider(&troubled(Trouble::HangsUp).await).await;
    let hung_up = request("reader", &["orders:read"], Duration::from_secs(600));
    unavailable(provider.mint(&hung_up).await, "hung up");
    let handle = writ_provider_api::RevocationHandle::new(format!("oauth2-token:{}:tok", hung_up.lease_id));
    unavailable(provider.revoke(&revocation(&hung_up, handle)).await, "hung up");

    let provider = explicit_provider(&troubled(Trouble::Hangs).await).await;
    let started = std::time::Instant::now();
    let message = unavailable(
        provider.mint(&request("reader", &["orders:read"], Duration::from_secs(600))).await,
        "hung",
    );
    assert!(message.contains("in time"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5), "gave up after the 1s timeout");
}

#[tokio::test]
async fn a_server_that_answers_nonsense_is_a_failure_not_an_outage() {
    let provider = explicit_provider(
        &troubled(Trouble::Answers(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n\
             {\"access_token\":\"leak-me\",\"x\":1}",
        ))
        .await,
    )
    .await;
    match provider.mint(&request("reader", &["orders:read"], Duration::from_secs(600))).await {
        Err(ProviderError::Failed(message)) => {
            assert!(message.contains("does not parse") && !message.contains("leak-me"), "{message}")
        }
        other => panic!("a malformed answer is a failure, got {other:?}"),
    }
}
