//! Credentials: issue, renew, release.
//!
//! Issuing follows the lease lifecycle so that no credential ever exists
//! that Writ does not track:
//!
//! 1. validate every grant and decide every grant by policy (nothing is
//!    written for a request that will be refused);
//! 2. record the decision and a *pending* lease (the intent, with the
//!    provider's deterministic revocation handle, sealed) — durably;
//! 3. mint at the provider;
//! 4. mark the lease *active* (durably), record the issuance, and only then
//!    hand the credential out.
//!
//! A failure after 2 queues the lease for revocation; a crash after 2 leaves
//! a pending lease the sweeper revokes by its handle.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tracing::Instrument as _;
use uuid::Uuid;
use writ_provider_api::{Credential, MintRequest, ProviderError, RenewRequest, RevokeRequest, SecretString};

use super::approvals::IssueOutcome;
use super::{Broker, Error, quoted};
use crate::audit::AuditEvent;
use crate::metrics::Operation;
use crate::model::{Lease, LeaseState, RevocationReason, Task};
use crate::policy::{Decision, GrantFacts, RoleFacts};
use crate::principals::Agent;
use crate::providers::Registered;
use crate::store::StoreError;

mod rules;

pub(super) use rules::validate_tool;
use rules::{denial, lifetime, provider_error};

const MAX_SCOPES: usize = 32;
const MAX_NAME_LEN: usize = 128;

/// One grant an agent asks for.
#[derive(Clone, Debug)]
pub struct GrantRequest {
    pub provider: String,
    pub role: String,
    pub scopes: Vec<String>,
    pub ttl: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub task_id: String,
    pub tool: String,
    pub grants: Vec<GrantRequest>,
    /// The workload token the agent authenticated with, passed on to
    /// providers that exchange it (RFC 8693). Never stored or logged.
    pub subject_token: Option<SecretString>,
}

/// One credential handed out, with its lease.
#[derive(Debug)]
pub struct Issued {
    pub lease: Lease,
    pub credential: Credential,
    pub notices: Vec<String>,
}

/// The outcome of a renewal.
#[derive(Debug)]
pub struct Renewal {
    pub lease: Lease,
    pub credential: Option<Credential>,
    pub notices: Vec<String>,
}

/// A grant that passed validation, with its lifetime settled.
pub(super) struct Planned<'a> {
    grant: &'a GrantRequest,
    provider: &'a Registered,
    expires_at: DateTime<Utc>,
    pub(super) notices: Vec<String>,
    pub(super) policies: Vec<String>,
    /// The agent's own token, for providers that exchange it.
    pub(super) subject_token: Option<SecretString>,
}

impl Planned<'_> {
    pub(super) fn grant(&self) -> &GrantRequest {
        self.grant
    }
}

impl Broker {
    /// Issues every grant of the request, or none; or, when policy permits
    /// a grant only with approval, records an approval request for them
    /// all (see [`super::approvals`]). Each grant is counted by how the
    /// call ended (`writ_issuances_total`).
    pub async fn issue(
        &self,
        agent: &Agent,
        request: IssueRequest,
        now: DateTime<Utc>,
    ) -> Result<IssueOutcome, Error> {
        use crate::metrics::IssueOutcome as Counted;
        let started = std::time::Instant::now();
        // Configured names only: an agent's text never becomes a label.
        let providers: Vec<String> = request
            .grants
            .iter()
            .map(|grant| {
                self.providers.get(&grant.provider).map_or("unknown", |_| &grant.provider).to_owned()
            })
            .collect();
        let result = self.issue_unmeasured(agent, request, now).await;
        let outcome = match &result {
            Ok(IssueOutcome::Issued(_)) => Counted::issued,
            Ok(IssueOutcome::ApprovalRequired(_)) => Counted::step_up,
            Err(Error::PermissionDenied(_)) => Counted::denied,
            Err(Error::Unavailable(_) | Error::Internal(_)) => Counted::error,
            Err(_) => Counted::refused,
        };
        let elapsed = started.elapsed();
        for provider in &providers {
            self.metrics.issuance(provider, outcome, elapsed);
        }
        result
    }

