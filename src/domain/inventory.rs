//! The agent inventory an identity team owns: registering agents (also
//! from a sighting), changing them, retiring them, and seeding the agents
//! the configuration declares.
//!
//! Every change is checked here, written as evidence first (without it,
//! nothing changes), then applied in the store only over the record it was
//! made from, so two operators' edits cannot overwrite each other. The
//! replica that made a change reloads its directory at once; the others
//! within their poll interval. Retirement also suspends the agent, which
//! the store enforces on every replica from that moment.

use serde_json::{Value, json};

use super::agents::{AgentView, check_reason};
use super::{Broker, Error, check_text, quoted};
use crate::audit::AuditEvent;
use crate::config::{CONFIGURATION, IdentityMatch};
use crate::model::{AgentRecord, ManagedBy, Retirement, RevocationReason};
use crate::store::{Scope, StoreError};
use chrono::{DateTime, Utc};

const MAX_NAME_CHARS: usize = 128;
const MAX_OWNER_CHARS: usize = 256;
const MAX_TEAM_CHARS: usize = 128;
const MAX_DESCRIPTION_CHARS: usize = 1000;
const MAX_RISK_TIER_CHARS: usize = 64;
const MAX_SUBJECT_CHARS: usize = 1024;
const MAX_CLAIMS: usize = 16;
/// Registered claims a token always carries or that say nothing about who
/// it is: matching on them would only shadow a subject binding.
const RESERVED_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "azp", "nonce"];
/// How many sightings are searched for the one an agent is registered from.
const SIGHTINGS_SEARCHED: usize = 10_000;

/// A new agent, as an operator describes it.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    pub name: String,
    pub owner: String,
    pub team: String,
    pub description: String,
    /// Empty: `medium`, as in configuration.
    pub risk_tier: String,
    pub identity: IdentityMatch,
    /// The identity is a sighting's (issuer and subject): it must have been
    /// sighted, so that shadow agents are brought under control by exactly
    /// the identity they used.
    pub from_sighting: bool,
}

/// Changes to an agent; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct AgentChanges {
    pub owner: Option<String>,
    pub team: Option<String>,
    pub description: Option<String>,
    pub risk_tier: Option<String>,
    pub identity: Option<IdentityMatch>,
    /// The revision the changes were made from; `None`: whatever is stored.
    pub revision: Option<u64>,
}

/// What a retirement did, once the wait for its revocations is over.
#[derive(Clone, Debug)]
pub struct RetiredAgent {
    pub view: AgentView,
    pub revoked: usize,
    pub retrying: usize,
    pub failed: usize,
}

impl Broker {
    /// Registers an agent. Refused, changing nothing: a name or identity
    /// in use (ALREADY_EXISTS), an identity from an issuer Writ does not
    /// trust, no owner, or a `from_sighting` identity never sighted.
    pub async fn register_agent(
        &self,
        caller: &str,
        registration: Registration,
        now: DateTime<Utc>,
    ) -> Result<AgentView, Error> {
        check_name(&registration.name)?;
        let risk_tier = if registration.risk_tier.is_empty() {
            crate::config::defaults::risk_tier()
        } else {
            registration.risk_tier.clone()
        };
        let record = AgentRecord {
            name: registration.name.clone(),
            owner: registration.owner.clone(),
            team: registration.team.clone(),
            description: registration.description.clone(),
            risk_tier,
            identity: registration.identity.clone(),
            managed_by: ManagedBy::Operator,
            created_at: now,
            created_by: caller.to_owned(),
            updated_at: now,
            updated_by: caller.to_owned(),
            revision: 1,
            retired: None,
        };
        self.check_record(&record)?;
        if registration.from_sighting {
            self.check_sighted(&record.identity).await?;
        }
        self.refresh_directory().await?;
        let directory = self.registry.directory();
        if directory.record(&record.name).is_some() || self.store.get_agent(&record.name).await?.is_some() {
            return Err(StoreError::AgentExists(record.name).into());
        }
        if self.registry.declared().services.iter().any(|service| service.name == record.name) {
            return Err(Error::AlreadyExists(format!("a service is named {} already", quoted(&record.name))));
        }
        self.check_unbound(&record)?;
        let mut details = declaration(&record);
        details["from_sighting"] = json!(registration.from_sighting);
        self.change_agent(caller, "agent_registered", None, &record, details, now).await?;
        self.view_of(record).await
    }

