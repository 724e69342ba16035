//! npm `oidc-provider` and `jose`, in `tests/peers/oidc` (see its README):
//! [`OidcIssuer`] (`server.mjs`) issues the agents' workload tokens,
//! [`AuthorizationServer`] (`authz.mjs`) is an OAuth2 authorization server
//! with RFC 8693 token exchange, RFC 7009 revocation and RFC 7662
//! introspection, and [`jose_verify`] checks a JWT with an implementation
//! nobody here wrote. Each server is a `node` process on a free port.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::process::{self, Running};

/// What to do when `node` or the npm packages are missing.
const INSTALL: &str = "install Node.js 20 or newer and npm, then run `npm ci` in tests/peers/oidc";

/// The scripts' folder, with its npm packages installed: `npm ci` runs once
/// per test binary if `node_modules` lacks `oidc-provider` (a fresh clone).
fn scripts() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let dir = process::peer_dir("oidc");
            if !dir.join("node_modules/oidc-provider").exists() {
                let status = Command::new("npm")
                    .current_dir(&dir)
                    .args(["ci", "--no-audit", "--no-fund"])
                    .status()
                    .unwrap_or_else(|error| panic!("cannot run npm ({error}); {INSTALL}"));
                assert!(status.success(), "`npm ci` failed in {} ({status}); {INSTALL}", dir.display());
            }
            dir
        })
        .clone()
}

/// A `node` script running with a JSON configuration file, and the ready
/// line it printed.
struct NodeScript {
    /// The script's ready line: its issuer, port and endpoints.
    ready: Value,
    process: Running,
    /// The configuration file, kept until the script is gone.
    _config: tempfile::NamedTempFile,
}

impl NodeScript {
    /// Starts `node <script> <config file>` and waits for its ready line.
    /// Blocking: the ready line is read on a thread of its own.
    fn start(script: &str, config: &Value) -> Self {
        let config_file =
            tempfile::NamedTempFile::new().expect("a temporary file for the peer's configuration");
        std::fs::write(config_file.path(), config.to_string()).expect("the peer's configuration is written");
        let child = Command::new("node")
            .current_dir(scripts())
            .arg(script)
            .arg(config_file.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run node {script} ({error}); {INSTALL}"));
        let mut process = Running::new(child);
        let ready = process.ready_line(&format!("node {script}"), INSTALL);
        Self { ready, process, _config: config_file }
    }

    /// A string the ready line must hold.
    fn get(&self, key: &str) -> String {
        self.ready[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in the ready line {}", self.ready))
            .to_string()
    }
}

/// Runs a blocking start on the blocking thread pool, so the test's runtime
/// (often a single thread) keeps serving while a script starts; a panic in
/// the start is the test's panic.
async fn unblocked<T: Send + 'static>(start: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(start).await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("starting a peer was cancelled: {error}"),
    }
}

/// The agents' workload issuer (`server.mjs`): client-credentials JWT
/// access tokens with audience `writ`, scope `writ`, signed per client.
pub struct OidcIssuer {
    /// The issuer URL (`iss` of its tokens; discovery lives below it).
    pub issuer: String,
    pub token_endpoint: String,
    /// Where it publishes its signing keys.
    pub jwks_uri: String,
    _node: NodeScript,
}

impl OidcIssuer {
    /// How long its tokens live unless asked otherwise, in seconds.
    pub const DEFAULT_TTL_SECONDS: u64 = 600;

    /// Starts an issuer with `clients`, each `(client_id, client_secret,
    /// signing algorithm)` (`RS256`, `PS256`, `ES256` or `EdDSA`).
    pub async fn start(clients: &[(&str, &str, &str)]) -> Self {
        Self::start_with_ttl(clients, Self::DEFAULT_TTL_SECONDS).await
    }

    /// Starts an issuer whose tokens live `ttl_seconds`.
    pub async fn start_with_ttl(clients: &[(&str, &str, &str)], ttl_seconds: u64) -> Self {
        let config = json!({
            "port": 0,
            "audience": "writ",
            "scopes": ["writ"],
            "ttl": ttl_seconds,
            "clients": clients
                .iter()
                .map(|(id, secret, algorithm)| json!({ "client_id": id, "client_secret": secret, "alg": algorithm }))
                .collect::<Vec<_>>(),
        });
        let node = unblocked(move || NodeScript::start("server.mjs", &config)).await;
        Self {
            issuer: node.get("issuer"),
            token_endpoint: node.get("token_endpoint"),
            jwks_uri: node.get("jwks_uri"),
            _node: node,
        }
    }

