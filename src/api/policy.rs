//! `writ.v1.PolicyService`: the identity team reloads the policy and reads
//! which set is in force (role `policy_admin`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::proto::{self, policy_service_server::PolicyService};
use super::status;
use crate::clock::Clock;
use crate::domain::{Broker, ExplainRequest, ExplainTask, GrantRequest};

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

    async fn explain(
        &self,
        request: Request<proto::ExplainRequest>,
    ) -> Result<Response<proto::ExplainResponse>, Status> {
        let caller = super::auth::caller(&request)?;
        let request = request.into_inner();
        let grant = request.grant.ok_or_else(|| Status::invalid_argument("grant is required"))?;
        let ttl =
            grant.ttl.as_ref().map(|ttl| super::convert::from_duration("grant.ttl", ttl)).transpose()?;
        let action = match request.action.as_str() {
            "" | "issue" => "issue",
            "renew" => "renew",
            _ => return Err(Status::invalid_argument("action must be \"issue\" or \"renew\"")),
        };
        let task = if request.task_id.is_empty() {
            ExplainTask::Attributes(super::convert::from_task_context(request.context))
        } else if request.context.is_some() {
            return Err(Status::invalid_argument("give task_id or context, not both"));
        } else {
            ExplainTask::Existing(request.task_id)
        };
        let question = ExplainRequest {
            agent: request.agent,
            task,
            tool: request.tool,
            grant: GrantRequest { provider: grant.provider, role: grant.role, scopes: grant.scopes, ttl },
            action,
        };
        let explained =
            self.broker.explain(caller.name(), question, self.clock.now()).await.map_err(status)?;
        Ok(Response::new(proto::ExplainResponse {
            decision: explained.decision.outcome().into(),
            policies: explained.decision.policies().to_vec(),
            policy_set: explained.policy_set,
            notices: explained.notices,
            explanation: explained.explanation,
            allowed: explained.allowed,
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
