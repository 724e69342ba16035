//! `writ.v1.AuditService`: auditors stream this replica's audit records,
//! filtered, without shell access to the host, and read the access report.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::proto::{self, audit_service_server::AuditService};
use super::{convert, status};
use crate::clock::Clock;
use crate::domain::{AuditQuery, Broker};

pub struct Audit {
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
}

impl Audit {
    pub fn new(broker: Arc<Broker>, clock: Arc<dyn Clock>) -> Self {
        Self { broker, clock }
    }
}

fn given(text: String) -> Option<String> {
    Some(text).filter(|text| !text.is_empty())
}

#[tonic::async_trait]
impl AuditService for Audit {
    type ExportAuditStream = ReceiverStream<Result<proto::AuditRecord, Status>>;

    async fn export_audit(
        &self,
        request: Request<proto::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        caller(&request)?;
        let request = request.into_inner();
        let query = AuditQuery {
            since: request.since.as_ref().map(|at| convert::from_timestamp("since", at)).transpose()?,
            until: request.until.as_ref().map(|at| convert::from_timestamp("until", at)).transpose()?,
            agent: given(request.agent),
            owner: given(request.owner),
            task_id: given(request.task_id),
            event: given(request.event),
        };
        // Refused before the stream starts, so bad input is a plain status.
        let mut records = self.broker.export_audit(query).map_err(status)?;
        let replica = self.broker.audit().replica().to_owned();
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(record) = records.next().await {
                let item = record.map(|record| proto::AuditRecord {
                    seq: record.seq,
                    ts: Some(convert::timestamp(record.ts)),
                    event: record.event,
                    agent: record.agent.unwrap_or_default(),
                    task_id: record.task.unwrap_or_default(),
                    json: record.json,
                    replica: replica.clone(),
                });
                let failed = item.is_err();
                // The caller went away: dropping `records` stops the read.
                if sender.send(item.map_err(status)).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn report_access(
        &self,
        request: Request<proto::ReportAccessRequest>,
    ) -> Result<Response<proto::AccessReport>, Status> {
        caller(&request)?;
        let request = request.into_inner();
        let now = self.clock.now();
        let since = request.since.as_ref().ok_or_else(|| Status::invalid_argument("since is required"))?;
        let since = convert::from_timestamp("since", since)?;
        let until = request.until.as_ref().map(|at| convert::from_timestamp("until", at)).transpose()?;
        let report = self.broker.access_report(since, until.unwrap_or(now), now).await.map_err(status)?;
        Ok(Response::new(convert::access_report(&report, self.broker.audit().replica())))
    }
}
