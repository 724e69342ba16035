//! The broker: the rules of Writ, independent of gRPC.
//!
//! [`Broker`] owns the parts (store, providers, policy, audit, sealer) and
//! implements the exchanges: tasks ([`tasks`]), credentials ([`grants`]),
//! and the read-only views operators use. Every method takes `now` from its
//! caller. Errors are [`Error`]s whose variants match the gRPC codes they
//! become; their messages are safe to show the caller.

mod agents;
mod approvals;
mod explain;
mod grants;
mod inventory;
mod providers;
mod registry;
mod report;
mod scopes;
mod tasks;

use std::sync::Arc;

use uuid::Uuid;

use crate::audit::{AuditError, AuditLog};
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::model::{Lease, Sighting};
use crate::policy::PolicyEngine;
use crate::providers::ProviderRegistry;
use crate::revocation::RevocationQueue;
use crate::sealer::Sealer;
use crate::store::{LeaseFilter, LeaseStore, StoreError};

pub use agents::{AgentFilter, AgentSelector, AgentView, AuditQuery, AuditRecords, Resumption, Suspension};
pub use approvals::{ApprovalSettings, IssueOutcome, Verdict};
pub use explain::{ExplainRequest, ExplainTask, Explained};
pub use grants::{GrantRequest, IssueRequest, Issued, Renewal};
pub use inventory::{AgentChanges, Registration, RetiredAgent};
pub use providers::{ProviderSuspension, ProviderView};
pub use registry::{Declared, Registry};
pub use report::{AccessReport, AgentAccess, RoleUse};
pub use scopes::ScopeOutcome;
pub use tasks::{CloseOutcome, StartTask};

pub(crate) use crate::text::quoted;

/// Checks free text a caller sets (a tool name, a task's context): at most
/// `max_chars` characters (not bytes), and printable. Printable means no
/// control characters (Unicode category Cc), no format characters (Cf:
/// zero-width characters, bidirectional overrides and isolates, the soft
/// hyphen, the byte-order mark, tag characters…) and no line or paragraph
/// separators (Zl, Zp): text that policies match and operators read must
/// show what it holds.
pub(crate) fn check_text(field: &str, text: &str, max_chars: usize) -> Result<(), Error> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    for (index, c) in text.chars().enumerate() {
        if index == max_chars {
            return Err(Error::InvalidArgument(format!("{field} is longer than {max_chars} characters")));
        }
        let hidden = matches!(
            c.general_category(),
            GeneralCategory::Control
                | GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        );
        if hidden {
            return Err(Error::InvalidArgument(format!(
                "{field} must be printable: character {} is U+{:04X}, a control, format or separator \
                 character",
                index + 1,
                u32::from(c)
            )));
        }
    }
    Ok(())
}

/// A domain failure. Each variant is one gRPC status code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent change won: read again and retry.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    /// A bug or damaged data; the message is generic, details are logged.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => {
                crate::metrics::store_unavailable();
                tracing::warn!(%error, "lease store unavailable");
                Self::Unavailable("the lease store is unavailable; nothing was issued or changed".into())
            }
            StoreError::TaskExists(_) => Self::AlreadyExists(error.to_string()),
            StoreError::TaskNotFound(_) | StoreError::LeaseNotFound(_) | StoreError::ApprovalNotFound(_) => {
                Self::NotFound(error.to_string())
            }
            StoreError::TaskClosed(_)
            | StoreError::LeaseState { .. }
            | StoreError::ApprovalState { .. }
            | StoreError::AlreadyVoted { .. } => Self::FailedPrecondition(error.to_string()),
            StoreError::AgentSuspended(agent) => Self::PermissionDenied(format!(
                "agent {} is suspended; nothing is issued to it until an operator resumes it",
                quoted(&agent)
            )),
            StoreError::AgentNotSuspended(_) => Self::FailedPrecondition(error.to_string()),
            StoreError::ProviderSuspended(provider) => Self::PermissionDenied(format!(
                "provider {} is suspended by an operator; nothing is issued from it until it is resumed",
                quoted(&provider)
            )),
            StoreError::ProviderNotSuspended(_) => Self::FailedPrecondition(error.to_string()),
            StoreError::AgentExists(_) => Self::AlreadyExists(error.to_string()),
            StoreError::AgentRetired(_) => Self::FailedPrecondition(error.to_string()),
            StoreError::AgentChanged(agent) => Self::Aborted(format!(
                "agent {} was changed by someone else meanwhile; read it again and retry",
                quoted(&agent)
            )),
            StoreError::Corrupt(_) => {
                tracing::error!(%error, "lease store data is corrupt");
                Self::Internal("internal error in the lease store".into())
            }
        }
    }
}

impl From<crate::audit::export::ExportError> for Error {
    fn from(error: crate::audit::export::ExportError) -> Self {
        match error {
            crate::audit::export::ExportError::Unreadable(..) => Self::Unavailable(error.to_string()),
            crate::audit::export::ExportError::Corrupt(_) => Self::Internal(error.to_string()),
        }
    }
}

impl From<AuditError> for Error {
    fn from(error: AuditError) -> Self {
        tracing::error!(%error, "audit log unavailable");
        Self::Unavailable("the audit log cannot be written; Writ refuses to act without evidence".into())
    }
}

