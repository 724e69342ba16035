//! Step-up approval requests: a grant policy permits only once people of an
//! approver group agree. Plain data; the domain ([`crate::domain`]) decides
//! who may vote, the store applies each vote atomically.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One grant an approval request is for, exactly as the agent asked it
/// (the lifetime is clamped again when the credential is collected).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalGrant {
    pub provider: String,
    pub role: String,
    pub scopes: Vec<String>,
    /// The lifetime asked for, in seconds; `None`: the role's default.
    pub ttl_seconds: Option<u64>,
}

/// pending → approved → collected; pending → denied | expired | cancelled;
/// approved → expired (never collected) | cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for approvers.
    Pending,
    /// The quorum agreed; the agent may collect the credentials, once.
    Approved,
    /// An approver denied it.
    Denied,
    /// Not decided (or, approved, not collected) in time.
    Expired,
    /// Its task closed or passed its deadline, or its agent was suspended.
    Cancelled,
    /// The agent collected what was approved.
    Collected,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Collected => "collected",
        }
    }

    /// Whether nothing more can happen to the request.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Approved)
    }

    /// Every state, for parsing and listings.
    pub const ALL: [Self; 6] =
        [Self::Pending, Self::Approved, Self::Denied, Self::Expired, Self::Cancelled, Self::Collected];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

/// One approver's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalVote {
    /// The approver (a service principal's name).
    pub by: String,
    pub approve: bool,
    /// In the approver's words.
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// How a request ended, when it was not collected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalEnd {
    pub at: DateTime<Utc>,
    /// `writ` for an expiry or a cancellation, the approver for a denial.
    pub by: String,
    pub reason: String,
}

/// A request for a step-up grant, bound to exactly one agent, task, tool
/// and set of grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// UUID v7: listings are in creation order.
    pub id: Uuid,
    pub agent: String,
    pub task_id: String,
    pub tool: String,
    pub grants: Vec<ApprovalGrant>,
    /// The approver group that decides (from the policy).
    pub group: String,
    /// How many distinct approvers of the group must approve.
    pub quorum: u32,
    /// The policies that asked for the approval, and the set they were in.
    pub policies: Vec<String>,
    pub policy_set: String,
    pub state: ApprovalState,
    pub created_at: DateTime<Utc>,
    /// When a pending request expires undecided.
    pub expires_at: DateTime<Utc>,
    /// How long after approval the agent has to collect.
    pub collect_within_seconds: u64,
    /// In the order cast.
    #[serde(default)]
    pub votes: Vec<ApprovalVote>,
    /// When the quorum was reached.
    pub approved_at: Option<DateTime<Utc>>,
    /// When an approved request expires uncollected.
    pub collect_by: Option<DateTime<Utc>>,
    pub collected_at: Option<DateTime<Utc>>,
    /// Set for a denied, expired or cancelled request.
    pub ended: Option<ApprovalEnd>,
}

impl Approval {
    /// When the request next changes by itself: a pending one expires at
    /// `expires_at`, an approved one at `collect_by`. `None` once final.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        match self.state {
            ApprovalState::Pending => Some(self.expires_at),
            ApprovalState::Approved => self.collect_by,
            _ => None,
        }
    }

    /// The approvers who approved, in order.
    pub fn approvers(&self) -> impl Iterator<Item = &str> {
        self.votes.iter().filter(|vote| vote.approve).map(|vote| vote.by.as_str())
    }
}
