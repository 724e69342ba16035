//! What the starters share: a child process that is killed and reaped when
//! dropped, and the one JSON line a script prints when it is ready.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// How long a peer may take to print its ready line or to answer.
pub(crate) const STARTUP: Duration = Duration::from_secs(30);

/// A folder next to this crate's manifest (`tests/peers/<name>`), where the
/// peer scripts live.
pub(crate) fn peer_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// A running peer process. Dropping it kills the process and waits for it,
/// so no test leaves a process (or a zombie) behind.
pub(crate) struct Running {
    /// `None` once stopped.
    child: Option<Child>,
}

impl Running {
    pub(crate) fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    /// Kills the process (SIGKILL) and waits until it is gone.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Reads the one JSON line `what` prints on stdout once it is ready,
    /// waiting at most [`STARTUP`]. On a timeout, an exit or a line that is
    /// not JSON, the process is stopped and the test panics with `hint`
    /// (what to install or check).
    pub(crate) fn ready_line(&mut self, what: &str, hint: &str) -> Value {
        let stdout = self.child.as_mut().and_then(|child| child.stdout.take());
        let stdout = stdout.unwrap_or_else(|| panic!("{what}: its stdout must be piped"));
        // On a thread of its own, so the wait has a timeout; the thread
        // ends when the process does.
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = match receiver.recv_timeout(STARTUP) {
            Ok(line) if !line.is_empty() => line,
            Ok(_) => {
                let status = self.child.as_mut().and_then(|child| child.wait().ok());
                self.stop();
                panic!("{what} exited before it was ready ({status:?}); {hint}");
            }
            Err(_) => {
                self.stop();
                panic!("{what} did not print its ready line within {STARTUP:?}; {hint}");
            }
        };
        match serde_json::from_str(&line) {
            Ok(ready) => ready,
            Err(error) => {
                self.stop();
                panic!("{what} printed {line:?} instead of its JSON ready line ({error}); {hint}");
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}
