//! The `oauth2` provider through Writ, against npm `oidc-provider` as the
//! authorization server (`tests/peers/oidc/authz.mjs`): a client-credentials
//! token narrowed to the grant and revoked at the server when the task
//! closes, and an RFC 8693 exchange of the agent's own workload token (the
//! one it called Writ with) for a token whose subject is the agent.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use writ::api::proto;
use writ_test_peers::oidc::AuthorizationServer;

use crate::harness::{self, authed, bearer};

/// Writ's client at the authorization server, and its secret.
const WRIT_CLIENT: &str = "writ";
const WRIT_SECRET: &str = "writ-it-client-s3cret";
/// The resource server's client, used only to introspect.
const RS_CLIENT: &str = "orders-api";
const RS_SECRET: &str = "orders-api-it-s3cret";
const ORDERS: &str = "https://orders.example.com/";

/// The authorization server (`authz.mjs`) for Writ's client, trusting
/// `subject_issuer`'s JWTs (audience `writ`) as subject tokens for token
/// exchange.
///
/// Writ discovers the server when it starts, and the server must know the
/// harness's development issuer, whose address exists only inside
/// `harness::start_with`: so this runs in the harness's (synchronous)
/// customize step, and starts the server without a runtime.
fn start_server(subject_issuer: &str) -> AuthorizationServer {
    AuthorizationServer::start_blocking(json!({
        "port": 0,
        "ttl": 600,
        "revocation": true,
        "clients": [
            {
                "client_id": WRIT_CLIENT,
                "client_secret": WRIT_SECRET,
                "auth_method": "client_secret_basic",
                "grant_types": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
                "scope": "orders:read orders:write",
            },
            { "client_id": RS_CLIENT, "client_secret": RS_SECRET, "grant_types": [] },
        ],
        "resources": { ORDERS: { "scope": "orders:read orders:write orders:admin" } },
        "subject_issuer": {
            "issuer": subject_issuer,
            // The development issuer serves its keys here (src/dev/issuer.rs).
            "jwks_uri": format!("{subject_issuer}/jwks.json"),
            "audience": writ::dev::AUDIENCE,
        },
    }))
}

/// RFC 7662 introspection, as the orders resource server would do it.
async fn introspect(server: &AuthorizationServer, token: &str) -> Value {
    server.introspect(RS_CLIENT, RS_SECRET, token).await
}

/// Writ with provider `orders` (`kind = "oauth2"`) at a fresh `authz.mjs`
/// that trusts the harness's development issuer for token exchange, and a
/// policy letting the demo agent use both of its roles.
async fn with_orders() -> (harness::Harness, AuthorizationServer) {
    let slot: Arc<Mutex<Option<AuthorizationServer>>> = Arc::default();
    let started = slot.clone();
    let h = harness::start_with(Box::new(move |config, dir| {
        let dev_issuer = config.issuers[0].issuer.clone();
        let server = start_server(&dev_issuer);
        let secret = dir.join("orders-client-secret");
        std::fs::write(&secret, format!("{WRIT_SECRET}\n")).unwrap();
        let settings = format!(
            r#"
issuer = "{issuer}"
client_id = "{WRIT_CLIENT}"
client_secret_file = "{secret}"
client_auth = "client_secret_basic"
timeout = "5s"

[roles.reader]
mode = "client_credentials"
scopes = ["orders:read", "orders:write"]
resource = ["{ORDERS}"]
max_ttl = "15m"

[roles.on-behalf]
mode = "token_exchange"
scopes = ["orders:read", "orders:write"]
resource = ["{ORDERS}"]
max_ttl = "15m"
"#,
            issuer = server.issuer,
            secret = secret.display(),
        );
        let settings: toml::Table = toml::from_str(&settings).unwrap();
        config.providers.insert("orders".into(), writ::config::ProviderConfig { kind: "oauth2".into(), settings });
        let policy = r#"
            @id("demo-agent-reads-orders-as-writ")
            permit (principal == Writ::Agent::"demo-agent", action == Writ::Action::"issue", resource == Writ::Role::"orders/reader");
            @id("demo-agent-exchanges-for-orders")
            permit (principal == Writ::Agent::"demo-agent", action == Writ::Action::"issue", resource == Writ::Role::"orders/on-behalf");
        "#;
        std::fs::write(dir.join("policies/orders.cedar"), policy).unwrap();
        *started.lock().unwrap() = Some(server);
    }))
    .await;
    let server = slot.lock().unwrap().take().expect("the authorization server was started");
    (h, server)
}

