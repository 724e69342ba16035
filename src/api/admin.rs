//! `writ.v1.AdminService`: operators inspect leases and sightings.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::{self, admin_service_server::AdminService};
use super::{convert, page_after, page_size, status};
use crate::domain::Broker;
use crate::store::LeaseFilter;

pub struct Admin {
    broker: Arc<Broker>,
}

impl Admin {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
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
}
