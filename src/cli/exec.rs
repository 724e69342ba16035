//! `writ exec`: runs a command with credentials for one task and tool.
//!
//! 1. Issues every grant (all or none; with `--wait-approval`, waits for a
//!    step-up request and collects it). Nothing runs if Writ refuses.
//! 2. Puts the credentials where the command's tools look for them
//!    ([`placement`]): environment variables, or files in a private
//!    directory ([`directory`]). The agent's own workload token is taken
//!    out of the command's environment.
//! 3. Runs the command, forwarding signals to it ([`signals`]), while each
//!    lease renews itself in the background (`writ_client::Lease`); a
//!    renewed credential is written to its file again.
//! 4. When the command ends, however it ends, releases every lease,
//!    removes the directory, and exits with the command's status.
//!
//! Nothing here prints a credential: messages name leases, grants and
//! expiries; the secrets only reach the command's environment and files.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use secrecy::ExposeSecret as _;
use tokio::sync::mpsc;
use writ_client::{Client, Grant, Lease, LeaseStatus, Renewal, Stopped, Token};

use super::ClientArgs;

/// A line on stderr. A stderr whose reader is gone (a closed pipe) must
/// not stop `writ exec` before it has released everything: errors writing
/// it are ignored, where `eprintln!` would panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod directory;
mod placement;
mod signals;

use directory::CredentialDir;
use placement::Mode;
use signals::{Received, Signals};

/// `writ exec` itself failed; the command never ran (as `env` and
/// `timeout` report it).
const EXIT_FAILED: i32 = 125;
/// The command was found but could not be started.
const EXIT_CANNOT_RUN: i32 = 126;
/// The command was not found.
const EXIT_NOT_FOUND: i32 = 127;
/// How long giving the leases back may take when the command has ended.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// The caller's own identity: not for the command unless asked.
const WORKLOAD_IDENTITY: [&str; 4] = ["WRIT_TOKEN", "WRIT_TOKEN_FILE", "WRIT_CLIENT_CERT", "WRIT_CLIENT_KEY"];

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The task the workflow engine opened for this agent.
    #[arg(long, env = "WRIT_TASK_ID")]
    pub task: String,
    /// The tool the command is; policy sees it.
    #[arg(long)]
    pub tool: String,
    /// `provider/role[:scope,scope…][@ttl]`, repeatable; issued all or none.
    #[arg(long = "grant", required = true)]
    pub grants: Vec<String>,
    /// Put the credentials in files in DIR instead of the environment: DIR
    /// must not exist; writ exec makes it (mode 0700, files 0600) and
    /// removes it when the command ends. Renewed credentials are written
    /// again.
    #[arg(long, value_name = "DIR")]
    pub to_file: Option<PathBuf>,
    /// Leave WRIT_TOKEN, WRIT_TOKEN_FILE, WRIT_CLIENT_CERT and
    /// WRIT_CLIENT_KEY (the agent's own identity) in the command's
    /// environment; by default they are removed.
    #[arg(long)]
    pub keep_workload_token: bool,
    /// When policy asks for step-up approval, wait up to this long for the
    /// approvers (e.g. `15m`), then collect and run; without it, writ exec
    /// prints the approval request and exits.
    #[arg(long, value_name = "DURATION", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub wait_approval: Option<Duration>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Runs the command and exits with its status; never returns.
pub async fn run(args: ExecArgs) -> anyhow::Result<()> {
    // First of all: from here on a signal cannot kill writ exec while it
    // holds leases.
    let code = match Signals::listen() {
        Ok(mut signals) => exec(&args, &mut signals).await,
        Err(error) => failed(&anyhow::anyhow!("listening for signals: {error}")),
    };
    std::process::exit(code)
}

/// What `writ exec` holds and gives back at the end, whatever happens.
struct Held {
    leases: Vec<Lease>,
    dir: Option<CredentialDir>,
}

/// Why the command was not started.
enum Abort {
    Failed(anyhow::Error),
    Signalled(Received),
}

