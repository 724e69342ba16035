//! The rules of an approval request's changes, as pure functions over the
//! request, shared by every store: a store reads the request, applies one
//! of these, and writes the result in one atomic step, with the check that
//! the request's task is open and its agent active (which only the store
//! can make atomically).

use chrono::{DateTime, TimeDelta, Utc};

use super::StoreError;
use crate::model::{Approval, ApprovalEnd, ApprovalState, ApprovalVote};

/// The state a request is in at `now` for the purpose of a change: one
/// past its due time counts as expired even before a sweep ends it.
pub(crate) fn effective_state(approval: &Approval, now: DateTime<Utc>) -> ApprovalState {
    match approval.due_at() {
        Some(due) if due <= now => ApprovalState::Expired,
        _ => approval.state,
    }
}

/// The request after `vote` (cast at `vote.at`), or why it cannot take it.
pub(crate) fn voted(approval: &Approval, vote: ApprovalVote) -> Result<Approval, StoreError> {
    let state = effective_state(approval, vote.at);
    if state != ApprovalState::Pending {
        return Err(StoreError::ApprovalState { id: approval.id, state });
    }
    if approval.votes.iter().any(|cast| cast.by == vote.by) {
        return Err(StoreError::AlreadyVoted { id: approval.id, by: vote.by });
    }
    let mut updated = approval.clone();
    let now = vote.at;
    if vote.approve {
        updated.votes.push(vote);
        let approvers = u32::try_from(updated.approvers().count()).unwrap_or(u32::MAX);
        if approvers >= updated.quorum {
            updated.state = ApprovalState::Approved;
            updated.approved_at = Some(now);
            let within = i64::try_from(updated.collect_within_seconds).unwrap_or(i64::MAX);
            updated.collect_by = Some(now + TimeDelta::try_seconds(within).unwrap_or(TimeDelta::MAX));
        }
    } else {
        updated.ended = Some(ApprovalEnd { at: now, by: vote.by.clone(), reason: vote.reason.clone() });
        updated.votes.push(vote);
        updated.state = ApprovalState::Denied;
    }
    Ok(updated)
}

/// The request as collected by `agent` at `now`, or why not. Another
/// agent's request is reported as missing.
pub(crate) fn collected(
    approval: &Approval,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<Approval, StoreError> {
    if approval.agent != agent {
        return Err(StoreError::ApprovalNotFound(approval.id));
    }
    let state = effective_state(approval, now);
    if state != ApprovalState::Approved {
        return Err(StoreError::ApprovalState { id: approval.id, state });
    }
    let mut updated = approval.clone();
    updated.state = ApprovalState::Collected;
    updated.collected_at = Some(now);
    Ok(updated)
}

/// The request as ended at `now`, if it can no longer go on: cancelled
/// when `cancelled` names why its task or agent ended it, else expired
/// when past due. `None`: it goes on.
pub(crate) fn ended(approval: &Approval, cancelled: Option<&str>, now: DateTime<Utc>) -> Option<Approval> {
    let (state, reason) = match cancelled {
        Some(reason) => (ApprovalState::Cancelled, reason),
        None if effective_state(approval, now) != ApprovalState::Expired => return None,
        None if approval.state == ApprovalState::Pending => (ApprovalState::Expired, "not_decided"),
        None => (ApprovalState::Expired, "not_collected"),
    };
    if approval.state.is_final() {
        return None;
    }
    let mut updated = approval.clone();
    updated.state = state;
    updated.ended = Some(ApprovalEnd { at: now, by: "writ".into(), reason: reason.into() });
    Some(updated)
}
