//! The example external provider, `tests/peers/external_provider/provider.py`
//! (Python, grpcio): an in-memory API-key backend speaking
//! `writ.provider.v1`, for the external provider's own tests and Writ's.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::process::{self, Running};

/// What to do when Python or the plugin's packages are missing.
const INSTALL: &str = "install python3 and pip, then `python3 -m pip install -r tests/peers/external_provider/requirements.txt`";

/// Installs the plugin's requirements unless `grpc` already imports; once
/// per test binary, whichever test gets here first.
fn requirements_installed() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let importable = || {
            Command::new("python3")
                .args(["-c", "import grpc, grpc_tools"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        if importable() {
            return Ok(());
        }
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(process::peer_dir("external_provider").join("requirements.txt"))
            .status()
            .map_err(|error| format!("cannot run python3 -m pip: {error}"))?;
        if status.success() && importable() { Ok(()) } else { Err(format!("pip install failed: {status}")) }
    });
    if let Err(message) = ready {
        panic!("the Python plugin cannot run: {message}; {INSTALL}");
    }
}

/// The running plugin. It is killed when dropped, and also exits when its
/// stdin closes (`--exit-on-stdin-eof`), so it dies with a test binary that
/// is killed outright.
pub struct PythonPlugin {
    /// Where to reach it: `http://127.0.0.1:<port>` or `unix:<path>`.
    pub endpoint: String,
    process: Running,
}

impl PythonPlugin {
    /// The plugin on a free port.
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// The plugin on `port` (0 picks a free one), e.g. to bring it back
    /// where a stopped one was.
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// The plugin on `port` with extra arguments of `provider.py`
    /// (`--journal FILE`, `--revoke-delay-ms N`, `--token-file FILE`).
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        Self::listening(&port.to_string(), extra)
    }

    /// The plugin listening on `listen`: a port (0 for a free one) or
    /// `unix:<path>`, with extra arguments as for
    /// [`PythonPlugin::start_with`].
    pub fn listening(listen: &str, extra: &[&str]) -> Self {
        requirements_installed();
        let child = Command::new("python3")
            .arg(process::peer_dir("external_provider").join("provider.py"))
            .arg(listen)
            .arg("--exit-on-stdin-eof")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run python3 ({error}); {INSTALL}"));
        let mut process = Running::new(child);
        let ready = process.ready_line("the Python plugin", INSTALL);
        let endpoint = match (&ready["port"], &ready["unix"]) {
            (Value::Number(port), _) => format!("http://127.0.0.1:{port}"),
            (_, Value::String(path)) => format!("unix:{path}"),
            _ => panic!("the Python plugin's ready line names neither a port nor a socket: {ready}"),
        };
        Self { endpoint, process }
    }

    /// The TCP port it listens on; panics for a Unix socket.
    pub fn port(&self) -> u16 {
        let port = self.endpoint.strip_prefix("http://127.0.0.1:").and_then(|port| port.parse().ok());
        port.unwrap_or_else(|| panic!("the plugin listens on {}, not a TCP port", self.endpoint))
    }

    /// Kills the plugin now, as if it went away.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
