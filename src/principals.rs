//! Who a verified identity is: an agent, a service caller with roles, or
//! nobody (a *sighting*).
//!
//! Identities map to principals by issuer + subject (a direct lookup) or
//! by issuer + claim values (checked in configuration order). A principal
//! that names a subject and claims needs both to match.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::config::{IdentityMatch, ServiceConfig, ServiceRole};
use crate::identity::Identity;
use crate::model::AgentRecord;

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
        matches(&self.identity, identity)
    }
}

/// The principals, indexed for lookup: the registered agents (the store's
/// inventory) and the services declared in configuration.
pub struct Directory {
    /// (issuer, subject) of rules that name a subject.
    by_subject: HashMap<(String, String), Vec<usize>>,
    /// Rules matched by claims alone, in order.
    by_claims: Vec<usize>,
    rules: Vec<Rule>,
    /// Every agent's record by name, in name order (listings page through
    /// them), retired ones included, each with the principal it resolves as.
    agents: BTreeMap<String, (Arc<Agent>, AgentRecord)>,
    /// The identities of retired agents, which are refused by name rather
    /// than treated as never seen.
    retired: Vec<(IdentityMatch, String)>,
    /// Services identified by a client certificate, in configuration order.
    certificates: Vec<(crate::tls::CertificateMatch, Arc<Service>)>,
}

impl Directory {
    /// Services, then agents from their records (retired ones resolve to
    /// nothing). An identity that two rules match resolves to the first:
    /// services in configuration order (so no agent binding can shadow a
    /// workflow engine or an operator), then agents in name order.
    pub fn new(records: &[AgentRecord], services: &[ServiceConfig]) -> Self {
        let mut rules = Vec::new();
        let mut agents = BTreeMap::new();
        let mut retired = Vec::new();
        let mut certificates = Vec::new();
        for config in services {
            let service = Arc::new(Service {
                name: config.name.clone(),
                roles: config.roles.iter().copied().collect(),
            });
            if let Some(certificate) = &config.certificate {
                certificates.push((certificate.clone(), service.clone()));
            }
            if let Some(identity) = &config.identity {
                rules.push(Rule { identity: identity.clone(), principal: Principal::Service(service) });
            }
        }
        let mut sorted: Vec<&AgentRecord> = records.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        for record in sorted {
            let agent = Arc::new(Agent {
                name: record.name.clone(),
                owner: record.owner.clone(),
                team: record.team.clone(),
                description: record.description.clone(),
                risk_tier: record.risk_tier.clone(),
            });
            agents.insert(record.name.clone(), (agent.clone(), record.clone()));
            if record.retired.is_some() {
                retired.push((record.identity.clone(), record.name.clone()));
            } else {
                rules.push(Rule { identity: record.identity.clone(), principal: Principal::Agent(agent) });
            }
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
        Self { by_subject, by_claims, rules, agents, retired, certificates }
    }

    /// The service a verified client certificate identifies: the first
    /// whose `certificate` names it. Agents are never identified so.
    pub fn resolve_certificate(
        &self,
        certificate: &crate::tls::peer::ClientCertificate,
    ) -> Option<&Arc<Service>> {
        self.certificates.iter().find(|(binding, _)| binding.matches(certificate)).map(|(_, service)| service)
    }

    /// The principal an identity maps to, if any; a retired agent's
    /// identity maps to none (see [`Self::retired_agent`]).
    pub fn resolve(&self, identity: &Identity) -> Option<&Principal> {
        let direct =
            self.by_subject.get(&(identity.issuer.clone(), identity.subject.clone())).into_iter().flatten();
        direct
            .chain(self.by_claims.iter())
            .map(|&index| &self.rules[index])
            .find(|rule| rule.matches(identity))
            .map(|rule| &rule.principal)
    }

    /// The retired agent an identity that resolves to nothing belonged to.
    pub fn retired_agent(&self, identity: &Identity) -> Option<&str> {
        self.retired.iter().find(|(binding, _)| matches(binding, identity)).map(|(_, name)| name.as_str())
    }

    /// Whether an identity with this issuer and subject (and no claims)
    /// is bound to a principal, or was a retired agent's.
    pub fn recognises(&self, issuer: &str, subject: &str) -> bool {
        let identity =
            Identity { issuer: issuer.to_owned(), subject: subject.to_owned(), claims: Default::default() };
        self.resolve(&identity).is_some() || self.retired_agent(&identity).is_some()
    }

    /// A registered agent that is not retired.
    pub fn agent(&self, name: &str) -> Option<&Arc<Agent>> {
        self.agents.get(name).filter(|(_, record)| record.retired.is_none()).map(|(agent, _)| agent)
    }

    /// An agent's record, retired or not.
    pub fn record(&self, name: &str) -> Option<&AgentRecord> {
        self.agents.get(name).map(|(_, record)| record)
    }

    /// Every agent (retired ones too) with its record, in name order,
    /// starting after `after`.
    pub fn agents_after<'a>(
        &'a self,
        after: Option<&str>,
    ) -> impl Iterator<Item = (&'a Arc<Agent>, &'a AgentRecord)> + 'a {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |name| Bound::Excluded(name.to_owned()));
        self.agents.range((start, Bound::Unbounded)).map(|(_, (agent, record))| (agent, record))
    }

    /// Every agent that is not retired, in name order.
    pub fn active_agents(&self) -> impl Iterator<Item = &Arc<Agent>> + '_ {
        self.agents_after(None).filter(|(_, record)| record.retired.is_none()).map(|(agent, _)| agent)
    }

    /// The principal, if any, other than the agent `except`, whose
    /// binding overlaps `binding`: one token both would match. Retired
    /// agents count (their identity stays refused), services too.
    pub fn bound_elsewhere(&self, binding: &IdentityMatch, except: &str) -> Option<&str> {
        let active = self.rules.iter().map(|rule| (&rule.identity, rule.principal.name()));
        let retired = self.retired.iter().map(|(identity, name)| (identity, name.as_str()));
        active
            .chain(retired)
            .find(|(identity, name)| *name != except && overlap(identity, binding))
            .map(|(_, name)| name)
    }
}

