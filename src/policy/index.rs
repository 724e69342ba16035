//! Choosing, per request, the policies that can apply to it.
//!
//! Cedar's authorizer evaluates every policy it is given. It evaluates a
//! policy as `principal-scope && action-scope && resource-scope && when…`,
//! and `&&` stops at the first `false`. A scope never errors (it only
//! compares the request's principal or resource with an entity or a type),
//! so a policy whose principal or resource scope is false for a request is
//! neither satisfied nor erroring for it: leaving it out changes neither
//! the decision nor the policies named in it (nor the errors).
//!
//! Each scope is indexed by what it compares with:
//!
//! - `== E` by E: true only for E itself.
//! - `in E` by E: true when E is the entity itself (`in` is reflexive) or
//!   one of its ancestors in the request's entities.
//! - `is T` by T: true when the entity's type is T.
//! - `is T in E` by E, the type checked when the candidates are assembled.
//! - unconstrained: always a candidate.
//!
//! A request's entities are built by [`super::request`] alone, and have a
//! fixed shape, which is what makes `in` indexable:
//!
//! - the principal is a `Writ::Agent`, and an agent's entity has no
//!   parents, so `principal in E` holds only for E the principal itself;
//! - the resource is a `Writ::Role` with id `"<provider>/<role>"`, and its
//!   only parent is its `Writ::Provider::"<provider>"`, which has no
//!   parents; so `resource in E` holds only for E the role or its
//!   provider. The provider is not read back from the role's id (a name
//!   with a `/` makes the split ambiguous): every `Writ::Provider` whose
//!   id is the role id's text before one of its `/`s is looked up, a
//!   superset of the one parent.
//!
//! `index_tests::request_entities_have_the_parents_the_index_assumes`
//! builds requests through [`super::GrantFacts::build`] and fails if any
//! entity gets another parent. A request of any other shape (not an agent
//! on a role) gets every policy.
//!
//! Each policy sits in exactly one bucket, keyed by its two scopes, and the
//! keys looked up for a request are distinct, so the candidates never hold
//! a policy twice.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    EntityId, EntityTypeName, EntityUid, Policy, PolicySet, PrincipalConstraint, ResourceConstraint,
};

use super::PolicyError;
use super::request::types;

/// How many per-(principal, resource) sets are kept. A fleet has far fewer
/// live agent/role pairs than this; past it the cache is emptied and
/// refilled, so memory stays bounded whatever requests come in.
const CACHE_CAPACITY: usize = 4096;

type Pair = (EntityUid, EntityUid);

/// What one scope (principal or resource) of a policy is indexed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
}

/// A scope's key, and the type an `is T in E` scope also requires.
fn key(
    eq: Option<EntityUid>,
    is: Option<EntityTypeName>,
    inside: Option<EntityUid>,
) -> (Key, Option<EntityTypeName>) {
    match (eq, is, inside) {
        (Some(uid), _, _) => (Key::Eq(uid), None),
        (None, Some(kind), Some(uid)) => (Key::In(uid), Some(kind)),
        (None, None, Some(uid)) => (Key::In(uid), None),
        (None, Some(kind), None) => (Key::Is(kind), None),
        (None, None, None) => (Key::Any, None),
    }
}

fn principal_key(constraint: PrincipalConstraint) -> (Key, Option<EntityTypeName>) {
    match constraint {
        PrincipalConstraint::Any => key(None, None, None),
        PrincipalConstraint::Eq(uid) => key(Some(uid), None, None),
        PrincipalConstraint::In(uid) => key(None, None, Some(uid)),
        PrincipalConstraint::Is(kind) => key(None, Some(kind), None),
        PrincipalConstraint::IsIn(kind, uid) => key(None, Some(kind), Some(uid)),
    }
}

fn resource_key(constraint: ResourceConstraint) -> (Key, Option<EntityTypeName>) {
    match constraint {
        ResourceConstraint::Any => key(None, None, None),
        ResourceConstraint::Eq(uid) => key(Some(uid), None, None),
        ResourceConstraint::In(uid) => key(None, None, Some(uid)),
        ResourceConstraint::Is(kind) => key(None, Some(kind), None),
        ResourceConstraint::IsIn(kind, uid) => key(None, Some(kind), Some(uid)),
    }
}

