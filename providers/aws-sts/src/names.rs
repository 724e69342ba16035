//! What AWS is told about a lease: the session name, the source identity,
//! the session tags, and the revocation handle Writ keeps.
//!
//! AWS restricts each of these to a character set and a length. Values are
//! made to fit the same way everywhere: a character outside the set becomes
//! `_`; a value still too long keeps its start and ends in `-` and the first
//! 8 hex digits of the SHA-256 of the original, so two long names that share
//! a start stay apart.

use chrono::{DateTime, Utc};
use ring::digest;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use writ_provider_api::{ProviderError, RevocationHandle};

/// Session tag keys, in the order they are sent.
pub const TAG_AGENT: &str = "writ:agent";
pub const TAG_TASK: &str = "writ:task";
pub const TAG_OWNER: &str = "writ:owner";
pub const TAG_KEYS: [&str; 3] = [TAG_AGENT, TAG_TASK, TAG_OWNER];

/// AWS's limit on a session tag value, in characters.
const TAG_VALUE_MAX: usize = 256;
/// AWS's limits on `SourceIdentity`, in characters.
const SOURCE_IDENTITY_MIN: usize = 2;
const SOURCE_IDENTITY_MAX: usize = 64;

/// `RoleSessionName`: `writ-` and the lease id's 32 hex digits (37
/// characters; AWS allows 64 of `[\w+=,.@-]`).
pub fn session_name(lease_id: Uuid) -> String {
    format!("writ-{}", lease_id.simple())
}

/// `SourceIdentity`: the agent's name in `[A-Za-z0-9_+=,.@-]`, 2 to 64
/// characters (a one-character name is padded with `_`).
pub fn source_identity(agent: &str) -> String {
    let mut value = fit(agent, |c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c), SOURCE_IDENTITY_MAX);
    while value.len() < SOURCE_IDENTITY_MIN {
        value.push('_');
    }
    value
}

/// A session tag value: ASCII letters, digits, space and `_.:/=+-@`, up to
/// 256 characters.
pub fn tag_value(value: &str) -> String {
    fit(value, |c| c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c), TAG_VALUE_MAX)
}

fn fit(value: &str, allowed: impl Fn(char) -> bool, max: usize) -> String {
    let replaced: Vec<char> = value.chars().map(|c| if allowed(c) { c } else { '_' }).collect();
    if replaced.len() <= max {
        return replaced.into_iter().collect();
    }
    let hash = digest::digest(&digest::SHA256, value.as_bytes());
    let suffix: String = hash.as_ref().iter().take(4).map(|byte| format!("{byte:02x}")).collect();
    let mut fitted: String = replaced.into_iter().take(max - suffix.len() - 1).collect();
    fitted.push('-');
    fitted.push_str(&suffix);
    fitted
}

/// The revocation handle: which session of which IAM role a lease stands
/// for. `intent` writes it without `issued_at`; `mint` adds the session's
/// issue time as AWS reported it, which revocation uses as its cutoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handle {
    /// Writ's role name.
    pub role: String,
    /// The IAM role the session is (or would be) of.
    pub role_arn: String,
    /// `RoleSessionName`.
    pub session: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
}

impl Handle {
    pub fn new(role: &str, role_arn: &str, lease_id: Uuid) -> Self {
        Self {
            role: role.into(),
            role_arn: role_arn.into(),
            session: session_name(lease_id),
            issued_at: None,
        }
    }

    pub fn to_revocation_handle(&self) -> Result<RevocationHandle, ProviderError> {
        serde_json::to_string(self)
            .map(RevocationHandle::new)
            .map_err(|e| ProviderError::Failed(format!("cannot encode the revocation handle: {e}")))
    }

    /// Reads a handle and checks that it is this lease's, so a damaged or
    /// swapped handle cannot make Writ act on another session's behalf.
    pub fn parse(handle: &RevocationHandle, lease_id: Uuid) -> Result<Self, ProviderError> {
        let parsed: Self = serde_json::from_str(handle.expose()).map_err(|_| {
            ProviderError::Failed(format!(
                "the revocation handle of lease {lease_id} is not an aws-sts handle"
            ))
        })?;
        if parsed.session != session_name(lease_id) {
            return Err(ProviderError::Failed(format!(
                "the revocation handle of lease {lease_id} names another session"
            )));
        }
        Ok(parsed)
    }
}

