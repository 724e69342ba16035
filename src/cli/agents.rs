//! `writ agents …`: operators keep the agent inventory (list, show,
//! register, update, retire) and pull the kill switch (role `operator`).

use clap::{Args, Subcommand};

use super::{ClientArgs, authorized, connect, format_time};
use crate::api::proto;

#[derive(Subcommand, Debug)]
pub enum AgentsCommand {
    /// List registered agents with their state.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// active, suspended, retired, or all.
        #[arg(long, default_value = "all")]
        state: String,
    },
    /// Show one agent: owner, team, identity, state.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        agent: String,
    },
    /// The kill switch: refuse everything to the agent (or every agent of
    /// an owner or a team) on every replica, and revoke all it holds.
    Suspend {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        target: Target,
        /// Why; required, and evidence (the agent is not told).
        #[arg(long)]
        reason: String,
    },
    /// Lift a suspension; what it revoked stays revoked.
    Resume {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        reason: String,
    },
    /// Register an agent: who owns it and the workload identity it is
    /// recognised by. `--from-sighting` takes the identity of a sighting
    /// (`writ sightings`), to bring a shadow agent under control.
    Register {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        /// Who answers for the agent: required.
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "")]
        team: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Default: medium.
        #[arg(long, default_value = "")]
        risk_tier: String,
        #[command(flatten)]
        identity: IdentityArgs,
        /// The identity (issuer and subject) is a sighting's; refused if it
        /// was never sighted.
        #[arg(long)]
        from_sighting: bool,
    },
    /// Change an agent an operator registered; unset options stay as they
    /// are.
    Update {
        #[command(flatten)]
        client: ClientArgs,
        agent: String,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        risk_tier: Option<String>,
        /// A new identity binding (with --subject and/or --claim).
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long, requires = "issuer")]
        subject: Option<String>,
        #[arg(long = "claim", value_name = "NAME=VALUE", requires = "issuer")]
        claims: Vec<String>,
        /// Refuse the change if the agent changed since this revision
        /// (`writ agents show` prints it).
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Retire an agent for good: revoke everything it holds and refuse its
    /// identity from then on. The name is never free again.
    Retire {
        #[command(flatten)]
        client: ClientArgs,
        agent: String,
        /// Why; required, and evidence.
        #[arg(long)]
        reason: String,
        /// Retire an agent managed by configuration, once no replica's
        /// configuration declares it.
        #[arg(long)]
        force: bool,
    },
}

/// The workload identity an agent is recognised by.
#[derive(Args, Debug)]
pub struct IdentityArgs {
    /// The token issuer (one of the configured [[issuers]]).
    #[arg(long)]
    issuer: String,
    /// The token's `sub`.
    #[arg(long)]
    subject: Option<String>,
    /// A claim the token must carry with this (string) value; repeatable.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
}

fn binding(
    issuer: String,
    subject: Option<String>,
    claims: &[String],
) -> anyhow::Result<proto::IdentityBinding> {
    let claims = claims
        .iter()
        .map(|claim| match claim.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
            _ => anyhow::bail!("--claim {claim:?} must be NAME=VALUE"),
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(proto::IdentityBinding { issuer, subject: subject.unwrap_or_default(), claims })
}

/// One agent by name, or every agent of an owner or a team.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Target {
    agent: Option<String>,
    #[arg(long)]
    owner: Option<String>,
    #[arg(long)]
    team: Option<String>,
}

impl Target {
    fn into_proto(self) -> proto::AgentSelector {
        proto::AgentSelector {
            agent: self.agent.unwrap_or_default(),
            owner: self.owner.unwrap_or_default(),
            team: self.team.unwrap_or_default(),
        }
    }
}

fn parse_state(text: &str) -> anyhow::Result<proto::AgentState> {
    match text {
        "all" => Ok(proto::AgentState::Unspecified),
        "active" => Ok(proto::AgentState::Active),
        "suspended" => Ok(proto::AgentState::Suspended),
        "retired" => Ok(proto::AgentState::Retired),
        other => anyhow::bail!("--state {other:?} is not one of active, suspended, retired, all"),
    }
}