async fn exec(args: &ExecArgs, signals: &mut Signals) -> i32 {
    // Nothing is issued yet: a signal may cut this short.
    let prepared = tokio::select! {
        prepared = prepare(args) => prepared,
        signal = signals.recv() => return signal.exit_code(),
    };
    let (client, grants) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return failed(&error),
    };
    let dir = match args.to_file.as_deref().map(CredentialDir::create).transpose() {
        Ok(dir) => dir,
        Err(error) => return failed(&error),
    };
    let mut held = Held { leases: Vec::new(), dir };
    let code = match obtain(&client, args, &grants, signals, &mut held).await {
        Ok(()) => run_command(args, &mut held, signals).await,
        Err(Abort::Failed(error)) => failed(&error),
        Err(Abort::Signalled(signal)) => {
            say!("writ exec: {} received before the command started; it was not started", signal.name);
            signal.exit_code()
        }
    };
    held.end().await;
    code
}

/// A time Writ stated, to the second: `2026-12-06T16:08:21Z`.
fn when(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|at| std::time::SystemTime::try_from(*at).ok())
        .map(|at| {
            chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|| "-".into())
}

fn failed(error: &anyhow::Error) -> i32 {
    say!("error: {error:#}");
    EXIT_FAILED
}

/// Checks what can be checked before asking Writ, and connects.
async fn prepare(args: &ExecArgs) -> anyhow::Result<(Client, Vec<Grant>)> {
    let grants: Vec<Grant> = args.grants.iter().map(|text| text.parse()).collect::<Result<_, _>>()?;
    let mut labels = std::collections::BTreeMap::new();
    for grant in &grants {
        let label = placement::label(&grant.provider, &grant.role);
        if let Some(other) = labels.insert(label.clone(), grant) {
            anyhow::bail!(
                "grants {}/{} and {}/{} would share the name {label} in the command's environment: \
                 ask for one of them in a separate writ exec",
                other.provider,
                other.role,
                grant.provider,
                grant.role
            );
        }
    }
    let token = match (&args.client.token, &args.client.cert) {
        // A projected token file is read again before every call, so a
        // command that outlives one token still renews and releases.
        _ if args.client.token_file.is_some() => {
            let path = args.client.token_file.clone().unwrap_or_default();
            std::fs::metadata(&path).with_context(|| format!("the token file {}", path.display()))?;
            Token::file(path)
        }
        (Some(token), _) => Token::fixed(token.clone()),
        (None, Some(_)) => Token::none(),
        (None, None) => anyhow::bail!(
            "no credentials: set WRIT_TOKEN (--token), or present a client certificate (--cert, --key)"
        ),
    };
    let channel = super::connect(&args.client).await?;
    let client = Client::builder(args.client.endpoint.clone()).token(token).with_channel(channel)?;
    Ok((client, grants))
}

/// Issues the grants (waiting for approval if asked to) into `held`. A
/// call that issues is never cut off by a signal, or its leases would be
/// unknown: the signal is noted, the leases released at the end.
async fn obtain(
    client: &Client,
    args: &ExecArgs,
    grants: &[Grant],
    signals: &mut Signals,
    held: &mut Held,
) -> Result<(), Abort> {
    let (issued, signal) = until_done(client.leases(&args.task, &args.tool, grants), signals).await;
    let approval = match issued {
        Ok(leases) => return keep(held, leases, signal),
        Err(writ_client::Error::ApprovalRequired(approval)) => approval,
        Err(error) => return Err(Abort::Failed(error.into())),
    };
    if let Some(signal) = signal {
        return Err(Abort::Signalled(signal));
    }
    let approvals = approval.votes.iter().filter(|vote| vote.approve).count();
    say!(
        "writ exec: approval required: nothing was issued yet\n  approval {}  group {} ({approvals} of {})  expires {}",
        approval.approval_id,
        approval.group,
        approval.quorum,
        when(approval.expires_at.as_ref()),
    );
    let Some(wait) = args.wait_approval else {
        return Err(Abort::Failed(anyhow::anyhow!(
            "the command was not started: run the same writ exec with --wait-approval 15m to wait for the \
             approvers (asking again while the request is pending answers the same request)"
        )));
    };
    say!(
        "writ exec: waiting up to {} for the approvers",
        humantime_serde::re::humantime::format_duration(wait)
    );
    tokio::select! {
        decided = tokio::time::timeout(wait, client.wait_for_approval(&approval.approval_id)) => match decided {
            Ok(Ok(_approved)) => {}
            Ok(Err(error)) => return Err(Abort::Failed(error.into())),
            Err(_) => return Err(Abort::Failed(anyhow::anyhow!(
                "approval request {} was not decided within {}; the command was not started",
                approval.approval_id,
                humantime_serde::re::humantime::format_duration(wait)
            ))),
        },
        signal = signals.recv() => return Err(Abort::Signalled(signal)),
    }
    say!("writ exec: approval {} approved; collecting", approval.approval_id);
    let (collected, signal) = until_done(client.collect_leases(&approval), signals).await;
    keep(held, collected.map_err(|error| Abort::Failed(error.into()))?, signal)
}

