//! The signals `writ exec` passes on to its command, and how a command's
//! end becomes `writ exec`'s exit status.
//!
//! Listening replaces the signals' default action, so `writ exec` is not
//! killed by them while it holds leases: it forwards them and waits for
//! the command. SIGINT and SIGQUIT typed at a terminal reach every process
//! of the terminal's foreground process group, the command included:
//! those are not sent a second time (some programs treat a second Ctrl-C
//! as "quit now").

use std::process::ExitStatus;

/// Exit status of a command killed by signal `n`, as shells report it.
const SIGNALLED: i32 = 128;

/// A signal `writ exec` received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Received {
    pub number: i32,
    pub name: &'static str,
}

impl Received {
    /// What `writ exec` exits with when this signal stops it before the
    /// command started.
    pub fn exit_code(self) -> i32 {
        SIGNALLED + self.number
    }
}

/// The command's status as `writ exec`'s own: its exit code, or 128 + the
/// number of the signal that killed it.
pub(super) fn exit_code(status: ExitStatus) -> i32 {
    if let Some(code) = status.code() {
        return code;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return SIGNALLED + signal;
        }
    }
    1
}

#[cfg(unix)]
pub(super) use unix::Signals;

#[cfg(unix)]
mod unix {
    use rustix::process::{Pid, Signal};
    use tokio::signal::unix::{SignalKind, signal};

    use super::Received;

    /// The signals forwarded to the command.
    const FORWARDED: [(Signal, &str); 6] = [
        (Signal::INT, "SIGINT"),
        (Signal::TERM, "SIGTERM"),
        (Signal::HUP, "SIGHUP"),
        (Signal::QUIT, "SIGQUIT"),
        (Signal::USR1, "SIGUSR1"),
        (Signal::USR2, "SIGUSR2"),
    ];

    /// Listens for the forwarded signals from creation on.
    pub(in crate::cli) struct Signals {
        streams: Vec<(Received, tokio::signal::unix::Signal)>,
    }

    impl Signals {
        pub fn listen() -> std::io::Result<Self> {
            let streams = FORWARDED
                .iter()
                .map(|(signal_, name)| {
                    let received = Received { number: signal_.as_raw(), name };
                    Ok((received, signal(SignalKind::from_raw(signal_.as_raw()))?))
                })
                .collect::<std::io::Result<_>>()?;
            Ok(Self { streams })
        }

        /// The next signal received.
        pub async fn recv(&mut self) -> Received {
            std::future::poll_fn(|context| {
                for (received, stream) in &mut self.streams {
                    if stream.poll_recv(context).is_ready() {
                        return std::task::Poll::Ready(*received);
                    }
                }
                std::task::Poll::Pending
            })
            .await
        }

        /// Sends `received` on to the process `pid`, unless the terminal
        /// delivered it there already. Returns whether it was sent.
        pub fn forward(&self, received: Received, pid: u32) -> std::io::Result<bool> {
            let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
                return Ok(false);
            };
            let Some((signal_, _)) =
                FORWARDED.iter().find(|(signal_, _)| signal_.as_raw() == received.number)
            else {
                return Ok(false);
            };
            if matches!(*signal_, Signal::INT | Signal::QUIT) && terminal_delivers_to(pid) {
                return Ok(false);
            }
            match rustix::process::kill_process(pid, *signal_) {
                Ok(()) => Ok(true),
                // Gone already: its exit is on its way.
                Err(rustix::io::Errno::SRCH) => Ok(false),
                Err(error) => Err(error.into()),
            }
        }
    }

    /// Whether a signal typed at the controlling terminal reached `pid`
    /// too: `writ exec` is in the terminal's foreground process group and
    /// the command has stayed in it.
    fn terminal_delivers_to(pid: Pid) -> bool {
        let Ok(tty) = std::fs::File::open("/dev/tty") else {
            return false;
        };
        let own = rustix::process::getpgrp();
        rustix::termios::tcgetpgrp(&tty).is_ok_and(|foreground| foreground == own)
            && rustix::process::getpgid(Some(pid)).is_ok_and(|group| group == own)
    }
}

#[cfg(not(unix))]
pub(super) struct Signals;

#[cfg(not(unix))]
impl Signals {
    pub fn listen() -> std::io::Result<Self> {
        Err(std::io::Error::other("writ exec runs on Unix only"))
    }

    pub async fn recv(&mut self) -> Received {
        std::future::pending().await
    }

    pub fn forward(&self, _: Received, _: u32) -> std::io::Result<bool> {
        Ok(false)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    #[test]
    fn a_signalled_command_exits_128_plus_the_signal() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(Received { number: 2, name: "SIGINT" }.exit_code(), 130);
    }
}
