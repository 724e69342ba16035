//! Who a verified identity is: an agent, a service caller with roles, or
//! nobody (a *sighting*).
//!
//! Identities map to principals by issuer + subject (a direct lookup) or
//! by issuer + claim values (checked in configuration order). A principal
//! that names a subject and claims needs both to match.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::config::{AgentConfig, IdentityMatch, ServiceConfig, ServiceRole};
use crate::identity::Identity;

/// A registered agent.
#[derive(Clone, Debug, PartialEq)]
pub struct Agent {
    pub name: String,
    pub owner: String,
    /// The team the agent belongs to; empty when none is declared.
    pub team: String,
    pub description: String,
    pub risk_tier: String,
}

/// A non-agent caller: a workflow engine, an operator, a resource server.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub name: String,
    pub roles: HashSet<ServiceRole>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Principal {
    Agent(Arc<Agent>),
    Service(Arc<Service>),
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Self::Agent(agent) => &agent.name,
            Self::Service(service) => &service.name,
        }
    }
}

struct Rule {
    identity: IdentityMatch,
    principal: Principal,
}

impl Rule {
    fn matches(&self, identity: &Identity) -> bool {
        self.identity.issuer == identity.issuer
            && self.identity.subject.as_ref().is_none_or(|subject| *subject == identity.subject)
            && self.identity.claims.iter().all(|(claim, expected)| {
                identity.claims.get(claim).and_then(Value::as_str) == Some(expected.as_str())
            })
    }
}

/// The configured principals, indexed for lookup.
pub struct Directory {
    /// (issuer, subject) of rules that name a subject.
    by_subject: HashMap<(String, String), Vec<usize>>,
    /// Rules matched by claims alone, in configuration order.
    by_claims: Vec<usize>,
    rules: Vec<Rule>,
    /// Agents by name, in name order (listings page through them), each
    /// with the identity it is recognised by.
    agents: BTreeMap<String, (Arc<Agent>, IdentityMatch)>,
}

impl Directory {
    pub fn new(agents: &[AgentConfig], services: &[ServiceConfig]) -> Self {
        let mut rules = Vec::new();
        let mut by_name = BTreeMap::new();
        for config in agents {
            let agent = Arc::new(Agent {
                name: config.name.clone(),
                owner: config.owner.clone(),
                team: config.team.clone(),
                description: config.description.clone(),
                risk_tier: config.risk_tier.clone(),
            });
            by_name.insert(agent.name.clone(), (agent.clone(), config.identity.clone()));
            rules.push(Rule { identity: config.identity.clone(), principal: Principal::Agent(agent) });
        }
        for config in services {
            let service = Arc::new(Service {
                name: config.name.clone(),
                roles: config.roles.iter().copied().collect(),
            });
            rules.push(Rule { identity: config.identity.clone(), principal: Principal::Service(service) });
        }
        let mut by_subject: HashMap<(String, String), Vec<usize>> = HashMap::new();
        let mut by_claims = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            match &rule.identity.subject {
                Some(subject) => {
                    by_subject.entry((rule.identity.issuer.clone(), subject.clone())).or_default().push(index)
                }
                None => by_claims.push(index),
            }
        }
        Self { by_subject, by_claims, rules, agents: by_name }
    }

    /// The principal an identity maps to, if any.
    pub fn resolve(&self, identity: &Identity) -> Option<&Principal> {
        let direct =
            self.by_subject.get(&(identity.issuer.clone(), identity.subject.clone())).into_iter().flatten();
        direct
            .chain(self.by_claims.iter())
            .map(|&index| &self.rules[index])
            .find(|rule| rule.matches(identity))
            .map(|rule| &rule.principal)
    }

    pub fn agent(&self, name: &str) -> Option<&Arc<Agent>> {
        self.agents.get(name).map(|(agent, _)| agent)
    }

    /// Every agent with its identity binding, in name order, starting
    /// after `after`.
    pub fn agents_after<'a>(
        &'a self,
        after: Option<&str>,
    ) -> impl Iterator<Item = (&'a Arc<Agent>, &'a IdentityMatch)> + 'a {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |name| Bound::Excluded(name.to_owned()));
        self.agents.range((start, Bound::Unbounded)).map(|(_, (agent, identity))| (agent, identity))
    }

    /// The identity an agent is recognised by.
    pub fn binding(&self, name: &str) -> Option<&IdentityMatch> {
        self.agents.get(name).map(|(_, identity)| identity)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn identity(issuer: &str, subject: &str, claims: Value) -> Identity {
        Identity {
            issuer: issuer.into(),
            subject: subject.into(),
            claims: claims.as_object().cloned().unwrap_or_default(),
        }
    }

    fn directory() -> Directory {
        let agent = AgentConfig {
            name: "billing-bot".into(),
            owner: "alice@example.com".into(),
            description: String::new(),
            team: String::new(),
            risk_tier: "low".into(),
            identity: IdentityMatch {
                issuer: "https://k8s".into(),
                subject: Some("system:serviceaccount:billing:bot".into()),
                claims: BTreeMap::new(),
            },
        };
        let ci = AgentConfig {
            name: "ci-agent".into(),
            owner: "bob@example.com".into(),
            description: String::new(),
            team: String::new(),
            risk_tier: "high".into(),
            identity: IdentityMatch {
                issuer: "https://ci".into(),
                subject: None,
                claims: [("repository".to_string(), "acme/app".to_string())].into(),
            },
        };
        let engine = ServiceConfig {
            name: "temporal".into(),
            roles: vec![ServiceRole::Workflow],
            identity: IdentityMatch {
                issuer: "https://k8s".into(),
                subject: Some("system:serviceaccount:temporal:worker".into()),
                claims: BTreeMap::new(),
            },
        };
        Directory::new(&[agent, ci], &[engine])
    }

    #[test]
    fn resolves_by_subject_and_by_claims() {
        let directory = directory();
        let bot = identity("https://k8s", "system:serviceaccount:billing:bot", Value::Null);
        assert_eq!(directory.resolve(&bot).map(Principal::name), Some("billing-bot"));
        let ci =
            identity("https://ci", "repo:acme/app:ref:main", serde_json::json!({"repository": "acme/app"}));
        assert_eq!(directory.resolve(&ci).map(Principal::name), Some("ci-agent"));
        let engine = identity("https://k8s", "system:serviceaccount:temporal:worker", Value::Null);
        assert!(
            matches!(directory.resolve(&engine), Some(Principal::Service(s)) if s.roles.contains(&ServiceRole::Workflow))
        );
    }

    #[test]
    fn the_issuer_must_match_too() {
        let directory = directory();
        let spoof = identity("https://other", "system:serviceaccount:billing:bot", Value::Null);
        assert!(directory.resolve(&spoof).is_none());
        let wrong_claim = identity("https://ci", "x", serde_json::json!({"repository": "evil/app"}));
        assert!(directory.resolve(&wrong_claim).is_none());
        let non_string = identity("https://ci", "x", serde_json::json!({"repository": ["acme/app"]}));
        assert!(directory.resolve(&non_string).is_none());
    }
}
