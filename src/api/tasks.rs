//! `writ.v1.TaskService`: workflow engines open, close and inspect tasks.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::caller;
use super::proto::{self, task_service_server::TaskService};
use super::{convert, status};
use crate::clock::Clock;
use crate::domain::{Broker, StartTask};
use crate::model::RevocationReason;

pub struct Tasks {
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
}

impl Tasks {
    pub fn new(broker: Arc<Broker>, clock: Arc<dyn Clock>) -> Self {
        Self { broker, clock }
    }
}

#[tonic::async_trait]
impl TaskService for Tasks {
    async fn start_task(
        &self,
        request: Request<proto::StartTaskRequest>,
    ) -> Result<Response<proto::StartTaskResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        super::record_task(&request.task_id);
        let deadline =
            request.deadline.as_ref().map(|at| convert::from_timestamp("deadline", at)).transpose()?;
        let start = StartTask {
            task_id: request.task_id,
            agent: request.agent,
            context: convert::from_task_context(request.context),
            deadline,
        };
        let task = self.broker.start_task(caller.name(), start, self.clock.now()).await.map_err(status)?;
        Ok(Response::new(proto::StartTaskResponse { task: Some(convert::task(&task)) }))
    }

    async fn close_task(
        &self,
        request: Request<proto::CloseTaskRequest>,
    ) -> Result<Response<proto::CloseTaskResponse>, Status> {
        let caller = caller(&request)?;
        super::record_task(&request.get_ref().task_id);
        let outcome = self
            .broker
            .close_task(
                caller.name(),
                &request.get_ref().task_id,
                RevocationReason::TaskClosed,
                self.clock.now(),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(proto::CloseTaskResponse {
            task: Some(convert::task(&outcome.task)),
            revoked: u32::try_from(outcome.revoked).unwrap_or(u32::MAX),
            retrying: u32::try_from(outcome.retrying).unwrap_or(u32::MAX),
            failed: u32::try_from(outcome.failed).unwrap_or(u32::MAX),
        }))
    }

    async fn get_task(
        &self,
        request: Request<proto::GetTaskRequest>,
    ) -> Result<Response<proto::GetTaskResponse>, Status> {
        caller(&request)?;
        let (task, leases) = self.broker.get_task(&request.get_ref().task_id).await.map_err(status)?;
        let providers = self.broker.providers();
        Ok(Response::new(proto::GetTaskResponse {
            task: Some(convert::task(&task)),
            leases: leases.iter().map(|lease| convert::lease(lease, providers)).collect(),
        }))
    }
}