/// One policy in its bucket, with the types its `is T in E` scopes require.
struct Entry {
    policy: Policy,
    principal_type: Option<EntityTypeName>,
    resource_type: Option<EntityTypeName>,
}

/// The loaded policies, bucketed by their scopes. Built once per loaded set.
pub(super) struct PolicyIndex {
    /// Every policy, for a request whose shape the index does not know.
    all: Arc<PolicySet>,
    buckets: HashMap<(Key, Key), Vec<Entry>>,
    /// Candidate sets already assembled, per (principal, resource).
    cache: RwLock<HashMap<Pair, Arc<PolicySet>>>,
}

/// The entities a Writ request's resource can be `in` besides itself: the
/// providers it can be a role of (see the module docs). `None` when the
/// resource is not a role, whose ancestors the index does not know.
pub(super) fn resource_ancestors(resource: &EntityUid) -> Result<Option<Vec<EntityUid>>, PolicyError> {
    let types = types()?;
    if resource.type_name() != &types.role {
        return Ok(None);
    }
    let provider = &types.provider;
    let id = resource.id().unescaped();
    Ok(Some(
        id.match_indices('/')
            .map(|(at, _)| EntityUid::from_type_name_and_id(provider.clone(), EntityId::new(&id[..at])))
            .collect(),
    ))
}

impl PolicyIndex {
    pub(super) fn new(set: &PolicySet) -> Self {
        let mut buckets: HashMap<(Key, Key), Vec<Entry>> = HashMap::new();
        for policy in set.policies() {
            let (principal, principal_type) = principal_key(policy.principal_constraint());
            let (resource, resource_type) = resource_key(policy.resource_constraint());
            buckets.entry((principal, resource)).or_default().push(Entry {
                policy: policy.clone(),
                principal_type,
                resource_type,
            });
        }
        Self { all: Arc::new(set.clone()), buckets, cache: RwLock::new(HashMap::new()) }
    }

    /// The policies that can apply to a request for `principal` on
    /// `resource`, as a set for Cedar's authorizer.
    pub(super) fn candidates(
        &self,
        principal: &EntityUid,
        resource: &EntityUid,
    ) -> Result<Arc<PolicySet>, PolicyError> {
        let key = (principal.clone(), resource.clone());
        let cached = self.cache.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&key).cloned();
        if let Some(set) = cached {
            return Ok(set);
        }
        let set = self.assemble(&key)?;
        // The cache only ever holds complete sets; a panic elsewhere while
        // it was held leaves nothing half-written.
        let mut cache = self.cache.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, set.clone());
        Ok(set)
    }

    /// Builds the candidate set for one (principal, resource), uncached.
    pub(super) fn assemble(&self, key: &Pair) -> Result<Arc<PolicySet>, PolicyError> {
        let (principal, resource) = key;
        let ancestors = match resource_ancestors(resource)? {
            Some(ancestors) if principal.type_name() == &types()?.agent => ancestors,
            // Not a request `request.rs` builds: no scope is left out.
            _ => return Ok(self.all.clone()),
        };
        // An agent has no ancestors: `principal in E` only for itself.
        let principal_keys = [
            Key::Any,
            Key::Eq(principal.clone()),
            Key::In(principal.clone()),
            Key::Is(principal.type_name().clone()),
        ];
        let mut resource_keys = vec![
            Key::Any,
            Key::Eq(resource.clone()),
            Key::In(resource.clone()),
            Key::Is(resource.type_name().clone()),
        ];
        // Distinct: each is a provider with a different id, never the role.
        resource_keys.extend(ancestors.into_iter().map(Key::In));
        let mut chosen = Vec::new();
        for p in &principal_keys {
            for r in &resource_keys {
                let Some(bucket) = self.buckets.get(&(p.clone(), r.clone())) else { continue };
                chosen.extend(
                    bucket
                        .iter()
                        .filter(|entry| {
                            entry.principal_type.as_ref().is_none_or(|t| t == principal.type_name())
                        })
                        .filter(|entry| {
                            entry.resource_type.as_ref().is_none_or(|t| t == resource.type_name())
                        })
                        .map(|entry| entry.policy.clone()),
                );
            }
        }
        // The ids are unique in the loaded set and each policy is in one
        // bucket, so adding cannot fail; if it somehow did, fail closed.
        PolicySet::from_policies(chosen)
            .map(Arc::new)
            .map_err(|e| PolicyError::Evaluation(format!("candidate policies: {e}")))
    }
}
