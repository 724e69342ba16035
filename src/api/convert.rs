//! Conversions between the domain model and the wire types.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use secrecy::ExposeSecret;
use tonic::Status;
use writ_provider_api::{Credential, CredentialShape};

use super::proto;
use crate::config::IdentityMatch;
use crate::domain::{AccessReport, AgentSelector, AgentView, ProviderView};
use crate::model::{
    AgentState, Approval, ApprovalState, Lease, LeaseState, Sighting, Task, TaskContext, TaskState,
};
use crate::providers::ProviderRegistry;

pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// The range of `google.protobuf.Timestamp`: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
/// The range of `google.protobuf.Duration`'s seconds: about ±10,000 years.
const DURATION_SECONDS: i64 = 315_576_000_000;
const MAX_NANOS: i32 = 999_999_999;

/// A wire timestamp, refused with a precise message when it is not a valid
/// `google.protobuf.Timestamp` (rather than clamped or wrapped).
pub fn from_timestamp(field: &str, at: &Timestamp) -> Result<DateTime<Utc>, Status> {
    let invalid = |why: &str| Status::invalid_argument(format!("{field} is not a valid timestamp: {why}"));
    if !(0..=MAX_NANOS).contains(&at.nanos) {
        return Err(invalid("nanos must be 0 to 999999999"));
    }
    if !TIMESTAMP_SECONDS.contains(&at.seconds) {
        return Err(invalid("it must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"));
    }
    let nanos = u32::try_from(at.nanos).map_err(|_| invalid("nanos must be 0 to 999999999"))?;
    DateTime::from_timestamp(at.seconds, nanos)
        .ok_or_else(|| invalid("it must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"))
}

/// A wire duration that must not be negative, refused with a precise
/// message when it is not a valid `google.protobuf.Duration`.
pub fn from_duration(field: &str, duration: &prost_types::Duration) -> Result<Duration, Status> {
    let invalid = |why: &str| Status::invalid_argument(format!("{field} is not a valid duration: {why}"));
    let (seconds, nanos) = (duration.seconds, duration.nanos);
    if !(-DURATION_SECONDS..=DURATION_SECONDS).contains(&seconds) {
        return Err(invalid("seconds must be within ±315576000000"));
    }
    if !(-MAX_NANOS..=MAX_NANOS).contains(&nanos) {
        return Err(invalid("nanos must be within ±999999999"));
    }
    if (seconds < 0 && nanos > 0) || (seconds > 0 && nanos < 0) {
        return Err(invalid("seconds and nanos must have the same sign"));
    }
    match (u64::try_from(seconds), u32::try_from(nanos)) {
        (Ok(seconds), Ok(nanos)) => Ok(Duration::new(seconds, nanos)),
        _ => Err(Status::invalid_argument(format!("{field} must be a non-negative duration"))),
    }
}

pub fn duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

pub fn lease_state(state: LeaseState) -> proto::LeaseState {
    match state {
        LeaseState::Pending => proto::LeaseState::Pending,
        LeaseState::Active => proto::LeaseState::Active,
        LeaseState::Revoking => proto::LeaseState::Revoking,
        LeaseState::Revoked => proto::LeaseState::Revoked,
        LeaseState::Failed => proto::LeaseState::Failed,
    }
}

pub fn from_lease_state(state: proto::LeaseState) -> Option<LeaseState> {
    match state {
        proto::LeaseState::Unspecified => None,
        proto::LeaseState::Pending => Some(LeaseState::Pending),
        proto::LeaseState::Active => Some(LeaseState::Active),
        proto::LeaseState::Revoking => Some(LeaseState::Revoking),
        proto::LeaseState::Revoked => Some(LeaseState::Revoked),
        proto::LeaseState::Failed => Some(LeaseState::Failed),
    }
}

pub fn lease(lease: &Lease, providers: &ProviderRegistry) -> proto::Lease {
    let shape = providers.get(&lease.provider).map(|p| match p.description.shape {
        CredentialShape::Revocable => proto::CredentialShape::Revocable,
        CredentialShape::ExpiryOnly => proto::CredentialShape::ExpiryOnly,
    });
    let revocation = lease.revocation.as_ref();
    proto::Lease {
        lease_id: lease.id.to_string(),
        agent: lease.agent.clone(),
        task_id: lease.task_id.clone(),
        provider: lease.provider.clone(),
        role: lease.role.clone(),
        scopes: lease.scopes.clone(),
        tool: lease.tool.clone(),
        state: lease_state(lease.state).into(),
        shape: shape.unwrap_or(proto::CredentialShape::Unspecified).into(),
        created_at: Some(timestamp(lease.created_at)),
        issued_at: lease.issued_at.map(timestamp),
        expires_at: Some(timestamp(lease.expires_at)),
        revocation_reason: revocation.map(|r| r.reason.as_str().to_string()).unwrap_or_default(),
        revocation_attempts: revocation.map_or(0, |r| r.attempts),
        revocation_error: revocation.and_then(|r| r.last_error.clone()).unwrap_or_default(),
        revoked_at: revocation.and_then(|r| r.completed_at).map(timestamp),
    }
}

