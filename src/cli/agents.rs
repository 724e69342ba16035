//! `writ agents …`: operators list and inspect registered agents, and pull
//! the kill switch (role `operator`).

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
        /// active, suspended, or all.
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
        other => anyhow::bail!("--state {other:?} is not one of active, suspended, all"),
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
            println!(
                "{} leases revoked, {} still retrying{}",
                response.revoked,
                response.retrying,
                if response.failed > 0 {
                    format!(
                        ", {} failed (the provider cannot revoke them; see `writ leases`)",
                        response.failed
                    )
                } else {
                    String::new()
                }
            );
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
    }
}

fn state_name(agent: &proto::Agent) -> &'static str {
    match proto::AgentState::try_from(agent.state) {
        Ok(proto::AgentState::Suspended) => "suspended",
        Ok(proto::AgentState::Active) => "active",
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
    println!("  declared in {}", agent.managed_by);
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
