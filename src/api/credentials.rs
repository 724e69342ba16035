//! `writ.v1.CredentialService`: agents issue, renew and release.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::{caller, presented_token};
use super::proto::{self, credential_service_server::CredentialService};
use super::{convert, status};
use crate::clock::Clock;
use crate::domain::{Broker, GrantRequest, IssueRequest};

pub struct Credentials {
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
}

impl Credentials {
    pub fn new(broker: Arc<Broker>, clock: Arc<dyn Clock>) -> Self {
        Self { broker, clock }
    }
}

#[tonic::async_trait]
impl CredentialService for Credentials {
    async fn issue(
        &self,
        request: Request<proto::IssueRequest>,
    ) -> Result<Response<proto::IssueResponse>, Status> {
        let caller = caller(&request)?;
        let agent = caller.agent()?;
        let subject_token = presented_token(&request);
        let request = request.into_inner();
        let grants = request
            .grants
            .into_iter()
            .enumerate()
            .map(|(index, grant)| {
                let ttl = grant
                    .ttl
                    .as_ref()
                    .map(|ttl| convert::from_duration(&format!("grants[{index}].ttl"), ttl))
                    .transpose()?;
                Ok(GrantRequest { provider: grant.provider, role: grant.role, scopes: grant.scopes, ttl })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let issued = self
            .broker
            .issue(
                agent,
                IssueRequest { task_id: request.task_id, tool: request.tool, grants, subject_token },
                self.clock.now(),
            )
            .await
            .map_err(status)?;
        let providers = self.broker.providers();
        let credentials = issued
            .iter()
            .map(|one| proto::IssuedCredential {
                lease: Some(convert::lease(&one.lease, providers)),
                credential: Some(convert::credential(&one.credential)),
                notices: one.notices.clone(),
            })
            .collect();
        Ok(Response::new(proto::IssueResponse { credentials }))
    }

    async fn renew(
        &self,
        request: Request<proto::RenewRequest>,
    ) -> Result<Response<proto::RenewResponse>, Status> {
        let caller = caller(&request)?;
        let agent = caller.agent()?;
        let subject_token = presented_token(&request);
        let request = request.into_inner();
        let ttl = request.ttl.as_ref().map(|ttl| convert::from_duration("ttl", ttl)).transpose()?;
        let renewal = self
            .broker
            .renew(agent, &request.lease_id, ttl, subject_token, self.clock.now())
            .await
            .map_err(status)?;
        Ok(Response::new(proto::RenewResponse {
            lease: Some(convert::lease(&renewal.lease, self.broker.providers())),
            credential: renewal.credential.as_ref().map(convert::credential),
            notices: renewal.notices,
        }))
    }

    async fn release(
        &self,
        request: Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::ReleaseResponse>, Status> {
        let caller = caller(&request)?;
        let agent = caller.agent()?;
        let lease = self
            .broker
            .release(agent, &request.get_ref().lease_id, self.clock.now())
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ReleaseResponse {
            lease: Some(convert::lease(&lease, self.broker.providers())),
        }))
    }
}