    /// Changes a registered agent's declaration. Refused: an unknown agent
    /// (NOT_FOUND), a retired one or one the configuration manages
    /// (FAILED_PRECONDITION), a stale `revision` (ABORTED), and anything
    /// registration refuses.
    pub async fn update_agent(
        &self,
        caller: &str,
        name: &str,
        changes: AgentChanges,
        now: DateTime<Utc>,
    ) -> Result<AgentView, Error> {
        let stored = self.changeable(name).await?;
        if changes.revision.is_some_and(|revision| revision != stored.revision) {
            return Err(StoreError::AgentChanged(name.to_owned()).into());
        }
        let mut record = stored.clone();
        if let Some(owner) = changes.owner {
            record.owner = owner;
        }
        if let Some(team) = changes.team {
            record.team = team;
        }
        if let Some(description) = changes.description {
            record.description = description;
        }
        if let Some(risk_tier) = changes.risk_tier {
            record.risk_tier = risk_tier;
        }
        if let Some(identity) = changes.identity {
            record.identity = identity;
        }
        self.check_record(&record)?;
        if record.same_declaration(&stored) {
            return self.view_of(stored).await;
        }
        self.refresh_directory().await?;
        self.check_unbound(&record)?;
        record.revision = stored.revision + 1;
        record.updated_at = now;
        record.updated_by = caller.to_owned();
        let details = json!({ "changed": changed(&stored, &record) });
        self.change_agent(caller, "agent_updated", Some(&stored), &record, details, now).await?;
        self.view_of(record).await
    }

    /// Retires an agent for good: suspends it (every lease of it is queued
    /// for revocation, on every replica nothing more is issued to it), then
    /// marks its record retired, so its identity is refused from then on;
    /// waits up to `limits.close_wait` for the revocations. The name is
    /// never free again. An agent the configuration declares must be
    /// removed from it first.
    pub async fn retire_agent(
        &self,
        caller: &str,
        name: &str,
        reason: &str,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<RetiredAgent, Error> {
        check_reason(reason)?;
        let stored = self.retirable(name, force).await?;
        let scope = Scope::Agent(name.to_owned());
        let finished = self.revocations.subscribe();
        // Suspended first: should the rest fail, the agent is stopped and
        // a second call finishes the retirement.
        let closed = self.end_scope(caller, &scope, RevocationReason::AgentRetired, reason, now).await?;
        let record = retired(&stored, caller, reason, now);
        let details = json!({ "reason": reason, "managed_by": stored.managed_by.as_str() });
        self.change_agent(caller, "agent_retired", Some(&stored), &record, details, now).await?;
        // A resumption that landed between the two steps (on another
        // replica) is undone: a retired agent stays suspended in the store,
        // which every replica checks; the store refuses any later one.
        let closed = match self.registry.status(name).await? {
            Some(status) if status.state == crate::model::AgentState::Suspended => closed,
            _ => self.end_scope(caller, &scope, RevocationReason::AgentRetired, reason, now).await?,
        };
        let outcome = self.wait_for_scope(closed, &scope, finished).await?;
        let view = AgentView { record, status: outcome.closed.agent.clone() };
        Ok(RetiredAgent {
            view,
            revoked: outcome.revoked,
            retrying: outcome.retrying,
            failed: outcome.failed,
        })
    }

    /// Writes the agents the configuration declares into the store: new
    /// ones registered, changed ones updated (an agent an operator
    /// registered under a name the configuration now declares is taken
    /// over by it), all audited, as by `configuration`. A retired agent
    /// stays retired. Then loads the inventory. Returns how many records
    /// it wrote.
    pub async fn seed_agents(&self, now: DateTime<Utc>) -> Result<usize, Error> {
        let mut written = 0;
        for agent in &self.registry.declared().agents {
            // Two replicas seeding at once: the loser reads again.
            for attempt in 0..3 {
                let stored = self.store.get_agent(&agent.name).await?;
                let mut record = agent.record(now);
                let (event, details) = match &stored {
                    None => ("agent_registered", declaration(&record)),
                    Some(stored) if stored.retired.is_some() => {
                        tracing::warn!(
                            agent = %agent.name,
                            "the configuration declares an agent that was retired; it stays retired (choose \
                             a new name)"
                        );
                        break;
                    }
                    Some(stored) if stored.same_declaration(&record) => break,
                    Some(stored) => {
                        record.created_at = stored.created_at;
                        record.created_by.clone_from(&stored.created_by);
                        record.revision = stored.revision + 1;
                        ("agent_updated", json!({ "changed": changed(stored, &record) }))
                    }
                };
                match self.change_agent(CONFIGURATION, event, stored.as_ref(), &record, details, now).await {
                    Ok(()) => {
                        written += 1;
                        break;
                    }
                    Err(Error::Aborted(_) | Error::AlreadyExists(_)) if attempt < 2 => continue,
                    Err(error @ Error::Unavailable(_)) => return Err(error),
                    // One agent that cannot be written must not keep the
                    // others, or the inventory, from loading.
                    Err(error) => {
                        tracing::error!(agent = %agent.name, %error, "cannot seed a configured agent");
                        break;
                    }
                }
            }
        }
        self.registry.refresh().await?;
        Ok(written)
    }

    /// Reloads the directory if the inventory changed, on any replica.
    pub async fn refresh_directory(&self) -> Result<bool, Error> {
        self.registry.refresh().await
    }

    /// Evidence first (nothing changes without it), then the store change,
    /// then this replica's directory. What the store then did is evidence
    /// too: `error` for a refusal, `unknown` for a store that did not
    /// answer. A crash between the two leaves an `ok` record of a change
    /// that was not made; the record's `revision` in the store says which.
    async fn change_agent(
        &self,
        caller: &str,
        event: &'static str,
        expected: Option<&AgentRecord>,
        record: &AgentRecord,
        details: Value,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let evidence = |outcome| AuditEvent {
            event,
            actor: caller.to_owned(),
            outcome,
            agent: Some(record.name.clone()),
            details: Some(details.clone()),
            ..AuditEvent::default()
        };
        self.audit.record(now, evidence("ok")).await?;
        if let Err(error) = self.store.put_agent(expected, record).await {
            // A store that did not answer may have made the change: the
            // evidence says it is not known, rather than that it failed.
            let outcome = if matches!(error, StoreError::Unavailable(_)) { "unknown" } else { "error" };
            self.audit.record_or_log(now, evidence(outcome)).await;
            return Err(error.into());
        }
        if let Err(error) = self.registry.refresh().await {
            tracing::warn!(%error, "cannot reload the agent inventory; the poll will");
        }
        Ok(())
    }

    /// The stored record of an agent an operator may change.
    async fn changeable(&self, name: &str) -> Result<AgentRecord, Error> {
        let stored = self.stored_agent(name).await?;
        if stored.retired.is_some() {
            return Err(retired_already(name));
        }
        if stored.managed_by == ManagedBy::Configuration {
            return Err(Error::FailedPrecondition(format!(
                "agent {} is declared in the configuration; change it there",
                quoted(name)
            )));
        }
        Ok(stored)
    }

    /// The stored record of an agent that may be retired: registered by an
    /// operator, or (with `force`, the operator's word that no replica
    /// declares it any more) one the configuration declared.
    async fn retirable(&self, name: &str, force: bool) -> Result<AgentRecord, Error> {
        let stored = self.stored_agent(name).await?;
        if stored.retired.is_some() {
            return Err(retired_already(name));
        }
        if self.registry.declared().agents.iter().any(|agent| agent.name == name) {
            return Err(Error::FailedPrecondition(format!(
                "agent {} is declared in the configuration; remove it there first (on every replica), then \
                 retire it",
                quoted(name)
            )));
        }
        if stored.managed_by == ManagedBy::Configuration && !force {
            return Err(Error::FailedPrecondition(format!(
                "agent {} is managed by configuration (another replica may still declare it); retire it with \
                 force once no replica's configuration declares it",
                quoted(name)
            )));
        }
        Ok(stored)
    }

    async fn stored_agent(&self, name: &str) -> Result<AgentRecord, Error> {
        check_text("agent", name, MAX_NAME_CHARS)?;
        self.store
            .get_agent(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("agent {} is not registered", quoted(name))))
    }