/// The name of the IAM role in `arn:<partition>:iam::<account>:role/<path>/<name>`.
pub fn role_name(role_arn: &str) -> Option<&str> {
    let (_, resource) = role_arn.rsplit_once(':')?;
    let path = resource.strip_prefix("role/")?;
    path.rsplit('/').next().filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_deterministic_and_fit() {
        let lease = Uuid::now_v7();
        let name = session_name(lease);
        assert_eq!(name, session_name(lease));
        assert_ne!(name, session_name(Uuid::now_v7()));
        assert_eq!(name.len(), 37);
        assert!(name.starts_with("writ-") && name[5..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn source_identities_keep_to_the_charset_and_length() {
        assert_eq!(source_identity("deploy-bot"), "deploy-bot");
        assert_eq!(source_identity("bot@example.com"), "bot@example.com");
        assert_eq!(source_identity("spiffe://corp/agent one"), "spiffe___corp_agent_one");
        assert_eq!(source_identity("a"), "a_");
        assert_eq!(source_identity(""), "__");
        assert_eq!(source_identity("aws:admin"), "aws_admin");
        let long = "x".repeat(100);
        let fitted = source_identity(&long);
        assert_eq!(fitted.len(), 64);
        assert!(fitted.starts_with(&"x".repeat(55)) && fitted.as_bytes()[55] == b'-', "{fitted}");
        let other = source_identity(&format!("{long}y"));
        assert_ne!(fitted, other, "long names that share a start stay apart");
        assert_eq!(source_identity("ägent"), "_gent");
    }

    #[test]
    fn tag_values_keep_to_the_charset_and_length() {
        assert_eq!(tag_value("owner@example.com"), "owner@example.com");
        assert_eq!(tag_value("spiffe://corp/agent one"), "spiffe://corp/agent one");
        assert_eq!(tag_value("task#42 (prod)"), "task_42 _prod_");
        assert_eq!(tag_value(""), "");
        let fitted = tag_value(&"t".repeat(300));
        assert_eq!(fitted.chars().count(), 256);
    }

    #[test]
    fn handles_round_trip_and_belong_to_one_lease() {
        let lease = Uuid::now_v7();
        let handle = Handle::new("deploy", "arn:aws:iam::123456789012:role/deploy", lease);
        let encoded = handle.to_revocation_handle().unwrap();
        let expected = format!(
            r#"{{"role":"deploy","role_arn":"{}","session":"writ-{}"}}"#,
            "arn:aws:iam::123456789012:role/deploy",
            lease.simple()
        );
        assert_eq!(encoded.expose(), expected);
        assert_eq!(Handle::parse(&encoded, lease).unwrap(), handle);
        let error = Handle::parse(&encoded, Uuid::now_v7()).unwrap_err();
        assert!(matches!(&error, ProviderError::Failed(m) if m.contains("another session")), "{error:?}");
        let error = Handle::parse(&RevocationHandle::new("writ_123"), lease).unwrap_err();
        assert!(
            matches!(&error, ProviderError::Failed(m) if m.contains("not an aws-sts handle")),
            "{error:?}"
        );

        let minted = Handle { issued_at: Some(Utc::now()), ..handle };
        assert_eq!(Handle::parse(&minted.to_revocation_handle().unwrap(), lease).unwrap(), minted);
    }

    #[test]
    fn role_names_come_from_the_arn() {
        assert_eq!(role_name("arn:aws:iam::123456789012:role/deploy"), Some("deploy"));
        assert_eq!(role_name("arn:aws:iam::123456789012:role/team/ci/deploy"), Some("deploy"));
        assert_eq!(role_name("arn:aws:iam::123456789012:user/deploy"), None);
        assert_eq!(role_name("arn:aws:iam::123456789012:role/"), None);
    }
}
