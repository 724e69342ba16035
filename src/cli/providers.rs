//! `writ providers …`: operators see the configured providers and suspend
//! one during an incident at its downstream system (role `operator`).

use clap::Subcommand;

use super::agents::revocation_summary;
use super::{ClientArgs, authorized, connect, format_time};
use crate::api::proto;

#[derive(Subcommand, Debug)]
pub enum ProvidersCommand {
    /// List the configured providers with their state.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop issuing from a provider on every replica, and revoke every
    /// live lease it issued.
    Suspend {
        #[command(flatten)]
        client: ClientArgs,
        provider: String,
        /// Why; required, and evidence.
        #[arg(long)]
        reason: String,
    },
    /// Lift a suspension; what it revoked stays revoked.
    Resume {
        #[command(flatten)]
        client: ClientArgs,
        provider: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(command: ProvidersCommand) -> anyhow::Result<()> {
    use proto::admin_service_client::AdminServiceClient;
    match command {
        ProvidersCommand::List { client } => {
            let mut service = AdminServiceClient::new(connect(&client).await?);
            let request = authorized(&client, proto::ListProvidersRequest {})?;
            for provider in service.list_providers(request).await?.into_inner().providers {
                print_provider(&provider);
            }
            Ok(())
        }
        ProvidersCommand::Suspend { client, provider, reason } => {
            let mut service = AdminServiceClient::new(connect(&client).await?);
            let request = proto::SuspendProviderRequest { provider, reason };
            let response = service.suspend_provider(authorized(&client, request)?).await?.into_inner();
            if let Some(provider) = &response.provider {
                println!("provider {} suspended", provider.name);
            }
            println!("{}", revocation_summary(response.revoked, response.retrying, response.failed));
            Ok(())
        }
        ProvidersCommand::Resume { client, provider, reason } => {
            let mut service = AdminServiceClient::new(connect(&client).await?);
            let request = proto::ResumeProviderRequest { provider, reason };
            let provider = service.resume_provider(authorized(&client, request)?).await?.into_inner();
            println!("provider {} resumed", provider.name);
            Ok(())
        }
    }
}

fn print_provider(provider: &proto::Provider) {
    let state = match proto::ProviderState::try_from(provider.state) {
        Ok(proto::ProviderState::Suspended) => "suspended",
        Ok(proto::ProviderState::Active) => "active",
        _ => "?",
    };
    print!("{}  {}  {state}", provider.name, provider.kind);
    if provider.state_changed_at.is_some() {
        print!(
            "  since {} by {}: {}",
            format_time(provider.state_changed_at.as_ref()),
            provider.state_changed_by,
            provider.state_reason
        );
    }
    println!();
}