    pub(crate) async fn view_of(&self, record: AgentRecord) -> Result<AgentView, Error> {
        let status = self.registry.status(&record.name).await?;
        Ok(AgentView { record, status })
    }

    fn check_record(&self, record: &AgentRecord) -> Result<(), Error> {
        if record.owner.trim().is_empty() {
            return Err(Error::InvalidArgument(
                "owner is required: every agent needs someone who answers for it".into(),
            ));
        }
        check_text("owner", &record.owner, MAX_OWNER_CHARS)?;
        check_text("team", &record.team, MAX_TEAM_CHARS)?;
        check_text("description", &record.description, MAX_DESCRIPTION_CHARS)?;
        if record.risk_tier.trim().is_empty() {
            return Err(Error::InvalidArgument("risk_tier must not be blank".into()));
        }
        check_text("risk_tier", &record.risk_tier, MAX_RISK_TIER_CHARS)?;
        let identity = &record.identity;
        if !self.registry.declared().issuers.contains(&identity.issuer) {
            return Err(Error::InvalidArgument(format!(
                "identity issuer {} is not one of the issuers Writ trusts ([[issuers]] in the configuration)",
                quoted(&identity.issuer)
            )));
        }
        match &identity.subject {
            Some(subject) if subject.is_empty() => {
                return Err(Error::InvalidArgument("identity subject must not be empty".into()));
            }
            Some(subject) => check_text("identity subject", subject, MAX_SUBJECT_CHARS)?,
            None if identity.claims.is_empty() => {
                return Err(Error::InvalidArgument(
                    "identity needs a subject or claims to match, or any token of the issuer would do".into(),
                ));
            }
            None => {}
        }
        if identity.claims.len() > MAX_CLAIMS {
            return Err(Error::InvalidArgument(format!("identity may match at most {MAX_CLAIMS} claims")));
        }
        for (claim, value) in &identity.claims {
            if claim.is_empty() {
                return Err(Error::InvalidArgument("identity claim names must not be empty".into()));
            }
            if RESERVED_CLAIMS.contains(&claim.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "identity claim {} cannot be matched on: use issuer and subject for who the token is",
                    quoted(claim)
                )));
            }
            check_text("identity claim name", claim, MAX_NAME_CHARS)?;
            check_text("identity claim value", value, MAX_SUBJECT_CHARS)?;
        }
        Ok(())
    }

    /// No token may match two principals: a binding that overlaps another
    /// principal's (a service's, a retired agent's, or one the
    /// configuration declares) is refused. Checked against this replica's
    /// directory, just reloaded: two replicas registering overlapping
    /// bindings in the same instant are not caught (docs/adr/0014).
    fn check_unbound(&self, record: &AgentRecord) -> Result<(), Error> {
        let directory = self.registry.directory();
        let declared =
            self.registry.declared().agents.iter().map(|agent| (&agent.identity, agent.name.as_str()));
        let clash = directory.bound_elsewhere(&record.identity, &record.name).or_else(|| {
            declared
                .filter(|(_, name)| *name != record.name)
                .find(|(identity, _)| crate::principals::overlap(identity, &record.identity))
                .map(|(_, name)| name)
        });
        match clash {
            Some(other) => Err(Error::AlreadyExists(format!(
                "that identity overlaps the one {} is bound to: a token could match both",
                quoted(other)
            ))),
            None => Ok(()),
        }
    }

    async fn check_sighted(&self, identity: &IdentityMatch) -> Result<(), Error> {
        let Some(subject) = identity.subject.as_deref().filter(|_| identity.claims.is_empty()) else {
            return Err(Error::InvalidArgument(
                "an agent registered from a sighting is bound by the sighting's issuer and subject only"
                    .into(),
            ));
        };
        let sightings = self.store.list_sightings(SIGHTINGS_SEARCHED).await?;
        if !sightings.iter().any(|seen| seen.issuer == identity.issuer && seen.subject == subject) {
            return Err(Error::NotFound(format!(
                "no sighting of {} from {}",
                quoted(subject),
                quoted(&identity.issuer)
            )));
        }
        Ok(())
    }
}

