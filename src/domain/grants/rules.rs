//! The pure rules of a grant: its lifetime, the tool it names, and what an
//! agent hears of a denial or a provider's failure. No I/O, no state.

use std::time::Duration;

use chrono::{DateTime, Utc};
use writ_provider_api::ProviderError;

use super::GrantRequest;
use crate::domain::{Error, check_text, quoted};
use crate::principals::Agent;

const MAX_TOOL_LEN: usize = 256;

/// The error a denied agent sees: which policies decided, never their text.
pub(super) fn denial(action: &str, agent: &Agent, grant: &GrantRequest, policies: &[String]) -> Error {
    if policies.is_empty() {
        Error::PermissionDenied(format!(
            "no policy permits agent {:?} to {action} {}/{}",
            agent.name, grant.provider, grant.role
        ))
    } else {
        Error::PermissionDenied(format!("denied by policy {}", policies.join(", ")))
    }
}

/// Settles a grant's expiry: the asked TTL (or the role's default), clamped
/// to the role's maximum and the task's deadline. Notices say what changed.
/// A TTL shorter than the role's minimum is refused: the provider cannot
/// mint anything shorter (STS: 15 minutes), and a credential living longer
/// than asked is not what the caller asked for.
pub(super) fn lifetime(
    ttl: Option<Duration>,
    role: &writ_provider_api::RoleDescription,
    deadline: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, Vec<String>), Error> {
    let mut notices = Vec::new();
    let asked = match ttl {
        Some(ttl) if ttl.is_zero() => return Err(Error::InvalidArgument("ttl must be positive".into())),
        Some(ttl) if ttl < role.min_ttl => {
            return Err(Error::InvalidArgument(format!(
                "ttl must be at least the role's minimum credential lifetime of {}s; leave it unset for \
                 the role's default of {}s",
                role.min_ttl.as_secs(),
                role.default_ttl.as_secs()
            )));
        }
        Some(ttl) => ttl,
        None => role.default_ttl,
    };
    let mut ttl = asked;
    if ttl > role.max_ttl {
        ttl = role.max_ttl;
        notices.push(format!("ttl clamped to the role maximum of {}s", role.max_ttl.as_secs()));
    }
    let remaining = (deadline - now).to_std().unwrap_or_default();
    if ttl > remaining {
        if remaining < role.min_ttl {
            return Err(Error::FailedPrecondition(format!(
                "the task has {}s left, less than the role's minimum credential lifetime of {}s",
                remaining.as_secs(),
                role.min_ttl.as_secs()
            )));
        }
        ttl = remaining;
        notices.push(format!("ttl clamped to the task deadline ({}s left)", remaining.as_secs()));
    }
    let ttl =
        chrono::Duration::from_std(ttl).map_err(|_| Error::InvalidArgument("ttl is too large".into()))?;
    Ok((now + ttl, notices))
}

/// The tool name: 1 to 256 characters (not bytes), printable (see
/// [`check_text`]).
pub(crate) fn validate_tool(tool: &str) -> Result<(), Error> {
    if tool.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "tool must name the tool about to be called (1 to {MAX_TOOL_LEN} printable characters)"
        )));
    }
    check_text("tool", tool, MAX_TOOL_LEN)
}

