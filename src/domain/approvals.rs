//! Step-up approvals: a grant that a `@step_up` policy permits is neither
//! issued nor denied, but becomes an approval request that people of the
//! policy's approver group decide.
//!
//! The rules, in the order they are checked:
//! - only a service with the `approver` role reaches these calls (the gRPC
//!   layer's audience check: an agent's token never does);
//! - the approver is a member of the request's group (configuration);
//! - the approver does not own the request's agent, nor started its task;
//! - the store applies each vote atomically: one vote per approver (so a
//!   quorum of N is N distinct people), one denial ends the request, the
//!   N-th approval approves it, nothing after the request's deadline or
//!   under a closed task or suspended agent;
//! - the agent collects exactly what was approved, once (the store's
//!   atomic approved → collected), through the same mint path as Issue,
//!   with the policy asked again and the lifetime clamped again.
//!
//! Every step is evidence, and every change reaches the webhooks and the
//! agents watching their request.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use uuid::Uuid;
use writ_provider_api::SecretString;

use super::grants::{GrantRequest, IssueRequest, Issued, Planned};
use super::{Broker, Error, check_text, quoted};
use crate::audit::AuditEvent;
use crate::model::{Approval, ApprovalGrant, ApprovalState, ApprovalVote, Task};
use crate::policy::{Decision, StepUp};
use crate::principals::{Agent, Service};
use crate::store::ApprovalFilter;
use crate::webhooks::WebhookEvent;

/// The longest reason an approver may give.
const MAX_REASON_CHARS: usize = 500;

/// Open requests read per pass when ending those that can no longer go on.
const END_BATCH: usize = 500;

/// How approvals work here, from `[approvals]`.
#[derive(Clone, Debug)]
pub struct ApprovalSettings {
    /// Group → the names of the services (with the `approver` role) in it.
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// How long a request waits for its quorum.
    pub timeout: Duration,
    /// How long an approved request waits to be collected.
    pub collect_within: Duration,
    /// The most undecided requests one agent may have at once.
    pub max_pending_per_agent: usize,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            groups: BTreeMap::new(),
            timeout: Duration::from_secs(15 * 60),
            collect_within: Duration::from_secs(15 * 60),
            max_pending_per_agent: 20,
        }
    }
}

/// What an Issue did: issued every grant, or asked for approval.
#[derive(Debug)]
pub enum IssueOutcome {
    Issued(Vec<Issued>),
    /// Boxed: a request is much larger than a list of credentials.
    ApprovalRequired(Box<Approval>),
}

/// One approver's decision, as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
}

impl Broker {
    /// Records an approval request for an Issue whose grants policy
    /// permits only with approval (`step_ups`: each such grant's policies
    /// and step-up), with the decisions' evidence. An identical request
    /// still pending is answered instead of a second one.
    pub(super) async fn request_approval(
        &self,
        agent: &Agent,
        task: &Task,
        request: &IssueRequest,
        step_ups: Vec<(Vec<String>, StepUp)>,
        evidence: Vec<AuditEvent>,
        now: DateTime<Utc>,
    ) -> Result<Approval, Error> {
        let step_up = merge(&step_ups)?;
        if !self.approvals.groups.contains_key(&step_up.group) {
            tracing::error!(group = %step_up.group, "a policy names an approver group that is not configured");
            return Err(Error::FailedPrecondition(format!(
                "this grant needs approval by group {}, which Writ has no approvers for; ask the identity team",
                quoted(&step_up.group)
            )));
        }
        let grants: Vec<ApprovalGrant> = request
            .grants
            .iter()
            .map(|grant| ApprovalGrant {
                provider: grant.provider.clone(),
                role: grant.role.clone(),
                scopes: grant.scopes.clone(),
                ttl_seconds: grant.ttl.map(|ttl| ttl.as_secs()),
            })
            .collect();
        let pending = ApprovalFilter {
            agent: Some(agent.name.clone()),
            state: Some(ApprovalState::Pending),
            ..ApprovalFilter::default()
        };
        let open =
            self.store.list_approvals(&pending, None, self.approvals.max_pending_per_agent + 1).await?;
        if let Some(same) = open
            .iter()
            .find(|open| open.task_id == task.id && open.tool == request.tool && open.grants == grants)
        {
            // The decisions are evidence all the same.
            self.audit.record_all(now, evidence).await?;
            return Ok(same.clone());
        }
        if open.len() >= self.approvals.max_pending_per_agent {
            return Err(Error::FailedPrecondition(format!(
                "agent {} has {} approval requests waiting already; wait for them to be decided",
                quoted(&agent.name),
                open.len()
            )));
        }
        let mut policies: Vec<String> = step_ups.iter().flat_map(|(policies, _)| policies.clone()).collect();
        policies.sort();
        policies.dedup();
        let policy_set = evidence
            .first()
            .and_then(|event| event.details.as_ref())
            .and_then(|details| details["policy_set"].as_str())
            .unwrap_or_default()
            .to_owned();
        let approval = Approval {
            id: crate::model::routing::id_for_task(&task.id),
            agent: agent.name.clone(),
            task_id: task.id.clone(),
            tool: request.tool.clone(),
            grants,
            group: step_up.group,
            quorum: step_up.quorum,
            policies,
            policy_set,
            state: ApprovalState::Pending,
            created_at: now,
            expires_at: later(now, self.approvals.timeout),
            collect_within_seconds: self.approvals.collect_within.as_secs(),
            votes: Vec::new(),
            approved_at: None,
            collect_by: None,
            collected_at: None,
            ended: None,
        };
        self.store.create_approval(approval.clone(), now).await?;
        let mut events = evidence;
        events.push(approval_event("approval_requested", "ok", &agent.name, &approval, None));
        for event in events {
            self.audit.record(now, event).await?;
        }
        self.approval_changed(WebhookEvent::Requested, &approval, now);
        tracing::info!(approval = %approval.id, agent = %agent.name, group = %approval.group, "approval requested");
        Ok(approval)
    }

