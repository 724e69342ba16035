//! What a notice says: the `writ` JSON event, the `slack` summary, and the
//! event id. The wire types here are the schema; they copy from
//! [`Approval`] only what approvers need, so a field added to the model
//! never reaches a receiver unnoticed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ring::digest;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use super::{Endpoint, WebhookEvent, WebhookFormat};
use crate::model::{Approval, ApprovalState};

/// One event about one approval, on its way to the endpoints of its group.
#[derive(Debug)]
pub(super) struct Notice {
    pub(super) id: Uuid,
    pub(super) event: WebhookEvent,
    pub(super) at: DateTime<Utc>,
    pub(super) approval: ApprovalBody,
    pub(super) targets: Vec<Arc<Endpoint>>,
    /// For giving up: the age is counted from here.
    pub(super) enqueued: Instant,
}

impl Notice {
    pub(super) fn new(
        event: WebhookEvent,
        approval: &Approval,
        at: DateTime<Utc>,
        targets: Vec<Arc<Endpoint>>,
    ) -> Self {
        Self {
            id: event_id(event, approval, at),
            event,
            at,
            approval: ApprovalBody::from(approval),
            targets,
            enqueued: Instant::now(),
        }
    }

    /// The raw body for an endpoint of `format`, the bytes that are signed.
    pub(super) fn render(&self, format: WebhookFormat) -> serde_json::Result<Vec<u8>> {
        match format {
            WebhookFormat::Writ => serde_json::to_vec(&EventBody {
                id: self.id,
                event: self.event.as_str(),
                at: self.at,
                approval: &self.approval,
            }),
            WebhookFormat::Slack => {
                serde_json::to_vec(&SlackBody { text: slack_text(self.event, &self.approval) })
            }
        }
    }
}

/// The event's id: a UUID v7 whose time is when the event happened by the
/// approval's own record (falling back to `at`), and whose other bits hash
/// the approval id, the event type and, for a vote, its position. Sending
/// the same event again, after a restart too, gives the same id.
pub(super) fn event_id(event: WebhookEvent, approval: &Approval, at: DateTime<Utc>) -> Uuid {
    let (happened, position) = match event {
        WebhookEvent::Requested => (Some(approval.created_at), 0),
        WebhookEvent::Voted => (approval.votes.last().map(|vote| vote.at), approval.votes.len()),
        WebhookEvent::Approved => (approval.approved_at, 0),
        WebhookEvent::Collected => (approval.collected_at, 0),
        WebhookEvent::Denied | WebhookEvent::Expired | WebhookEvent::Cancelled => {
            (approval.ended.as_ref().map(|end| end.at), 0)
        }
    };
    let happened = happened.unwrap_or(at);
    let mut hash = digest::Context::new(&digest::SHA256);
    hash.update(b"writ approval webhook event\0");
    hash.update(approval.id.as_bytes());
    hash.update(event.as_str().as_bytes());
    hash.update(&(position as u64).to_be_bytes());
    hash.update(&happened.timestamp_micros().to_be_bytes());
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&hash.finish().as_ref()[..10]);
    let millis = u64::try_from(happened.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid()
}

#[derive(Serialize)]
struct EventBody<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    event: &'static str,
    at: DateTime<Utc>,
    approval: &'a ApprovalBody,
}

#[derive(Serialize)]
struct SlackBody {
    text: String,
}

/// The approval as receivers see it: no policies, nothing secret.
#[derive(Debug, Serialize)]
pub(super) struct ApprovalBody {
    pub(super) id: Uuid,
    agent: String,
    task_id: String,
    tool: String,
    grants: Vec<GrantBody>,
    group: String,
    quorum: u32,
    state: ApprovalState,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    /// How many votes approve.
    approvals: usize,
    votes: Vec<VoteBody>,
    collect_by: Option<DateTime<Utc>>,
    ended: Option<EndBody>,
}