fn orders_request(task_id: &str, role: &str, scopes: &[&str], ttl_seconds: i64) -> proto::IssueRequest {
    let mut request = harness::issue_request(task_id, role, scopes, ttl_seconds);
    request.grants[0].provider = "orders".into();
    request
}

async fn close(h: &harness::Harness, task_id: &str) -> proto::CloseTaskResponse {
    h.tasks()
        .await
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: task_id.into() }))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_client_credentials_token_is_narrowed_to_the_grant_and_revoked_when_the_task_closes() {
    let (h, server) = with_orders().await;
    h.open_task("oauth2-cc", "demo-agent", 600).await;
    let request = orders_request("oauth2-cc", "reader", &["orders:read"], 300);
    let issued = h.credentials().await.issue(authed(&h.agent(), request)).await.unwrap().into_inner();
    let issued = &issued.credentials[0];
    let lease = issued.lease.clone().unwrap();
    assert_eq!(lease.provider, "orders");
    assert_eq!(lease.state, proto::LeaseState::Active as i32);
    assert_eq!(lease.shape, proto::CredentialShape::Revocable as i32, "the server revokes (RFC 7009)");
    // The server's tokens live 600 s, longer than asked: the lease ends
    // when asked, and Writ revokes the token then.
    assert_eq!(lease.expires_at.unwrap().seconds - lease.issued_at.unwrap().seconds, 300);
    let token = bearer(issued);

    let seen = introspect(&server, &token).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["scope"], "orders:read", "only the scope asked for, not the role's others: {seen}");
    assert_eq!(seen["aud"], ORDERS, "bound to the role's resource: {seen}");
    assert_eq!(seen["client_id"], WRIT_CLIENT, "{seen}");
    assert!(seen.get("sub").is_none(), "a client-credentials token names no agent: {seen}");

    let closed = close(&h, "oauth2-cc").await;
    assert_eq!((closed.revoked, closed.retrying), (1, 0), "{closed:?}");
    let revoked = h.lease(&lease.lease_id).await;
    assert_eq!(revoked.state, proto::LeaseState::Revoked as i32);
    assert_eq!(revoked.revocation_reason, "task_closed");
    assert_eq!(introspect(&server, &token).await, json!({ "active": false }), "revoked at the server");

    let audit = std::fs::read_to_string(&h.config.audit.path).unwrap();
    assert!(!audit.contains(&token), "the audit log holds no token");
    h.stop().await;
}

#[tokio::test]
async fn token_exchange_turns_the_agents_own_workload_token_into_a_token_for_the_agent() {
    let (h, server) = with_orders().await;
    h.open_task("oauth2-te", "demo-agent", 600).await;
    // The token the agent calls Writ with is the subject token Writ exchanges.
    let agent_token = h.agent();
    let request = orders_request("oauth2-te", "on-behalf", &["orders:write"], 300);
    let issued = h.credentials().await.issue(authed(&agent_token, request)).await.unwrap().into_inner();
    let issued = &issued.credentials[0];
    let lease = issued.lease.clone().unwrap();
    assert_eq!(lease.shape, proto::CredentialShape::Revocable as i32);
    let token = bearer(issued);
    assert_ne!(token, agent_token);

    let seen = introspect(&server, &token).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["sub"], writ::dev::AGENT_SUBJECT, "the agent is the subject: {seen}");
    assert_eq!(seen["act"]["sub"], WRIT_CLIENT, "Writ is the actor: {seen}");
    assert_eq!(seen["scope"], "orders:write", "{seen}");
    assert_eq!(seen["aud"], ORDERS, "{seen}");

    let closed = close(&h, "oauth2-te").await;
    assert_eq!((closed.revoked, closed.retrying), (1, 0), "{closed:?}");
    assert_eq!(introspect(&server, &token).await, json!({ "active": false }));

    // Evidence of the exchange, without either token.
    let lines = h.audit_lines();
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    for expected in ["decision", "issued", "task_closed", "revoked"] {
        assert!(events.contains(&expected), "{expected} missing from {events:?}");
    }
    let audit = std::fs::read_to_string(&h.config.audit.path).unwrap();
    assert!(!audit.contains(&agent_token), "the audit log holds no workload token");
    assert!(!audit.contains(&token), "the audit log holds no exchanged token");
    h.stop().await;
}
