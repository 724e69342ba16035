//! The agent inventory operators read, and the kill switch over it:
//! suspending or resuming one agent, or every agent of an owner or a team,
//! at once.
//!
//! Each agent's suspension is its own atomic step in the store (the scope
//! path of [`super::scopes`]), so an owner's suspension that fails half-way
//! has suspended the agents it names as suspended and none other; calling
//! it again finishes the rest.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{Broker, Error, check_text, quoted};
use crate::audit::export::{ExportError, ExportFilter, ExportedRecord};
use crate::model::{AgentRecord, AgentState, AgentStatus, RevocationReason};
use crate::store::{Scope, StoreError};

/// The longest reason a suspension or a resumption may give.
const MAX_REASON_CHARS: usize = 500;

/// Which agents a suspension or a resumption is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentSelector {
    Agent(String),
    /// Every agent this owner answers for.
    Owner(String),
    /// Every agent of this team.
    Team(String),
}

/// Inventory records read per page when a selector names many agents.
const INVENTORY_PAGE: usize = 1000;

impl AgentSelector {
    fn matches(&self, agent: &AgentRecord) -> bool {
        match self {
            Self::Agent(name) => agent.name == *name,
            Self::Owner(owner) => agent.owner == *owner,
            Self::Team(team) => agent.team == *team,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Agent(name) => format!("agent {}", quoted(name)),
            Self::Owner(owner) => format!("owner {}", quoted(owner)),
            Self::Team(team) => format!("team {}", quoted(team)),
        }
    }
}

/// Which agents a listing shows; `None` matches any.
#[derive(Clone, Debug, Default)]
pub struct AgentFilter {
    pub owner: Option<String>,
    pub team: Option<String>,
    pub state: Option<AgentState>,
}

/// An agent as operators see it: its record in the inventory, and its
/// runtime state.
#[derive(Clone, Debug)]
pub struct AgentView {
    pub record: AgentRecord,
    /// The last suspension or resumption; `None` for an agent never
    /// suspended.
    pub status: Option<AgentStatus>,
}

impl AgentView {
    pub fn state(&self) -> AgentState {
        if self.record.retired.is_some() {
            return AgentState::Retired;
        }
        self.status.as_ref().map_or(AgentState::Active, |status| status.state)
    }
}

/// What a suspension did, once the wait for its revocations is over.
#[derive(Clone, Debug, Default)]
pub struct Suspension {
    pub suspended: Vec<AgentView>,
    /// Agents of an owner or a team that were suspended already.
    pub already_suspended: Vec<String>,
    pub revoked: usize,
    pub retrying: usize,
    pub failed: usize,
}

/// What a resumption did.
#[derive(Clone, Debug, Default)]
pub struct Resumption {
    pub resumed: Vec<AgentView>,
    /// Agents of an owner or a team that were not suspended.
    pub not_suspended: Vec<String>,
}

/// Which audit records an auditor asks for; `None` matches any.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub agent: Option<String>,
    /// Every agent this owner answers for now.
    pub owner: Option<String>,
    pub task_id: Option<String>,
    pub event: Option<String>,
}

/// Audit records as they are read.
pub struct AuditRecords {
    records: mpsc::Receiver<Result<ExportedRecord, ExportError>>,
}

impl AuditRecords {
    /// The next record; `None` at the end of the log.
    pub async fn next(&mut self) -> Option<Result<ExportedRecord, Error>> {
        Some(self.records.recv().await?.map_err(Error::from))
    }
}

