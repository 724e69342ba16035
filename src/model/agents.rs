//! Registered agents as the store keeps them: the inventory an identity
//! team owns. Plain data; the domain ([`crate::domain`]) checks every
//! change, the store applies it only if the record is still the one the
//! change was made from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::IdentityMatch;

/// Where an agent is declared, and so where it may be changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagedBy {
    /// Declared in the configuration file and seeded into the store at
    /// start: changed by editing the file, never through the API.
    Configuration,
    /// Registered by an operator through the admin API or the CLI.
    Operator,
}

impl ManagedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Configuration => "configuration",
            Self::Operator => "operator",
        }
    }
}

/// How an agent was retired. Retirement is final: the name and the
/// identity stay refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retirement {
    pub at: DateTime<Utc>,
    pub by: String,
    /// Why, in the operator's words.
    pub reason: String,
}

/// A registered agent. Its runtime state (suspended or not) is kept apart,
/// in [`crate::model::AgentStatus`], so that the kill switch stays one
/// atomic step the store checks on every issuance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: String,
    /// Who answers for the agent: never empty.
    pub owner: String,
    /// Empty when the agent belongs to no team.
    pub team: String,
    pub description: String,
    pub risk_tier: String,
    /// The workload identity the agent is recognised by.
    pub identity: IdentityMatch,
    pub managed_by: ManagedBy,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
    /// Counts the record's changes from 1; a change names the revision it
    /// was made from, so two operators' edits cannot silently overwrite
    /// each other.
    pub revision: u64,
    /// Set once the agent is retired.
    #[serde(default)]
    pub retired: Option<Retirement>,
}

impl AgentRecord {
    /// Whether the record says the same as `other` apart from its history
    /// (who made or changed it, when, and its revision).
    pub fn same_declaration(&self, other: &Self) -> bool {
        self.name == other.name
            && self.owner == other.owner
            && self.team == other.team
            && self.description == other.description
            && self.risk_tier == other.risk_tier
            && self.identity == other.identity
            && self.managed_by == other.managed_by
            && self.retired == other.retired
    }
}
