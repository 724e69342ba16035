//! The real peers: npm `oidc-provider` as the authorization server
//! (`tests/peers/oidc/authz.mjs`) and as the agents' workload issuer
//! (`server.mjs`), each a `node` process on a free port, killed on drop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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

/// The peers' folder, with its npm packages installed (once per run).
fn peer_dir() -> PathBuf {
    static INSTALLED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/oidc");
            if !dir.join("node_modules/oidc-provider").exists() {
                let status = std::process::Command::new("npm")
                    .current_dir(&dir)
                    .args(["ci", "--no-audit", "--no-fund"])
                    .status()
                    .expect("npm runs (install Node.js and npm)");
                assert!(status.success(), "`npm ci` failed in {}", dir.display());
            }
            dir
        })
        .clone()
}

/// A `node` script running with a JSON config; its ready line parsed.
struct Node {
    ready: Value,
    child: Child,
    _config: tempfile::NamedTempFile,
}

impl Node {
    async fn start(script: &str, config: &Value) -> Self {
        let config_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(config_file.path(), config.to_string()).unwrap();
        let mut child = Command::new("node")
            .current_dir(peer_dir())
            .arg(script)
            .arg(config_file.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{script} starts within 30 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("{script} prints its ready line"));
        Self { ready: serde_json::from_str(&ready).unwrap(), child, _config: config_file }
    }

    fn get(&self, key: &str) -> String {
        self.ready[key].as_str().unwrap_or_else(|| panic!("ready line has {key}: {}", self.ready)).to_string()
    }
}

/// The agents' workload issuer (`server.mjs`): client-credentials JWTs for
/// agent `agent-a`, audience `writ`.
pub struct Issuer {
    pub issuer: String,
    token_endpoint: String,
    _node: Node,
}

impl Issuer {
    /// An issuer whose tokens live `ttl` seconds.
    pub async fn start(ttl: u64) -> Self {
        let config = json!({
            "port": 0,
            "audience": "writ",
            "scopes": ["writ"],
            "ttl": ttl,
            "clients": [{ "client_id": AGENT, "client_secret": AGENT_SECRET, "alg": "ES256" }],
        });
        let node = Node::start("server.mjs", &config).await;
        Self { issuer: node.get("issuer"), token_endpoint: node.get("token_endpoint"), _node: node }
    }

    /// A fresh workload token of `agent-a`.
    pub async fn workload_token(&self) -> SecretString {
        let response: Value = reqwest::Client::new()
            .post(&self.token_endpoint)
            .basic_auth(AGENT, Some(AGENT_SECRET))
            .form(&[("grant_type", "client_credentials"), ("resource", "urn:writ"), ("scope", "writ")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        SecretString::from(response["access_token"].as_str().unwrap().to_string())
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

/// The authorization server (`authz.mjs`). Writ's client may use
/// `orders:read`, `orders:write` and `billing:read`; the orders resource
/// also knows `orders:admin`, which Writ's client may not have.
pub struct AuthServer {
    pub issuer: String,
    pub token_endpoint: String,
    pub revocation_endpoint: Option<String>,
    introspection_endpoint: String,
    config: Value,
    node: Option<Node>,
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
            config["subject_issuer"] = json!({
                "issuer": issuer.issuer,
                "jwks_uri": format!("{}/jwks", issuer.issuer),
                "audience": "writ",
            });
        }
        let node = Node::start("authz.mjs", &config).await;
        // Restarts come back on the same port, so the endpoints stay valid.
        config["port"] = node.ready["port"].clone();
        Self {
            issuer: node.get("issuer"),
            token_endpoint: node.get("token_endpoint"),
            revocation_endpoint: node.ready["revocation_endpoint"].as_str().map(String::from),
            introspection_endpoint: node.get("introspection_endpoint"),
            config,
            node: Some(node),
        }
    }

    /// Kills the server (it keeps its tokens in memory: they are gone).
    pub async fn stop(&mut self) {
        if let Some(mut node) = self.node.take() {
            node.child.kill().await.unwrap();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.node = Some(Node::start("authz.mjs", &self.config).await);
    }

    /// RFC 7662 introspection, as the orders resource server would do it.
    pub async fn introspect(&self, token: &str) -> Value {
        let response = reqwest::Client::new()
            .post(&self.introspection_endpoint)
            .basic_auth(RS_CLIENT, Some(RS_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "introspection answers: {}", response.status());
        response.json().await.unwrap()
    }
}
