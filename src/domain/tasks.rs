//! Tasks: opened by workflow engines, closed by them or by their deadline.
//! Closing a task revokes every lease issued under it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Broker, Error, check_text, quoted};
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

pub(super) fn validate_context(context: &TaskContext) -> Result<(), Error> {
    let attributes = [
        ("purpose", &context.purpose),
        ("environment", &context.environment),
        ("data_classification", &context.data_classification),
        ("ticket", &context.ticket),
    ];
    for (name, value) in attributes {
        check_text(&format!("context.{name}"), value, MAX_ATTRIBUTE_LEN)?;
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
                "label key {} must be 1 to 64 characters of letters, digits and -_.",
                quoted(key)
            )));
        }
        check_text(&format!("label {key:?}"), value, MAX_ATTRIBUTE_LEN)?;
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
            return Err(Error::NotFound(format!("agent {} is not registered", quoted(&request.agent))));
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
            .ok_or_else(|| Error::NotFound(format!("task {} not found", quoted(task_id))))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> TaskContext {
        TaskContext { environment: "prod".into(), ..TaskContext::default() }
    }

    #[test]
    fn context_text_is_printable_and_counted_in_characters() {
        assert!(validate_context(&context()).is_ok());
        let long = TaskContext { purpose: "é".repeat(MAX_ATTRIBUTE_LEN), ..context() };
        assert!(validate_context(&long).is_ok(), "256 characters, 512 bytes");
        let too_long = TaskContext { ticket: "é".repeat(MAX_ATTRIBUTE_LEN + 1), ..context() };
        assert_eq!(
            validate_context(&too_long),
            Err(Error::InvalidArgument("context.ticket is longer than 256 characters".into()))
        );
        let hidden = TaskContext { environment: "prod\u{202e}ved".into(), ..context() };
        assert_eq!(
            validate_context(&hidden),
            Err(Error::InvalidArgument(
                "context.environment must be printable: character 5 is U+202E, a control, format or \
                 separator character"
                    .into()
            ))
        );
    }

    #[test]
    fn labels_are_checked_and_quoted_briefly() {
        let mut labels = context();
        labels.labels.insert("team".into(), "bill\u{200b}ing".into());
        assert_eq!(
            validate_context(&labels),
            Err(Error::InvalidArgument(
                "label \"team\" must be printable: character 5 is U+200B, a control, format or separator \
                 character"
                    .into()
            ))
        );
        let mut key = context();
        key.labels.insert("k".repeat(10_000), String::new());
        let Err(Error::InvalidArgument(message)) = validate_context(&key) else { panic!("refused") };
        assert!(message.len() < 200, "{message}");
        assert!(message.starts_with(&format!("label key \"{}…\" must be", "k".repeat(64))), "{message}");
    }
}
