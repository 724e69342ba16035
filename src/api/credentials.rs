//! `writ.v1.CredentialService`: agents issue, renew and release.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use tonic::{Request, Response, Status};

use super::auth::{caller, presented_token};
use super::proto::{self, credential_service_server::CredentialService};
use super::{convert, status};
use crate::clock::Clock;
use crate::domain::{Broker, GrantRequest, IssueOutcome, IssueRequest};
use crate::model::{Approval, ApprovalState};
use crate::principals::Agent;

/// How often a watch looks at the store even when this replica saw no
/// change: a vote on another replica shows within this long.
const WATCH_POLL: Duration = Duration::from_millis(500);
/// The most watches one agent holds open at once on a replica: each reads
/// the store twice a second.
const MAX_WATCHES_PER_AGENT: usize = 16;

/// Open watches by agent; a [`WatchSlot`] gives its place back when the
/// watch ends.
#[derive(Clone, Default)]
struct Watches(Arc<std::sync::Mutex<HashMap<String, usize>>>);

struct WatchSlot {
    watches: Watches,
    agent: String,
}

impl Watches {
    fn take(&self, agent: &str) -> Result<WatchSlot, Status> {
        let mut open = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(agent.to_owned()).or_default();
        if *count >= MAX_WATCHES_PER_AGENT {
            return Err(Status::resource_exhausted(format!(
                "agent {agent:?} has {MAX_WATCHES_PER_AGENT} approval watches open on this replica; close one \
                 (or collect its approval) first"
            )));
        }
        *count += 1;
        Ok(WatchSlot { watches: self.clone(), agent: agent.to_owned() })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.watches.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.agent) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.agent);
            }
        }
    }
}

/// Sends the request as it is now, then each change, until it needs no
/// more watching (approved: collect it; or ended) or the agent hangs up.
async fn watch(
    broker: Arc<Broker>,
    agent: Agent,
    first: Approval,
    sender: mpsc::Sender<Result<proto::Approval, Status>>,
) {
    let mut changes = broker.approval_changes();
    let mut last = first;
    if sender.send(Ok(convert::approval(&last))).await.is_err() {
        return;
    }
    while last.state == ApprovalState::Pending {
        tokio::select! {
            () = sender.closed() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(WATCH_POLL) => {}
        }
        let now = match broker.own_approval(&agent, &last.id.to_string()).await {
            Ok(now) => now,
            Err(error) => {
                let _ = sender.send(Err(status(error))).await;
                return;
            }
        };
        if now != last {
            if sender.send(Ok(convert::approval(&now))).await.is_err() {
                return;
            }
            last = now;
        }
    }
}

pub struct Credentials {
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
    watches: Watches,
}

impl Credentials {
    pub fn new(broker: Arc<Broker>, clock: Arc<dyn Clock>) -> Self {
        Self { broker, clock, watches: Watches::default() }
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
        super::record_task(&request.task_id);
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
        let outcome = self
            .broker
            .issue(
                agent,
                IssueRequest { task_id: request.task_id, tool: request.tool, grants, subject_token },
                self.clock.now(),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(match outcome {
            IssueOutcome::Issued(issued) => proto::IssueResponse {
                credentials: convert::issued(&issued, self.broker.providers()),
                approval_required: None,
            },
            IssueOutcome::ApprovalRequired(approval) => proto::IssueResponse {
                credentials: Vec::new(),
                approval_required: Some(convert::approval(&approval)),
            },
        }))
    }

    type WatchApprovalStream = ReceiverStream<Result<proto::Approval, Status>>;

    async fn watch_approval(
        &self,
        request: Request<proto::WatchApprovalRequest>,
    ) -> Result<Response<Self::WatchApprovalStream>, Status> {
        let caller = caller(&request)?;
        let agent = caller.agent()?.clone();
        let id = request.into_inner().approval_id;
        // Refused before the stream starts, so a bad id is a plain status.
        let first = self.broker.own_approval(&agent, &id).await.map_err(status)?;
        let slot = self.watches.take(&agent.name)?;
        let (sender, receiver) = mpsc::channel(4);
        let broker = self.broker.clone();
        tokio::spawn(async move {
            let _slot = slot;
            watch(broker, agent, first, sender).await
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn collect_approval(
        &self,
        request: Request<proto::CollectApprovalRequest>,
    ) -> Result<Response<proto::IssueResponse>, Status> {
        let caller = caller(&request)?;
        let agent = caller.agent()?;
        let subject_token = presented_token(&request);
        let issued = self
            .broker
            .collect_approval(agent, &request.get_ref().approval_id, subject_token, self.clock.now())
            .await
            .map_err(status)?;
        Ok(Response::new(proto::IssueResponse {
            credentials: convert::issued(&issued, self.broker.providers()),
            approval_required: None,
        }))
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