fn keep(held: &mut Held, leases: Vec<Lease>, signal: Option<Received>) -> Result<(), Abort> {
    held.leases = leases;
    match signal {
        Some(signal) => Err(Abort::Signalled(signal)),
        None => Ok(()),
    }
}

/// Runs `call` to its end, noting the first signal that arrives meanwhile.
async fn until_done<T>(call: impl Future<Output = T>, signals: &mut Signals) -> (T, Option<Received>) {
    tokio::pin!(call);
    let mut first = None;
    loop {
        tokio::select! {
            done = &mut call => return (done, first),
            signal = signals.recv(), if first.is_none() => first = Some(signal),
        }
    }
}

/// Places the credentials, runs the command until it ends, and returns
/// its status as `writ exec`'s.
async fn run_command(args: &ExecArgs, held: &mut Held, signals: &mut Signals) -> i32 {
    let mode = held.dir.as_ref().map_or(Mode::Environment, |dir| Mode::Files(dir.path()));
    // Following first, then reading: no renewal falls in between.
    let (updates_tx, mut updates_rx) = mpsc::unbounded_channel();
    let _followers = Followers(
        held.leases
            .iter()
            .enumerate()
            .map(|(index, lease)| follow(index, lease, updates_tx.clone()))
            .collect(),
    );
    let statuses: Vec<LeaseStatus> = held.leases.iter().map(Lease::status).collect();
    for status in &statuses {
        for notice in &status.notices {
            say!("writ exec: {}/{}: {notice}", status.lease.provider, status.lease.role);
        }
    }
    let credentials = statuses
        .iter()
        .map(|status| (status.lease.provider.as_str(), status.lease.role.as_str(), &status.credential));
    let placement = match placement::place_all(credentials, mode) {
        Ok(placement) => placement,
        Err(error) => return failed(&anyhow::anyhow!(error)),
    };
    if let Some(dir) = &held.dir {
        for (name, contents) in &placement.files {
            if let Err(error) = dir.write(name, contents) {
                return failed(&error);
            }
        }
    }

    let mut command = tokio::process::Command::new(&args.command[0]);
    command.args(&args.command[1..]);
    if !args.keep_workload_token {
        WORKLOAD_IDENTITY.iter().for_each(|name| {
            command.env_remove(name);
        });
    }
    for name in &placement.remove {
        command.env_remove(name);
    }
    for (name, (_, value)) in &placement.set {
        command.env(name, value.expose_secret());
    }
    command.env("WRIT_TASK_ID", &args.task);
    if let Some(dir) = &held.dir {
        command.env("WRIT_CREDENTIALS_DIR", dir.path());
    }
    drop(placement);
    let program = args.command[0].to_string_lossy();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            say!("writ exec: {program}: command not found");
            return EXIT_NOT_FOUND;
        }
        Err(error) => {
            say!("writ exec: {program}: cannot run it: {error}");
            return EXIT_CANNOT_RUN;
        }
    };
    let pid = child.id();

    let mut renewals: Vec<Reported> = statuses.iter().map(Reported::new).collect();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            signal = signals.recv() => {
                if let Some(pid) = pid
                    && let Err(error) = signals.forward(signal, pid)
                {
                    say!("writ exec: cannot forward {} to the command: {error}", signal.name);
                }
            }
            Some((index, status)) = updates_rx.recv() => {
                if let (Some(lease), Some(reported)) = (held.leases.get_mut(index), renewals.get_mut(index)) {
                    reported.renewal(lease, &status, held.dir.as_ref());
                }
            }
        }
    };
    match status {
        Ok(status) => signals::exit_code(status),
        Err(error) => {
            say!("writ exec: waiting for the command failed: {error}");
            EXIT_FAILED
        }
    }
}