    async fn issue_unmeasured(
        &self,
        agent: &Agent,
        request: IssueRequest,
        now: DateTime<Utc>,
    ) -> Result<IssueOutcome, Error> {
        let task = self.task_for(agent, &request.task_id, now).await?;
        validate_tool(&request.tool)?;
        if request.grants.is_empty() {
            return Err(Error::InvalidArgument("grants must name at least one grant".into()));
        }
        if request.grants.len() > self.limits.max_grants_per_request {
            return Err(Error::InvalidArgument(format!(
                "at most {} grants per request",
                self.limits.max_grants_per_request
            )));
        }
        if !self.audit.is_healthy() {
            return Err(crate::audit::AuditError::Unavailable("the audit log refuses writes".into()).into());
        }
        let mut planned = Vec::with_capacity(request.grants.len());
        for grant in &request.grants {
            planned.push(self.plan(&task, grant, now)?);
        }
        // Decide every grant before minting any; a request with one denied
        // grant mints nothing, and one with a grant that needs approval
        // becomes an approval request for all of them. Allowed decisions are
        // recorded together with their pending lease, a denial at once.
        let mut evidence = Vec::with_capacity(planned.len());
        let mut step_ups = Vec::new();
        let policy = tracing::debug_span!("policy").entered();
        for plan in &mut planned {
            plan.subject_token = request.subject_token.clone();
            let (decision, event) = self.decide("issue", agent, &task, &request.tool, plan, now)?;
            evidence.push(event);
            match decision {
                Decision::Allow { policies } => plan.policies = policies,
                Decision::StepUp { policies, step_up } => step_ups.push((policies, step_up)),
                Decision::Deny { policies } => {
                    drop(policy);
                    self.audit
                        .record_all(now, evidence)
                        .instrument(tracing::debug_span!("audit", event = "denied"))
                        .await?;
                    return Err(denial("issue", agent, plan.grant, &policies));
                }
            }
        }
        drop(policy);
        if !step_ups.is_empty() {
            let approval = self.request_approval(agent, &task, &request, step_ups, evidence, now).await?;
            return Ok(IssueOutcome::ApprovalRequired(Box::new(approval)));
        }
        self.mint_all(agent, &task, &request.tool, planned, evidence, now).await.map(IssueOutcome::Issued)
    }

