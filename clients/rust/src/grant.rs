//! What an agent asks for: a provider's role, scopes within it, a lifetime.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;
use crate::proto;

/// One grant request: `provider/role[:scope,scope…][@ttl]` in text, as the
/// `writ` CLI takes it (`tokens/orders-read:orders:read@5m`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// A provider name from Writ's configuration.
    pub provider: String,
    /// A role that provider offers.
    pub role: String,
    /// Scopes within the role; empty asks for none.
    pub scopes: Vec<String>,
    /// The lifetime asked for; `None` takes the role's default. Renewals
    /// ask for it again.
    pub ttl: Option<Duration>,
}

impl Grant {
    /// A grant of `provider`'s `role`, without scopes, for the role's
    /// default lifetime.
    pub fn new(provider: impl Into<String>, role: impl Into<String>) -> Self {
        Self { provider: provider.into(), role: role.into(), scopes: Vec::new(), ttl: None }
    }

    /// Adds a scope.
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Asks for this lifetime.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The request message.
    pub fn to_proto(&self) -> proto::GrantRequest {
        proto::GrantRequest {
            provider: self.provider.clone(),
            role: self.role.clone(),
            scopes: self.scopes.clone(),
            ttl: self.ttl.map(duration_to_proto),
        }
    }

    /// A grant as an approval request records it. A negative or invalid
    /// lifetime is taken as the role's default.
    pub fn from_proto(grant: &proto::GrantRequest) -> Self {
        Self {
            provider: grant.provider.clone(),
            role: grant.role.clone(),
            scopes: grant.scopes.clone(),
            ttl: grant.ttl.and_then(|ttl| Duration::try_from(ttl).ok()),
        }
    }
}

/// A `google.protobuf.Duration`, saturating at its range.
pub(crate) fn duration_to_proto(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

impl FromStr for Grant {
    type Err = Error;

    /// Parses `provider/role[:scope,scope…][@ttl]`: the TTL after the last
    /// `@` (`90s`, `5m`, `1h 30m`), the scopes after the first `:`.
    fn from_str(text: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidGrant { grant: text.to_string(), reason };
        let (rest, ttl) = match text.rsplit_once('@') {
            Some((rest, ttl)) => {
                let ttl = humantime::parse_duration(ttl)
                    .map_err(|error| invalid(format!("ttl {ttl:?}: {error}")))?;
                (rest, Some(ttl))
            }
            None => (text, None),
        };
        let (target, scopes) = match rest.split_once(':') {
            Some((target, scopes)) => {
                (target, scopes.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
            }
            None => (rest, Vec::new()),
        };
        let (provider, role) = target
            .split_once('/')
            .filter(|(provider, role)| !provider.is_empty() && !role.is_empty())
            .ok_or_else(|| invalid("it is not provider/role[:scope,scope…][@ttl]".into()))?;
        Ok(Self { provider: provider.into(), role: role.into(), scopes, ttl })
    }
}

impl fmt::Display for Grant {
    /// The text form [`Grant::from_str`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.role)?;
        if !self.scopes.is_empty() {
            write!(f, ":{}", self.scopes.join(","))?;
        }
        if let Some(ttl) = self.ttl {
            write!(f, "@{}", humantime::format_duration(ttl).to_string().replace(' ', ""))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_part_of_the_text_form() {
        let grant: Grant = "tokens/orders-read:orders:read,orders:list@5m".parse().unwrap();
        assert_eq!(
            grant,
            Grant::new("tokens", "orders-read")
                .scope("orders:read")
                .scope("orders:list")
                .ttl(Duration::from_secs(300))
        );
        assert_eq!(grant.to_string(), "tokens/orders-read:orders:read,orders:list@5m");
        assert_eq!("pg/reader".parse::<Grant>().unwrap(), Grant::new("pg", "reader"));
        assert_eq!("pg/reader@90s".parse::<Grant>().unwrap().to_string(), "pg/reader@1m30s");
    }

    #[test]
    fn refuses_what_is_not_a_grant() {
        for text in ["tokens", "/role", "tokens/", "tokens/r@soon", ""] {
            let error = text.parse::<Grant>().unwrap_err();
            assert!(matches!(error, Error::InvalidGrant { .. }), "{text:?}: {error:?}");
        }
    }

    #[test]
    fn converts_to_and_from_the_message() {
        let grant = Grant::new("aws", "reports").ttl(Duration::from_millis(1500));
        let message = grant.to_proto();
        assert_eq!(message.ttl, Some(prost_types::Duration { seconds: 1, nanos: 500_000_000 }));
        assert_eq!(Grant::from_proto(&message), grant);
        let negative =
            proto::GrantRequest { ttl: Some(prost_types::Duration { seconds: -1, nanos: 0 }), ..message };
        assert_eq!(Grant::from_proto(&negative).ttl, None);
    }
}
