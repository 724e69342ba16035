//! The agent registry: who an identity is, and whether an agent may be
//! issued anything now.
//!
//! Agents are kept in the lease store (the inventory an identity team
//! owns): those declared in configuration are seeded into it at start
//! (see [`super::inventory`]), operators register more through the admin
//! API. Each replica resolves identities against its own copy of the
//! inventory, a [`Directory`] it reloads whenever the store's inventory
//! revision moves (a change made here at once, one made on another replica
//! within [`crate::server`]'s poll interval). Services are declared in
//! configuration only.
//!
//! An agent's runtime state (active or suspended) lives in the store too,
//! checked in the same atomic step that records or activates a lease, so a
//! suspension made on one replica holds on all of them at once; retiring
//! an agent suspends it first for that reason. The gRPC layer only
//! verifies tokens; resolving the principal, and recording an unknown
//! identity as a sighting, happen here.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chrono::{DateTime, Utc};

use super::{Error, quoted};
use crate::config::{AgentConfig, ServiceConfig};
use crate::identity::Identity;
use crate::model::{AgentRecord, AgentState, AgentStatus, ManagedBy};
use crate::principals::{Agent, Directory, Principal};
use crate::store::LeaseStore;

/// Records read per page when the inventory is reloaded.
const PAGE: usize = 1000;

/// What a registry is built from.
pub struct Declared {
    /// The agents the configuration declares (seeded into the store).
    pub agents: Vec<AgentConfig>,
    pub services: Vec<ServiceConfig>,
    /// The issuers identities may come from; an agent bound to another
    /// could never be recognised.
    pub issuers: Vec<String>,
}

pub struct Registry {
    /// The inventory as last loaded, with services.
    current: RwLock<Arc<Directory>>,
    /// The store's inventory revision `current` was loaded at; `None`
    /// before the first load.
    loaded: Mutex<Option<u64>>,
    refreshing: tokio::sync::Mutex<()>,
    declared: Declared,
    /// Where agents and their runtime states are kept (shared with the
    /// broker).
    store: Arc<dyn LeaseStore>,
}

impl Registry {
    /// Until the inventory is first loaded, the agents the configuration
    /// declares are the directory.
    pub fn new(declared: Declared, store: Arc<dyn LeaseStore>) -> Self {
        let at = DateTime::UNIX_EPOCH;
        let records: Vec<AgentRecord> = declared.agents.iter().map(|agent| agent.record(at)).collect();
        let directory = Directory::new(&records, &declared.services);
        Self {
            current: RwLock::new(Arc::new(directory)),
            loaded: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            declared,
            store,
        }
    }

