//! One error type, cloneable so that a lease's status can carry the last
//! renewal failure. Messages are safe to show: Writ's own messages never
//! quote a secret, and this crate never puts one in an error.

use tonic::Code;

use crate::proto;

/// What went wrong, and so what the caller does: [`Error::is_retryable`]
/// says whether trying again later may succeed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// Writ answered with a gRPC status. The message is Writ's own, meant
    /// to be shown: `PermissionDenied: no policy permits agent …`.
    #[error("{code:?}: {message}")]
    Status {
        /// The status code, used as gRPC means it (see `docs/api.md`).
        code: Code,
        /// Writ's message.
        message: String,
    },
    /// Writ could not be reached.
    #[error("connecting to {endpoint}: {detail}")]
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// Why, with the causes.
        detail: String,
    },
    /// The client's settings cannot work (an endpoint that is not a URL,
    /// TLS files that cannot be read).
    #[error("{0}")]
    Config(String),
    /// The token source has no token to give.
    #[error("no workload token: {0}")]
    Token(String),
    /// A grant's text is not `provider/role[:scope,scope…][@ttl]`.
    #[error("grant {grant:?}: {reason}")]
    InvalidGrant {
        /// The text given.
        grant: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Policy permits the grants only with step-up approval: nothing was
    /// issued. Wait for the request ([`Client::wait_for_approval`]) and
    /// collect it ([`Client::collect_leases`]).
    ///
    /// [`Client::wait_for_approval`]: crate::Client::wait_for_approval
    /// [`Client::collect_leases`]: crate::Client::collect_leases
    #[error("approval required: approval request {} waits for group {:?} ({} approvals needed)", .0.approval_id, .0.group, .0.quorum)]
    ApprovalRequired(Box<proto::Approval>),
    /// The approval request ended without being approved (denied, expired,
    /// cancelled, or collected already).
    #[error("approval request {approval_id} is {state}{}", reason_suffix(.ended_by, .reason))]
    ApprovalEnded {
        /// The request.
        approval_id: String,
        /// Its state, in words: `denied`, `expired`, `cancelled`, `collected`.
        state: String,
        /// Who ended it (`writ` for an expiry or a cancellation).
        ended_by: String,
        /// Why.
        reason: String,
    },
    /// Writ answered something this client does not understand.
    #[error("unexpected answer from Writ: {0}")]
    Protocol(String),
}

fn reason_suffix(by: &str, reason: &str) -> String {
    match (by.is_empty(), reason.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(" (by {by:?})"),
        (true, false) => format!(" ({reason})"),
        (false, false) => format!(" (by {by:?}: {reason:?})"),
    }
}

impl Error {
    /// The gRPC status code, when Writ answered with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the same call may succeed later: Writ or something on the
    /// way was unavailable, overloaded or slow. Anything else (a denial, a
    /// closed task, a bad request) gets the same answer again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { code, .. } => matches!(
                code,
                Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
            ),
            Self::Connect { .. } => true,
            _ => false,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::Status { code: status.code(), message: status.message().to_string() }
    }
}

/// An error and its causes on one line: tonic's transport errors say what
/// went wrong (an unknown CA, a refused connection) only in their sources.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_like_the_cli_and_say_whether_to_retry() {
        let denied = Error::from(tonic::Status::permission_denied("no policy permits it"));
        assert_eq!(denied.to_string(), "PermissionDenied: no policy permits it");
        assert!(!denied.is_retryable());
        assert!(Error::from(tonic::Status::unavailable("store down")).is_retryable());
        assert!(!Error::from(tonic::Status::failed_precondition("task closed")).is_retryable());
        let ended = Error::ApprovalEnded {
            approval_id: "a-1".into(),
            state: "denied".into(),
            ended_by: "bob".into(),
            reason: "no".into(),
        };
        assert_eq!(ended.to_string(), r#"approval request a-1 is denied (by "bob": "no")"#);
    }
}