    /// An approver's vote.
    pub async fn vote_approval(
        &self,
        approver: &Service,
        id: &str,
        verdict: Verdict,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Approval, Error> {
        let approval = self.approval(id).await?;
        if reason.trim().is_empty() {
            return Err(Error::InvalidArgument("reason must say why (it is evidence)".into()));
        }
        check_text("reason", reason, MAX_REASON_CHARS)?;
        let members = self.approvals.groups.get(&approval.group);
        if !members.is_some_and(|members| members.contains(&approver.name)) {
            return Err(Error::PermissionDenied(format!(
                "{} is not in approver group {}, which decides this request",
                quoted(&approver.name),
                quoted(&approval.group)
            )));
        }
        let owner = self.registry.agent(&approval.agent).map(|agent| agent.owner.clone());
        if owner.as_deref() == Some(approver.name.as_str()) {
            return Err(Error::PermissionDenied(format!(
                "{} owns agent {}; an owner may not decide its own agent's requests",
                quoted(&approver.name),
                quoted(&approval.agent)
            )));
        }
        if let Some(task) = self.store.get_task(&approval.task_id).await?
            && task.created_by == approver.name
        {
            return Err(Error::PermissionDenied(format!(
                "{} started task {}; whoever started a task may not decide its requests",
                quoted(&approver.name),
                quoted(&approval.task_id)
            )));
        }
        let vote = ApprovalVote {
            by: approver.name.clone(),
            approve: verdict == Verdict::Approve,
            reason: reason.to_owned(),
            at: now,
        };
        let decided = match self.store.vote_approval(approval.id, vote).await {
            Ok(decided) => decided,
            Err(crate::store::StoreError::AlreadyVoted { .. }) => {
                return Err(Error::FailedPrecondition(format!(
                    "{} has decided approval request {} already; a quorum of {} needs {} distinct approvers",
                    quoted(&approver.name),
                    approval.id,
                    approval.quorum,
                    approval.quorum
                )));
            }
            Err(error) => return Err(error.into()),
        };
        let outcome = if verdict == Verdict::Approve { "approve" } else { "deny" };
        let mut events =
            vec![approval_event("approval_vote", outcome, &approver.name, &decided, Some(reason))];
        let webhook = match decided.state {
            ApprovalState::Approved => {
                events.push(approval_event("approval_approved", "ok", &approver.name, &decided, None));
                WebhookEvent::Approved
            }
            ApprovalState::Denied => {
                events.push(approval_event("approval_denied", "ok", &approver.name, &decided, Some(reason)));
                WebhookEvent::Denied
            }
            _ => WebhookEvent::Voted,
        };
        self.audit.record_all(now, events).await?;
        self.approval_changed(webhook, &decided, now);
        Ok(decided)
    }

    /// The agent collects what its approved request grants, once.
    pub async fn collect_approval(
        &self,
        agent: &Agent,
        id: &str,
        subject_token: Option<SecretString>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Issued>, Error> {
        let approval = self.own_approval(agent, id).await?;
        // A suspended agent hears of its suspension, not of the request the
        // suspension cancelled.
        self.registry.ensure_active(&agent.name).await?;
        if approval.state != ApprovalState::Approved {
            return Err(not_collectable(&approval));
        }
        let task = self.task_for(agent, &approval.task_id, now).await?;
        let grants: Vec<GrantRequest> = approval
            .grants
            .iter()
            .map(|grant| GrantRequest {
                provider: grant.provider.clone(),
                role: grant.role.clone(),
                scopes: grant.scopes.clone(),
                ttl: grant.ttl_seconds.map(Duration::from_secs),
            })
            .collect();
        let mut planned: Vec<Planned<'_>> = Vec::with_capacity(grants.len());
        for grant in &grants {
            planned.push(self.plan(&task, grant, now)?);
        }
        // The policy is asked again: a set reloaded since the request may
        // forbid it now. A step-up answer is what was approved.
        let mut evidence = Vec::with_capacity(planned.len());
        for plan in &mut planned {
            plan.subject_token = subject_token.clone();
            let (decision, mut event) = self.decide("issue", agent, &task, &approval.tool, plan, now)?;
            if let Some(details) = event.details.as_mut() {
                details["approval"] = json!(approval.id);
            }
            evidence.push(event);
            match decision {
                Decision::Allow { policies } | Decision::StepUp { policies, .. } => plan.policies = policies,
                Decision::Deny { policies } => {
                    self.audit.record_all(now, evidence).await?;
                    return Err(Error::PermissionDenied(format!(
                        "approval request {} was approved, but the policy in force now denies {}/{}{}",
                        approval.id,
                        plan.grant().provider,
                        plan.grant().role,
                        if policies.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", policies.join(", "))
                        }
                    )));
                }
            }
        }
        let collected = self.store.collect_approval(approval.id, &agent.name, now).await?;
        self.audit
            .record(now, approval_event("approval_collected", "ok", &agent.name, &collected, None))
            .await?;
        self.approval_changed(WebhookEvent::Collected, &collected, now);
        self.mint_all(agent, &task, &approval.tool, planned, evidence, now).await
    }

    /// A request, for an approver.
    pub async fn approval(&self, id: &str) -> Result<Approval, Error> {
        let id = parse_id(id)?;
        self.store
            .get_approval(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("approval request {id} not found")))
    }