#[derive(Debug, Serialize)]
struct GrantBody {
    provider: String,
    role: String,
    scopes: Vec<String>,
    ttl_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
struct VoteBody {
    by: String,
    approve: bool,
    reason: String,
    at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct EndBody {
    at: DateTime<Utc>,
    by: String,
    reason: String,
}

impl From<&Approval> for ApprovalBody {
    fn from(approval: &Approval) -> Self {
        Self {
            id: approval.id,
            agent: approval.agent.clone(),
            task_id: approval.task_id.clone(),
            tool: approval.tool.clone(),
            grants: approval
                .grants
                .iter()
                .map(|grant| GrantBody {
                    provider: grant.provider.clone(),
                    role: grant.role.clone(),
                    scopes: grant.scopes.clone(),
                    ttl_seconds: grant.ttl_seconds,
                })
                .collect(),
            group: approval.group.clone(),
            quorum: approval.quorum,
            state: approval.state,
            created_at: approval.created_at,
            expires_at: approval.expires_at,
            approvals: approval.approvers().count(),
            votes: approval
                .votes
                .iter()
                .map(|vote| VoteBody {
                    by: vote.by.clone(),
                    approve: vote.approve,
                    reason: vote.reason.clone(),
                    at: vote.at,
                })
                .collect(),
            collect_by: approval.collect_by,
            ended: approval.ended.as_ref().map(|end| EndBody {
                at: end.at,
                by: end.by.clone(),
                reason: end.reason.clone(),
            }),
        }
    }
}

/// One paragraph for a person in a chat channel.
fn slack_text(event: WebhookEvent, approval: &ApprovalBody) -> String {
    let subject = format!(
        "agent {} asks for {} for task {} (tool {})",
        code(&approval.agent),
        approval.grants.iter().map(describe_grant).collect::<Vec<_>>().join(", "),
        code(&approval.task_id),
        code(&approval.tool),
    );
    let tally = format!("{} of {} approvals", approval.approvals, approval.quorum);
    let ended =
        || approval.ended.as_ref().map_or_else(String::new, |end| format!(": {}", escape(&end.reason)));
    let summary = match event {
        WebhookEvent::Requested => format!(
            "*Approval requested*: {subject}. Group {} decides ({tally} so far) before {}.",
            code(&approval.group),
            when(approval.expires_at),
        ),
        WebhookEvent::Voted => match approval.votes.last() {
            Some(vote) => format!(
                "*Approval vote*: {} {} ({}); {subject}. {tally}.",
                code(&vote.by),
                if vote.approve { "approved" } else { "denied" },
                escape(&vote.reason),
            ),
            None => format!("*Approval vote*: {subject}. {tally}."),
        },
        WebhookEvent::Approved => format!(
            "*Approval granted*: {subject}. {tally}; the agent may collect {}.",
            approval.collect_by.map_or_else(|| "once".to_owned(), |by| format!("until {}", when(by))),
        ),
        WebhookEvent::Denied => {
            let by = approval.ended.as_ref().map_or_else(String::new, |end| format!(" by {}", code(&end.by)));
            format!("*Approval denied*{by}{}; {subject}.", ended())
        }
        WebhookEvent::Expired => format!("*Approval expired*{}; {subject}.", ended()),
        WebhookEvent::Cancelled => format!("*Approval cancelled*{}; {subject}.", ended()),
        WebhookEvent::Collected => format!("*Approval collected*: {subject}. The agent collected the grant."),
    };
    format!("{summary} Request {}, now {}.", approval.id, approval.state.as_str())
}

fn describe_grant(grant: &GrantBody) -> String {
    let mut text = format!("{}/{}", code(&grant.provider), code(&grant.role));
    let mut details = Vec::new();
    if !grant.scopes.is_empty() {
        details.push(format!(
            "scopes {}",
            grant.scopes.iter().map(|scope| code(scope)).collect::<Vec<_>>().join(" ")
        ));
    }
    if let Some(seconds) = grant.ttl_seconds {
        details.push(format!("for {seconds} s"));
    }
    if !details.is_empty() {
        text.push_str(&format!(" ({})", details.join(", ")));
    }
    text
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `text` as inline code: escaped, with no backtick to end it early.
fn code(text: &str) -> String {
    format!("`{}`", escape(text).replace('`', "'"))
}

/// The three characters chat markup needs escaped; `<` would otherwise let
/// a name or reason mention a whole channel.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
