//! The command line: `serve`, `dev`, `token`, and client commands that call
//! Writ's gRPC API as a workflow engine, an agent or an operator would.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

mod agents;
mod approvals;
mod audit;
mod exec;
mod providers;
mod report;
mod store;

pub use agents::AgentsCommand;
pub use approvals::ApprovalsCommand;
pub use audit::AuditCommand;
pub use exec::ExecArgs;
pub use providers::ProvidersCommand;
pub use report::ReportCommand;
pub use store::StoreCommand;

use crate::api::convert;
use crate::api::proto;
use crate::clock::SystemClock;
use crate::config::Config;

#[derive(Parser, Debug)]
#[command(name = "writ", version, about = "Just-in-time credentials for AI agents")]
pub struct Cli {
    /// Log filter, e.g. `info` or `writ=debug`.
    #[arg(long, env = "WRIT_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log as JSON lines (for production).
    #[arg(long, env = "WRIT_LOG_JSON", global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve with a configuration file.
    Serve {
        #[arg(long, short, env = "WRIT_CONFIG", default_value = "writ.toml")]
        config: PathBuf,
    },
    /// A complete local setup: embedded store, keys, a development issuer.
    Dev {
        #[arg(long, default_value = ".writ-dev")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "127.0.0.1:7071")]
        http_listen: std::net::SocketAddr,
        #[arg(long, default_value = "127.0.0.1:7072")]
        issuer_listen: std::net::SocketAddr,
    },
    /// Print a development workload token: `agent`, `workflow`, `operator`,
    /// `policy-admin`, `approver`, `approver-2`, `auditor`, or any other subject (which Writ will record as a
    /// sighting).
    Token {
        #[arg(long, default_value = ".writ-dev")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7072")]
        issuer_listen: std::net::SocketAddr,
        #[arg(long, default_value = "1h", value_parser = humantime_serde::re::humantime::parse_duration)]
        ttl: Duration,
        who: String,
    },
    /// Open, close and inspect tasks (role `workflow`).
    #[command(subcommand)]
    Task(TaskCommand),
    /// Ask for credentials as an agent.
    Issue {
        #[command(flatten)]
        client: ClientArgs,
        task_id: String,
        #[arg(long)]
        tool: String,
        /// `provider/role[:scope,scope…][@ttl]`, e.g. `tokens/orders-read:orders:read@5m`.
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
    },
    /// Run a command with credentials, as an agent: issue the grants, put
    /// them in the command's environment (or files), renew them while it
    /// runs, release them when it ends, exit with its status.
    Exec(Box<ExecArgs>),
    /// Extend a lease, as its agent.
    Renew {
        #[command(flatten)]
        client: ClientArgs,
        lease_id: String,
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Give a lease back early, as its agent.
    Release {
        #[command(flatten)]
        client: ClientArgs,
        lease_id: String,
    },
    /// List leases (role `operator`).
    Leases {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        agent: Option<String>,
    },
    /// The agent inventory, and the kill switch (role `operator`).
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Configured providers; suspend one during an incident (role `operator`).
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// List identities that called without being registered (role `operator`).
    Sightings {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Reports for the identity team (role `auditor`).
    #[command(subcommand)]
    Report(ReportCommand),
    /// Policy tools, offline (no server, store or issuer).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Step-up approval requests: decide them (role `approver`), or wait
    /// for and collect one (as its agent).
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Lease store tools, offline (every replica stopped).
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    Start {
        #[command(flatten)]
        client: ClientArgs,
        task_id: String,
        #[arg(long)]
        agent: String,
        #[command(flatten)]
        context: TaskContextArgs,
        #[arg(long, default_value = "1h", value_parser = humantime_serde::re::humantime::parse_duration)]
        deadline_in: Duration,
    },
    Close {
        #[command(flatten)]
        client: ClientArgs,
        task_id: String,
    },
    Get {
        #[command(flatten)]
        client: ClientArgs,
        task_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Run a file of cases (a request and the decision it must get)
    /// against a policy set. Exits 0 when every case passes, 1 when one
    /// does not, 2 when the cases file or the policies are unusable.
    Test {
        /// The cases file (TOML; see docs/policy.md).
        cases: PathBuf,
        /// A policy file or directory, repeatable; replaces the file's
        /// `policies`.
        #[arg(long = "policies", value_name = "PATH")]
        policies: Vec<PathBuf>,
    },
    /// Ask a running Writ what it would decide for an agent, a task (or
    /// task attributes), a tool and a grant, and which policies decide it,
    /// without issuing anything (role `policy_admin`).
    Explain(Box<ExplainArgs>),
}

/// A task's attributes, as `task start` sets them and `policy explain`
/// describes them.
#[derive(Args, Debug, Clone)]
pub struct TaskContextArgs {
    #[arg(long, default_value = "")]
    purpose: String,
    #[arg(long, default_value = "")]
    environment: String,
    #[arg(long, default_value = "")]
    classification: String,
    #[arg(long, default_value = "")]
    ticket: String,
    /// `key=value`, repeatable.
    #[arg(long = "label")]
    labels: Vec<String>,
}

impl TaskContextArgs {
    fn into_proto(self) -> anyhow::Result<proto::TaskContext> {
        Ok(proto::TaskContext {
            purpose: self.purpose,
            environment: self.environment,
            data_classification: self.classification,
            ticket: self.ticket,
            labels: parse_labels(&self.labels)?,
        })
    }
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[arg(long)]
    agent: String,
    /// An open task of the agent; without it, the attributes below
    /// describe a task opened now.
    #[arg(long, conflicts_with_all = ["purpose", "environment", "classification", "ticket", "labels"])]
    task: Option<String>,
    #[command(flatten)]
    context: TaskContextArgs,
    #[arg(long)]
    tool: String,
    /// `provider/role[:scope,scope…][@ttl]`.
    #[arg(long)]
    grant: String,
    /// `issue` or `renew`.
    #[arg(long, default_value = "issue")]
    action: String,
}

#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Writ's gRPC address: `https://` speaks TLS, `http://` plaintext
    /// (`writ dev` only).
    #[arg(long, env = "WRIT_ENDPOINT", default_value = "http://127.0.0.1:7070")]
    pub endpoint: String,
    /// The caller's workload token. A service may present a client
    /// certificate (`--cert`, `--key`) instead.
    #[arg(long, env = "WRIT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the workload token, read again before every call (a
    /// Kubernetes projected service-account token); wins over `--token`.
    #[arg(long, env = "WRIT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for Writ's certificate, instead of
    /// the public web PKI.
    #[arg(long, env = "WRIT_CA")]
    pub ca: Option<PathBuf>,
    /// A client certificate chain (PEM) to present (mTLS); needs `--key`.
    #[arg(long, env = "WRIT_CLIENT_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "WRIT_CLIENT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
}

/// The token is never shown.
impl std::fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientArgs")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

/// Runs a command: logs (and traces, where configured) are set up first,
/// for `serve` from its configuration, and flushed at the end.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let format = |configured| if cli.log_json { crate::telemetry::LogFormat::Json } else { configured };
    let (config, telemetry) = match &cli.command {
        Command::Serve { config } => {
            let config = Config::load(config)?;
            let telemetry = crate::telemetry::init(
                &cli.log,
                format(config.telemetry.log_format),
                &config.telemetry,
                true,
            )?;
            (Some(config), telemetry)
        }
        // `writ dev` exports traces where OTEL_EXPORTER_OTLP_ENDPOINT says;
        // the client commands never do.
        command => {
            let defaults = crate::telemetry::TelemetryConfig::default();
            let traces = matches!(command, Command::Dev { .. });
            (None, crate::telemetry::init(&cli.log, format(defaults.log_format), &defaults, traces)?)
        }
    };
    let result = run_command(cli.command, config).await;
    telemetry.shutdown().await;
    result
}

async fn run_command(command: Command, config: Option<Config>) -> anyhow::Result<()> {
    match command {
        Command::Serve { .. } => match config {
            Some(config) => serve(config).await,
            None => bail!("no configuration loaded"),
        },
        Command::Dev { data_dir, listen, http_listen, issuer_listen } => {
            crate::dev::run(crate::dev::DevOptions { data_dir, listen, http_listen, issuer_listen }).await
        }
        Command::Token { data_dir, issuer_listen, ttl, who } => {
            let options = crate::dev::DevOptions {
                data_dir: data_dir.clone(),
                listen: issuer_listen,
                http_listen: issuer_listen,
                issuer_listen,
            };
            let key = data_dir.join("dev-issuer.pk8");
            if !key.exists() {
                bail!(
                    "{} does not exist: run `writ dev --data-dir {}` first",
                    key.display(),
                    data_dir.display()
                );
            }
            let issuer = crate::dev::DevIssuer::load_or_create(&crate::dev::issuer_url(&options), &key)?;
            let subject = match who.as_str() {
                "agent" => crate::dev::AGENT_SUBJECT,
                "workflow" => crate::dev::WORKFLOW_SUBJECT,
                "operator" => crate::dev::OPERATOR_SUBJECT,
                "policy-admin" => crate::dev::POLICY_ADMIN_SUBJECT,
                "approver" => crate::dev::APPROVER_SUBJECT,
                "approver-2" => crate::dev::SECOND_APPROVER_SUBJECT,
                "auditor" => crate::dev::AUDITOR_SUBJECT,
                other => other,
            };
            println!("{}", issuer.mint(subject, crate::dev::AUDIENCE, ttl, chrono::Utc::now())?);
            Ok(())
        }
        Command::Task(command) => task(command).await,
        Command::Approvals(command) => approvals::run(command).await,
        Command::Agents(command) => agents::run(command).await,
        Command::Providers(command) => providers::run(command).await,
        Command::Report(command) => report::run(command).await,
        Command::Issue { client, task_id, tool, grants } => issue(client, task_id, tool, grants).await,
        Command::Exec(args) => exec::run(*args).await,
        Command::Renew { client, lease_id, ttl } => {
            let mut service =
                proto::credential_service_client::CredentialServiceClient::new(connect(&client).await?);
            let request = proto::RenewRequest { lease_id, ttl: ttl.map(convert::duration) };
            let response = service.renew(authorized(&client, request)?).await?.into_inner();
            response.lease.iter().for_each(print_lease);
            if let Some(credential) = response.credential {
                print_credential(&credential);
            }
            Ok(())
        }
        Command::Release { client, lease_id } => {
            let mut service =
                proto::credential_service_client::CredentialServiceClient::new(connect(&client).await?);
            let response =
                service.release(authorized(&client, proto::ReleaseRequest { lease_id })?).await?.into_inner();
            response.lease.iter().for_each(print_lease);
            Ok(())
        }
        Command::Leases { client, task, agent } => {
            let mut service = proto::admin_service_client::AdminServiceClient::new(connect(&client).await?);
            let mut page_token = String::new();
            loop {
                let request = proto::ListLeasesRequest {
                    agent: agent.clone().unwrap_or_default(),
                    task_id: task.clone().unwrap_or_default(),
                    page_token: page_token.clone(),
                    ..Default::default()
                };
                let response = service.list_leases(authorized(&client, request)?).await?.into_inner();
                response.leases.iter().for_each(print_lease);
                if response.next_page_token.is_empty() {
                    return Ok(());
                }
                page_token = response.next_page_token;
            }
        }
        Command::Sightings { client } => {
            let mut service = proto::admin_service_client::AdminServiceClient::new(connect(&client).await?);
            let response =
                service.list_sightings(authorized(&client, proto::ListSightingsRequest::default())?).await?;
            for sighting in response.into_inner().sightings {
                println!("{}  {}  seen {} times", sighting.issuer, sighting.subject, sighting.count);
            }
            Ok(())
        }
        Command::Audit(command) => audit::run(command).await,
        Command::Store(command) => store::run(command).await,
        Command::Policy(PolicyCommand::Explain(explain)) => {
            let ExplainArgs { client, agent, task, context, tool, grant, action } = *explain;
            let context = match task {
                Some(_) => None,
                None => Some(context.into_proto()?),
            };
            let request = proto::ExplainRequest {
                agent,
                task_id: task.unwrap_or_default(),
                context,
                tool,
                grant: Some(parse_grant(&grant)?),
                action,
            };
            let mut service = proto::policy_service_client::PolicyServiceClient::new(connect(&client).await?);
            let explained = service.explain(authorized(&client, request)?).await?.into_inner();
            println!("{}: {}", explained.decision, explained.explanation);
            if !explained.allowed && explained.decision == "allow" {
                println!("  an Issue would be refused now");
            }
            for notice in &explained.notices {
                println!("  note: {notice}");
            }
            println!("  policy set {}", explained.policy_set);
            Ok(())
        }
        Command::Policy(PolicyCommand::Test { cases, policies }) => {
            use std::io::Write as _;
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            let code = crate::policy::cases::run(&cases, &policies, &mut out, &mut err);
            let _ = out.flush();
            if code != crate::policy::cases::EXIT_PASSED {
                // 1 (a case failed) and 2 (unusable input) differ, which
                // an error returned to main cannot express.
                drop((out, err));
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = crate::server::App::build(&config, Arc::new(SystemClock)).await?;
    let grpc = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let http = tokio::net::TcpListener::bind(config.server.http_listen)
        .await
        .with_context(|| format!("binding {}", config.server.http_listen))?;
    crate::runtime::warn_if_lifo_slot_on();
    tracing::info!(grpc = %config.server.listen, http = %config.server.http_listen, "writ serving");
    app.serve(grpc, http, crate::shutdown_signal()).await
}

async fn connect(client: &ClientArgs) -> anyhow::Result<Channel> {
    let endpoint = endpoint(client)?;
    endpoint.connect().await.map_err(|error| {
        let mut message = format!("connecting to {}: {}", client.endpoint, crate::text::error_chain(&error));
        if client.endpoint.starts_with("http://") {
            message.push_str(" (if Writ serves TLS, use an https:// endpoint, with --ca for a private CA)");
        }
        anyhow::anyhow!(message)
    })
}

/// The endpoint with its TLS settings: `https://` trusts `--ca` if given,
/// else the public web PKI, and presents `--cert` if given.
pub fn endpoint(client: &ClientArgs) -> anyhow::Result<tonic::transport::Endpoint> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let endpoint = Channel::from_shared(client.endpoint.clone())
        .with_context(|| format!("invalid endpoint {:?}", client.endpoint))?
        .connect_timeout(Duration::from_secs(5));
    let tls_options = client.ca.is_some() || client.cert.is_some();
    if !client.endpoint.starts_with("https://") {
        if tls_options {
            anyhow::bail!("--ca, --cert and --key need an https:// endpoint, not {:?}", client.endpoint);
        }
        return Ok(endpoint);
    }
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
    };
    let mut tls = ClientTlsConfig::new();
    tls = match &client.ca {
        Some(path) => tls.ca_certificate(Certificate::from_pem(read(path, "CA certificates")?)),
        None => tls.with_webpki_roots(),
    };
    if let (Some(cert), Some(key)) = (&client.cert, &client.key) {
        tls = tls.identity(Identity::from_pem(read(cert, "client certificate")?, read(key, "client key")?));
    }
    endpoint.tls_config(tls).context("configuring TLS")
}

fn authorized<T>(client: &ClientArgs, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let from_file = match &client.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    match from_file.as_ref().or(client.token.as_ref()) {
        Some(token) => {
            let value: MetadataValue<_> =
                format!("Bearer {token}").parse().context("the token is not ASCII")?;
            request.metadata_mut().insert("authorization", value);
        }
        None if client.cert.is_some() => {}
        None => anyhow::bail!(
            "no credentials: set WRIT_TOKEN (--token), or present a client certificate (--cert, --key)"
        ),
    }
    Ok(request)
}

async fn task(command: TaskCommand) -> anyhow::Result<()> {
    match command {
        TaskCommand::Start { client, task_id, agent, context, deadline_in } => {
            let deadline = chrono::Utc::now() + chrono::Duration::from_std(deadline_in)?;
            let request = proto::StartTaskRequest {
                task_id,
                agent,
                context: Some(context.into_proto()?),
                deadline: Some(convert::timestamp(deadline)),
            };
            let mut service = proto::task_service_client::TaskServiceClient::new(connect(&client).await?);
            let task = service.start_task(authorized(&client, request)?).await?.into_inner().task;
            if let Some(task) = task {
                println!(
                    "task {} opened for {} until {}",
                    task.task_id,
                    task.agent,
                    format_time(task.deadline.as_ref())
                );
            }
            Ok(())
        }
        TaskCommand::Close { client, task_id } => {
            let mut service = proto::task_service_client::TaskServiceClient::new(connect(&client).await?);
            let response = service
                .close_task(authorized(&client, proto::CloseTaskRequest { task_id: task_id.clone() })?)
                .await?
                .into_inner();
            println!(
                "task {task_id} closed: {} leases revoked, {} still retrying{}",
                response.revoked,
                response.retrying,
                if response.failed > 0 {
                    format!(
                        ", {} failed (the provider cannot revoke them; see `writ leases --task {task_id}`)",
                        response.failed
                    )
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        TaskCommand::Get { client, task_id } => {
            let mut service = proto::task_service_client::TaskServiceClient::new(connect(&client).await?);
            let response =
                service.get_task(authorized(&client, proto::GetTaskRequest { task_id })?).await?.into_inner();
            if let Some(task) = response.task {
                let state = proto::TaskState::try_from(task.state).map(|s| s.as_str_name()).unwrap_or("?");
                println!(
                    "task {} for {}: {state}, deadline {}",
                    task.task_id,
                    task.agent,
                    format_time(task.deadline.as_ref())
                );
            }
            response.leases.iter().for_each(print_lease);
            Ok(())
        }
    }
}

/// Parses repeated `key=value` labels.
fn parse_labels(labels: &[String]) -> anyhow::Result<std::collections::HashMap<String, String>> {
    labels
        .iter()
        .map(|label| {
            label.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).context("labels are key=value")
        })
        .collect()
}

/// Parses `provider/role[:scope,scope…][@ttl]`: the agents' client's
/// grant syntax (`writ_client::Grant`), one parser for the CLI, `writ exec`
/// and Rust agents.
pub fn parse_grant(text: &str) -> anyhow::Result<proto::GrantRequest> {
    let grant: writ_client::Grant = text.parse()?;
    Ok(proto::GrantRequest {
        provider: grant.provider,
        role: grant.role,
        scopes: grant.scopes,
        ttl: grant.ttl.map(convert::duration),
    })
}

async fn issue(client: ClientArgs, task_id: String, tool: String, grants: Vec<String>) -> anyhow::Result<()> {
    let grants = grants.iter().map(|g| parse_grant(g)).collect::<anyhow::Result<_>>()?;
    let mut service = proto::credential_service_client::CredentialServiceClient::new(connect(&client).await?);
    let response = service
        .issue(authorized(&client, proto::IssueRequest { task_id, tool, grants })?)
        .await?
        .into_inner();
    print_issued(response);
    Ok(())
}

/// What an Issue or a collection answered: the credentials, or the
/// approval request it is waiting on.
fn print_issued(response: proto::IssueResponse) {
    if let Some(approval) = &response.approval_required {
        println!("approval required: nothing was issued yet");
        approvals::print_summary(approval);
        println!(
            "  wait with `writ approvals wait {id}`, then `writ approvals collect {id}`",
            id = approval.approval_id
        );
    }
    for issued in response.credentials {
        issued.lease.iter().for_each(print_lease);
        for notice in &issued.notices {
            println!("  note: {notice}");
        }
        if let Some(credential) = &issued.credential {
            print_credential(credential);
        }
    }
}

fn format_time(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|at| convert::from_timestamp("", at).ok())
        .map(|at| at.to_rfc3339())
        .unwrap_or_else(|| "-".into())
}

fn print_lease(lease: &proto::Lease) {
    let state = proto::LeaseState::try_from(lease.state).map(|s| s.as_str_name()).unwrap_or("?");
    println!(
        "lease {}  {}/{}  task {}  agent {}  {}  expires {}{}",
        lease.lease_id,
        lease.provider,
        lease.role,
        lease.task_id,
        lease.agent,
        state.trim_start_matches("LEASE_STATE_").to_lowercase(),
        format_time(lease.expires_at.as_ref()),
        if lease.revocation_error.is_empty() {
            String::new()
        } else {
            format!("  last error: {}", lease.revocation_error)
        },
    );
}

/// Prints the credential: this is the agent's own terminal.
fn print_credential(credential: &proto::Credential) {
    match &credential.kind {
        Some(proto::credential::Kind::BearerToken(token)) => {
            println!("  {} {}", token.token_type, token.token)
        }
        Some(proto::credential::Kind::Password(password)) => {
            println!("  user {} password {}", password.username, password.password)
        }
        Some(proto::credential::Kind::AwsSession(session)) => println!(
            "  AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_SESSION_TOKEN={}",
            session.access_key_id, session.secret_access_key, session.session_token
        ),
        None => println!("  (no credential)"),
    }
}