/// Writ's domain core. Shared by the gRPC services and the workers.
pub struct Broker {
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) providers: ProviderRegistry,
    pub(crate) policy: PolicyEngine,
    pub(crate) registry: Registry,
    pub(crate) audit: AuditLog,
    pub(crate) sealer: Sealer,
    pub(crate) limits: Limits,
    pub(crate) revocations: Arc<RevocationQueue>,
    pub(crate) metrics: Metrics,
    pub(crate) approvals: ApprovalSettings,
    pub(crate) webhooks: crate::webhooks::Notifier,
    pub(crate) caep: crate::caep::Transmitter,
    /// Bumped on every approval request change made here.
    approval_changes: tokio::sync::watch::Sender<u64>,
}

/// The parts a broker is made of.
pub struct Parts {
    pub store: Arc<dyn LeaseStore>,
    pub providers: ProviderRegistry,
    pub policy: PolicyEngine,
    pub declared: Declared,
    pub audit: AuditLog,
    pub sealer: Sealer,
    pub limits: Limits,
    pub approvals: ApprovalSettings,
    pub webhooks: crate::webhooks::Notifier,
    pub caep: crate::caep::Transmitter,
}

impl Broker {
    pub fn new(parts: Parts) -> Self {
        let registry = Registry::new(parts.declared, Arc::clone(&parts.store));
        let metrics = Metrics::new();
        metrics.policy_set("", &parts.policy.digest());
        Self {
            registry,
            store: parts.store,
            providers: parts.providers,
            policy: parts.policy,
            audit: parts.audit,
            sealer: parts.sealer,
            limits: parts.limits,
            revocations: Arc::new(RevocationQueue::default()),
            metrics,
            approvals: parts.approvals,
            webhooks: parts.webhooks,
            caep: parts.caep,
            approval_changes: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn store(&self) -> &Arc<dyn LeaseStore> {
        &self.store
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn providers(&self) -> &ProviderRegistry {
        &self.providers
    }

    pub fn caep(&self) -> &crate::caep::Transmitter {
        &self.caep
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn revocations(&self) -> &Arc<RevocationQueue> {
        &self.revocations
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Sightings of identities no agent is bound to (one registered from a
    /// sighting since is left out), most recent first.
    pub async fn list_sightings(&self, limit: usize) -> Result<Vec<Sighting>, Error> {
        let directory = self.registry.directory();
        let mut sightings = self.store.list_sightings(limit).await?;
        sightings.retain(|sighting| !directory.recognises(&sighting.issuer, &sighting.subject));
        Ok(sightings)
    }

    pub async fn list_leases(
        &self,
        filter: &LeaseFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Lease>, Error> {
        Ok(self.store.list_leases(filter, after, limit).await?)
    }

    /// The digest of the policy set in force on this replica.
    pub fn policy_digest(&self) -> std::sync::Arc<str> {
        self.policy.digest()
    }

    /// The number of policies in force.
    pub fn policy_count(&self) -> usize {
        self.policy.len()
    }

    /// Loads the policy files again (`by`: the caller, or `sighup`). A set
    /// that does not load is refused, naming file, line and reason, and the
    /// running set is kept. Either way the attempt is evidence: a refused
    /// reload is recorded, and a reload is in force only once its record
    /// is durable (if the log refuses, the new set is still in force and
    /// the call says the evidence could not be written).
    pub async fn reload_policies(
        &self,
        by: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::policy::Reloaded, Error> {
        match self.policy.reload() {
            Ok(reloaded) => {
                self.metrics.policy_set(&reloaded.previous, &reloaded.digest);
                let event = crate::audit::AuditEvent {
                    event: "policy_reloaded",
                    actor: by.to_owned(),
                    outcome: "ok",
                    details: Some(serde_json::json!({
                        "previous_digest": &*reloaded.previous,
                        "digest": &*reloaded.digest,
                        "policies": reloaded.policies,
                    })),
                    ..crate::audit::AuditEvent::default()
                };
                self.audit.record(now, event).await?;
                tracing::info!(by, digest = %reloaded.digest, policies = reloaded.policies, "policies reloaded");
                Ok(reloaded)
            }
            Err(error) => {
                let message = error.to_string();
                tracing::warn!(by, %message, "policy reload refused; the running set is kept");
                let event = crate::audit::AuditEvent {
                    event: "policy_reloaded",
                    actor: by.to_owned(),
                    outcome: "error",
                    reason: Some(message.clone()),
                    details: Some(serde_json::json!({ "digest": &*self.policy.digest() })),
                    ..crate::audit::AuditEvent::default()
                };
                self.audit.record_or_log(now, event).await;
                Err(Error::FailedPrecondition(format!("{message}; the running policy set is kept")))
            }
        }
    }

    /// Whether Writ can issue now: the store answers and the audit log
    /// accepts writes.
    pub async fn ready(&self) -> bool {
        self.audit.is_healthy() && self.store.health().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_input_is_escaped_and_cut_short() {
        assert_eq!(quoted("pg"), "\"pg\"");
        assert_eq!(quoted("it's \"x\"\n"), format!("{:?}", "it's \"x\"\n"), "escaped like {{:?}}");
        assert_eq!(quoted(&"a".repeat(64)), format!("\"{}\"", "a".repeat(64)));
        assert_eq!(quoted(&"a".repeat(20_000)), format!("\"{}…\"", "a".repeat(64)));
        // The bound is on the escaped form: escapes cannot make it longer.
        let escaped = quoted(&"\u{202e}".repeat(1000));
        assert!(escaped.chars().count() <= 64 + 3, "{escaped}");
        assert!(escaped.starts_with("\"\\u{202e}") && escaped.ends_with("…\""), "{escaped}");
    }
}
