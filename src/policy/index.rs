//! Choosing, per request, the policies that can apply to it.
//!
//! Cedar's authorizer evaluates every policy it is given. A policy whose
//! principal scope is `principal == P` is false, without error, for any
//! request whose principal is not `P`: Cedar evaluates the condition as
//! `principal-scope && action-scope && resource-scope && when…`, and `&&`
//! stops at the first `false`, so the body is never reached and cannot
//! error. The same holds for `resource == R`. Such a policy is neither
//! satisfied nor erroring for those requests, so leaving it out changes
//! neither the decision nor the policies named in it (nor the errors).
//!
//! Only literal `==` scopes are indexed. `in`, `is` and `is … in` depend on
//! the entity hierarchy or type, and an unconstrained scope matches
//! anything: those policies are always evaluated.
//!
//! Each policy sits in exactly one bucket (keyed by both `==` entities
//! when it has both), so the candidates for a request are the union of four
//! disjoint lists and never hold a policy twice.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cedar_policy::{EntityUid, Policy, PolicySet, PrincipalConstraint, ResourceConstraint};

use super::PolicyError;

/// How many per-(principal, resource) sets are kept. A fleet has far fewer
/// live agent/role pairs than this; past it the cache is emptied and
/// refilled, so memory stays bounded whatever requests come in.
const CACHE_CAPACITY: usize = 4096;

type Pair = (EntityUid, EntityUid);

/// The loaded policies, bucketed by their literal `==` scopes. Built once
/// per loaded set.
pub(super) struct PolicyIndex {
    /// Neither scope is a literal `==`.
    always: Vec<Policy>,
    /// `principal == P`, resource not a literal `==`.
    by_principal: HashMap<EntityUid, Vec<Policy>>,
    /// `resource == R`, principal not a literal `==`.
    by_resource: HashMap<EntityUid, Vec<Policy>>,
    /// `principal == P` and `resource == R`.
    by_pair: HashMap<Pair, Vec<Policy>>,
    /// Candidate sets already assembled, per (principal, resource).
    cache: RwLock<HashMap<Pair, Arc<PolicySet>>>,
}

impl PolicyIndex {
    pub(super) fn new(set: &PolicySet) -> Self {
        let mut index = Self {
            always: Vec::new(),
            by_principal: HashMap::new(),
            by_resource: HashMap::new(),
            by_pair: HashMap::new(),
            cache: RwLock::new(HashMap::new()),
        };
        for policy in set.policies() {
            let principal = match policy.principal_constraint() {
                PrincipalConstraint::Eq(uid) => Some(uid),
                PrincipalConstraint::Any
                | PrincipalConstraint::In(_)
                | PrincipalConstraint::Is(_)
                | PrincipalConstraint::IsIn(_, _) => None,
            };
            let resource = match policy.resource_constraint() {
                ResourceConstraint::Eq(uid) => Some(uid),
                ResourceConstraint::Any
                | ResourceConstraint::In(_)
                | ResourceConstraint::Is(_)
                | ResourceConstraint::IsIn(_, _) => None,
            };
            let bucket = match (principal, resource) {
                (Some(p), Some(r)) => index.by_pair.entry((p, r)).or_default(),
                (Some(p), None) => index.by_principal.entry(p).or_default(),
                (None, Some(r)) => index.by_resource.entry(r).or_default(),
                (None, None) => &mut index.always,
            };
            bucket.push(policy.clone());
        }
        index
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
        let set = Arc::new(self.assemble(&key)?);
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
    pub(super) fn assemble(&self, key: &Pair) -> Result<PolicySet, PolicyError> {
        let (principal, resource) = key;
        let empty = Vec::new();
        let chosen = self
            .always
            .iter()
            .chain(self.by_principal.get(principal).unwrap_or(&empty))
            .chain(self.by_resource.get(resource).unwrap_or(&empty))
            .chain(self.by_pair.get(key).unwrap_or(&empty));
        // The ids are unique in the loaded set and each policy is in one
        // bucket, so adding cannot fail; if it somehow did, fail closed.
        PolicySet::from_policies(chosen.cloned())
            .map_err(|e| PolicyError::Evaluation(format!("candidate policies: {e}")))
    }
}
