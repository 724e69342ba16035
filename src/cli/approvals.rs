//! `writ approvals …`: approvers list, show, approve and deny step-up
//! requests (role `approver`); an agent waits for its request and collects
//! it.

use clap::Subcommand;

use super::{ClientArgs, authorized, connect, format_time, print_issued};
use crate::api::proto;

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// List approval requests (role `approver`); pending ones by default.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// pending, approved, denied, expired, cancelled, collected, or all.
        #[arg(long, default_value = "pending")]
        state: String,
    },
    /// Show one request, with its votes (role `approver`).
    Show {
        #[command(flatten)]
        client: ClientArgs,
        approval_id: String,
    },
    /// Approve a request (role `approver`); the reason is evidence.
    Approve {
        #[command(flatten)]
        client: ClientArgs,
        approval_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Deny a request (role `approver`): one denial ends it.
    Deny {
        #[command(flatten)]
        client: ClientArgs,
        approval_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Wait, as the agent, until the request is decided; exits 0 once it is
    /// approved, 1 if it ends otherwise.
    Wait {
        #[command(flatten)]
        client: ClientArgs,
        approval_id: String,
    },
    /// Collect, as the agent, what an approved request grants (once).
    Collect {
        #[command(flatten)]
        client: ClientArgs,
        approval_id: String,
    },
}

fn parse_state(text: &str) -> anyhow::Result<proto::ApprovalState> {
    if text == "all" {
        return Ok(proto::ApprovalState::Unspecified);
    }
    crate::model::ApprovalState::parse(text).map(crate::api::convert::approval_state).ok_or_else(|| {
        anyhow::anyhow!(
            "--state {text:?} is not one of pending, approved, denied, expired, cancelled, collected, all"
        )
    })
}

pub async fn run(command: ApprovalsCommand) -> anyhow::Result<()> {
    use proto::approval_service_client::ApprovalServiceClient;
    use proto::credential_service_client::CredentialServiceClient;
    match command {
        ApprovalsCommand::List { client, agent, task, group, state } => {
            let state = parse_state(&state)?;
            let mut service = ApprovalServiceClient::new(connect(&client).await?);
            let mut page_token = String::new();
            loop {
                let request = proto::ListApprovalsRequest {
                    agent: agent.clone().unwrap_or_default(),
                    task_id: task.clone().unwrap_or_default(),
                    group: group.clone().unwrap_or_default(),
                    state: state.into(),
                    page_size: 0,
                    page_token: page_token.clone(),
                };
                let response = service.list_approvals(authorized(&client, request)?).await?.into_inner();
                response.approvals.iter().for_each(print_summary);
                if response.next_page_token.is_empty() {
                    return Ok(());
                }
                page_token = response.next_page_token;
            }
        }
        ApprovalsCommand::Show { client, approval_id } => {
            let mut service = ApprovalServiceClient::new(connect(&client).await?);
            let request = proto::GetApprovalRequest { approval_id };
            print_approval(&service.get_approval(authorized(&client, request)?).await?.into_inner());
            Ok(())
        }
        ApprovalsCommand::Approve { client, approval_id, reason } => {
            let mut service = ApprovalServiceClient::new(connect(&client).await?);
            let request = proto::DecideApprovalRequest { approval_id, reason };
            print_approval(&service.approve(authorized(&client, request)?).await?.into_inner());
            Ok(())
        }
        ApprovalsCommand::Deny { client, approval_id, reason } => {
            let mut service = ApprovalServiceClient::new(connect(&client).await?);
            let request = proto::DecideApprovalRequest { approval_id, reason };
            print_approval(&service.deny(authorized(&client, request)?).await?.into_inner());
            Ok(())
        }
        ApprovalsCommand::Wait { client, approval_id } => {
            let mut service = CredentialServiceClient::new(connect(&client).await?);
            let request = proto::WatchApprovalRequest { approval_id };
            let mut stream = service.watch_approval(authorized(&client, request)?).await?.into_inner();
            let mut last = None;
            while let Some(approval) = stream.message().await? {
                print_summary(&approval);
                last = Some(approval.state());
            }
            match last {
                Some(proto::ApprovalState::Approved) => Ok(()),
                _ => {
                    // A request that ends otherwise is not an error of the
                    // command, but the caller's script must see it.
                    std::process::exit(1);
                }
            }
        }
        ApprovalsCommand::Collect { client, approval_id } => {
            let mut service = CredentialServiceClient::new(connect(&client).await?);
            let request = proto::CollectApprovalRequest { approval_id };
            let response = service.collect_approval(authorized(&client, request)?).await?.into_inner();
            print_issued(response);
            Ok(())
        }
    }
}

/// One line: id, state, who and what, how far the quorum is.
pub(super) fn print_summary(approval: &proto::Approval) {
    let approvals = approval.votes.iter().filter(|vote| vote.approve).count();
    let grants: Vec<String> =
        approval.grants.iter().map(|grant| format!("{}/{}", grant.provider, grant.role)).collect();
    println!(
        "approval {}  {}  agent {}  task {}  tool {}  {}  group {} ({approvals} of {})  expires {}",
        approval.approval_id,
        approval.state().as_str_name().trim_start_matches("APPROVAL_STATE_").to_lowercase(),
        approval.agent,
        approval.task_id,
        approval.tool,
        grants.join(","),
        approval.group,
        approval.quorum,
        format_time(approval.expires_at.as_ref()),
    );
}

fn print_approval(approval: &proto::Approval) {
    print_summary(approval);
    for grant in &approval.grants {
        let ttl = grant.ttl.as_ref().map_or("role default".to_string(), |ttl| format!("{}s", ttl.seconds));
        println!(
            "  grant {}/{}  scopes [{}]  ttl {ttl}",
            grant.provider,
            grant.role,
            grant.scopes.join(", ")
        );
    }
    if !approval.policies.is_empty() {
        println!("  asked by policies {}", approval.policies.join(", "));
    }
    for vote in &approval.votes {
        let verdict = if vote.approve { "approved" } else { "denied" };
        println!("  {verdict} by {} at {}: {}", vote.by, format_time(vote.at.as_ref()), vote.reason);
    }
    if approval.collect_by.is_some() {
        println!("  collect by {}", format_time(approval.collect_by.as_ref()));
    }
    if !approval.ended_by.is_empty() {
        println!(
            "  ended by {} at {}: {}",
            approval.ended_by,
            format_time(approval.ended_at.as_ref()),
            approval.end_reason
        );
    }
}
