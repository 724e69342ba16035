//! The agent registry: who an identity is, and whether an agent may be
//! issued anything now.
//!
//! Agents and services are declared in configuration ([`Directory`]); an
//! agent's runtime state (active or suspended) lives in the lease store, so
//! that a suspension made on one replica holds on all of them, and so that
//! the store can check it in the same atomic step that records or
//! activates a lease. The gRPC layer only verifies tokens; resolving the
//! principal, and recording an unknown identity as a sighting, happen
//! here.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Error, quoted};
use crate::identity::Identity;
use crate::model::{AgentState, AgentStatus};
use crate::principals::{Agent, Directory, Principal};
use crate::store::LeaseStore;

pub struct Registry {
    /// The principals declared in configuration, indexed for lookup.
    directory: Directory,
    /// Where agents' runtime states are kept (shared with the broker).
    store: Arc<dyn LeaseStore>,
}

impl Registry {
    pub fn new(directory: Directory, store: Arc<dyn LeaseStore>) -> Self {
        Self { directory, store }
    }

    /// The principal a verified identity maps to. An identity that maps to
    /// none is recorded as a sighting (for an operator to review) and
    /// refused.
    pub async fn resolve(&self, identity: &Identity, now: DateTime<Utc>) -> Result<Principal, Error> {
        if let Some(principal) = self.directory.resolve(identity) {
            return Ok(principal.clone());
        }
        if let Err(error) = self.store.record_sighting(&identity.issuer, &identity.subject, now).await {
            tracing::warn!(%error, "cannot record a sighting");
        }
        tracing::info!(issuer = %identity.issuer, subject = %identity.subject, "unregistered identity sighted");
        Err(Error::PermissionDenied(format!(
            "identity {} from {} is not registered with Writ; it was recorded for review",
            quoted(&identity.subject),
            quoted(&identity.issuer)
        )))
    }

    /// The principals declared in configuration.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// A registered agent by name.
    pub fn agent(&self, name: &str) -> Option<&Arc<Agent>> {
        self.directory.agent(name)
    }

    /// The agent's runtime state; `None` for one never suspended.
    pub async fn status(&self, name: &str) -> Result<Option<AgentStatus>, Error> {
        Ok(self.store.agent_status(name).await?)
    }

    /// Fails with PERMISSION_DENIED if the agent is suspended. An early,
    /// friendly refusal: the store checks again, atomically, when it
    /// records and activates a lease.
    pub async fn ensure_active(&self, name: &str) -> Result<(), Error> {
        match self.status(name).await? {
            Some(status) if status.state == AgentState::Suspended => Err(suspended(&status)),
            _ => Ok(()),
        }
    }
}

/// The refusal a suspended agent gets, naming the suspension by when it
/// began. Who suspended it and why are for operators (the audit log, the
/// agent's status), not for an agent that may be the incident.
pub(crate) fn suspended(status: &AgentStatus) -> Error {
    Error::PermissionDenied(format!(
        "agent {} is suspended since {}; nothing is issued to it until an operator resumes it",
        quoted(&status.agent),
        status.changed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    ))
}
