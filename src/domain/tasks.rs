//! Tasks: opened by workflow engines, closed by them or by their deadline.
//! Closing a task revokes every lease issued under it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Broker, Error, check_text, quoted};
use crate::audit::AuditEvent;
use crate::model::{Lease, RevocationReason, Task, TaskContext, TaskState};

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
        if self.directory.agent(&request.agent).is_none() {
            return Err(Error::NotFound(format!("agent {} is not registered", quoted(&request.agent))));
        }
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
        // Subscribed first, so no batch finished after the close is missed.
        let finished = self.revocations.subscribe();
        let closed = self.store.close_task(task_id, caller, reason, now).await?;
        if !closed.revoking.is_empty() {
            self.revocations.wake();
        }
        self.audit
            .record_or_log(
                now,
                AuditEvent {
                    event: "task_closed",
                    actor: caller.to_string(),
                    outcome: "ok",
                    agent: Some(closed.task.agent.clone()),
                    task: Some(task_id.to_string()),
                    reason: Some(reason.as_str().to_string()),
                    details: Some(json!({ "revoking": closed.revoking.len() })),
                    ..AuditEvent::default()
                },
            )
            .await;
        let (revoked, retrying) =
            self.wait_for_revocations(task_id, &closed.revoking, finished, self.limits.close_wait).await?;
        Ok(CloseOutcome { task: closed.task, revoked, retrying })
    }

    /// Waits until every lease of the task is final or `wait` passes, and
    /// counts (revoked, still retrying).
    ///
    /// The leases this close queued are ticked off as the worker reports
    /// them revoked, without reading the store; the store is read once they
    /// are all done (to count, and to catch leases that were revoking
    /// before the close or are revoked by another replica), after every
    /// later batch until nothing is left, and when `wait` runs out.
    async fn wait_for_revocations(
        &self,
        task_id: &str,
        queued: &[Uuid],
        mut finished: broadcast::Receiver<Arc<[Uuid]>>,
        wait: Duration,
    ) -> Result<(usize, usize), Error> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut outstanding: HashSet<Uuid> = queued.iter().copied().collect();
        let mut recount = outstanding.is_empty();
        loop {
            if recount {
                let (revoked, retrying) = self.revocation_progress(task_id).await?;
                if retrying == 0 {
                    return Ok((revoked, 0));
                }
            }
            match tokio::time::timeout_at(deadline, finished.recv()).await {
                Ok(Ok(batch)) => {
                    if !recount {
                        for lease_id in batch.iter() {
                            outstanding.remove(lease_id);
                        }
                        recount = outstanding.is_empty();
                    }
                }
                // Too far behind to know which were revoked: ask the store.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => recount = true,
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => {
                    return self.revocation_progress(task_id).await;
                }
            }
        }
    }

    /// (final, not yet final) among the task's leases, from the store.
    async fn revocation_progress(&self, task_id: &str) -> Result<(usize, usize), Error> {
        let leases = self.store.task_leases(task_id).await?;
        let revoked = leases.iter().filter(|lease| lease.state.is_final()).count();
        Ok((revoked, leases.len() - revoked))
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
