//! `writ.v1.PolicyService`: the identity team reloads the policy and reads
//! which set is in force (role `policy_admin`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::{self, policy_service_server::PolicyService};
use super::status;
use crate::clock::Clock;
use crate::domain::Broker;

pub struct Policies {
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
}

impl Policies {
    pub fn new(broker: Arc<Broker>, clock: Arc<dyn Clock>) -> Self {
        Self { broker, clock }
    }

    fn set(&self) -> proto::PolicySet {
        proto::PolicySet {
            digest: self.broker.policy_digest().to_string(),
            policies: u32::try_from(self.broker.policy_count()).unwrap_or(u32::MAX),
        }
    }
}

#[tonic::async_trait]
impl PolicyService for Policies {
    async fn reload_policies(
        &self,
        request: Request<proto::ReloadPoliciesRequest>,
    ) -> Result<Response<proto::ReloadPoliciesResponse>, Status> {
        let caller = super::auth::caller(&request)?;
        let reloaded = self.broker.reload_policies(caller.name(), self.clock.now()).await.map_err(status)?;
        let policy_set = proto::PolicySet {
            digest: reloaded.digest.to_string(),
            policies: u32::try_from(reloaded.policies).unwrap_or(u32::MAX),
        };
        Ok(Response::new(proto::ReloadPoliciesResponse {
            previous_digest: reloaded.previous.to_string(),
            policy_set: Some(policy_set),
        }))
    }

    async fn get_policy_set(
        &self,
        request: Request<proto::GetPolicySetRequest>,
    ) -> Result<Response<proto::PolicySet>, Status> {
        super::auth::caller(&request)?;
        Ok(Response::new(self.set()))
    }
}
