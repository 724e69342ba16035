//! Tasks: opened by workflow engines, closed by them or by their deadline.
//! Closing a task revokes every lease issued under it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Broker, Error};
use crate::audit::AuditEvent;
use crate::model::{Lease, RevocationReason, Task, TaskContext, TaskState};
use crate::store::Scope;

const MAX_ID_LEN: usize = 128;
const MAX_LABELS: usize = 32;
const MAX_ATTRIBUTE_LEN: usize = 256;

/// A workflow engine's request to open a task.
#[derive(Clone, Debug)]
pub struct StartTask {
    pub task_id: String,
    pub agent: String,
    pub context: TaskContext,
    pub deadline: Option<DateTime<Utc>>,
}

/// What closing a task did.
#[derive(Clone, Debug)]
pub struct CloseOutcome {
    pub task: Task,
    /// Leases revoked at their provider when the call returned.
    pub revoked: usize,
    /// Leases whose revocation is still being retried.
    pub retrying: usize,
    /// Leases whose revocation the provider said can never succeed.
    pub failed: usize,
}

/// Task ids are chosen by callers and end up in logs, audit lines and
/// policy: keep them short and printable.
pub(crate) fn validate_task_id(task_id: &str) -> Result<(), Error> {
    let valid = !task_id.is_empty()
        && task_id.len() <= MAX_ID_LEN
        && task_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "task_id must be 1 to {MAX_ID_LEN} characters of letters, digits and -_.:/@"
        )))
    }
}

fn validate_context(context: &TaskContext) -> Result<(), Error> {
    let attributes = [
        ("purpose", &context.purpose),
        ("environment", &context.environment),
        ("data_classification", &context.data_classification),
        ("ticket", &context.ticket),
    ];
    for (name, value) in attributes {
        if value.len() > MAX_ATTRIBUTE_LEN {
            return Err(Error::InvalidArgument(format!(
                "context.{name} is longer than {MAX_ATTRIBUTE_LEN} bytes"
            )));
        }
    }
    if context.labels.len() > MAX_LABELS {
        return Err(Error::InvalidArgument(format!("context.labels holds more than {MAX_LABELS} labels")));
    }
    for (key, value) in &context.labels {
        let key_ok = !key.is_empty()
            && key.len() <= 64
            && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !key_ok {
            return Err(Error::InvalidArgument(format!(
                "label key {key:?} must be 1 to 64 characters of letters, digits and -_."
            )));
        }
        if value.len() > MAX_ATTRIBUTE_LEN {
            return Err(Error::InvalidArgument(format!(
                "label {key:?} is longer than {MAX_ATTRIBUTE_LEN} bytes"
            )));
        }
    }
    Ok(())
}

impl Broker {
    pub async fn start_task(
        &self,
        caller: &str,
        request: StartTask,
        now: DateTime<Utc>,
    ) -> Result<Task, Error> {
        validate_task_id(&request.task_id)?;
        validate_context(&request.context)?;
        if self.registry.agent(&request.agent).is_none() {
            return Err(Error::NotFound(format!(
                "agent {} is not registered",
                super::quoted(&request.agent)
            )));
        }
        self.registry.ensure_active(&request.agent).await?;
        let deadline =
            request.deadline.ok_or_else(|| Error::InvalidArgument("deadline is required".into()))?;
        if deadline <= now {
            return Err(Error::InvalidArgument("deadline must be in the future".into()));
        }
        let latest = now + chrono::Duration::from_std(self.limits.max_task_lifetime).unwrap_or_default();
        if deadline > latest {
            return Err(Error::InvalidArgument(format!(
                "deadline is further than the maximum task lifetime ({}) from now",
                humanize(self.limits.max_task_lifetime)
            )));
        }
        let task = Task {
            id: request.task_id,
            agent: request.agent,
            context: request.context,
            state: TaskState::Open,
            created_at: now,
            created_by: caller.to_string(),
            deadline,
            closed: None,
        };
        self.store.create_task(task.clone()).await?;
        self.audit
            .record(
                now,
                AuditEvent {
                    event: "task_started",
                    actor: caller.to_string(),
                    outcome: "ok",
                    agent: Some(task.agent.clone()),
                    task: Some(task.id.clone()),
                    details: Some(json!({ "deadline": deadline, "environment": task.context.environment })),
                    ..AuditEvent::default()
                },
            )
            .await?;
        Ok(task)
    }

    pub async fn get_task(&self, task_id: &str) -> Result<(Task, Vec<Lease>), Error> {
        validate_task_id(task_id)?;
        let task = self
            .store
            .get_task(task_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("task {task_id:?} not found")))?;
        let leases = self.store.task_leases(task_id).await?;
        Ok((task, leases))
    }

    /// Closes a task and revokes its leases, waiting up to the configured
    /// `close_wait` for the revocations to finish.
    pub async fn close_task(
        &self,
        caller: &str,
        task_id: &str,
        reason: RevocationReason,
        now: DateTime<Utc>,
    ) -> Result<CloseOutcome, Error> {
        validate_task_id(task_id)?;
        let scope = Scope::Task(task_id.to_owned());
        // Subscribed first, so no batch finished after the close is missed.
        let finished = self.revocations.subscribe();
        let closed = self.end_scope(caller, &scope, reason, "", now).await?;
        let outcome = self.wait_for_scope(closed, &scope, finished).await?;
        let task =
            outcome.closed.task.ok_or_else(|| Error::Internal("a task close returned no task".into()))?;
        Ok(CloseOutcome {
            task,
            revoked: outcome.revoked,
            retrying: outcome.retrying,
            failed: outcome.failed,
        })
    }
}

fn humanize(duration: Duration) -> String {
    humantime_serde::re::humantime::format_duration(duration).to_string()
}