fn retired(stored: &AgentRecord, caller: &str, reason: &str, now: DateTime<Utc>) -> AgentRecord {
    AgentRecord {
        revision: stored.revision + 1,
        updated_at: now,
        updated_by: caller.to_owned(),
        retired: Some(Retirement { at: now, by: caller.to_owned(), reason: reason.to_owned() }),
        ..stored.clone()
    }
}

/// What a registration declares, for its evidence.
fn declaration(record: &AgentRecord) -> Value {
    json!({
        "owner": record.owner,
        "team": record.team,
        "description": record.description,
        "risk_tier": record.risk_tier,
        "identity": record.identity,
        "managed_by": record.managed_by.as_str(),
    })
}

/// The fields a change moved, each as `{from, to}`.
fn changed(old: &AgentRecord, new: &AgentRecord) -> Value {
    let mut changes = serde_json::Map::new();
    let mut note = |field: &str, from: Value, to: Value| {
        if from != to {
            changes.insert(field.into(), json!({ "from": from, "to": to }));
        }
    };
    note("owner", json!(old.owner), json!(new.owner));
    note("team", json!(old.team), json!(new.team));
    note("description", json!(old.description), json!(new.description));
    note("risk_tier", json!(old.risk_tier), json!(new.risk_tier));
    note("identity", json!(old.identity), json!(new.identity));
    note("managed_by", json!(old.managed_by.as_str()), json!(new.managed_by.as_str()));
    Value::Object(changes)
}

/// A name people can type, quote and use in policy: letters, digits, `.`,
/// `_` and `-`, starting with a letter or digit.
fn check_name(name: &str) -> Result<(), Error> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.len() <= MAX_NAME_CHARS;
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "agent name {} must be 1 to {MAX_NAME_CHARS} letters, digits, '.', '_' or '-', starting with a \
             letter or digit",
            quoted(name)
        )))
    }
}

fn retired_already(name: &str) -> Error {
    Error::FailedPrecondition(format!("agent {} is retired; retirement is final", quoted(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["bot", "billing-bot.v2", "A_1", &"a".repeat(128)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-bot", ".x", "a b", "bot\n", "bøt", &"a".repeat(129), "a/b"] {
            assert!(matches!(check_name(bad), Err(Error::InvalidArgument(_))), "{bad:?}");
        }
    }
}
