//! The least-privilege review: per agent, what it was issued in a window
//! (from the audit log), what the policy would have let it have but it
//! never used, which agents were dormant, and which unknown identities
//! called. The report an identity team recertifies agents by.
//!
//! "Would have let it have" is asked of the policy in force, in the
//! situations the agent was actually in during the window: for each
//! configured role, each of the agent's tasks of the window (as the store
//! still has it) with each tool it named under that task. An agent with no
//! task in the window is asked about with an empty task and no tool.
//! Situations that differ only by task id count once, and at most 64 are
//! asked about per agent. A step-up permit counts as allowed. Decisions made for the report are not
//! audited: they are not requests.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Broker, Error, GrantRequest};
use crate::audit::export::{ExportFilter, scan};
use crate::model::{Sighting, Task, TaskContext, TaskState};
use crate::policy::Decision;
use crate::principals::Agent;

/// One provider role an agent was issued in the window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoleUse {
    pub provider: String,
    pub role: String,
    /// Every scope asked for, over all its issuances.
    pub scopes: BTreeSet<String>,
    pub count: u64,
    pub tools: BTreeSet<String>,
    pub last_issued: Option<DateTime<Utc>>,
}

/// One agent's part of the report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentAccess {
    pub agent: String,
    pub owner: String,
    pub team: String,
    pub issuances: u64,
    pub used: Vec<RoleUse>,
    /// `provider/role` the policy would allow and the agent never used.
    pub allowed_unused: Vec<String>,
    /// Issued nothing in the window.
    pub dormant: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessReport {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub agents: Vec<AgentAccess>,
    /// Unknown identities last seen in the window.
    pub sightings: Vec<Sighting>,
}

/// What the log says an agent did in the window.
#[derive(Default)]
struct Observed {
    used: BTreeMap<(String, String), RoleUse>,
    /// Task id → the tools named under it (decisions and issuances).
    tasks: BTreeMap<String, BTreeSet<String>>,
}

/// The most sightings a report lists.
const SIGHTINGS: usize = 1000;
/// The most distinct situations (task attributes and tools) an agent's
/// unused roles are asked about.
const MAX_SITUATIONS: usize = 64;

