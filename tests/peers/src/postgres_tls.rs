//! A PostgreSQL server of its own for TLS tests: `initdb` into a temporary
//! directory, started on a free port with `ssl = on` and the certificate
//! the test made, accepting TCP connections over TLS only (`hostssl`;
//! plaintext is rejected), with a trusted `postgres` superuser. Killed and
//! removed when dropped. The system's server is never reconfigured.
//!
//! PostgreSQL refuses to run as root: as root, the server runs as the
//! `postgres` user (`runuser`), who is given the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PostgresTlsServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The directory of `initdb` and `postgres`: Debian keeps them per version.
fn binaries() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin"))).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().filter(|dir| dir.join("initdb").exists()).unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries under /usr/lib/postgresql (Debian: apt-get install postgresql)")
    })
}

fn as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `program args…`, as the `postgres` user when this process is root.
fn command(program: &Path) -> Command {
    if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn give(path: &Path) {
    if as_root() {
        let status = Command::new("chown").arg("-R").arg("postgres:").arg(path).status().expect("chown runs");
        assert!(status.success(), "chown -R postgres {}", path.display());
    }
}

impl PostgresTlsServer {
    /// Starts a server serving `cert_pem` (with `key_pem`) for TLS.
    pub fn start(cert_pem: &str, key_pem: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let bin = binaries();
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        give(dir.path());
        let status = command(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed in {}", data.display());
        std::fs::write(data.join("server.crt"), cert_pem).unwrap();
        std::fs::write(data.join("server.key"), key_pem).unwrap();
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        // TCP only over TLS; the socket (for nothing here) stays trusted.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
        )
        .unwrap();
        give(dir.path());
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        let child = command(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "ssl=on",
                "-c",
                "fsync=off",
            ])
            .args(["-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("postgres runs");
        let mut server = Self { port, dir, child: Some(child) };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
                panic!("postgres exited ({status}): {log}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Accepting connections is not yet accepting logins.
                let ready = Command::new(binaries().join("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .status()
                    .is_ok_and(|status| status.success());
                if ready {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "postgres did not start within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Settings reaching it through its Unix socket, which needs no TLS:
    /// for the test's own set-up and checks.
    pub fn socket_settings(&self, dbname: &str) -> String {
        format!("host={} port={} user=postgres dbname={dbname}", self.dir.path().display(), self.port)
    }

    /// What the server wrote, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PostgresTlsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL to runuser reaches nobody else: end the server itself,
            // by the pid it wrote.
            let pid_file = self.dir.path().join("data").join("postmaster.pid");
            if let Some(pid) =
                std::fs::read_to_string(pid_file).ok().and_then(|text| text.lines().next().map(str::to_owned))
            {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