/// The one place a secret leaves Writ: into the response to the agent.
pub fn credential(credential: &Credential) -> proto::Credential {
    use proto::credential::Kind;
    let kind = match credential {
        Credential::BearerToken { token, token_type } => Kind::BearerToken(proto::BearerToken {
            token: token.expose_secret().to_string(),
            token_type: token_type.clone(),
        }),
        Credential::Password { username, password, connection } => Kind::Password(proto::Password {
            username: username.clone(),
            password: password.expose_secret().to_string(),
            connection: connection.clone().into_iter().collect(),
        }),
        Credential::AwsSession { access_key_id, secret_access_key, session_token } => {
            Kind::AwsSession(proto::AwsSession {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.expose_secret().to_string(),
                session_token: session_token.expose_secret().to_string(),
            })
        }
    };
    proto::Credential { kind: Some(kind) }
}

pub fn task_context(context: &TaskContext) -> proto::TaskContext {
    proto::TaskContext {
        purpose: context.purpose.clone(),
        environment: context.environment.clone(),
        data_classification: context.data_classification.clone(),
        ticket: context.ticket.clone(),
        labels: context.labels.clone().into_iter().collect(),
    }
}

pub fn from_task_context(context: Option<proto::TaskContext>) -> TaskContext {
    let context = context.unwrap_or_default();
    TaskContext {
        purpose: context.purpose,
        environment: context.environment,
        data_classification: context.data_classification,
        ticket: context.ticket,
        labels: context.labels.into_iter().collect(),
    }
}

pub fn task(task: &Task) -> proto::Task {
    let closed = task.closed.as_ref();
    proto::Task {
        task_id: task.id.clone(),
        agent: task.agent.clone(),
        context: Some(task_context(&task.context)),
        state: match task.state {
            TaskState::Open => proto::TaskState::Open,
            TaskState::Closed => proto::TaskState::Closed,
        }
        .into(),
        created_at: Some(timestamp(task.created_at)),
        created_by: task.created_by.clone(),
        deadline: Some(timestamp(task.deadline)),
        closed_at: closed.map(|c| timestamp(c.at)),
        closed_by: closed.map(|c| c.by.clone()).unwrap_or_default(),
        close_reason: closed.map(|c| c.reason.as_str().to_string()).unwrap_or_default(),
    }
}

pub fn approval_state(state: ApprovalState) -> proto::ApprovalState {
    match state {
        ApprovalState::Pending => proto::ApprovalState::Pending,
        ApprovalState::Approved => proto::ApprovalState::Approved,
        ApprovalState::Denied => proto::ApprovalState::Denied,
        ApprovalState::Expired => proto::ApprovalState::Expired,
        ApprovalState::Cancelled => proto::ApprovalState::Cancelled,
        ApprovalState::Collected => proto::ApprovalState::Collected,
    }
}

/// `None` for unspecified: every state.
pub fn from_approval_state(state: proto::ApprovalState) -> Option<ApprovalState> {
    ApprovalState::ALL.into_iter().find(|candidate| approval_state(*candidate) == state)
}

pub fn approval(approval: &Approval) -> proto::Approval {
    let ended = approval.ended.as_ref();
    proto::Approval {
        approval_id: approval.id.to_string(),
        agent: approval.agent.clone(),
        task_id: approval.task_id.clone(),
        tool: approval.tool.clone(),
        grants: approval
            .grants
            .iter()
            .map(|grant| proto::GrantRequest {
                provider: grant.provider.clone(),
                role: grant.role.clone(),
                scopes: grant.scopes.clone(),
                ttl: grant.ttl_seconds.map(|seconds| duration(Duration::from_secs(seconds))),
            })
            .collect(),
        group: approval.group.clone(),
        quorum: approval.quorum,
        policies: approval.policies.clone(),
        state: approval_state(approval.state).into(),
        created_at: Some(timestamp(approval.created_at)),
        expires_at: Some(timestamp(approval.expires_at)),
        votes: approval
            .votes
            .iter()
            .map(|vote| proto::ApprovalVote {
                by: vote.by.clone(),
                approve: vote.approve,
                reason: vote.reason.clone(),
                at: Some(timestamp(vote.at)),
            })
            .collect(),
        approved_at: approval.approved_at.map(timestamp),
        collect_by: approval.collect_by.map(timestamp),
        collected_at: approval.collected_at.map(timestamp),
        ended_at: ended.map(|end| timestamp(end.at)),
        ended_by: ended.map(|end| end.by.clone()).unwrap_or_default(),
        end_reason: ended.map(|end| end.reason.clone()).unwrap_or_default(),
    }
}