impl Broker {
    /// The access report for `[since, until)`.
    pub async fn access_report(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<AccessReport, Error> {
        if until <= since {
            return Err(Error::InvalidArgument("until must be after since".into()));
        }
        let path = self.audit.path().to_path_buf();
        let filter = ExportFilter { since: Some(since), until: Some(until), ..ExportFilter::default() };
        let observed = tokio::task::spawn_blocking(move || observe(&path, &filter))
            .await
            .map_err(|error| Error::Internal(format!("the audit reader failed: {error}")))??;
        let mut agents = Vec::new();
        let directory = self.registry.directory();
        for agent in directory.active_agents() {
            let seen = observed.get(&agent.name);
            agents.push(self.agent_access(agent, seen, now).await?);
        }
        let sightings = self
            .list_sightings(SIGHTINGS)
            .await?
            .into_iter()
            .filter(|sighting| sighting.last_seen >= since && sighting.last_seen < until)
            .collect();
        Ok(AccessReport { since, until, agents, sightings })
    }

    async fn agent_access(
        &self,
        agent: &Agent,
        seen: Option<&Observed>,
        now: DateTime<Utc>,
    ) -> Result<AgentAccess, Error> {
        let used: Vec<RoleUse> = seen.map(|seen| seen.used.values().cloned().collect()).unwrap_or_default();
        let issuances = used.iter().map(|role| role.count).sum();
        // The situations to ask the policy about: distinct (task
        // attributes, tool) pairs, at most MAX_SITUATIONS of them.
        let mut situations: Vec<(Task, BTreeSet<String>)> = Vec::new();
        let mut distinct = BTreeSet::new();
        for (task_id, tools) in seen.map(|seen| &seen.tasks).into_iter().flatten() {
            if situations.len() == MAX_SITUATIONS {
                break;
            }
            let key = |task: &Task| serde_json::to_string(&task.context).unwrap_or_default();
            if let Some(task) = self.store.get_task(task_id).await? {
                let fresh: BTreeSet<String> = tools
                    .iter()
                    .filter(|tool| distinct.insert((key(&task), (*tool).clone())))
                    .cloned()
                    .collect();
                let new = if tools.is_empty() {
                    distinct.insert((key(&task), String::new()))
                } else {
                    !fresh.is_empty()
                };
                if new {
                    situations.push((task, fresh));
                }
            }
        }
        if situations.is_empty() {
            situations.push((empty_task(agent, now), BTreeSet::new()));
        }
        let used_roles: BTreeSet<String> =
            used.iter().map(|role| format!("{}/{}", role.provider, role.role)).collect();
        let mut allowed_unused = Vec::new();
        for (provider, registered) in self.providers.iter() {
            for role in &registered.description.roles {
                let target = format!("{provider}/{}", role.name);
                if !used_roles.contains(&target)
                    && self.would_allow(agent, provider, &role.name, &situations, now)
                {
                    allowed_unused.push(target);
                }
            }
        }
        allowed_unused.sort();
        Ok(AgentAccess {
            agent: agent.name.clone(),
            owner: agent.owner.clone(),
            team: agent.team.clone(),
            issuances,
            dormant: issuances == 0,
            used,
            allowed_unused,
        })
    }

    /// Whether the policy permits (with or without step-up) the role in any
    /// of the situations.
    fn would_allow(
        &self,
        agent: &Agent,
        provider: &str,
        role: &str,
        situations: &[(Task, BTreeSet<String>)],
        now: DateTime<Utc>,
    ) -> bool {
        let grant =
            GrantRequest { provider: provider.into(), role: role.into(), scopes: Vec::new(), ttl: None };
        situations.iter().any(|(task, tools)| {
            // A task that has ended is asked about as it was.
            let task = Task {
                state: TaskState::Open,
                closed: None,
                deadline: now + chrono::Duration::hours(1),
                ..task.clone()
            };
            let Ok(plan) = self.plan(&task, &grant, now) else {
                return false;
            };
            let tools: Vec<&str> =
                if tools.is_empty() { vec![""] } else { tools.iter().map(String::as_str).collect() };
            tools.iter().any(|tool| {
                matches!(
                    self.evaluate("issue", agent, &task, tool, &plan, now),
                    Ok((Decision::Allow { .. } | Decision::StepUp { .. }, _))
                )
            })
        })
    }
}

fn empty_task(agent: &Agent, now: DateTime<Utc>) -> Task {
    Task {
        id: "access-report".into(),
        agent: agent.name.clone(),
        context: TaskContext::default(),
        state: TaskState::Open,
        created_at: now,
        created_by: "writ".into(),
        deadline: now + chrono::Duration::hours(1),
        closed: None,
    }
}

/// Reads the window's `issued` and `decision` records, by agent.
fn observe(path: &std::path::Path, filter: &ExportFilter) -> Result<HashMap<String, Observed>, Error> {
    let mut observed: HashMap<String, Observed> = HashMap::new();
    let text = |value: &Value, field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    scan(path, filter, |record| {
        let Some(agent) = record.agent.clone() else { return true };
        let is_issue = record.event == "issued" && text(&record.value, "outcome").as_deref() == Some("ok");
        if record.event != "decision" && !is_issue {
            return true;
        }
        let seen = observed.entry(agent).or_default();
        let tool = text(&record.value, "tool");
        if let Some(task) = &record.task {
            let tools = seen.tasks.entry(task.clone()).or_default();
            tools.extend(tool.clone());
        }
        if is_issue
            && let (Some(provider), Some(role)) =
                (text(&record.value, "provider"), text(&record.value, "role"))
        {
            let used = seen.used.entry((provider.clone(), role.clone())).or_insert_with(|| RoleUse {
                provider,
                role,
                ..RoleUse::default()
            });
            used.count += 1;
            used.tools.extend(tool);
            let scopes = record.value.pointer("/details/scopes").and_then(Value::as_array);
            used.scopes.extend(scopes.into_iter().flatten().filter_map(Value::as_str).map(str::to_owned));
            used.last_issued = used.last_issued.max(Some(record.ts));
        }
        true
    })?;
    Ok(observed)
}