impl Broker {
    /// Registered agents matching `filter`, in name order, after `after`.
    pub async fn list_agents(
        &self,
        filter: &AgentFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AgentView>, Error> {
        let mut views = Vec::new();
        let directory = self.registry.directory();
        let candidates = directory.agents_after(after).filter(|(_, record)| {
            filter.owner.as_ref().is_none_or(|owner| record.owner == *owner)
                && filter.team.as_ref().is_none_or(|team| record.team == *team)
        });
        for (_, record) in candidates {
            if views.len() == limit {
                break;
            }
            let view = self.view_of(record.clone()).await?;
            if filter.state.is_none_or(|state| view.state() == state) {
                views.push(view);
            }
        }
        Ok(views)
    }

    /// One registered agent, retired ones too.
    pub async fn get_agent(&self, name: &str) -> Result<AgentView, Error> {
        match self.registry.directory().record(name) {
            Some(record) => self.view_of(record.clone()).await,
            None => Err(not_registered(name)),
        }
    }

    /// The kill switch for one agent, an owner's or a team's: suspends
    /// each (see [`Broker::suspend_agent`]), then waits up to
    /// `limits.close_wait` in all for their revocations. A single agent
    /// suspended already is FAILED_PRECONDITION; an owner's or a team's
    /// agents suspended already are reported and left as they are.
    pub async fn suspend_agents(
        &self,
        caller: &str,
        selector: &AgentSelector,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Suspension, Error> {
        check_reason(reason)?;
        let agents = self.select(selector).await?;
        let deadline = tokio::time::Instant::now() + self.limits.close_wait;
        let mut suspension = Suspension::default();
        let mut ended = Vec::new();
        let single = matches!(selector, AgentSelector::Agent(_));
        let mut failed = Vec::new();
        for agent in agents {
            let scope = Scope::Agent(agent.name.clone());
            let finished = self.revocations.subscribe();
            let closed =
                match self.end_scope(caller, &scope, RevocationReason::AgentSuspended, reason, now).await {
                    Ok(closed) => closed,
                    Err(error) if single => return Err(error),
                    // One agent's failure must not leave the others running:
                    // try every one, then say which are not stopped.
                    Err(error) => {
                        failed.push((agent.name.clone(), error));
                        continue;
                    }
                };
            if !closed.ended_now {
                if let AgentSelector::Agent(name) = selector {
                    return Err(Error::FailedPrecondition(format!(
                        "agent {} is suspended already",
                        quoted(name)
                    )));
                }
                suspension.already_suspended.push(agent.name.clone());
                continue;
            }
            ended.push((agent, scope, closed, finished));
        }
        if !failed.is_empty() {
            let stopped: Vec<&str> = ended.iter().map(|(agent, ..)| agent.name.as_str()).collect();
            return Err(partial("suspend", "suspended", &stopped, &failed));
        }
        for (agent, scope, closed, finished) in ended {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            let outcome = self.wait_for_scope_within(closed, &scope, finished, wait).await?;
            suspension.revoked += outcome.revoked;
            suspension.retrying += outcome.retrying;
            suspension.failed += outcome.failed;
            suspension.suspended.push(AgentView { record: agent, status: outcome.closed.agent });
        }
        Ok(suspension)
    }

    /// Lifts the suspension of one agent, an owner's or a team's. A single
    /// agent that is not suspended is FAILED_PRECONDITION; an owner's or a
    /// team's agents that are not are reported and left as they are.
    pub async fn resume_agents(
        &self,
        caller: &str,
        selector: &AgentSelector,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Resumption, Error> {
        check_reason(reason)?;
        let agents = self.select(selector).await?;
        let mut resumption = Resumption::default();
        let single = matches!(selector, AgentSelector::Agent(_));
        let mut failed = Vec::new();
        for agent in agents {
            let status = match self.resume_agent(caller, &agent.name, reason, now).await {
                Ok(status) => status,
                Err(error) if single => return Err(error),
                // Not suspended (or resumed meanwhile by someone else).
                Err(Error::FailedPrecondition(_)) => {
                    resumption.not_suspended.push(agent.name.clone());
                    continue;
                }
                Err(error) => {
                    failed.push((agent.name.clone(), error));
                    continue;
                }
            };
            resumption.resumed.push(AgentView { record: agent, status: Some(status) });
        }
        if !failed.is_empty() {
            let resumed: Vec<&str> =
                resumption.resumed.iter().map(|view| view.record.name.as_str()).collect();
            return Err(partial("resume", "resumed", &resumed, &failed));
        }
        Ok(resumption)
    }

    /// Reads this replica's audit log: the records matching `query`, in
    /// log order, on the receiver. An owner names the agents it owns now.
    pub fn export_audit(&self, query: AuditQuery) -> Result<AuditRecords, Error> {
        let owned = query.owner.as_ref().map(|owner| {
            self.registry
                .directory()
                .agents_after(None)
                .filter(|(_, record)| record.owner == *owner)
                .map(|(_, record)| record.name.clone())
                .collect::<HashSet<_>>()
        });
        if let (Some(owner), Some(owned)) = (&query.owner, &owned)
            && owned.is_empty()
        {
            return Err(Error::NotFound(format!(
                "no registered agent has {}",
                AgentSelector::Owner(owner.clone()).describe()
            )));
        }
        let agents = match (query.agent, owned) {
            (Some(agent), Some(owned)) => Some(owned.into_iter().filter(|name| *name == agent).collect()),
            (Some(agent), None) => Some(HashSet::from([agent])),
            (None, owned) => owned,
        };
        let filter = ExportFilter {
            since: query.since,
            until: query.until,
            agents,
            task_id: query.task_id,
            event: query.event,
        };
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && until <= since
        {
            return Err(Error::InvalidArgument("until must be after since".into()));
        }
        Ok(AuditRecords { records: crate::audit::export::export(self.audit.path(), filter) })
    }

    /// The registered agents (not retired) a selector names, in name
    /// order, from the store's inventory: every replica's configured agents
    /// and every operator's, not only those this replica recognises.
    /// NOT_FOUND when it names none, FAILED_PRECONDITION for a retired
    /// agent named.
    async fn select(&self, selector: &AgentSelector) -> Result<Vec<AgentRecord>, Error> {
        let agents = match self.select_stored(selector).await {
            Ok(agents) => agents,
            // The store cannot be read: this replica's directory names the
            // agents, so that the kill switch tries each and says which it
            // could not stop, rather than naming none.
            Err(StoreError::Unavailable(error)) => {
                tracing::warn!(%error, "cannot read the agent inventory; selecting from this replica's directory");
                let directory = self.registry.directory();
                directory
                    .agents_after(None)
                    .map(|(_, record)| record)
                    .filter(|record| match selector {
                        AgentSelector::Agent(name) => record.name == *name,
                        _ => record.retired.is_none() && selector.matches(record),
                    })
                    .cloned()
                    .collect()
            }
            Err(error) => return Err(error.into()),
        };
        if let (AgentSelector::Agent(name), [record]) = (selector, agents.as_slice())
            && record.retired.is_some()
        {
            return Err(Error::FailedPrecondition(format!(
                "agent {} is retired; retirement is final",
                quoted(name)
            )));
        }
        if agents.is_empty() {
            return Err(match selector {
                AgentSelector::Agent(name) => not_registered(name),
                _ => Error::NotFound(format!("no registered agent has {}", selector.describe())),
            });
        }
        Ok(agents)
    }

    /// The agents a selector names in the store's inventory (a retired one
    /// by name included, for the caller to refuse).
    async fn select_stored(&self, selector: &AgentSelector) -> Result<Vec<AgentRecord>, StoreError> {
        Ok(match selector {
            AgentSelector::Agent(name) => self.store.get_agent(name).await?.into_iter().collect(),
            _ => {
                let mut matching = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let page = self.store.list_agents(after.as_deref(), INVENTORY_PAGE).await?;
                    after = page.last().map(|record| record.name.clone());
                    let full = page.len() == INVENTORY_PAGE;
                    matching.extend(
                        page.into_iter()
                            .filter(|record| record.retired.is_none() && selector.matches(record)),
                    );
                    if !full {
                        break matching;
                    }
                }
            }
        })
    }
}

/// An owner's or a team's suspension (or resumption) that failed for some
/// of its agents: which were done, which were not and why. Calling again
/// finishes the rest (those done already are left as they are).
fn partial(verb: &str, done: &str, succeeded: &[&str], failed: &[(String, Error)]) -> Error {
    let failures: Vec<String> =
        failed.iter().map(|(name, error)| format!("{} ({error})", quoted(name))).collect();
    let succeeded: Vec<String> = succeeded.iter().map(|name| quoted(name)).collect();
    Error::Unavailable(format!(
        "could not {verb} {}; {done}: {}; call again to finish",
        failures.join(", "),
        if succeeded.is_empty() { "none".to_string() } else { succeeded.join(", ") }
    ))
}

pub(super) fn check_reason(reason: &str) -> Result<(), Error> {
    if reason.trim().is_empty() {
        return Err(Error::InvalidArgument("reason must say why (it is evidence)".into()));
    }
    check_text("reason", reason, MAX_REASON_CHARS)
}

fn not_registered(name: &str) -> Error {
    Error::NotFound(format!("agent {} is not registered", quoted(name)))
}
