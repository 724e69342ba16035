//! `writ.v1.AuditService`: auditors stream this replica's audit records,
//! filtered, without shell access to the host, and read the access report.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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
    /// Exports and reports read the log through on blocking threads (the
    /// store's too): a few at a time per replica.
    readers: Arc<Semaphore>,
}

/// Exports and reports under way at once, per replica.
const READERS: usize = 2;
/// An export whose client reads nothing for this long is dropped, so a
/// stalled collector does not hold a reader.
const STALLED: Duration = Duration::from_secs(30);

impl Audit {
    pub fn new(broker: Arc<Broker>, clock: Arc<dyn Clock>) -> Self {
        Self { broker, clock, readers: Arc::new(Semaphore::new(READERS)) }
    }

    fn reader(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.readers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{READERS} audit exports or reports are running on this replica; try again when one ends"
            ))
        })
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
        let permit = self.reader()?;
        let mut records = self.broker.export_audit(query).map_err(status)?;
        let replica = self.broker.audit().replica().to_owned();
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(async move {
            let _permit = permit;
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
                // The caller went away, or stopped reading: dropping
                // `records` stops the read.
                let sent = tokio::time::timeout(STALLED, sender.send(item.map_err(status))).await;
                if !matches!(sent, Ok(Ok(()))) || failed {
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
        let _permit = self.reader()?;
        let now = self.clock.now();
        let since = request.since.as_ref().ok_or_else(|| Status::invalid_argument("since is required"))?;
        let since = convert::from_timestamp("since", since)?;
        let until = request.until.as_ref().map(|at| convert::from_timestamp("until", at)).transpose()?;
        let report = self.broker.access_report(since, until.unwrap_or(now), now).await.map_err(status)?;
        Ok(Response::new(convert::access_report(&report, self.broker.audit().replica())))
    }
}
