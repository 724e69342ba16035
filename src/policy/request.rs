//! Turning one grant's facts into a Cedar request and its entities.

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression, Schema,
};
use chrono::{DateTime, Datelike, Timelike, Utc};
use std::sync::{Arc, LazyLock};

use super::PolicyError;
use crate::model::{Task, TaskContext};
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
    #[cfg(test)]
    pub(super) fn build(&self, schema: Option<&Schema>) -> Result<(Request, Entities), PolicyError> {
        let entities = self.entities(schema)?;
        Ok((self.request(schema)?, entities))
    }

    /// The request alone: principal, action, resource and the context,
    /// which holds what changes from call to call (tool, scopes, lifetime,
    /// clock).
    pub(super) fn request(&self, schema: Option<&Schema>) -> Result<Request, PolicyError> {
        let error = |e: &dyn std::fmt::Display| PolicyError::Request(e.to_string());
        let types = types()?;
        let clock = record([
            ("epoch_seconds", RestrictedExpression::new_long(self.now.timestamp())),
            ("hour_utc", RestrictedExpression::new_long(i64::from(self.now.hour()))),
            ("weekday", RestrictedExpression::new_long(i64::from(self.now.weekday().number_from_monday()))),
        ])?;
        let context = Context::from_pairs([
            ("task".to_string(), RestrictedExpression::new_entity_uid(uid(&types.task, &self.task.id))),
            ("tool".to_string(), string(self.tool)),
            ("scopes".to_string(), RestrictedExpression::new_set(self.scopes.iter().map(|s| string(s)))),
            ("ttl_seconds".to_string(), RestrictedExpression::new_long(self.ttl_seconds)),
            ("now".to_string(), clock),
        ])
        .map_err(|e| error(&e))?;
        let action = uid(&types.action, self.action);
        let principal = uid(&types.agent, &self.agent.name);
        Request::new(principal, action, self.role_uid(types), context, schema).map_err(|e| error(&e))
    }

    fn role_uid(&self, types: &Types) -> EntityUid {
        uid(&types.role, &format!("{}/{}", self.role.provider, self.role.role))
    }

    /// The entities: the agent, the role and its provider, the task. They
    /// are built only from what [`EntityFacts`] holds, so a set built once
    /// serves every request with equal facts ([`EntityCache`]).
    pub(super) fn entities(&self, schema: Option<&Schema>) -> Result<Entities, PolicyError> {
        let error = |e: &dyn std::fmt::Display| PolicyError::Request(e.to_string());
        let types = types()?;
        let agent_uid = uid(&types.agent, &self.agent.name);
        let provider_uid = uid(&types.provider, self.role.provider);
        let role_uid = self.role_uid(types);
        let task_uid = uid(&types.task, &self.task.id);

        let agent = Entity::new(
            agent_uid,
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
            role_uid,
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
            task_uid,
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
        Entities::from_entities([agent, provider, role, task], schema).map_err(|e| error(&e))
    }

    /// A hash of everything the entities are built from.
    fn entity_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let agent = self.agent;
        (&agent.name, &agent.owner, &agent.team, &agent.risk_tier, &agent.description).hash(&mut hasher);
        (self.role.provider, self.role.role, self.role.shape).hash(&mut hasher);
        let task = self.task;
        (&task.id, &task.agent).hash(&mut hasher);
        let context = &task.context;
        (&context.purpose, &context.environment, &context.data_classification, &context.ticket)
            .hash(&mut hasher);
        context.labels.hash(&mut hasher);
        hasher.finish()
    }
}

/// What a request's entities are built from, kept beside a cached set so
/// that the set is used only for requests with exactly these facts.
struct EntityFacts {
    agent: Agent,
    provider: String,
    role: String,
    shape: String,
    task_id: String,
    task_agent: String,
    context: TaskContext,
}

impl EntityFacts {
    fn of(facts: &GrantFacts<'_>) -> Self {
        Self {
            agent: facts.agent.clone(),
            provider: facts.role.provider.to_owned(),
            role: facts.role.role.to_owned(),
            shape: facts.role.shape.to_owned(),
            task_id: facts.task.id.clone(),
            task_agent: facts.task.agent.clone(),
            context: facts.task.context.clone(),
        }
    }

    fn matches(&self, facts: &GrantFacts<'_>) -> bool {
        self.agent == *facts.agent
            && self.provider == facts.role.provider
            && self.role == facts.role.role
            && self.shape == facts.role.shape
            && self.task_id == facts.task.id
            && self.task_agent == facts.task.agent
            && self.context == facts.task.context
    }
}

/// The most entity sets kept; past it the cache starts again empty.
const ENTITY_CACHE_SIZE: usize = 1024;

/// Entity sets built for earlier requests. Building one (four entities,
/// their attributes evaluated, the transitive closure of their parents)
/// cost more than the policy evaluation itself, and an agent issues for
/// the same task and role again and again. A set is taken only when every
/// fact it was built from is equal to the request's ([`EntityFacts`]), so
/// a changed agent, task or role gets a fresh set; what changes per call
/// (tool, scopes, lifetime, clock) is in the request's context, built
/// every time.
#[derive(Default)]
pub(super) struct EntityCache {
    /// By [`GrantFacts::entity_hash`]; read and written by every decision,
    /// held only for a lookup or an insert.
    sets: std::sync::Mutex<std::collections::HashMap<u64, (EntityFacts, Arc<Entities>)>>,
}

impl EntityCache {
    /// The entities for `facts`: a cached set built from equal facts, or
    /// a new one (then cached).
    pub(super) fn entities(&self, facts: &GrantFacts<'_>) -> Result<Arc<Entities>, PolicyError> {
        let hash = facts.entity_hash();
        if let Some((built_from, entities)) = self.lock().get(&hash)
            && built_from.matches(facts)
        {
            return Ok(entities.clone());
        }
        let entities = Arc::new(facts.entities(None)?);
        let mut sets = self.lock();
        if sets.len() >= ENTITY_CACHE_SIZE {
            sets.clear();
        }
        sets.insert(hash, (EntityFacts::of(facts), entities.clone()));
        Ok(entities)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, (EntityFacts, Arc<Entities>)>> {
        self.sets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