    /// The principal a verified identity maps to. An identity that maps to
    /// none is recorded as a sighting (for an operator to review) and
    /// refused; a retired agent's identity is refused by name.
    pub async fn resolve(&self, identity: &Identity, now: DateTime<Utc>) -> Result<Principal, Error> {
        let directory = self.directory();
        if let Some(principal) = directory.resolve(identity) {
            return Ok(principal.clone());
        }
        if let Some(name) = directory.retired_agent(identity) {
            return Err(Error::PermissionDenied(format!(
                "agent {} is retired; its identity is no longer accepted",
                quoted(name)
            )));
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

    /// The principals as last loaded.
    pub fn directory(&self) -> Arc<Directory> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A registered agent (not retired) by name.
    pub fn agent(&self, name: &str) -> Option<Arc<Agent>> {
        self.directory().agent(name).cloned()
    }

    /// What the configuration declares.
    pub fn declared(&self) -> &Declared {
        &self.declared
    }

    /// Reloads the inventory if the store's revision moved since the last
    /// load; says whether it did.
    pub async fn refresh(&self) -> Result<bool, Error> {
        // One at a time: a slower refresh that read older records must not
        // replace a directory a later one installed.
        let _one_at_a_time = self.refreshing.lock().await;
        let revision = self.store.agents_revision().await?;
        if *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) == Some(revision) {
            return Ok(false);
        }
        let mut records: Vec<AgentRecord> = Vec::new();
        loop {
            let after = records.last().map(|record| record.name.clone());
            let page = self.store.list_agents(after.as_deref(), PAGE).await?;
            let full = page.len() == PAGE;
            records.extend(page);
            if !full {
                break;
            }
        }
        let records = merge(records, &self.declared.agents);
        let directory = Arc::new(Directory::new(&records, &self.declared.services));
        // A change landing between reading the revision and the records
        // is in the records already, or moves the revision again: the
        // next refresh loads it either way.
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = directory;
        *loaded = Some(revision);
        Ok(true)
    }

    /// Whether the configured agents are to be written to the store: never
    /// done yet, or the store's inventory is empty while the configuration
    /// declares agents (a Redis that lost its data).
    pub fn needs_seeding(&self) -> bool {
        match *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) {
            None => true,
            Some(0) => !self.declared.agents.is_empty(),
            Some(_) => false,
        }
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

/// The agents this replica recognises: what its configuration declares
/// (keeping the stored history of each), and every agent registered by an
/// operator. A retired agent stays retired even if the configuration
/// declares it again. An agent another replica's configuration declares
/// but this one's does not is not recognised here: configuration is each
/// replica's own, and a rolling change of it takes effect replica by
/// replica.
pub(crate) fn merge(stored: Vec<AgentRecord>, declared: &[AgentConfig]) -> Vec<AgentRecord> {
    use std::collections::BTreeMap;
    let stored: BTreeMap<String, AgentRecord> =
        stored.into_iter().map(|record| (record.name.clone(), record)).collect();
    let mut by_name: BTreeMap<String, AgentRecord> = stored
        .values()
        .filter(|record| record.managed_by == ManagedBy::Operator || record.retired.is_some())
        .map(|record| (record.name.clone(), record.clone()))
        .collect();
    for agent in declared {
        match stored.get(&agent.name) {
            Some(stored) if stored.retired.is_some() => {}
            stored => {
                let declared = agent.record(DateTime::UNIX_EPOCH);
                let record = match stored {
                    Some(stored) if stored.same_declaration(&declared) => stored.clone(),
                    // Not seeded yet: the configuration is what holds here.
                    Some(stored) => AgentRecord {
                        created_at: stored.created_at,
                        created_by: stored.created_by.clone(),
                        ..declared
                    },
                    None => declared,
                };
                by_name.insert(agent.name.clone(), record);
            }
        }
    }
    by_name.into_values().collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IdentityMatch;
    use crate::model::Retirement;

    fn declared(name: &str, owner: &str) -> AgentConfig {
        AgentConfig {
            name: name.into(),
            owner: owner.into(),
            team: String::new(),
            description: String::new(),
            risk_tier: "low".into(),
            identity: IdentityMatch {
                issuer: "https://issuer".into(),
                subject: Some(format!("{name}-subject")),
                claims: Default::default(),
            },
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(secs)
    }

    fn names(records: &[AgentRecord]) -> Vec<&str> {
        records.iter().map(|record| record.name.as_str()).collect()
    }

    #[test]
    fn this_replicas_configuration_decides_its_configured_agents() {
        let kept = declared("kept", "a@example.com").record(at(10));
        let dropped = declared("dropped", "a@example.com").record(at(10));
        let mut registered = declared("registered", "b@example.com").record(at(20));
        registered.managed_by = ManagedBy::Operator;
        registered.created_by = "operator-1".into();
        let merged =
            merge(vec![kept.clone(), dropped, registered.clone()], &[declared("kept", "a@example.com")]);
        assert_eq!(
            names(&merged),
            ["kept", "registered"],
            "an agent the configuration dropped is not recognised"
        );
        assert_eq!(merged[0], kept, "a seeded agent keeps its history");
        assert_eq!(merged[1], registered, "an operator's agent is as stored");
    }

    #[test]
    fn the_configuration_wins_over_a_stale_record_but_not_over_retirement() {
        let stale = declared("changed", "old@example.com").record(at(10));
        let mut retired = declared("retired", "a@example.com").record(at(10));
        retired.retired = Some(Retirement { at: at(30), by: "operator-1".into(), reason: "gone".into() });
        let merged = merge(
            vec![stale, retired.clone()],
            &[
                declared("changed", "new@example.com"),
                declared("retired", "a@example.com"),
                declared("new", "n@x"),
            ],
        );
        assert_eq!(names(&merged), ["changed", "new", "retired"]);
        assert_eq!(merged[0].owner, "new@example.com", "the configuration is what holds");
        assert_eq!(merged[0].created_at, at(10), "with the stored history");
        assert_eq!(merged[2], retired, "declaring a retired agent again does not revive it");
    }
}
