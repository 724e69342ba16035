//! The optional role-wide revocation: an inline policy on the IAM role
//! that denies everything to sessions issued before a cutoff
//! (`aws:TokenIssueTime`). One policy per role; the cutoff only ever moves
//! forward.
//!
//! Revocation reads the policy, and writes it only if its cutoff is
//! earlier than the one asked for, so revoking one lease twice changes
//! nothing. Two Writ replicas revoking at once may each read the old
//! policy; each reads the policy back after writing and writes again if it
//! finds an earlier cutoff than its own, so the later cutoff wins unless
//! the writes keep crossing, which ends the revocation as `Unavailable`
//! (retried).

use aws_sdk_iam::operation::get_role_policy::GetRolePolicyError;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use writ_provider_api::ProviderError;

use crate::error;
use crate::policy::{self, REVOCATION_POLICY_NAME};

/// Attempts to leave a cutoff at least as late as ours in place.
const ATTEMPTS: usize = 3;

const ADVICE: &str = "Writ's identity needs iam:GetRolePolicy and iam:PutRolePolicy on the role \
                      (revoke_by_token_issue_time)";

/// The cutoff for a session issued at `issued_at` (as AWS reported it, or
/// the revocation time when the session's issue time is unknown): the
/// next whole second after it, plus one, since AWS reports issue times to
/// the second and the policy compares against them.
pub fn cutoff(issued_at: DateTime<Utc>) -> DateTime<Utc> {
    let second = TimeDelta::seconds(1);
    let floor = issued_at.duration_trunc(second).unwrap_or(issued_at);
    floor + second + second
}

/// Makes sure the role denies every session issued before `cutoff`.
/// Returns the cutoff in force afterwards (ours or a later one).
pub async fn deny_sessions_before(
    iam: &aws_sdk_iam::Client,
    role_name: &str,
    cutoff: DateTime<Utc>,
) -> Result<DateTime<Utc>, ProviderError> {
    for _ in 0..ATTEMPTS {
        if let Some(current) = current_cutoff(iam, role_name).await?
            && current >= cutoff
        {
            return Ok(current);
        }
        iam.put_role_policy()
            .role_name(role_name)
            .policy_name(REVOCATION_POLICY_NAME)
            .policy_document(policy::revocation_policy(cutoff))
            .send()
            .await
            .map_err(|e| {
                error::sdk(&e, &format!("putting the revocation policy on IAM role {role_name}"), ADVICE)
            })?;
        tracing::info!(iam_role = %role_name, %cutoff, "denied the role's sessions issued before the cutoff");
    }
    match current_cutoff(iam, role_name).await? {
        Some(current) if current >= cutoff => Ok(current),
        _ => Err(ProviderError::Unavailable(format!(
            "the revocation policy of IAM role {role_name} kept being overwritten with an earlier cutoff"
        ))),
    }
}

/// The cutoff of the role's revocation policy, if it has one.
pub async fn current_cutoff(
    iam: &aws_sdk_iam::Client,
    role_name: &str,
) -> Result<Option<DateTime<Utc>>, ProviderError> {
    let what = format!("reading the revocation policy of IAM role {role_name}");
    match iam.get_role_policy().role_name(role_name).policy_name(REVOCATION_POLICY_NAME).send().await {
        Ok(output) => match policy::revocation_cutoff(output.policy_document()) {
            Some(cutoff) => Ok(Some(cutoff)),
            None => Err(ProviderError::Failed(format!(
                "{what}: the role has a policy named {REVOCATION_POLICY_NAME} that Writ did not write"
            ))),
        },
        // NoSuchEntity is also the answer for a role that does not exist;
        // PutRolePolicy then says which it is.
        Err(e) if matches!(e.as_service_error(), Some(GetRolePolicyError::NoSuchEntityException(_))) => {
            Ok(None)
        }
        Err(e) => Err(error::sdk(&e, &what, ADVICE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_after_the_issue_second() {
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
        assert_eq!(cutoff(at("2026-05-01T12:00:00Z")), at("2026-05-01T12:00:02Z"));
        assert_eq!(cutoff(at("2026-05-01T12:00:00.999Z")), at("2026-05-01T12:00:02Z"));
        assert!(cutoff(at("2026-05-01T12:00:00.5Z")) > at("2026-05-01T12:00:01Z"));
    }
}