/// Whether some token could match both bindings: the same issuer, subjects
/// that do not differ (one may be unset), and no claim both name with
/// different values.
pub fn overlap(a: &IdentityMatch, b: &IdentityMatch) -> bool {
    let subjects_agree = match (&a.subject, &b.subject) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    a.issuer == b.issuer
        && subjects_agree
        && a.claims.iter().all(|(claim, value)| b.claims.get(claim).is_none_or(|other| other == value))
}

fn matches(binding: &IdentityMatch, identity: &Identity) -> bool {
    binding.issuer == identity.issuer
        && binding.subject.as_ref().is_none_or(|subject| *subject == identity.subject)
        && binding.claims.iter().all(|(claim, expected)| {
            identity.claims.get(claim).and_then(Value::as_str) == Some(expected.as_str())
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::AgentConfig;

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
            identity: Some(IdentityMatch {
                issuer: "https://k8s".into(),
                subject: Some("system:serviceaccount:temporal:worker".into()),
                claims: BTreeMap::new(),
            }),
            certificate: None,
        };
        let at = chrono::DateTime::UNIX_EPOCH;
        Directory::new(&[agent.record(at), ci.record(at)], &[engine])
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
    fn overlapping_bindings_are_found() {
        let binding = |subject: Option<&str>, claims: &[(&str, &str)]| IdentityMatch {
            issuer: "https://k8s".into(),
            subject: subject.map(Into::into),
            claims: claims.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let exact = binding(Some("s"), &[]);
        assert!(overlap(&exact, &binding(Some("s"), &[("team", "x")])), "more claims still match the token");
        assert!(overlap(&exact, &binding(None, &[("team", "x")])), "claims alone may match it");
        assert!(!overlap(&exact, &binding(Some("t"), &[])));
        assert!(!overlap(&binding(None, &[("team", "x")]), &binding(None, &[("team", "y")])));
        assert!(!overlap(&exact, &IdentityMatch { issuer: "https://other".into(), ..exact.clone() }));
        let directory = directory();
        let shadow = IdentityMatch {
            issuer: "https://k8s".into(),
            subject: Some("system:serviceaccount:billing:bot".into()),
            claims: [("sub".to_string(), "system:serviceaccount:billing:bot".to_string())].into(),
        };
        assert_eq!(directory.bound_elsewhere(&shadow, "a-bot"), Some("billing-bot"));
        assert_eq!(directory.bound_elsewhere(&shadow, "billing-bot"), None, "its own binding");
        let engine = binding(Some("system:serviceaccount:temporal:worker"), &[]);
        assert_eq!(directory.bound_elsewhere(&engine, "a-bot"), Some("temporal"));
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