pub async fn run(command: AgentsCommand) -> anyhow::Result<()> {
    use proto::admin_service_client::AdminServiceClient;
    match command {
        AgentsCommand::List { client, owner, team, state } => {
            let state = parse_state(&state)?;
            let mut service = AdminServiceClient::new(connect(&client).await?);
            let mut page_token = String::new();
            loop {
                let request = proto::ListAgentsRequest {
                    owner: owner.clone().unwrap_or_default(),
                    team: team.clone().unwrap_or_default(),
                    state: state as i32,
                    page_token: page_token.clone(),
                    ..Default::default()
                };
                let response = service.list_agents(authorized(&client, request)?).await?.into_inner();
                response.agents.iter().for_each(print_summary);
                if response.next_page_token.is_empty() {
                    return Ok(());
                }
                page_token = response.next_page_token;
            }
        }
        AgentsCommand::Show { client, agent } => {
            let mut service = AdminServiceClient::new(connect(&client).await?);
            let agent = service.get_agent(authorized(&client, proto::GetAgentRequest { agent })?).await?;
            print_detail(&agent.into_inner());
            Ok(())
        }
        AgentsCommand::Suspend { client, target, reason } => {
            let mut service = AdminServiceClient::new(connect(&client).await?);
            let request = proto::SuspendAgentRequest { agents: Some(target.into_proto()), reason };
            let response = service.suspend_agent(authorized(&client, request)?).await?.into_inner();
            for agent in &response.suspended {
                println!("agent {} suspended", agent.name);
            }
            for name in &response.already_suspended {
                println!("agent {name} was suspended already; left as it was");
            }
            println!("{}", revocation_summary(response.revoked, response.retrying, response.failed));
            Ok(())
        }
        AgentsCommand::Resume { client, target, reason } => {
            let mut service = AdminServiceClient::new(connect(&client).await?);
            let request = proto::ResumeAgentRequest { agents: Some(target.into_proto()), reason };
            let response = service.resume_agent(authorized(&client, request)?).await?.into_inner();
            for agent in &response.resumed {
                println!("agent {} resumed", agent.name);
            }
            for name in &response.not_suspended {
                println!("agent {name} was not suspended; left as it was");
            }
            Ok(())
        }
        AgentsCommand::Register {
            client,
            name,
            owner,
            team,
            description,
            risk_tier,
            identity,
            from_sighting,
        } => {
            let identity = binding(identity.issuer, identity.subject, &identity.claims)?;
            let request = proto::RegisterAgentRequest {
                name,
                owner,
                team,
                description,
                risk_tier,
                identity: Some(identity),
                from_sighting,
            };
            let mut service = AdminServiceClient::new(connect(&client).await?);
            let agent = service.register_agent(authorized(&client, request)?).await?.into_inner();
            println!("agent {} registered", agent.name);
            print_detail(&agent);
            Ok(())
        }
        AgentsCommand::Update {
            client,
            agent,
            owner,
            team,
            description,
            risk_tier,
            issuer,
            subject,
            claims,
            revision,
        } => {
            let identity = issuer.map(|issuer| binding(issuer, subject, &claims)).transpose()?;
            let request = proto::UpdateAgentRequest {
                agent,
                owner,
                team,
                description,
                risk_tier,
                identity,
                revision: revision.unwrap_or(0),
            };
            let mut service = AdminServiceClient::new(connect(&client).await?);
            let agent = service.update_agent(authorized(&client, request)?).await?.into_inner();
            println!("agent {} updated", agent.name);
            print_detail(&agent);
            Ok(())
        }
        AgentsCommand::Retire { client, agent, reason, force } => {
            let mut service = AdminServiceClient::new(connect(&client).await?);
            let request = proto::RetireAgentRequest { agent, reason, force };
            let response = service.retire_agent(authorized(&client, request)?).await?.into_inner();
            if let Some(agent) = &response.agent {
                println!("agent {} retired", agent.name);
            }
            println!("{}", revocation_summary(response.revoked, response.retrying, response.failed));
            Ok(())
        }
    }
}

pub(super) fn revocation_summary(revoked: u32, retrying: u32, failed: u32) -> String {
    let failed = if failed > 0 {
        format!(", {failed} failed (the provider cannot revoke them; see `writ leases`)")
    } else {
        String::new()
    };
    format!("{revoked} leases revoked, {retrying} still retrying{failed}")
}

fn state_name(agent: &proto::Agent) -> &'static str {
    match proto::AgentState::try_from(agent.state) {
        Ok(proto::AgentState::Suspended) => "suspended",
        Ok(proto::AgentState::Active) => "active",
        Ok(proto::AgentState::Retired) => "retired",
        _ => "?",
    }
}

fn print_summary(agent: &proto::Agent) {
    println!(
        "{}  {}  owner {}  team {}  risk {}",
        agent.name,
        state_name(agent),
        agent.owner,
        if agent.team.is_empty() { "-" } else { &agent.team },
        agent.risk_tier,
    );
}

fn print_detail(agent: &proto::Agent) {
    print_summary(agent);
    if !agent.description.is_empty() {
        println!("  {}", agent.description);
    }
    for identity in &agent.identities {
        let subject = if identity.subject.is_empty() { "(any subject)" } else { &identity.subject };
        println!("  identity {subject} from {}", identity.issuer);
        for (claim, value) in &identity.claims {
            println!("    claim {claim} = {value}");
        }
    }
    println!(
        "  managed by {}; created {} by {}; updated {} by {}; revision {}",
        agent.managed_by,
        format_time(agent.created_at.as_ref()),
        agent.created_by,
        format_time(agent.updated_at.as_ref()),
        agent.updated_by,
        agent.revision
    );
    if agent.state_changed_at.is_some() {
        println!(
            "  {} since {} by {}: {}",
            state_name(agent),
            format_time(agent.state_changed_at.as_ref()),
            agent.state_changed_by,
            agent.state_reason
        );
    }
}