/// What an agent hears of a provider's failure: which provider, and what to
/// do. The provider's own text (an upstream's message, a role ARN, a host)
/// is for operators: it goes to the log, never to the agent.
pub(super) fn provider_error(provider: &str, error: ProviderError) -> Error {
    let provider = quoted(provider);
    match error {
        ProviderError::Unavailable(_) => {
            tracing::warn!(%provider, %error, "provider unavailable");
            Error::Unavailable(format!(
                "provider {provider} is unavailable; nothing was issued or changed; try again later"
            ))
        }
        ProviderError::Refused(_) => {
            tracing::warn!(%provider, %error, "provider refused the grant");
            Error::FailedPrecondition(format!(
                "provider {provider} refused the grant; an operator can see why in Writ's log"
            ))
        }
        ProviderError::Failed(_) => {
            tracing::error!(%provider, %error, "provider failed");
            Error::Internal(format!("provider {provider} failed; an operator has to fix it"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(min: u64, default: u64, max: u64) -> writ_provider_api::RoleDescription {
        writ_provider_api::RoleDescription {
            name: "r".into(),
            max_ttl: Duration::from_secs(max),
            default_ttl: Duration::from_secs(default),
            min_ttl: Duration::from_secs(min),
            scopes: Vec::new(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    #[test]
    fn lifetimes_are_clamped_to_the_role_and_the_deadline_with_notices() {
        let role = role(900, 1800, 3600);
        let deadline = now() + secs(7200);
        assert_eq!(lifetime(None, &role, deadline, now()).unwrap(), (now() + secs(1800), vec![]));
        let (at, notices) = lifetime(Some(Duration::from_secs(9000)), &role, deadline, now()).unwrap();
        assert_eq!(at, now() + secs(3600));
        assert_eq!(notices, ["ttl clamped to the role maximum of 3600s"]);
        let (at, notices) = lifetime(Some(Duration::from_secs(900)), &role, deadline, now()).unwrap();
        assert_eq!((at, notices), (now() + secs(900), vec![]), "the minimum itself is fine");
        let (at, notices) = lifetime(None, &role, now() + secs(1000), now()).unwrap();
        assert_eq!(at, now() + secs(1000));
        assert_eq!(notices, ["ttl clamped to the task deadline (1000s left)"]);
    }

    #[test]
    fn a_ttl_below_the_role_minimum_is_refused_not_raised() {
        let role = role(900, 1800, 3600);
        for ttl in [Duration::from_secs(60), Duration::from_millis(899_999)] {
            let error = lifetime(Some(ttl), &role, now() + secs(7200), now()).unwrap_err();
            assert_eq!(
                error,
                Error::InvalidArgument(
                    "ttl must be at least the role's minimum credential lifetime of 900s; leave it unset \
                     for the role's default of 1800s"
                        .into()
                )
            );
        }
    }

    #[test]
    fn a_huge_ttl_is_clamped_without_overflow() {
        let role = role(1, 1800, 3600);
        let largest = Duration::new(315_576_000_000, 999_999_999);
        let (at, notices) = lifetime(Some(largest), &role, now() + secs(7200), now()).unwrap();
        assert_eq!(at, now() + secs(3600));
        assert_eq!(notices, ["ttl clamped to the role maximum of 3600s"]);
    }

    #[test]
    fn tools_are_printable_and_counted_in_characters() {
        assert!(validate_tool("orders.lookup").is_ok());
        assert!(validate_tool(&"é".repeat(MAX_TOOL_LEN)).is_ok(), "256 characters, 512 bytes");
        let error = validate_tool(&"é".repeat(MAX_TOOL_LEN + 1)).unwrap_err();
        assert_eq!(error, Error::InvalidArgument("tool is longer than 256 characters".into()));
        assert!(matches!(validate_tool(""), Err(Error::InvalidArgument(m)) if m.contains("1 to 256")));
        for hidden in [
            '\u{0}',
            '\n',
            '\u{7f}',
            '\u{ad}',
            '\u{61c}',
            '\u{180e}',
            '\u{200b}',
            '\u{200f}',
            '\u{2028}',
            '\u{2029}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{2060}',
            '\u{2064}',
            '\u{feff}',
            '\u{e0001}',
            '\u{e007f}',
        ] {
            let tool = format!("orders{hidden}.lookup");
            let error = validate_tool(&tool).unwrap_err();
            let expected = format!(
                "tool must be printable: character 7 is U+{:04X}, a control, format or separator character",
                u32::from(hidden)
            );
            assert_eq!(error, Error::InvalidArgument(expected));
        }
        assert!(validate_tool("orders lookup \u{3000}東京 ✓").is_ok(), "spaces and symbols are printable");
    }

    #[test]
    fn provider_errors_name_the_provider_and_keep_its_text_for_the_log() {
        let secret = "arn:aws:iam::123456789012:role/writ denied by SCP p-42";
        let cases = [
            (
                ProviderError::Refused(secret.into()),
                "provider \"pg\" refused the grant; an operator can see why in Writ's log",
            ),
            (
                ProviderError::Unavailable(secret.into()),
                "provider \"pg\" is unavailable; nothing was issued or changed; try again later",
            ),
            (ProviderError::Failed(secret.into()), "provider \"pg\" failed; an operator has to fix it"),
        ];
        for (error, expected) in cases {
            let error = provider_error("pg", error);
            assert_eq!(error.to_string(), expected);
        }
        assert!(matches!(
            provider_error("pg", ProviderError::Refused(String::new())),
            Error::FailedPrecondition(_)
        ));
        assert!(matches!(
            provider_error("pg", ProviderError::Unavailable(String::new())),
            Error::Unavailable(_)
        ));
        assert!(matches!(provider_error("pg", ProviderError::Failed(String::new())), Error::Internal(_)));
    }

    #[test]
    fn a_deadline_sooner_than_the_minimum_lifetime_is_refused() {
        let role = role(900, 1800, 3600);
        let error = lifetime(Some(Duration::from_secs(1200)), &role, now() + secs(600), now()).unwrap_err();
        assert!(
            matches!(&error, Error::FailedPrecondition(m) if m.contains("600s left") && m.contains("900s")),
            "{error:?}"
        );
        let error = lifetime(Some(Duration::ZERO), &role, now() + secs(6000), now()).unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)));
    }
}
