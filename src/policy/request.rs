//! Turning one grant's facts into a Cedar request and its entities.

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression, Schema,
};
use chrono::{DateTime, Datelike, Timelike, Utc};
use std::sync::LazyLock;

use super::PolicyError;
use crate::model::Task;
use crate::principals::Agent;

/// The role being granted, as policy sees it.
#[derive(Clone, Debug)]
pub struct RoleFacts<'a> {
    pub provider: &'a str,
    pub role: &'a str,
    /// "revocable" or "expiry_only".
    pub shape: &'a str,
}

/// Everything policy may look at for one grant.
#[derive(Clone, Debug)]
pub struct GrantFacts<'a> {
    /// `issue` or `renew`.
    pub action: &'a str,
    pub agent: &'a Agent,
    pub task: &'a Task,
    pub role: RoleFacts<'a>,
    pub tool: &'a str,
    pub scopes: &'a [String],
    pub ttl_seconds: i64,
    pub now: DateTime<Utc>,
}

/// The entity types of Writ's requests, parsed once: parsing a name goes
/// through Cedar's policy parser, which was a good part of building a
/// request.
pub(super) struct Types {
    pub(super) agent: EntityTypeName,
    pub(super) provider: EntityTypeName,
    pub(super) role: EntityTypeName,
    pub(super) task: EntityTypeName,
    pub(super) action: EntityTypeName,
}

static TYPES: LazyLock<Result<Types, String>> = LazyLock::new(|| {
    let parse = |kind: &str| -> Result<EntityTypeName, String> {
        kind.parse().map_err(|e| format!("entity type {kind}: {e}"))
    };
    Ok(Types {
        agent: parse("Writ::Agent")?,
        provider: parse("Writ::Provider")?,
        role: parse("Writ::Role")?,
        task: parse("Writ::Task")?,
        action: parse("Writ::Action")?,
    })
});

pub(super) fn types() -> Result<&'static Types, PolicyError> {
    TYPES.as_ref().map_err(|e| PolicyError::Request(e.clone()))
}

fn uid(kind: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(kind.clone(), EntityId::new(id))
}

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_string())
}

fn record(
    fields: impl IntoIterator<Item = (&'static str, RestrictedExpression)>,
) -> Result<RestrictedExpression, PolicyError> {
    RestrictedExpression::new_record(fields.into_iter().map(|(k, v)| (k.to_string(), v)))
        .map_err(|e| PolicyError::Request(e.to_string()))
}

impl GrantFacts<'_> {
    /// The Cedar request and its entities. With a schema, both are checked
    /// against it; [`super::PolicyEngine::decide`] passes none, since the
    /// shapes built here are fixed by this code and a test checks them
    /// against the schema. Checking them on every request was about a
    /// tenth of Writ's CPU per issue, and a request that did not fit
    /// could not turn into an allow anyway: a policy that fails to
    /// evaluate denies.
    pub(super) fn build(&self, schema: Option<&Schema>) -> Result<(Request, Entities), PolicyError> {
        let error = |e: &dyn std::fmt::Display| PolicyError::Request(e.to_string());
        let types = types()?;
        let agent_uid = uid(&types.agent, &self.agent.name);
        let provider_uid = uid(&types.provider, self.role.provider);
        let role_uid = uid(&types.role, &format!("{}/{}", self.role.provider, self.role.role));
        let task_uid = uid(&types.task, &self.task.id);

        let agent = Entity::new(
            agent_uid.clone(),
            [
                ("owner".to_string(), string(&self.agent.owner)),
                ("team".to_string(), string(&self.agent.team)),
                ("risk_tier".to_string(), string(&self.agent.risk_tier)),
                ("description".to_string(), string(&self.agent.description)),
            ]
            .into_iter()
            .collect(),
            Default::default(),
        )
        .map_err(|e| error(&e))?;
        let provider = Entity::new_no_attrs(provider_uid.clone(), Default::default());
        let role = Entity::new(
            role_uid.clone(),
            [
                ("provider".to_string(), string(self.role.provider)),
                ("name".to_string(), string(self.role.role)),
                ("shape".to_string(), string(self.role.shape)),
            ]
            .into_iter()
            .collect(),
            [provider_uid].into_iter().collect(),
        )
        .map_err(|e| error(&e))?;
        let context = &self.task.context;
        let task = Entity::new_with_tags(
            task_uid.clone(),
            [
                (
                    "agent".to_string(),
                    RestrictedExpression::new_entity_uid(uid(&types.agent, &self.task.agent)),
                ),
                ("purpose".to_string(), string(&context.purpose)),
                ("environment".to_string(), string(&context.environment)),
                ("data_classification".to_string(), string(&context.data_classification)),
                ("ticket".to_string(), string(&context.ticket)),
            ],
            [],
            context.labels.iter().map(|(key, value)| (key.clone(), string(value))),
        )
        .map_err(|e| error(&e))?;
        let entities =
            Entities::from_entities([agent, provider, role, task], schema).map_err(|e| error(&e))?;

        let clock = record([
            ("epoch_seconds", RestrictedExpression::new_long(self.now.timestamp())),
            ("hour_utc", RestrictedExpression::new_long(i64::from(self.now.hour()))),
            ("weekday", RestrictedExpression::new_long(i64::from(self.now.weekday().number_from_monday()))),
        ])?;
        let context = Context::from_pairs([
            ("task".to_string(), RestrictedExpression::new_entity_uid(task_uid)),
            ("tool".to_string(), string(self.tool)),
            ("scopes".to_string(), RestrictedExpression::new_set(self.scopes.iter().map(|s| string(s)))),
            ("ttl_seconds".to_string(), RestrictedExpression::new_long(self.ttl_seconds)),
            ("now".to_string(), clock),
        ])
        .map_err(|e| error(&e))?;
        let action = uid(&types.action, self.action);
        let request = Request::new(agent_uid, action, role_uid, context, schema).map_err(|e| error(&e))?;
        Ok((request, entities))
    }
}
