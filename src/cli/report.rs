//! `writ report access`: the least-privilege review (role `auditor`), as a
//! table for a person or as JSON.

use clap::Subcommand;
use serde_json::json;

use super::audit::parse_when;
use super::{ClientArgs, authorized, connect, format_time};
use crate::api::{convert, proto};

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Per agent: what it was issued in the window, under which tools;
    /// what the policy would allow it but it never used; dormant agents;
    /// unknown identities seen.
    Access {
        #[command(flatten)]
        client: ClientArgs,
        /// A duration back from now (`30d`) or an RFC 3339 time.
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long)]
        until: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: ReportCommand) -> anyhow::Result<()> {
    let ReportCommand::Access { client, since, until, json } = command;
    let request = proto::ReportAccessRequest {
        since: Some(convert::timestamp(parse_when("--since", &since)?)),
        until: until.map(|until| parse_when("--until", &until).map(convert::timestamp)).transpose()?,
    };
    let mut service = proto::audit_service_client::AuditServiceClient::new(connect(&client).await?);
    let report = service.report_access(authorized(&client, request)?).await?.into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&to_json(&report))?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn to_json(report: &proto::AccessReport) -> serde_json::Value {
    json!({
        "replica": report.replica,
        "since": format_time(report.since.as_ref()),
        "until": format_time(report.until.as_ref()),
        "agents": report.agents.iter().map(|agent| json!({
            "agent": agent.agent,
            "owner": agent.owner,
            "team": agent.team,
            "issuances": agent.issuances,
            "dormant": agent.dormant,
            "used": agent.used.iter().map(|role| json!({
                "provider": role.provider,
                "role": role.role,
                "scopes": role.scopes,
                "count": role.count,
                "tools": role.tools,
                "last_issued": format_time(role.last_issued.as_ref()),
            })).collect::<Vec<_>>(),
            "allowed_unused": agent.allowed_unused,
        })).collect::<Vec<_>>(),
        "sightings": report.sightings.iter().map(|sighting| json!({
            "issuer": sighting.issuer,
            "subject": sighting.subject,
            "count": sighting.count,
            "last_seen": format_time(sighting.last_seen.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

fn print_table(report: &proto::AccessReport) {
    println!(
        "access from {} to {} (replica {})",
        format_time(report.since.as_ref()),
        format_time(report.until.as_ref()),
        report.replica
    );
    for agent in &report.agents {
        let team = if agent.team.is_empty() { "-" } else { &agent.team };
        let state = if agent.dormant { "  DORMANT" } else { "" };
        println!(
            "\n{}  owner {}  team {team}  {} issuances{state}",
            agent.agent, agent.owner, agent.issuances
        );
        for role in &agent.used {
            println!(
                "  used    {}/{}  {}x  scopes [{}]  tools [{}]  last {}",
                role.provider,
                role.role,
                role.count,
                role.scopes.join(", "),
                role.tools.join(", "),
                format_time(role.last_issued.as_ref())
            );
        }
        for unused in &agent.allowed_unused {
            println!("  unused  {unused}  (the policy would allow it)");
        }
    }
    if !report.sightings.is_empty() {
        println!("\nunknown identities seen");
        for sighting in &report.sightings {
            println!("  {}  {}  {} times", sighting.issuer, sighting.subject, sighting.count);
        }
    }
}
