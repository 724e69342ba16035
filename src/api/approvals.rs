//! `writ.v1.ApprovalService`: approvers list, read and decide step-up
//! approval requests. The rules (group membership, not the owner, not the
//! task's starter, one vote each) are the domain's.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::caller;
use super::proto::{self, approval_service_server::ApprovalService};
use super::{convert, page_after, page_size, status};
use crate::clock::Clock;
use crate::domain::{Broker, Verdict};
use crate::store::ApprovalFilter;

pub struct Approvals {
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
}

impl Approvals {
    pub fn new(broker: Arc<Broker>, clock: Arc<dyn Clock>) -> Self {
        Self { broker, clock }
    }

    async fn decide(
        &self,
        request: Request<proto::DecideApprovalRequest>,
        verdict: Verdict,
    ) -> Result<Response<proto::Approval>, Status> {
        let caller = caller(&request)?;
        let approver = caller.service()?;
        let request = request.get_ref();
        let approval = self
            .broker
            .vote_approval(approver, &request.approval_id, verdict, &request.reason, self.clock.now())
            .await
            .map_err(status)?;
        Ok(Response::new(convert::approval(&approval)))
    }
}

#[tonic::async_trait]
impl ApprovalService for Approvals {
    async fn list_approvals(
        &self,
        request: Request<proto::ListApprovalsRequest>,
    ) -> Result<Response<proto::ListApprovalsResponse>, Status> {
        caller(&request)?.service()?;
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let after = page_after(&request.page_token)?;
        let state = proto::ApprovalState::try_from(request.state).map_err(|_| {
            Status::invalid_argument(format!("state {} is not an approval state", request.state))
        })?;
        let filter = ApprovalFilter {
            agent: Some(request.agent).filter(|agent| !agent.is_empty()),
            task_id: Some(request.task_id).filter(|task| !task.is_empty()),
            group: Some(request.group).filter(|group| !group.is_empty()),
            state: convert::from_approval_state(state),
        };
        let approvals = self.broker.list_approvals(&filter, after, limit).await.map_err(status)?;
        let next_page_token = if approvals.len() == limit {
            approvals.last().map(|approval| approval.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListApprovalsResponse {
            approvals: approvals.iter().map(convert::approval).collect(),
            next_page_token,
        }))
    }

    async fn get_approval(
        &self,
        request: Request<proto::GetApprovalRequest>,
    ) -> Result<Response<proto::Approval>, Status> {
        caller(&request)?.service()?;
        let approval = self.broker.approval(&request.get_ref().approval_id).await.map_err(status)?;
        Ok(Response::new(convert::approval(&approval)))
    }

    async fn approve(
        &self,
        request: Request<proto::DecideApprovalRequest>,
    ) -> Result<Response<proto::Approval>, Status> {
        self.decide(request, Verdict::Approve).await
    }

    async fn deny(
        &self,
        request: Request<proto::DecideApprovalRequest>,
    ) -> Result<Response<proto::Approval>, Status> {
        self.decide(request, Verdict::Deny).await
    }
}