    /// The agent's own request, or NOT_FOUND.
    pub async fn own_approval(&self, agent: &Agent, id: &str) -> Result<Approval, Error> {
        let id = parse_id(id)?;
        match self.store.get_approval(id).await? {
            Some(approval) if approval.agent == agent.name => Ok(approval),
            _ => Err(Error::NotFound(format!("approval request {id} not found for agent {:?}", agent.name))),
        }
    }

    pub async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Approval>, Error> {
        Ok(self.store.list_approvals(filter, after, limit).await?)
    }

    /// Ends the open requests that can no longer go on (expired, or under
    /// an ended task or agent), with evidence: the sweeper's step, and
    /// run at once after a scope ends.
    pub async fn end_approvals(&self, now: DateTime<Utc>) -> Result<usize, Error> {
        let mut total = 0;
        loop {
            let ended = self.store.end_approvals(now, END_BATCH).await?;
            total += ended.len();
            let events = ended
                .iter()
                .map(|approval| {
                    let event = if approval.state == ApprovalState::Expired {
                        "approval_expired"
                    } else {
                        "approval_cancelled"
                    };
                    let reason = approval.ended.as_ref().map(|end| end.reason.as_str());
                    approval_event(event, "ok", "writ", approval, reason)
                })
                .collect::<Vec<_>>();
            if !events.is_empty() {
                self.audit.record_all_or_log(now, events).await;
            }
            for approval in &ended {
                let webhook = if approval.state == ApprovalState::Expired {
                    WebhookEvent::Expired
                } else {
                    WebhookEvent::Cancelled
                };
                self.approval_changed(webhook, approval, now);
            }
            if ended.len() < END_BATCH {
                return Ok(total);
            }
        }
    }

