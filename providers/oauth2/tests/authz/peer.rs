//! The real peers, from `writ-test-peers`: npm `oidc-provider` as the
//! authorization server (`tests/peers/oidc/authz.mjs`) and as the agents'
//! workload issuer (`server.mjs`), each a `node` process on a free port,
//! killed on drop. What is this binary's own is their configuration: the
//! clients, resources and scopes the tests expect.

use std::ops::{Deref, DerefMut};

use secrecy::SecretString;
use serde_json::{Value, json};
use writ_test_peers::oidc::{AuthorizationServer, OidcIssuer};

/// Writ's client at the authorization server, and its secret.
pub const WRIT_CLIENT: &str = "writ";
pub const WRIT_SECRET: &str = "writ-client-s3cret";
/// The resource server's client, used only to introspect.
const RS_CLIENT: &str = "orders-api";
const RS_SECRET: &str = "orders-api-s3cret";
/// The agent whose workload token is exchanged.
pub const AGENT: &str = "agent-a";
const AGENT_SECRET: &str = "agent-a-s3cret";

pub const ORDERS: &str = "https://orders.example.com/";
pub const BILLING: &str = "https://billing.example.com/";

/// The agents' workload issuer: client-credentials JWTs for agent
/// `agent-a`, audience `writ`.
pub struct Issuer(OidcIssuer);

impl Deref for Issuer {
    type Target = OidcIssuer;

    fn deref(&self) -> &OidcIssuer {
        &self.0
    }
}

impl Issuer {
    /// An issuer whose tokens live `ttl` seconds.
    pub async fn start(ttl: u64) -> Self {
        Self(OidcIssuer::start_with_ttl(&[(AGENT, AGENT_SECRET, "ES256")], ttl).await)
    }

    /// A fresh workload token of `agent-a`.
    pub async fn workload_token(&self) -> SecretString {
        SecretString::from(self.0.token(AGENT, AGENT_SECRET).await)
    }
}

/// How to start the authorization server.
pub struct Options<'a> {
    /// Lifetime of the access tokens it issues, in seconds.
    pub ttl: u64,
    /// Whether it offers RFC 7009 revocation.
    pub revocation: bool,
    /// How Writ's client authenticates.
    pub auth_method: &'a str,
    /// The issuer whose JWTs token exchange accepts.
    pub subject_issuer: Option<&'a Issuer>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self { ttl: 600, revocation: true, auth_method: "client_secret_basic", subject_issuer: None }
    }
}

/// The authorization server. Writ's client may use `orders:read`,
/// `orders:write` and `billing:read`; the orders resource also knows
/// `orders:admin`, which Writ's client may not have. Its endpoints, `stop`
/// and `restart` are [`AuthorizationServer`]'s.
pub struct AuthServer(AuthorizationServer);

impl Deref for AuthServer {
    type Target = AuthorizationServer;

    fn deref(&self) -> &AuthorizationServer {
        &self.0
    }
}

impl DerefMut for AuthServer {
    fn deref_mut(&mut self) -> &mut AuthorizationServer {
        &mut self.0
    }
}

impl AuthServer {
    pub async fn start(options: Options<'_>) -> Self {
        let mut config = json!({
            "port": 0,
            "ttl": options.ttl,
            "revocation": options.revocation,
            "clients": [
                {
                    "client_id": WRIT_CLIENT,
                    "client_secret": WRIT_SECRET,
                    "auth_method": options.auth_method,
                    "grant_types": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
                    "scope": "orders:read orders:write billing:read",
                },
                { "client_id": RS_CLIENT, "client_secret": RS_SECRET, "grant_types": [] },
            ],
            "resources": {
                ORDERS: { "scope": "orders:read orders:write orders:admin" },
                BILLING: { "scope": "billing:read" },
            },
        });
        if let Some(issuer) = options.subject_issuer {
            config["subject_issuer"] =
                json!({ "issuer": issuer.issuer, "jwks_uri": issuer.jwks_uri, "audience": "writ" });
        }
        Self(AuthorizationServer::start(config).await)
    }

    /// RFC 7662 introspection, as the orders resource server would do it.
    pub async fn introspect(&self, token: &str) -> Value {
        self.0.introspect(RS_CLIENT, RS_SECRET, token).await
    }
}
