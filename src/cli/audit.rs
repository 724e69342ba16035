//! `writ audit …`: verify a log (and its signed checkpoints), make and
//! read checkpoint signing keys, and export records (role `auditor`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use super::{ClientArgs, authorized, connect};
use crate::api::{convert, proto};

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check an audit log (or a directory of replicas' logs): its hash
    /// chain, and with `--public-key` its signed checkpoints. Names the
    /// first record that is wrong.
    Verify {
        /// A log file, or a directory whose `*.jsonl` files are logs.
        path: PathBuf,
        /// A PEM Ed25519 public key that signs checkpoints; repeatable (keys
        /// retired by a rotation still verify the checkpoints they signed).
        #[arg(long = "public-key", value_name = "PEM")]
        public_keys: Vec<PathBuf>,
        /// Accept the records after the last checkpoint: a log still being
        /// written (they are listed).
        #[arg(long, requires = "public_keys")]
        allow_live_tail: bool,
        /// Accept records found unsigned at a restart (`chain_resumed`: a
        /// crash, or records added while Writ was stopped; listed).
        #[arg(long, requires = "public_keys")]
        allow_restarts: bool,
        /// `SEQ` or `SEQ:SHA256`: signed records must reach record SEQ and,
        /// with a hash, its line must hash to it (from a checkpoint kept
        /// elsewhere: its `covers` and `head`). One log only.
        #[arg(long, value_name = "SEQ[:SHA256]", requires = "public_keys")]
        at_least: Option<String>,
        /// For a directory: a replica whose log must be there; repeatable.
        #[arg(long = "replica", value_name = "NAME", requires = "public_keys")]
        replicas: Vec<String>,
    },
    /// Make a key that signs audit checkpoints (PKCS#8, mode 0600), and
    /// write its public key beside it (`audit.pk8` → `audit.pub.pem`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the PEM public key of a checkpoint signing key.
    PublicKey { key_file: PathBuf },
    /// Print a replica's audit records as JSON lines, as written (role
    /// `auditor`).
    Export {
        #[command(flatten)]
        client: ClientArgs,
        /// A duration back from now (`24h`, `30m`) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// As `--since`; records before it.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// Every agent this owner answers for.
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        task: Option<String>,
        /// An event name, e.g. `issued` or `agent_suspended`.
        #[arg(long)]
        event: Option<String>,
    },
}

/// `24h` (back from now) or an RFC 3339 time.
pub(super) fn parse_when(flag: &str, text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let ago = humantime_serde::re::humantime::parse_duration(text)
        .map_err(|_| anyhow::anyhow!("{flag} {text:?} is neither a duration (24h) nor an RFC 3339 time"))?;
    chrono::Duration::from_std(ago)
        .ok()
        .and_then(|ago| chrono::Utc::now().checked_sub_signed(ago))
        .ok_or_else(|| anyhow::anyhow!("{flag} {text:?} is too far back"))
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    use crate::audit::{PublicKey, Signer, VerifyOptions};
    match command {
        AuditCommand::Export { client, since, until, agent, owner, task, event } => {
            let when = |flag: &str, text: Option<String>| {
                text.map(|text| parse_when(flag, &text).map(convert::timestamp)).transpose()
            };
            let request = proto::ExportAuditRequest {
                since: when("--since", since)?,
                until: when("--until", until)?,
                agent: agent.unwrap_or_default(),
                owner: owner.unwrap_or_default(),
                task_id: task.unwrap_or_default(),
                event: event.unwrap_or_default(),
            };
            let mut service = proto::audit_service_client::AuditServiceClient::new(connect(&client).await?);
            let mut records = service.export_audit(authorized(&client, request)?).await?.into_inner();
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            while let Some(record) = records.message().await? {
                writeln!(out, "{}", record.json)?;
            }
            Ok(())
        }
        AuditCommand::Verify { path, public_keys, allow_live_tail, allow_restarts, at_least, replicas } => {
            let at_least = at_least
                .map(|text| {
                    let (seq, hash) = match text.split_once(':') {
                        Some((seq, hash)) => (seq, Some(hash.to_ascii_lowercase())),
                        None => (text.as_str(), None),
                    };
                    let seq = seq
                        .parse::<u64>()
                        .map_err(|_| anyhow::anyhow!("--at-least {text:?} is not SEQ or SEQ:SHA256"))?;
                    anyhow::Ok((seq, hash))
                })
                .transpose()?;
            let keys = public_keys
                .iter()
                .map(|file| {
                    let text = std::fs::read_to_string(file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    PublicKey::from_pem(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let signed = !keys.is_empty();
            let options = VerifyOptions { keys, allow_live_tail, allow_restarts, at_least, replicas };
            let reports = crate::audit::verify_path(&path, &options).map_err(anyhow::Error::msg)?;
            for report in reports {
                println!("{}", report.summary(signed));
            }
            Ok(())
        }
        AuditCommand::Keygen { out } => {
            let pkcs8 = crate::audit::checkpoint::generate_pkcs8().map_err(anyhow::Error::msg)?;
            crate::dev::write_secret(&out, &pkcs8)?;
            let public = Signer::from_pkcs8(&pkcs8, "writ").map_err(anyhow::Error::msg)?.public_key();
            let pem_path = out.with_extension("pub.pem");
            std::fs::write(&pem_path, public.to_pem())?;
            println!("{}: signing key {}", out.display(), public.key_id());
            println!("{}: its public key, for `writ audit verify --public-key`", pem_path.display());
            Ok(())
        }
        AuditCommand::PublicKey { key_file } => {
            let pkcs8 =
                std::fs::read(&key_file).with_context(|| format!("reading {}", key_file.display()))?;
            let signer = Signer::from_pkcs8(&pkcs8, "writ")
                .map_err(|e| anyhow::anyhow!("{}: {e}", key_file.display()))?;
            print!("{}", signer.public_key().to_pem());
            Ok(())
        }
    }
}