    /// A fresh client-credentials access token of `client_id`, for Writ's
    /// audience.
    pub async fn token(&self, client_id: &str, secret: &str) -> String {
        let response: Value = reqwest::Client::new()
            .post(&self.token_endpoint)
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("resource", "urn:writ"), ("scope", "writ")])
            .send()
            .await
            .expect("the issuer answers at its token endpoint")
            .json()
            .await
            .expect("the issuer answers with JSON");
        response["access_token"].as_str().unwrap_or_else(|| panic!("no access token: {response}")).to_string()
    }
}

/// The authorization server (`authz.mjs`), configured by the JSON its
/// README describes (clients, resources and their scopes, token lifetime,
/// revocation, and the issuer whose JWTs token exchange accepts).
pub struct AuthorizationServer {
    /// The issuer URL, for discovery.
    pub issuer: String,
    pub token_endpoint: String,
    /// `None` when the configuration turned revocation off.
    pub revocation_endpoint: Option<String>,
    pub introspection_endpoint: String,
    /// The configuration, with the port it got, to restart it there.
    config: Value,
    /// `None` while stopped.
    node: Option<NodeScript>,
}

impl AuthorizationServer {
    /// Starts the server with `config` (its `port` may be 0 for a free one).
    pub async fn start(config: Value) -> Self {
        unblocked(move || Self::start_blocking(config)).await
    }

    /// [`AuthorizationServer::start`] for synchronous code, such as a step
    /// that configures Writ before it starts.
    pub fn start_blocking(mut config: Value) -> Self {
        let node = NodeScript::start("authz.mjs", &config);
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

    /// Kills the server and waits until it is gone. It keeps its tokens in
    /// memory: they are gone.
    ///
    /// Then the test's runtime gets a turn, so that clients of this process
    /// see their idle connections to the server closed, as they would by
    /// the time an outage is noticed: without it, the next request goes out
    /// on a connection whose close was not read yet, and fails with
    /// "connection closed" instead of "connection refused".
    pub async fn stop(&mut self) {
        if let Some(mut node) = self.node.take() {
            node.process.stop();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    /// Starts it again on the same port, with the same configuration.
    pub async fn restart(&mut self) {
        self.stop().await;
        let config = self.config.clone();
        self.node = Some(unblocked(move || NodeScript::start("authz.mjs", &config)).await);
    }

    /// RFC 7662 introspection of `token`, as the resource server whose
    /// client is `client_id` would do it.
    pub async fn introspect(&self, client_id: &str, secret: &str, token: &str) -> Value {
        let response = reqwest::Client::new()
            .post(&self.introspection_endpoint)
            .basic_auth(client_id, Some(secret))
            .form(&[("token", token)])
            .send()
            .await
            .expect("the authorization server answers at its introspection endpoint");
        assert!(response.status().is_success(), "introspection answers: {}", response.status());
        response.json().await.expect("introspection answers with JSON")
    }
}

/// Verifies `token` with npm `jose` against the keys at `jwks_url`, for
/// `issuer` and `audience`; returns its payload, and panics if `jose`
/// refuses it.
pub async fn jose_verify(jwks_url: &str, issuer: &str, audience: &str, token: &str) -> Value {
    jose_verify_typed(jwks_url, issuer, audience, token, None).await
}

/// [`jose_verify`], also requiring the JWT header's `typ` when given.
pub async fn jose_verify_typed(
    jwks_url: &str,
    issuer: &str,
    audience: &str,
    token: &str,
    typ: Option<&str>,
) -> Value {
    let mut args = vec!["verify.mjs", jwks_url, issuer, audience, token];
    args.extend(typ);
    let output = tokio::process::Command::new("node")
        .current_dir(scripts())
        .args(&args)
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run node verify.mjs ({error}); {INSTALL}"));
    assert!(output.status.success(), "jose refused the token: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("verify.mjs prints the payload")
}