/// The wire form of issued credentials.
pub fn issued(
    issued: &[crate::domain::Issued],
    providers: &ProviderRegistry,
) -> Vec<proto::IssuedCredential> {
    issued
        .iter()
        .map(|one| proto::IssuedCredential {
            lease: Some(lease(&one.lease, providers)),
            credential: Some(credential(&one.credential)),
            notices: one.notices.clone(),
        })
        .collect()
}

pub fn sighting(sighting: &Sighting) -> proto::Sighting {
    proto::Sighting {
        issuer: sighting.issuer.clone(),
        subject: sighting.subject.clone(),
        first_seen: Some(timestamp(sighting.first_seen)),
        last_seen: Some(timestamp(sighting.last_seen)),
        count: sighting.count,
    }
}

pub fn agent_state(state: AgentState) -> proto::AgentState {
    match state {
        AgentState::Active => proto::AgentState::Active,
        AgentState::Suspended => proto::AgentState::Suspended,
        AgentState::Retired => proto::AgentState::Retired,
    }
}

pub fn from_agent_state(state: proto::AgentState) -> Option<AgentState> {
    match state {
        proto::AgentState::Unspecified => None,
        proto::AgentState::Active => Some(AgentState::Active),
        proto::AgentState::Suspended => Some(AgentState::Suspended),
        proto::AgentState::Retired => Some(AgentState::Retired),
    }
}

pub fn agent(view: &AgentView) -> proto::Agent {
    let record = &view.record;
    let (changed_at, changed_by, reason) = match (&record.retired, &view.status) {
        (Some(retired), _) => (Some(timestamp(retired.at)), retired.by.clone(), retired.reason.clone()),
        (None, Some(status)) => {
            (Some(timestamp(status.changed_at)), status.changed_by.clone(), status.reason.clone())
        }
        (None, None) => (None, String::new(), String::new()),
    };
    proto::Agent {
        name: record.name.clone(),
        owner: record.owner.clone(),
        team: record.team.clone(),
        description: record.description.clone(),
        risk_tier: record.risk_tier.clone(),
        identities: vec![identity_binding(&record.identity)],
        managed_by: record.managed_by.as_str().into(),
        state: agent_state(view.state()) as i32,
        state_changed_at: changed_at,
        state_changed_by: changed_by,
        state_reason: reason,
        created_at: Some(timestamp(record.created_at)),
        created_by: record.created_by.clone(),
        updated_at: Some(timestamp(record.updated_at)),
        updated_by: record.updated_by.clone(),
        revision: record.revision,
    }
}

pub fn provider(view: &ProviderView) -> proto::Provider {
    let status = view.status.as_ref();
    proto::Provider {
        name: view.name.clone(),
        kind: view.kind.clone(),
        state: match view.state() {
            AgentState::Suspended => proto::ProviderState::Suspended,
            _ => proto::ProviderState::Active,
        } as i32,
        state_changed_at: status.map(|status| timestamp(status.changed_at)),
        state_changed_by: status.map(|status| status.changed_by.clone()).unwrap_or_default(),
        state_reason: status.map(|status| status.reason.clone()).unwrap_or_default(),
    }
}

pub fn identity_binding(identity: &IdentityMatch) -> proto::IdentityBinding {
    proto::IdentityBinding {
        issuer: identity.issuer.clone(),
        subject: identity.subject.clone().unwrap_or_default(),
        claims: identity.claims.clone().into_iter().collect(),
    }
}

/// An identity binding as a request gives it: an empty subject is none.
pub fn from_identity_binding(binding: proto::IdentityBinding) -> IdentityMatch {
    IdentityMatch {
        issuer: binding.issuer,
        subject: Some(binding.subject).filter(|subject| !subject.is_empty()),
        claims: binding.claims.into_iter().collect(),
    }
}