    /// Sends the webhooks of every open request again (at start: a
    /// notice queued before a restart may not have been delivered;
    /// receivers de-duplicate by request id and event type).
    pub async fn renotify_open_approvals(&self, now: DateTime<Utc>) -> Result<usize, Error> {
        let mut sent = 0;
        for state in [ApprovalState::Pending, ApprovalState::Approved] {
            let filter = ApprovalFilter { state: Some(state), ..ApprovalFilter::default() };
            let mut after = None;
            loop {
                let page = self.store.list_approvals(&filter, after, END_BATCH).await?;
                for approval in &page {
                    let event = if state == ApprovalState::Pending {
                        WebhookEvent::Requested
                    } else {
                        WebhookEvent::Approved
                    };
                    self.webhooks.send(event, approval, now);
                    sent += 1;
                }
                match page.last() {
                    Some(last) if page.len() == END_BATCH => after = Some(last.id),
                    _ => break,
                }
            }
        }
        Ok(sent)
    }

    /// A change subscribers can wait on: bumped whenever a request changes
    /// on this replica (watchers also look again now and then, for changes
    /// made on other replicas).
    pub fn approval_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.approval_changes.subscribe()
    }

    fn approval_changed(&self, event: WebhookEvent, approval: &Approval, now: DateTime<Utc>) {
        self.webhooks.send(event, approval, now);
        self.approval_changes.send_modify(|count| *count = count.wrapping_add(1));
    }
}

/// The one step-up an Issue's grants need: they must name one group; the
/// largest quorum asked wins.
fn merge(step_ups: &[(Vec<String>, StepUp)]) -> Result<StepUp, Error> {
    let groups: BTreeSet<&str> = step_ups.iter().map(|(_, step_up)| step_up.group.as_str()).collect();
    if groups.len() > 1 {
        let names: Vec<String> = groups.iter().map(|group| quoted(group)).collect();
        return Err(Error::FailedPrecondition(format!(
            "these grants need approval by different groups ({}); ask for them in separate requests",
            names.join(", ")
        )));
    }
    let quorum = step_ups.iter().map(|(_, step_up)| step_up.quorum).max().unwrap_or(1);
    let group = groups.into_iter().next().unwrap_or_default().to_owned();
    Ok(StepUp { group, quorum })
}

fn parse_id(id: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(id)
        .map_err(|_| Error::InvalidArgument(format!("approval_id {} is not a UUID", quoted(id))))
}

fn later(now: DateTime<Utc>, after: Duration) -> DateTime<Utc> {
    now + TimeDelta::from_std(after).unwrap_or(TimeDelta::MAX)
}

/// Why a request that is not approved cannot be collected, in the words
/// the agent needs.
fn not_collectable(approval: &Approval) -> Error {
    let id = approval.id;
    match approval.state {
        ApprovalState::Pending => Error::FailedPrecondition(format!(
            "approval request {id} is still pending: {} of {} approvals from group {}",
            approval.approvers().count(),
            approval.quorum,
            quoted(&approval.group)
        )),
        ApprovalState::Denied => {
            let (by, reason) =
                approval.ended.as_ref().map_or(("", ""), |end| (end.by.as_str(), end.reason.as_str()));
            Error::PermissionDenied(format!(
                "approval request {id} was denied by {}: {}",
                quoted(by),
                quoted(reason)
            ))
        }
        ApprovalState::Collected => {
            Error::FailedPrecondition(format!("approval request {id} was collected already; ask again"))
        }
        state => {
            let reason = approval.ended.as_ref().map_or("", |end| end.reason.as_str());
            Error::FailedPrecondition(format!("approval request {id} is {} ({reason})", state.as_str()))
        }
    }
}

/// The evidence of one step of a request. Names the approvers so far.
fn approval_event(
    event: &'static str,
    outcome: &'static str,
    actor: &str,
    approval: &Approval,
    reason: Option<&str>,
) -> AuditEvent {
    AuditEvent {
        event,
        actor: actor.to_owned(),
        outcome,
        agent: Some(approval.agent.clone()),
        task: Some(approval.task_id.clone()),
        tool: Some(approval.tool.clone()),
        reason: reason.map(str::to_owned),
        policies: approval.policies.clone(),
        details: Some(json!({
            "approval": approval.id,
            "state": approval.state.as_str(),
            "group": approval.group,
            "quorum": approval.quorum,
            "approvers": approval.approvers().collect::<Vec<_>>(),
            "grants": approval.grants,
            "expires_at": approval.expires_at,
            "collect_by": approval.collect_by,
        })),
        ..AuditEvent::default()
    }
}
