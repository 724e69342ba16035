//! The domain's nouns: tasks, leases, sightings. Plain data; the rules that
//! move them between states live in [`crate::domain`] and, where a change
//! must be atomic, in the [`crate::store::LeaseStore`] implementations.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod agents;
mod approvals;
pub mod routing;

pub use agents::{AgentRecord, ManagedBy, Retirement};
pub use approvals::{Approval, ApprovalEnd, ApprovalGrant, ApprovalState, ApprovalVote};

/// A unit of work opened by a workflow engine for one agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub agent: String,
    pub context: TaskContext,
    pub state: TaskState,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub deadline: DateTime<Utc>,
    pub closed: Option<TaskClosure>,
}

impl Task {
    /// Whether the task accepts new grants at `now`.
    pub fn is_open_at(&self, now: DateTime<Utc>) -> bool {
        self.state == TaskState::Open && now < self.deadline
    }
}

/// Attributes a workflow engine attaches to a task; policy reads them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskContext {
    pub purpose: String,
    pub environment: String,
    pub data_classification: String,
    pub ticket: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Open,
    Closed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskClosure {
    pub at: DateTime<Utc>,
    pub by: String,
    pub reason: RevocationReason,
}

/// One issued credential, from intent to revocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// UUID v7: time-ordered, and the credential's id at the provider
    /// (a token's `jti`, a database role's name).
    pub id: Uuid,
    pub agent: String,
    pub task_id: String,
    pub provider: String,
    pub role: String,
    pub scopes: Vec<String>,
    pub tool: String,
    pub state: LeaseState,
    pub created_at: DateTime<Utc>,
    /// Set when the lease becomes active.
    pub issued_at: Option<DateTime<Utc>>,
    /// For a pending lease, the expiry that was asked of the provider.
    pub expires_at: DateTime<Utc>,
    /// What the provider needs to revoke, encrypted.
    pub handle: SealedHandle,
    pub revocation: Option<Revocation>,
}

impl Lease {
    /// Whether the provider said this lease's revocation can never succeed:
    /// failed with an error (a revocation that finished clears its error,
    /// so a failed mint that was cleaned up has none), whatever the reason
    /// it was revoked for (a `mint_failed` one may hold a real credential:
    /// an issue whose evidence could not be written after the mint).
    pub fn revocation_gave_up(&self) -> bool {
        self.state == LeaseState::Failed
            && self.revocation.as_ref().is_some_and(|revocation| revocation.last_error.is_some())
    }
}

/// pending → active → revoking → revoked; pending → revoking → failed when
/// the mint itself failed; revoking → failed when the provider says the
/// revocation can never succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Recorded before the provider is called; not yet handed out.
    Pending,
    /// Handed out and live.
    Active,
    /// Queued for revocation at the provider.
    Revoking,
    /// Revoked at the provider.
    Revoked,
    /// The mint failed, and whatever it may have left was cleaned up; or
    /// (a revocation whose reason is not `mint_failed`, with its
    /// `last_error`) the provider said the revocation can never succeed,
    /// and the credential may live until its expiry: an operator must look.
    Failed,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Revoking => "revoking",
            Self::Revoked => "revoked",
            Self::Failed => "failed",
        }
    }

    /// Whether the lease is finished and needs nothing more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Revoked | Self::Failed)
    }
}

/// Why a lease is being revoked, and how far that has got.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub reason: RevocationReason,
    pub requested_at: DateTime<Utc>,
    pub attempts: u32,
    /// When the revocation worker may next try (or, while claimed, when the
    /// claim lapses).
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Bumped whenever the handle to revoke changes after the revocation
    /// was queued (a mint that finished late). An outcome reported for an
    /// older generation is stale and ignored, so a revocation that raced a
    /// late mint runs again with the real handle.
    #[serde(default)]
    pub generation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// A workflow engine closed the task.
    TaskClosed,
    /// The task's deadline passed.
    DeadlinePassed,
    /// The lease's TTL ran out.
    Expired,
    /// The agent gave the lease back.
    Released,
    /// The provider refused or failed to mint.
    MintFailed,
    /// A pending lease was never activated (Writ stopped mid-issue).
    Abandoned,
    /// An operator revoked it.
    Operator,
    /// The agent was suspended (the kill switch): everything it holds goes.
    AgentSuspended,
    /// The agent was retired: everything it holds goes, for good.
    AgentRetired,
    /// Its provider was suspended (an incident at the downstream system).
    ProviderSuspended,
}

impl RevocationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskClosed => "task_closed",
            Self::DeadlinePassed => "deadline_passed",
            Self::Expired => "expired",
            Self::Released => "released",
            Self::MintFailed => "mint_failed",
            Self::Abandoned => "abandoned",
            Self::Operator => "operator",
            Self::AgentSuspended => "agent_suspended",
            Self::AgentRetired => "agent_retired",
            Self::ProviderSuspended => "provider_suspended",
        }
    }
}

/// Whether an agent may be issued anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Active,
    /// Refused every grant, renewal and activation until resumed.
    Suspended,
    /// Retired for good: its identity is refused. Only inventory views
    /// show it; the store keeps retirement in the agent's record.
    Retired,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Retired => "retired",
        }
    }
}

/// An agent's runtime state, kept in the lease store rather than in
/// configuration, so that a suspension made on one replica holds on every
/// replica from the moment it is written. An agent with no status is
/// active.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub agent: String,
    pub state: AgentState,
    pub changed_at: DateTime<Utc>,
    pub changed_by: String,
    /// Why, in the operator's words.
    pub reason: String,
}

/// Whether Writ issues from a provider: kept in the lease store, like an
/// agent's state, and checked in the same atomic step that records,
/// activates or extends a lease. A provider with no status is active.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderStatus {
    pub provider: String,
    /// `Active` or `Suspended`.
    pub state: AgentState,
    pub changed_at: DateTime<Utc>,
    pub changed_by: String,
    /// Why, in the operator's words.
    pub reason: String,
}

/// A revocation handle sealed with an AEAD key (see [`crate::sealer`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedHandle {
    pub key_id: String,
    /// Nonce followed by ciphertext and tag.
    #[serde(with = "crate::model::base64_bytes")]
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedHandle(key {}, {} bytes)", self.key_id, self.sealed.len())
    }
}

/// An identity from a trusted issuer that matched no principal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    pub issuer: String,
    pub subject: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub count: u64,
}

pub(crate) mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD_NO_PAD.decode(text).map_err(serde::de::Error::custom)
    }
}