/// The tasks following the leases, stopped when the command's loop ends.
struct Followers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Followers {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// Sends each change of a lease's status to the command's loop, tagged
/// with the lease's index.
fn follow(
    index: usize,
    lease: &Lease,
    updates_tx: mpsc::UnboundedSender<(usize, LeaseStatus)>,
) -> tokio::task::JoinHandle<()> {
    let mut changes = lease.subscribe();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let status = changes.borrow_and_update().clone();
            if updates_tx.send((index, status)).is_err() {
                return;
            }
        }
    })
}

/// What has been said about one lease's renewals, so that each thing is
/// said once.
struct Reported {
    renewals: u64,
    replacements: u64,
    /// When the credential the command has expires: a renewal that
    /// extends it moves it; one that replaces it moves it only if the
    /// replacement reached the command (a file).
    credential_expires: Option<prost_types::Timestamp>,
    failing: bool,
    stopped: bool,
}

impl Reported {
    fn new(status: &LeaseStatus) -> Self {
        Self {
            renewals: status.renewals,
            replacements: status.replacements,
            credential_expires: status.lease.expires_at,
            failing: false,
            stopped: false,
        }
    }

    fn renewal(&mut self, lease: &mut Lease, status: &LeaseStatus, dir: Option<&CredentialDir>) {
        let what =
            format!("lease {} ({}/{})", status.lease.lease_id, status.lease.provider, status.lease.role);
        if status.replacements > self.replacements {
            self.replacements = status.replacements;
            match dir {
                Some(dir) => {
                    self.credential_expires = status.lease.expires_at;
                    let one = placement::place_one(
                        &status.lease.provider,
                        &status.lease.role,
                        &status.credential,
                        Mode::Files(dir.path()),
                    );
                    for (name, contents) in &one.files {
                        if let Err(error) = dir.write(name, contents) {
                            say!("writ exec: {what}: cannot write the renewed credential: {error:#}");
                        }
                    }
                }
                None => {
                    say!(
                        "writ exec: {what}: the renewal replaced the credential, and a new one cannot reach the \
                         command's environment: renewals stop, and the command's credential expires at {} \
                         (with --to-file, renewed credentials are written to their files)",
                        when(self.credential_expires.as_ref())
                    );
                    lease.stop_renewing();
                    self.stopped = true;
                }
            }
        } else if status.renewals > self.renewals {
            self.credential_expires = status.lease.expires_at;
        }
        self.renewals = status.renewals;
        let expires = when(self.credential_expires.as_ref());
        match &status.renewal {
            Renewal::Scheduled => self.failing = false,
            Renewal::Retrying { error, .. } if !self.failing => {
                self.failing = true;
                say!(
                    "writ exec: renewing {what} failed: {error}; trying again until it expires at {expires}"
                );
            }
            Renewal::Stopped(why) if !self.stopped => {
                self.stopped = true;
                match why {
                    Stopped::Refused(error) => say!(
                        "writ exec: {what} will not be renewed: {error}; the command's credential lasts at most \
                         until {expires}"
                    ),
                    Stopped::NotExtended => say!(
                        "writ exec: {what} cannot be extended past {expires} (the task's deadline or the role's \
                         limit); renewals stop"
                    ),
                    Stopped::Expired(Some(error)) => {
                        say!("writ exec: {what} expired at {expires} while renewing failed: {error}")
                    }
                    Stopped::Expired(None) => say!("writ exec: {what} expired at {expires}"),
                    Stopped::ByCaller | Stopped::Released => {}
                }
            }
            Renewal::Retrying { .. } | Renewal::Stopped(_) => {}
        }
    }
}

impl Held {
    /// Releases every lease and removes the directory, saying what failed.
    async fn end(self) {
        let mut releases = tokio::task::JoinSet::new();
        for lease in self.leases {
            let status = lease.status();
            releases
                .spawn(async move { (status, tokio::time::timeout(RELEASE_TIMEOUT, lease.release()).await) });
        }
        while let Some(joined) = releases.join_next().await {
            let Ok((status, released)) = joined else { continue };
            let problem = match released {
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("Writ did not answer within {RELEASE_TIMEOUT:?}"),
            };
            say!(
                "writ exec: releasing lease {} ({}/{}) failed: {problem}; it lives until it expires at {} or \
                 its task closes",
                status.lease.lease_id,
                status.lease.provider,
                status.lease.role,
                when(status.lease.expires_at.as_ref())
            );
        }
        if let Some(dir) = self.dir
            && let Err(error) = dir.remove()
        {
            say!("writ exec: {error:#}");
        }
    }
}
