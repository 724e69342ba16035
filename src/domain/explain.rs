//! What Writ would decide, without issuing anything: for the identity team
//! checking a policy against a real agent and task (or task attributes).
//!
//! The grant goes through the same validation, lifetime settling and
//! policy decision as an `Issue` (`plan` and `decide` in [`super::grants`]),
//! and a closed task or a suspended agent is reported as `Issue` would
//! meet it. Nothing is written but the evidence that someone asked.

use chrono::{DateTime, Utc};

use super::grants::validate_tool;
use super::tasks::validate_context;
use super::{Broker, Error, GrantRequest, quoted};
use crate::model::{AgentState, Task, TaskContext, TaskState};
use crate::policy::Decision;

/// The task a question is about: one that exists, or attributes.
#[derive(Clone, Debug)]
pub enum ExplainTask {
    Existing(String),
    Attributes(TaskContext),
}

#[derive(Clone, Debug)]
pub struct ExplainRequest {
    pub agent: String,
    pub task: ExplainTask,
    pub tool: String,
    pub grant: GrantRequest,
    /// `issue` or `renew`.
    pub action: &'static str,
}

/// What Writ would decide.
#[derive(Clone, Debug, PartialEq)]
pub struct Explained {
    /// What the policy decides.
    pub decision: Decision,
    /// The digest of the set that decided.
    pub policy_set: String,
    /// What an `Issue` would say about the lifetime (clamps).
    pub notices: Vec<String>,
    /// Why, in words, including what would refuse the request before
    /// policy (a suspended agent).
    pub explanation: String,
    /// Whether an `Issue` of this grant would be allowed now.
    pub allowed: bool,
}

impl Broker {
    pub async fn explain(
        &self,
        caller: &str,
        request: ExplainRequest,
        now: DateTime<Utc>,
    ) -> Result<Explained, Error> {
        let agent = self
            .registry
            .agent(&request.agent)
            .ok_or_else(|| Error::NotFound(format!("agent {} is not registered", quoted(&request.agent))))?;
        validate_tool(&request.tool)?;
        let task = match request.task {
            ExplainTask::Existing(task_id) => {
                super::tasks::validate_task_id(&task_id)?;
                let task = self
                    .store
                    .get_task(&task_id)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("task {} not found", quoted(&task_id))))?;
                if task.agent != agent.name {
                    return Err(Error::InvalidArgument(format!(
                        "task {} belongs to agent {}, not {}",
                        quoted(&task_id),
                        quoted(&task.agent),
                        quoted(&agent.name)
                    )));
                }
                if !task.is_open_at(now) {
                    return Err(Error::FailedPrecondition(format!(
                        "task {} is closed: Writ would refuse any grant under it",
                        quoted(&task_id)
                    )));
                }
                task
            }
            ExplainTask::Attributes(context) => {
                validate_context(&context)?;
                let lifetime = chrono::Duration::from_std(self.limits.max_task_lifetime).unwrap_or_default();
                Task {
                    id: "explain".into(),
                    agent: agent.name.clone(),
                    context,
                    state: TaskState::Open,
                    created_at: now,
                    created_by: caller.to_owned(),
                    deadline: now + lifetime,
                    closed: None,
                }
            }
        };
        let plan = self.plan(&task, &request.grant, now)?;
        let (decision, mut evidence) =
            self.evaluate(request.action, &agent, &task, &request.tool, &plan, now)?;
        let policy_set = evidence
            .details
            .as_ref()
            .and_then(|details| details["policy_set"].as_str())
            .unwrap_or_default()
            .to_owned();
        let suspended =
            self.registry.status(&agent.name).await?.filter(|status| status.state == AgentState::Suspended);
        let target = format!("{}/{}", request.grant.provider, request.grant.role);
        let verdict = match &decision {
            Decision::Allow { policies } => format!("permitted by {}", policies.join(", ")),
            Decision::StepUp { policies, step_up } => format!(
                "permitted by {} once {} approver(s) of group {:?} approve: an Issue would create an \
                 approval request",
                policies.join(", "),
                step_up.quorum,
                step_up.group
            ),
            Decision::Deny { policies } if policies.is_empty() => {
                format!("no policy permits agent {:?} to {} {target}", agent.name, request.action)
            }
            Decision::Deny { policies } => format!("denied by {}", policies.join(", ")),
        };
        let explanation = match &suspended {
            Some(status) => format!(
                "agent {:?} is suspended (since {}), so Writ refuses it whatever the policy says; the policy alone: {verdict}",
                agent.name,
                status.changed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => verdict,
        };
        let allowed = suspended.is_none() && matches!(decision, Decision::Allow { .. });
        evidence.event = "policy_explained";
        evidence.actor = caller.to_owned();
        self.audit.record_or_log(now, evidence).await;
        Ok(Explained { decision, policy_set, notices: plan.notices, explanation, allowed })
    }
}
