use thiserror::Error;

/// A provider failure, by what the caller should do about it. Messages are
/// shown to operators and, for [`ProviderError::Refused`], to agents: they
/// must never contain secret material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// The provider cannot be reached or is overloaded: retry later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The request cannot be served as asked (an unknown role, a scope the
    /// role does not offer): change the request, do not retry it.
    #[error("{0}")]
    Refused(String),
    /// The provider failed in a way retrying will not fix (misconfiguration,
    /// a broken key): give up and alert an operator.
    #[error("provider failed: {0}")]
    Failed(String),
}

impl ProviderError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
