//! Real peers nobody here wrote: npm `oidc-provider` as a workload issuer,
//! and npm `jose` as an independent JWT verifier. `.ci/run` installs them
//! (`npm ci` in tests/peers/oidc).

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The peers' folder, with its npm packages installed (once per run).
fn peer_dir() -> PathBuf {
    static INSTALLED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc");
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

/// Verifies a JWT with `jose` against a remote JWKS; returns its payload.
pub async fn jose_verify(jwks_url: &str, issuer: &str, audience: &str, token: &str) -> Value {
    let output = Command::new("node")
        .current_dir(peer_dir())
        .args(["verify.mjs", jwks_url, issuer, audience, token])
        .output()
        .await
        .expect("node runs");
    assert!(output.status.success(), "jose refused the token: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("verify.mjs prints the payload")
}

/// A running `oidc-provider`, killed on drop.
pub struct OidcProvider {
    pub issuer: String,
    pub token_endpoint: String,
    _child: Child,
}

impl OidcProvider {
    /// Starts the provider with `(client_id, secret, alg)` clients.
    pub async fn start(clients: &[(&str, &str, &str)]) -> Self {
        let dir = peer_dir();
        let config = json!({
            "port": 0,
            "audience": "writ",
            "scopes": ["writ"],
            "clients": clients.iter().map(|(id, secret, alg)| json!({ "client_id": id, "client_secret": secret, "alg": alg })).collect::<Vec<_>>(),
        });
        let config_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(config_file.path(), config.to_string()).unwrap();
        let mut child = Command::new("node")
            .current_dir(&dir)
            .arg("server.mjs")
            .arg(config_file.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("oidc-provider starts within 30 s")
            .unwrap()
            .expect("oidc-provider prints its ready line");
        let ready: Value = serde_json::from_str(&ready).unwrap();
        Self {
            issuer: ready["issuer"].as_str().unwrap().to_string(),
            token_endpoint: ready["token_endpoint"].as_str().unwrap().to_string(),
            _child: child,
        }
    }

    /// A client-credentials JWT access token for Writ's audience.
    pub async fn token(&self, client_id: &str, secret: &str) -> String {
        let response: Value = reqwest::Client::new()
            .post(&self.token_endpoint)
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("resource", "urn:writ"), ("scope", "writ")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["access_token"].as_str().unwrap_or_else(|| panic!("no token: {response}")).to_string()
    }
}

/// The example external provider (Python, grpcio), killed on drop.
pub struct PythonPlugin {
    pub endpoint: String,
    _child: std::process::Child,
}

impl PythonPlugin {
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// Starts the plugin on `port` (0 picks a free one).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Starts the plugin on `port` with extra arguments (e.g. `--journal`).
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        use std::io::BufRead as _;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/external_provider");
        let importable = || {
            std::process::Command::new("python3")
                .args(["-c", "import grpc, grpc_tools"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        if !importable() {
            let status = std::process::Command::new("python3")
                .args(["-m", "pip", "install", "-q", "-r"])
                .arg(dir.join("requirements.txt"))
                .status()
                .expect("python3 runs");
            assert!(status.success() && importable(), "cannot install the Python plugin's requirements");
        }
        let mut child = std::process::Command::new("python3")
            .arg(dir.join("provider.py"))
            .args([port.to_string().as_str(), "--exit-on-stdin-eof"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("plugin ready line: {line:?}"));
        Self { endpoint: format!("http://127.0.0.1:{}", ready["port"]), _child: child }
    }

    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().and_then(|port| port.parse().ok()).unwrap()
    }
}

impl Drop for PythonPlugin {
    fn drop(&mut self) {
        let _ = self._child.kill();
        let _ = self._child.wait();
    }
}