    /// Mints every planned grant, each with its decision's evidence, or
    /// none: what the request already got is taken back on a failure.
    pub(super) async fn mint_all(
        &self,
        agent: &Agent,
        task: &Task,
        tool: &str,
        planned: Vec<Planned<'_>>,
        evidence: Vec<AuditEvent>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Issued>, Error> {
        let mut issued = Vec::with_capacity(planned.len());
        for (plan, decision) in planned.into_iter().zip(evidence) {
            match self.mint(agent, task, tool, plan, decision, now).await {
                Ok(one) => issued.push(one),
                Err(error) => {
                    // All or nothing: take back what this request already got.
                    let ids: Vec<Uuid> = issued.iter().map(|one: &Issued| one.lease.id).collect();
                    if !ids.is_empty() {
                        self.take_back(&ids, now).await;
                    }
                    return Err(error);
                }
            }
        }
        Ok(issued)
    }

    /// The task, if it is open and bound to this agent, and the agent is
    /// not suspended. (The store checks both again, atomically, when it
    /// records and activates the lease; this refuses early and clearly.)
    pub(super) async fn task_for(
        &self,
        agent: &Agent,
        task_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Task, Error> {
        super::tasks::validate_task_id(task_id)?;
        let not_yours =
            || Error::NotFound(format!("task {} not found for agent {:?}", quoted(task_id), agent.name));
        let (task, active) =
            tokio::join!(self.store.get_task(task_id), self.registry.ensure_active(&agent.name));
        active?;
        let task = task?.ok_or_else(not_yours)?;
        // Another agent's task is reported as missing: its existence is not
        // this agent's business.
        if task.agent != agent.name {
            return Err(not_yours());
        }
        if !task.is_open_at(now) {
            return Err(Error::FailedPrecondition(format!("task {} is closed", quoted(task_id))));
        }
        Ok(task)
    }

    pub(super) fn plan<'a>(
        &'a self,
        task: &Task,
        grant: &'a GrantRequest,
        now: DateTime<Utc>,
    ) -> Result<Planned<'a>, Error> {
        if grant.provider.len() > MAX_NAME_LEN || grant.role.len() > MAX_NAME_LEN {
            return Err(Error::InvalidArgument(format!(
                "provider and role names are at most {MAX_NAME_LEN} bytes"
            )));
        }
        let provider = self.providers.get(&grant.provider).ok_or_else(|| {
            Error::NotFound(format!("provider {} is not configured", quoted(&grant.provider)))
        })?;
        let role = provider.role(&grant.role).ok_or_else(|| {
            Error::NotFound(format!(
                "provider {} has no role {}",
                quoted(&grant.provider),
                quoted(&grant.role)
            ))
        })?;
        if grant.scopes.len() > MAX_SCOPES || grant.scopes.iter().any(|scope| scope.len() > MAX_NAME_LEN) {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_SCOPES} scopes per grant, each at most {MAX_NAME_LEN} bytes"
            )));
        }
        if let Some(scope) = grant.scopes.iter().find(|scope| !role.scopes.contains(scope)) {
            return Err(Error::InvalidArgument(format!(
                "role {} of provider {} does not offer scope {}",
                quoted(&grant.role),
                quoted(&grant.provider),
                quoted(scope)
            )));
        }
        let mut notices = Vec::new();
        let (expires_at, clamped) = lifetime(grant.ttl, role, task.deadline, now)?;
        notices.extend(clamped);
        Ok(Planned { grant, provider, expires_at, notices, policies: Vec::new(), subject_token: None })
    }

    /// Decides one grant by policy, counted in `writ_policy_decisions_total`.
    /// Returns the decision and its evidence, not yet recorded.
    pub(super) fn decide(
        &self,
        action: &'static str,
        agent: &Agent,
        task: &Task,
        tool: &str,
        plan: &Planned<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Decision, AuditEvent), Error> {
        let decided = self.evaluate(action, agent, task, tool, plan, now)?;
        self.metrics.decision(action, decided.0.outcome());
        Ok(decided)
    }

    /// [`Self::decide`] without counting: for explanations and reports,
    /// which ask policy what it would say.
    pub(super) fn evaluate(
        &self,
        action: &'static str,
        agent: &Agent,
        task: &Task,
        tool: &str,
        plan: &Planned<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Decision, AuditEvent), Error> {
        let facts = GrantFacts {
            action,
            agent,
            task,
            role: RoleFacts {
                provider: &plan.grant.provider,
                role: &plan.grant.role,
                shape: plan.provider.shape_name(),
            },
            tool,
            scopes: &plan.grant.scopes,
            ttl_seconds: (plan.expires_at - now).num_seconds(),
            now,
        };
        let (decision, policy_set) = self.policy.decide_with_digest(&facts).map_err(|error| {
            tracing::error!(%error, "policy evaluation failed");
            Error::Internal("policy evaluation failed".into())
        })?;
        let (outcome, policies) = (decision.outcome(), decision.policies().to_vec());
        let step_up = match &decision {
            Decision::StepUp { step_up, .. } => json!({ "group": step_up.group, "quorum": step_up.quorum }),
            _ => serde_json::Value::Null,
        };
        let event = AuditEvent {
            event: "decision",
            actor: agent.name.clone(),
            outcome,
            agent: Some(agent.name.clone()),
            task: Some(task.id.clone()),
            provider: Some(plan.grant.provider.clone()),
            role: Some(plan.grant.role.clone()),
            tool: Some(tool.to_string()),
            reason: Some(action.to_string()),
            policies,
            details: Some(json!({
                "scopes": plan.grant.scopes,
                "ttl_seconds": facts.ttl_seconds,
                "policy_set": &*policy_set,
                "step_up": step_up,
            })),
            ..AuditEvent::default()
        };
        Ok((decision, event))
    }

    /// Decides one grant and records the decision. A denial is an error.
    async fn authorize(
        &self,
        action: &'static str,
        agent: &Agent,
        task: &Task,
        tool: &str,
        plan: &Planned<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        let (decision, event) = self.decide(action, agent, task, tool, plan, now)?;
        self.audit.record(now, event).await?;
        match decision {
            Decision::Allow { policies } => Ok(policies),
            // A renewal is not what was approved: the lifetime would grow
            // past what the approvers saw.
            Decision::StepUp { step_up, .. } => Err(Error::PermissionDenied(format!(
                "{action} of {}/{} needs approval by group {}; ask for a new grant with Issue",
                plan.grant.provider,
                plan.grant.role,
                quoted(&step_up.group)
            ))),
            Decision::Deny { policies } => Err(denial(action, agent, plan.grant, &policies)),
        }
    }

    async fn mint(
        &self,
        agent: &Agent,
        task: &Task,
        tool: &str,
        plan: Planned<'_>,
        decision: AuditEvent,
        now: DateTime<Utc>,
    ) -> Result<Issued, Error> {
        let grant = plan.grant;
        let lease_id = crate::model::routing::id_for_task(&task.id);
        let intent = plan
            .provider
            .provider
            .intent(lease_id, &grant.role)
            .map_err(|e| provider_error(&grant.provider, e))?;
        let lease = Lease {
            id: lease_id,
            agent: agent.name.clone(),
            task_id: task.id.clone(),
            provider: grant.provider.clone(),
            role: grant.role.clone(),
            scopes: grant.scopes.clone(),
            tool: tool.to_string(),
            state: LeaseState::Pending,
            created_at: now,
            issued_at: None,
            expires_at: plan.expires_at,
            handle: self.seal(lease_id, &intent)?,
            revocation: None,
        };
        // The decision's evidence and the lease's intent are written in
        // parallel; both must be durable before anything is minted.
        let (recorded, inserted) = tokio::join!(
            self.audit.record(now, decision).instrument(tracing::debug_span!("audit", event = "decision")),
            self.store
                .insert_pending(lease, now)
                .instrument(tracing::debug_span!("store", op = "insert_pending"))
        );
        inserted?;
        if let Err(error) = recorded {
            self.take_back(&[lease_id], now).await;
            return Err(error.into());
        }

        let request = MintRequest {
            lease_id,
            agent: agent.name.clone(),
            owner: agent.owner.clone(),
            task_id: task.id.clone(),
            role: grant.role.clone(),
            scopes: grant.scopes.clone(),
            issued_at: now,
            expires_at: plan.expires_at,
            subject_token: plan.subject_token.clone(),
        };
        let minted = match self
            .call_provider(&grant.provider, Operation::mint, plan.provider.provider.mint(&request))
            .instrument(tracing::debug_span!("provider", provider = %grant.provider, op = "mint"))
            .await
        {
            Ok(minted) => minted,
            Err(error) => {
                self.take_back(&[lease_id], now).await;
                self.audit
                    .record_or_log(
                        now,
                        AuditEvent {
                            reason: Some(error.to_string()),
                            ..grant_event("issue_failed", "error", agent, task, grant, lease_id)
                        },
                    )
                    .await;
                return Err(provider_error(&grant.provider, error));
            }
        };
        let expires_at = minted.expires_at.min(plan.expires_at);
        let sealed = self.seal(lease_id, &minted.handle)?;
        let issued = AuditEvent {
            tool: Some(tool.to_string()),
            policies: plan.policies,
            details: Some(
                json!({ "scopes": grant.scopes, "expires_at": expires_at, "notices": plan.notices }),
            ),
            ..grant_event("issued", "ok", agent, task, grant, lease_id)
        };
        // Activation and its evidence are written in parallel; the credential
        // leaves only if both are durable.
        let (activated, recorded) = tokio::join!(
            self.store
                .activate(lease_id, expires_at, sealed, now)
                .instrument(tracing::debug_span!("store", op = "activate")),
            self.audit.record(now, issued).instrument(tracing::debug_span!("audit", event = "issued"))
        );
        let failure = match (&activated, &recorded) {
            (Ok(_), Ok(())) => None,
            (Err(StoreError::LeaseState { .. }), _) => Some(self.why_taken_away(lease_id).await),
            (Err(error), _) => Some(Error::from(error.clone())),
            (_, Err(error)) => Some(Error::from(error.clone())),
        };
        if let Some(error) = failure {
            // The lease may be queued for revocation already (its task was
            // closed meanwhile); either way the credential must not leave.
            self.take_back(&[lease_id], now).await;
            if recorded.is_ok() {
                self.audit
                    .record_or_log(
                        now,
                        AuditEvent {
                            reason: Some(error.to_string()),
                            ..grant_event("issue_aborted", "error", agent, task, grant, lease_id)
                        },
                    )
                    .await;
            }
            return Err(error);
        }
        let lease = activated?;
        Ok(Issued { lease, credential: minted.credential, notices: plan.notices })
    }

    /// Why a lease was queued for revocation while its mint was under way
    /// (its task closed, or its agent was suspended, on this replica or
    /// another), in the words the caller needs.
    async fn why_taken_away(&self, lease_id: Uuid) -> Error {
        let lease = match self.store.get_lease(lease_id).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                return Error::FailedPrecondition(format!("lease {lease_id} was revoked during issue"));
            }
            Err(error) => return error.into(),
        };
        let reason = lease.revocation.as_ref().map(|revocation| revocation.reason);
        match reason {
            Some(RevocationReason::AgentSuspended) => match self.registry.status(&lease.agent).await {
                Ok(Some(status)) => super::registry::suspended(&status),
                _ => StoreError::AgentSuspended(lease.agent).into(),
            },
            Some(RevocationReason::TaskClosed | RevocationReason::DeadlinePassed) => {
                StoreError::TaskClosed(lease.task_id).into()
            }
            Some(RevocationReason::AgentRetired) => StoreError::AgentSuspended(lease.agent).into(),
            Some(RevocationReason::ProviderSuspended) => StoreError::ProviderSuspended(lease.provider).into(),
            _ => StoreError::LeaseState { id: lease.id, state: lease.state }.into(),
        }
    }

    /// Queues leases of a failed issue for revocation (reason
    /// `mint_failed`). If the store cannot take even that, the caller's own
    /// error still goes back: no credential left Writ, a lease still pending
    /// is revoked by the sweeper once it is abandoned, and an active one is
    /// revoked when it expires.
    async fn take_back(&self, lease_ids: &[Uuid], now: DateTime<Utc>) {
        match self.store.request_revocation(lease_ids, RevocationReason::MintFailed, now).await {
            Ok(_) => self.revocations.wake(),
            Err(error) => tracing::warn!(%error, "cannot queue a failed issue's leases; the sweeper will"),
        }
    }

    fn seal(
        &self,
        lease_id: Uuid,
        handle: &writ_provider_api::RevocationHandle,
    ) -> Result<crate::model::SealedHandle, Error> {
        self.sealer.seal(lease_id, handle).map_err(|error| {
            tracing::error!(%error, "cannot seal a revocation handle");
            Error::Internal("cannot seal the revocation handle".into())
        })
    }

    /// The agent's own lease, or NOT_FOUND.
    async fn own_lease(&self, agent: &Agent, lease_id: &str) -> Result<Lease, Error> {
        let id = Uuid::parse_str(lease_id)
            .map_err(|_| Error::InvalidArgument(format!("lease_id {} is not a UUID", quoted(lease_id))))?;
        match self.store.get_lease(id).await? {
            Some(lease) if lease.agent == agent.name => Ok(lease),
            _ => Err(Error::NotFound(format!("lease {id} not found for agent {:?}", agent.name))),
        }
    }

    /// Extends a live lease within its role's and task's limits.
    pub async fn renew(
        &self,
        agent: &Agent,
        lease_id: &str,
        ttl: Option<Duration>,
        subject_token: Option<SecretString>,
        now: DateTime<Utc>,
    ) -> Result<Renewal, Error> {
        let lease = self.own_lease(agent, lease_id).await?;
        if lease.state != LeaseState::Active || lease.expires_at <= now {
            // A suspended agent hears of its suspension rather than of the
            // lease it revoked. (On the live path `task_for` checks it.)
            self.registry.ensure_active(&agent.name).await?;
            return Err(Error::FailedPrecondition(format!(
                "lease {} is {} and cannot be renewed",
                lease.id,
                if lease.state == LeaseState::Active { "expired" } else { lease.state.as_str() }
            )));
        }
        let task = self.task_for(agent, &lease.task_id, now).await?;
        let grant = GrantRequest {
            provider: lease.provider.clone(),
            role: lease.role.clone(),
            scopes: lease.scopes.clone(),
            ttl,
        };
        let mut plan = self.plan(&task, &grant, now)?;
        plan.policies = self.authorize("renew", agent, &task, &lease.tool, &plan, now).await?;
        let handle = self.sealer.open(lease.id, &lease.handle).map_err(|error| {
            tracing::error!(%error, lease = %lease.id, "cannot open a revocation handle");
            Error::Internal("cannot open the lease's revocation handle".into())
        })?;
        let request = RenewRequest {
            mint: MintRequest {
                lease_id: lease.id,
                agent: agent.name.clone(),
                owner: agent.owner.clone(),
                task_id: task.id.clone(),
                role: lease.role.clone(),
                scopes: lease.scopes.clone(),
                issued_at: now,
                expires_at: plan.expires_at,
                subject_token,
            },
            handle,
        };
        let renewed = self
            .call_provider(&lease.provider, Operation::renew, plan.provider.provider.renew(&request))
            .await
            .map_err(|error| provider_error(&lease.provider, error))?;
        let expires_at = renewed.expires_at.min(plan.expires_at);
        let lease = self.store.extend(lease.id, expires_at, now).await?;
        self.audit
            .record(
                now,
                AuditEvent {
                    event: "renewed",
                    actor: agent.name.clone(),
                    outcome: "ok",
                    agent: Some(agent.name.clone()),
                    task: Some(task.id.clone()),
                    provider: Some(lease.provider.clone()),
                    role: Some(lease.role.clone()),
                    lease: Some(lease.id),
                    policies: plan.policies,
                    details: Some(json!({ "expires_at": expires_at })),
                    ..AuditEvent::default()
                },
            )
            .await?;
        Ok(Renewal { lease, credential: renewed.credential, notices: plan.notices })
    }

    /// Gives a lease back; it is queued for revocation at once.
    pub async fn release(&self, agent: &Agent, lease_id: &str, now: DateTime<Utc>) -> Result<Lease, Error> {
        let lease = self.own_lease(agent, lease_id).await?;
        let moved = self.store.request_revocation(&[lease.id], RevocationReason::Released, now).await?;
        if !moved.is_empty() {
            self.revocations.wake();
            self.audit
                .record_or_log(
                    now,
                    AuditEvent {
                        event: "released",
                        actor: agent.name.clone(),
                        outcome: "ok",
                        agent: Some(agent.name.clone()),
                        task: Some(lease.task_id.clone()),
                        provider: Some(lease.provider.clone()),
                        role: Some(lease.role.clone()),
                        lease: Some(lease.id),
                        ..AuditEvent::default()
                    },
                )
                .await;
        }
        self.store
            .get_lease(lease.id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("lease {} not found", lease.id)))
    }

    /// Revokes one lease at its provider: the revocation worker's step.
    /// The error's kind says whether trying again can help: a provider
    /// missing from the configuration or a sealing key that cannot open
    /// the handle is an operator's to fix, so those are retried.
    pub(crate) async fn revoke_at_provider(&self, lease: &Lease) -> Result<(), ProviderError> {
        let provider = self.providers.get(&lease.provider).ok_or_else(|| {
            ProviderError::Unavailable(format!("provider {:?} is not configured", lease.provider))
        })?;
        let handle = self.sealer.open(lease.id, &lease.handle).map_err(|error| {
            ProviderError::Unavailable(format!("cannot open the revocation handle: {error}"))
        })?;
        let request = RevokeRequest { lease_id: lease.id, role: lease.role.clone(), handle };
        self.call_provider(&lease.provider, Operation::revoke, provider.provider.revoke(&request)).await
    }

    /// Bounds a provider call by `limits.provider_timeout` and records its
    /// metrics: a hung provider is an unavailable one, and must not hold a
    /// request or the revocation worker forever.
    async fn call_provider<T>(
        &self,
        provider: &str,
        operation: Operation,
        call: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        self.metrics.provider_call(provider, operation, self.limits.provider_timeout, call).await
    }
}

/// The evidence fields every event about one minted grant shares.
fn grant_event(
    event: &'static str,
    outcome: &'static str,
    agent: &Agent,
    task: &Task,
    grant: &GrantRequest,
    lease_id: Uuid,
) -> AuditEvent {
    AuditEvent {
        event,
        actor: agent.name.clone(),
        outcome,
        agent: Some(agent.name.clone()),
        task: Some(task.id.clone()),
        provider: Some(grant.provider.clone()),
        role: Some(grant.role.clone()),
        lease: Some(lease_id),
        ..AuditEvent::default()
    }
}