pub fn access_report(report: &AccessReport, replica: &str) -> proto::AccessReport {
    proto::AccessReport {
        since: Some(timestamp(report.since)),
        until: Some(timestamp(report.until)),
        agents: report
            .agents
            .iter()
            .map(|agent| proto::AgentAccess {
                agent: agent.agent.clone(),
                owner: agent.owner.clone(),
                team: agent.team.clone(),
                issuances: agent.issuances,
                used: agent
                    .used
                    .iter()
                    .map(|role| proto::RoleUse {
                        provider: role.provider.clone(),
                        role: role.role.clone(),
                        scopes: role.scopes.iter().cloned().collect(),
                        count: role.count,
                        tools: role.tools.iter().cloned().collect(),
                        last_issued: role.last_issued.map(timestamp),
                    })
                    .collect(),
                allowed_unused: agent.allowed_unused.clone(),
                dormant: agent.dormant,
            })
            .collect(),
        sightings: report.sightings.iter().map(sighting).collect(),
        replica: replica.to_owned(),
    }
}

/// Exactly one of a selector's fields.
pub fn from_agent_selector(selector: Option<proto::AgentSelector>) -> Result<AgentSelector, Status> {
    let selector = selector.unwrap_or_default();
    let named: Vec<AgentSelector> = [
        (!selector.agent.is_empty()).then_some(AgentSelector::Agent(selector.agent)),
        (!selector.owner.is_empty()).then_some(AgentSelector::Owner(selector.owner)),
        (!selector.team.is_empty()).then_some(AgentSelector::Team(selector.team)),
    ]
    .into_iter()
    .flatten()
    .collect();
    match <[AgentSelector; 1]>::try_from(named) {
        Ok([selector]) => Ok(selector),
        Err(named) if named.is_empty() => {
            Err(Status::invalid_argument("agents must name an agent, an owner or a team"))
        }
        Err(_) => Err(Status::invalid_argument("agents must name only one of an agent, an owner and a team")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    #[test]
    fn durations_outside_the_protobuf_range_are_refused() {
        assert_eq!(from_duration("ttl", &wire(300, 5)).unwrap(), Duration::new(300, 5));
        let largest = from_duration("ttl", &wire(315_576_000_000, 999_999_999)).unwrap();
        assert_eq!(largest, Duration::new(315_576_000_000, 999_999_999));
        let cases = [
            (wire(315_576_000_001, 0), "ttl is not a valid duration: seconds must be within ±315576000000"),
            (wire(i64::MAX, 0), "ttl is not a valid duration: seconds must be within ±315576000000"),
            (wire(i64::MIN, 0), "ttl is not a valid duration: seconds must be within ±315576000000"),
            (wire(1, 1_000_000_000), "ttl is not a valid duration: nanos must be within ±999999999"),
            (wire(0, i32::MIN), "ttl is not a valid duration: nanos must be within ±999999999"),
            (wire(1, -1), "ttl is not a valid duration: seconds and nanos must have the same sign"),
            (wire(-1, 1), "ttl is not a valid duration: seconds and nanos must have the same sign"),
            (wire(-1, 0), "ttl must be a non-negative duration"),
            (wire(0, -1), "ttl must be a non-negative duration"),
        ];
        for (duration, message) in cases {
            let status = from_duration("ttl", &duration).unwrap_err();
            assert_eq!(
                (status.code(), status.message()),
                (tonic::Code::InvalidArgument, message),
                "{duration:?}"
            );
        }
    }

    #[test]
    fn timestamps_outside_the_protobuf_range_are_refused() {
        let first = Timestamp { seconds: -62_135_596_800, nanos: 0 };
        assert_eq!(from_timestamp("deadline", &first).unwrap().to_rfc3339(), "0001-01-01T00:00:00+00:00");
        let last = Timestamp { seconds: 253_402_300_799, nanos: 999_999_999 };
        assert_eq!(from_timestamp("deadline", &last).unwrap().timestamp(), 253_402_300_799);
        let range = "deadline is not a valid timestamp: it must lie between 0001-01-01T00:00:00Z and \
                     9999-12-31T23:59:59Z";
        let nanos = "deadline is not a valid timestamp: nanos must be 0 to 999999999";
        let cases = [
            (Timestamp { seconds: 253_402_300_800, nanos: 0 }, range),
            (Timestamp { seconds: -62_135_596_801, nanos: 0 }, range),
            (Timestamp { seconds: i64::MAX, nanos: 0 }, range),
            (Timestamp { seconds: 0, nanos: -1 }, nanos),
            (Timestamp { seconds: 0, nanos: 1_000_000_000 }, nanos),
            (Timestamp { seconds: 0, nanos: 1_500_000_000 }, nanos),
        ];
        for (at, message) in cases {
            let status = from_timestamp("deadline", &at).unwrap_err();
            assert_eq!((status.code(), status.message()), (tonic::Code::InvalidArgument, message), "{at:?}");
        }
    }
}
