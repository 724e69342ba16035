//! Real Redis servers for tests: a single node ([`RedisServer`]) or a
//! three-primary Redis Cluster ([`RedisCluster`]), started from the
//! `redis-server` on the PATH on free local ports, without persistence,
//! each in its own temporary directory, and killed when dropped. Never the
//! system's Redis on 6379. `redis-server` and `redis-cli` come from the
//! `redis-server` and `redis-tools` packages (`.ci/run` installs them).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to do when `redis-server` or `redis-cli` is missing.
const INSTALL: &str = "install redis-server and redis-cli (Debian: apt-get install redis-server redis-tools)";

/// How long a server may take to accept connections, or a cluster to
/// agree on its slots.
const STARTUP: Duration = Duration::from_secs(20);

/// One `redis-server` process.
pub struct RedisServer {
    port: u16,
    /// Extra arguments it was started with, to restart it the same way.
    extra: Vec<String>,
    dir: tempfile::TempDir,
    /// `None` while stopped.
    child: Option<Child>,
}

impl RedisServer {
    /// A single node on a free port.
    pub fn start() -> Self {
        Self::start_on_free_port(false, &[])
    }

    /// Tries free ports until a server starts on one: another process may
    /// take a port between our choosing it and the server binding it.
    fn start_on_free_port(with_bus: bool, extra: &[&str]) -> Self {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temporary directory for redis-server");
            let extra = extra.iter().map(|arg| arg.to_string()).collect();
            let mut server = Self { port: free_port(with_bus), extra, dir, child: None };
            match server.launch() {
                Ok(()) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("redis-server did not start: {failures:?}; {INSTALL}");
    }

    /// A single node that keeps its data across a kill and restart: AOF
    /// with an fsync per write, as a production Writ deployment runs it.
    pub fn start_persistent() -> Self {
        Self::start_on_free_port(false, &["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// A single node that also serves TLS, on the port returned, with the
    /// given PEM files (`tls-auth-clients` as asked: `yes` needs a client
    /// certificate of `ca`); its plain port stays for the test's own use.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path, client_certificates: bool) -> (Self, u16) {
        let tls_port = free_port(false).to_string();
        let paths = [cert, key, ca].map(|path| path.display().to_string());
        let auth = if client_certificates { "yes" } else { "no" };
        let server = Self::start_on_free_port(
            false,
            &[
                "--tls-port",
                &tls_port,
                "--tls-cert-file",
                &paths[0],
                "--tls-key-file",
                &paths[1],
                "--tls-ca-cert-file",
                &paths[2],
                "--tls-auth-clients",
                auth,
            ],
        );
        (server, tls_port.parse().expect("a port number"))
    }

    /// The port it listens on, for a client or for `redis-cli`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its `redis://` URL, as Writ's Redis store is configured.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its working directory (`--dir`): where an AOF or cluster
    /// configuration is written.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL: no shutdown, nothing saved) and waits for
    /// it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: it saved nothing),
    /// and waits until it answers.
    pub fn restart(&mut self) {
        if let Err(failure) = self.launch() {
            panic!("redis-server did not restart: {failure}");
        }
    }

    fn launch(&mut self) -> Result<(), String> {
        self.stop();
        let log_path = self.dir.path().join(format!("redis-{}.log", self.port));
        let log = std::fs::File::create(&log_path).expect("the redis-server log file is created");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run redis-server ({error}); {INSTALL}"));
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            // Exited: the port was taken, most likely. (Checked before the
            // PING, which could otherwise reach whoever took the port.)
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("port {}: {status}: {}", self.port, log.lines().last().unwrap_or("")));
            }
            if self.command(&["PING"]).as_deref() == Some("+PONG") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("port {}: no answer within {STARTUP:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one command and returns the first line of the answer, or
    /// `None` if the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = Vec::new();
        let mut buffer = [0; 4096];
        loop {
            let read = stream.read(&mut buffer).ok()?;
            answer.extend_from_slice(&buffer[..read]);
            if read == 0 || answer.ends_with(b"\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&answer);
        text.lines().next().map(str::to_owned)
    }

    /// `redis-cli -p <port> <args>`, its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run redis-cli ({error}); {INSTALL}"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three primaries and no replicas.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three nodes, joins them with `redis-cli --cluster create`,
    /// and waits until every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`Self::start`], with `cluster-require-full-coverage no` (while a
    /// node is down, the others keep serving their own slots) and AOF with
    /// an fsync per write (a stopped node comes back with its data).
    pub fn start_partial() -> Self {
        Self::start_with(&[
            "--cluster-require-full-coverage",
            "no",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    }

    fn start_with(extra: &[&str]) -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            // The cluster bus listens on port + 10000. Its configuration
            // file is written in the node's own directory (--dir), and read
            // back when the node restarts.
            let cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"];
            nodes.push(RedisServer::start_on_free_port(
                true,
                &[&cluster[..], &["--cluster-node-timeout", "2000"], extra].concat(),
            ));
        }
        let addresses: Vec<String> = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port())).collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|error| panic!("cannot run redis-cli ({error}); {INSTALL}"));
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + STARTUP;
        for node in &nodes {
            while !node.cli(&["cluster", "info"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes }
    }

    /// The nodes' URLs, as Writ's Redis store takes a cluster.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, to look at each of them.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// One node, to stop or restart it. A restarted node reads its cluster
    /// configuration back and rejoins.
    pub fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }
}

/// A port nothing listens on now (and, for a cluster node, whose bus port
/// is free too), at most 55535 so the bus port is valid.
fn free_port(with_bus: bool) -> u16 {
    for _ in 0..1000 {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else { continue };
        let Ok(address) = listener.local_addr() else { continue };
        let port = address.port();
        if !(1024..=55_535).contains(&port) || port == 6379 {
            continue;
        }
        if with_bus && TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
            continue;
        }
        return port;
    }
    panic!("no free port for redis-server");
}
