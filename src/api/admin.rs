//! `writ.v1.AdminService`: operators inspect leases and sightings, keep the
//! agent inventory, and pull the kill switch on agents.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::{self, admin_service_server::AdminService};
use super::{convert, page_after, page_size, status};
use crate::clock::Clock;
use crate::domain::{AgentChanges, AgentFilter, Broker, Registration};
use crate::store::LeaseFilter;

pub struct Admin {
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
}

impl Admin {
    pub fn new(broker: Arc<Broker>, clock: Arc<dyn Clock>) -> Self {
        Self { broker, clock }
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn list_leases(
        &self,
        request: Request<proto::ListLeasesRequest>,
    ) -> Result<Response<proto::ListLeasesResponse>, Status> {
        super::auth::caller(&request)?;
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let after = page_after(&request.page_token)?;
        let state = proto::LeaseState::try_from(request.state)
            .map_err(|_| Status::invalid_argument(format!("state {} is not a lease state", request.state)))?;
        let filter = LeaseFilter {
            agent: Some(request.agent).filter(|agent| !agent.is_empty()),
            task_id: Some(request.task_id).filter(|task| !task.is_empty()),
            state: convert::from_lease_state(state),
            provider: None,
        };
        let leases = self.broker.list_leases(&filter, after, limit).await.map_err(status)?;
        let next_page_token = if leases.len() == limit {
            leases.last().map(|lease| lease.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        let providers = self.broker.providers();
        Ok(Response::new(proto::ListLeasesResponse {
            leases: leases.iter().map(|lease| convert::lease(lease, providers)).collect(),
            next_page_token,
        }))
    }

    async fn list_sightings(
        &self,
        request: Request<proto::ListSightingsRequest>,
    ) -> Result<Response<proto::ListSightingsResponse>, Status> {
        super::auth::caller(&request)?;
        let limit = page_size(request.get_ref().page_size)?;
        let sightings = self.broker.list_sightings(limit).await.map_err(status)?;
        Ok(Response::new(proto::ListSightingsResponse {
            sightings: sightings.iter().map(convert::sighting).collect(),
        }))
    }

    async fn list_agents(
        &self,
        request: Request<proto::ListAgentsRequest>,
    ) -> Result<Response<proto::ListAgentsResponse>, Status> {
        super::auth::caller(&request)?;
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let state = proto::AgentState::try_from(request.state).map_err(|_| {
            Status::invalid_argument(format!("state {} is not an agent state", request.state))
        })?;
        let filter = AgentFilter {
            owner: Some(request.owner).filter(|owner| !owner.is_empty()),
            team: Some(request.team).filter(|team| !team.is_empty()),
            state: convert::from_agent_state(state),
        };
        let after = Some(request.page_token.as_str()).filter(|token| !token.is_empty());
        let agents = self.broker.list_agents(&filter, after, limit).await.map_err(status)?;
        let next_page_token = if agents.len() == limit {
            agents.last().map(|view| view.record.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListAgentsResponse {
            agents: agents.iter().map(convert::agent).collect(),
            next_page_token,
        }))
    }

    async fn get_agent(
        &self,
        request: Request<proto::GetAgentRequest>,
    ) -> Result<Response<proto::Agent>, Status> {
        super::auth::caller(&request)?;
        let view = self.broker.get_agent(&request.get_ref().agent).await.map_err(status)?;
        Ok(Response::new(convert::agent(&view)))
    }

    async fn suspend_agent(
        &self,
        request: Request<proto::SuspendAgentRequest>,
    ) -> Result<Response<proto::SuspendAgentResponse>, Status> {
        let caller = super::auth::caller(&request)?;
        let request = request.into_inner();
        let selector = convert::from_agent_selector(request.agents)?;
        let suspension = self
            .broker
            .suspend_agents(caller.name(), &selector, &request.reason, self.clock.now())
            .await
            .map_err(status)?;
        Ok(Response::new(proto::SuspendAgentResponse {
            suspended: suspension.suspended.iter().map(convert::agent).collect(),
            already_suspended: suspension.already_suspended,
            revoked: u32::try_from(suspension.revoked).unwrap_or(u32::MAX),
            retrying: u32::try_from(suspension.retrying).unwrap_or(u32::MAX),
            failed: u32::try_from(suspension.failed).unwrap_or(u32::MAX),
        }))
    }

    async fn resume_agent(
        &self,
        request: Request<proto::ResumeAgentRequest>,
    ) -> Result<Response<proto::ResumeAgentResponse>, Status> {
        let caller = super::auth::caller(&request)?;
        let request = request.into_inner();
        let selector = convert::from_agent_selector(request.agents)?;
        let resumption = self
            .broker
            .resume_agents(caller.name(), &selector, &request.reason, self.clock.now())
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ResumeAgentResponse {
            resumed: resumption.resumed.iter().map(convert::agent).collect(),
            not_suspended: resumption.not_suspended,
        }))
    }

    async fn register_agent(
        &self,
        request: Request<proto::RegisterAgentRequest>,
    ) -> Result<Response<proto::Agent>, Status> {
        let caller = super::auth::caller(&request)?;
        let request = request.into_inner();
        let identity = request
            .identity
            .map(convert::from_identity_binding)
            .ok_or_else(|| Status::invalid_argument("identity is required: how the agent is recognised"))?;
        let registration = Registration {
            name: request.name,
            owner: request.owner,
            team: request.team,
            description: request.description,
            risk_tier: request.risk_tier,
            identity,
            from_sighting: request.from_sighting,
        };
        let view = self
            .broker
            .register_agent(caller.name(), registration, self.clock.now())
            .await
            .map_err(status)?;
        Ok(Response::new(convert::agent(&view)))
    }

    async fn update_agent(
        &self,
        request: Request<proto::UpdateAgentRequest>,
    ) -> Result<Response<proto::Agent>, Status> {
        let caller = super::auth::caller(&request)?;
        let request = request.into_inner();
        let changes = AgentChanges {
            owner: request.owner,
            team: request.team,
            description: request.description,
            risk_tier: request.risk_tier,
            identity: request.identity.map(convert::from_identity_binding),
            revision: Some(request.revision).filter(|revision| *revision != 0),
        };
        let view = self
            .broker
            .update_agent(caller.name(), &request.agent, changes, self.clock.now())
            .await
            .map_err(status)?;
        Ok(Response::new(convert::agent(&view)))
    }

    async fn retire_agent(
        &self,
        request: Request<proto::RetireAgentRequest>,
    ) -> Result<Response<proto::RetireAgentResponse>, Status> {
        let caller = super::auth::caller(&request)?;
        let request = request.into_inner();
        let retired = self
            .broker
            .retire_agent(caller.name(), &request.agent, &request.reason, request.force, self.clock.now())
            .await
            .map_err(status)?;
        Ok(Response::new(proto::RetireAgentResponse {
            agent: Some(convert::agent(&retired.view)),
            revoked: u32::try_from(retired.revoked).unwrap_or(u32::MAX),
            retrying: u32::try_from(retired.retrying).unwrap_or(u32::MAX),
            failed: u32::try_from(retired.failed).unwrap_or(u32::MAX),
        }))
    }

    async fn list_providers(
        &self,
        request: Request<proto::ListProvidersRequest>,
    ) -> Result<Response<proto::ListProvidersResponse>, Status> {
        super::auth::caller(&request)?;
        let providers = self.broker.list_providers().await.map_err(status)?;
        Ok(Response::new(proto::ListProvidersResponse {
            providers: providers.iter().map(convert::provider).collect(),
        }))
    }

    async fn suspend_provider(
        &self,
        request: Request<proto::SuspendProviderRequest>,
    ) -> Result<Response<proto::SuspendProviderResponse>, Status> {
        let caller = super::auth::caller(&request)?;
        let request = request.into_inner();
        let suspension = self
            .broker
            .suspend_provider(caller.name(), &request.provider, &request.reason, self.clock.now())
            .await
            .map_err(status)?;
        Ok(Response::new(proto::SuspendProviderResponse {
            provider: Some(convert::provider(&suspension.provider)),
            revoked: u32::try_from(suspension.revoked).unwrap_or(u32::MAX),
            retrying: u32::try_from(suspension.retrying).unwrap_or(u32::MAX),
            failed: u32::try_from(suspension.failed).unwrap_or(u32::MAX),
        }))
    }

    async fn resume_provider(
        &self,
        request: Request<proto::ResumeProviderRequest>,
    ) -> Result<Response<proto::Provider>, Status> {
        let caller = super::auth::caller(&request)?;
        let request = request.into_inner();
        let view = self
            .broker
            .resume_provider(caller.name(), &request.provider, &request.reason, self.clock.now())
            .await
            .map_err(status)?;
        Ok(Response::new(convert::provider(&view)))
    }
}
