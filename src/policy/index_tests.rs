//! The indexed decision equals the full scan: the same outcome, the same
//! policies named, the same error, over generated policy sets and requests.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};

use super::*;
use crate::model::{Task, TaskContext, TaskState};
use crate::principals::Agent;

const AGENTS: usize = 4;
/// With a `/` in a provider's and a role's name, the role id `p0/x/r0` is
/// a role of `p0/x` in some requests and of `p0` in others.
const PROVIDERS: &[&str] = &["p0", "p1", "p2", "p0/x"];
const ROLES: &[&str] = &["r0", "r1", "r2", "x/r0"];

fn pick<'a>(rng: &mut fastrand::Rng, options: &[&'a str]) -> &'a str {
    options[rng.usize(..options.len())]
}

fn agent_uid(rng: &mut fastrand::Rng) -> String {
    format!("Writ::Agent::\"a{}\"", rng.usize(..AGENTS))
}

fn role_uid(rng: &mut fastrand::Rng) -> String {
    format!("Writ::Role::\"{}/{}\"", pick(rng, PROVIDERS), pick(rng, ROLES))
}

fn provider_uid(rng: &mut fastrand::Rng) -> String {
    format!("Writ::Provider::\"{}\"", pick(rng, PROVIDERS))
}

/// One policy: every scope form Cedar has for principal and resource,
/// permit and forbid, and conditions that hold, fail or error.
fn policy(rng: &mut fastrand::Rng, id: usize) -> String {
    let effect = if rng.u8(..4) == 0 { "forbid" } else { "permit" };
    let principal = match rng.u8(..8) {
        0 => "principal".to_string(),
        1 => "principal is Writ::Agent".to_string(),
        2 => format!("principal in {}", agent_uid(rng)),
        3 => format!("principal is Writ::Agent in {}", agent_uid(rng)),
        // Never true: an agent is in no role.
        4 => format!("principal in {}", role_uid(rng)),
        // Never true: the principal is always an agent.
        5 => "principal is Writ::Task".to_string(),
        _ => format!("principal == {}", agent_uid(rng)),
    };
    let action = pick(
        rng,
        &[
            "action",
            "action == Writ::Action::\"issue\"",
            "action == Writ::Action::\"renew\"",
            "action in [Writ::Action::\"issue\", Writ::Action::\"renew\"]",
        ],
    );
    let resource = match rng.u8(..12) {
        0 => "resource".to_string(),
        1 | 2 => format!("resource in {}", provider_uid(rng)),
        3 => format!("resource in {}", role_uid(rng)),
        4 => "resource is Writ::Role".to_string(),
        5 => format!("resource is Writ::Role in {}", provider_uid(rng)),
        6 => format!("resource is Writ::Role in {}", role_uid(rng)),
        // Never true: the resource is always a role.
        7 => "resource is Writ::Provider".to_string(),
        8 => format!("resource is Writ::Provider in {}", provider_uid(rng)),
        _ => format!("resource == {}", role_uid(rng)),
    };
    let condition = pick(
        rng,
        &[
            "",
            "when { context.task.environment == \"prod\" }",
            "when { principal.risk_tier == \"low\" }",
            "unless { context.ttl_seconds > 60 }",
            "when { context.task.hasTag(\"team\") && context.task.getTag(\"team\") == \"billing\" }",
            "when { resource.shape == \"revocable\" && context.tool == \"t0\" }",
            // Overflows, so errors, whenever the TTL is above 1.
            "when { context.ttl_seconds * 9223372036854775807 > 0 }",
        ],
    );
    format!("@id(\"p{id:03}\")\n{effect} ({principal}, {action}, {resource}) {condition};\n")
}

fn task(rng: &mut fastrand::Rng, agent: &str) -> Task {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    let labels =
        if rng.bool() { [("team".to_string(), "billing".to_string())].into() } else { BTreeMap::new() };
    Task {
        id: "t".into(),
        agent: agent.into(),
        context: TaskContext {
            environment: pick(rng, &["dev", "prod"]).into(),
            labels,
            ..TaskContext::default()
        },
        state: TaskState::Open,
        created_at: now,
        created_by: "wf".into(),
        deadline: now + chrono::Duration::hours(1),
        closed: None,
    }
}

fn outcome(result: Result<Decision, PolicyError>) -> Result<Decision, String> {
    result.map_err(|e| e.to_string())
}

#[test]
fn indexed_decisions_equal_the_full_scan() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_0011);
    let (mut allows, mut forbids, mut errors, mut narrowed) = (0, 0, 0, 0);
    let mut cases = 0;
    for _ in 0..300 {
        let count = rng.usize(1..40);
        let text: String = (0..count).map(|id| policy(&mut rng, id)).collect();
        let engine = PolicyEngine::from_text(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for _ in 0..20 {
            let name = format!("a{}", rng.usize(..AGENTS));
            let agent = Agent {
                name: name.clone(),
                owner: "o@example.com".into(),
                description: String::new(),
                team: String::new(),
                risk_tier: pick(&mut rng, &["low", "high"]).into(),
            };
            let task = task(&mut rng, &name);
            let provider = pick(&mut rng, PROVIDERS).to_string();
            let role = pick(&mut rng, ROLES).to_string();
            let facts = GrantFacts {
                action: pick(&mut rng, &["issue", "renew"]),
                agent: &agent,
                task: &task,
                role: RoleFacts {
                    provider: &provider,
                    role: &role,
                    shape: pick(&mut rng, &["revocable", "expiry_only"]),
                },
                tool: pick(&mut rng, &["t0", "t1"]),
                scopes: &[],
                ttl_seconds: if rng.bool() { 1 } else { 300 },
                now: task.created_at,
            };
            let full = outcome(engine.decide_scanning_all(&facts));
            // Twice through the index: the first fills the cache (for a new
            // pair), the second reads it.
            assert_eq!(outcome(engine.decide(&facts)), full, "{text}\n{facts:?}");
            assert_eq!(outcome(engine.decide(&facts)), full, "{text}\n{facts:?}");
            assert_eq!(outcome(engine.decide_uncached(&facts)), full, "{text}\n{facts:?}");
            match &full {
                Ok(Decision::Allow { .. } | Decision::StepUp { .. }) => allows += 1,
                Ok(Decision::Deny { policies }) if !policies.is_empty() => forbids += 1,
                Ok(Decision::Deny { .. }) => {}
                Err(_) => errors += 1,
            }
            let (request, _) = facts.build(None).unwrap();
            let key = (request.principal().unwrap().clone(), request.resource().unwrap().clone());
            let loaded = engine.loaded();
            if loaded.index.assemble(&key).unwrap().policies().count() < loaded.policies.policies().count() {
                narrowed += 1;
            }
            cases += 1;
        }
    }
    // The generator reaches every kind of outcome, and the index does leave
    // policies out, so the equality above is not vacuous.
    assert!(allows > 100 && forbids > 100 && errors > 100, "{allows} {forbids} {errors}");
    assert!(narrowed > cases / 2, "{narrowed} of {cases}");
}

/// Each scope form goes to its bucket, and a request gets the buckets of
/// its principal, its role, the role's provider and their types: `in` on
/// a provider or the role itself, `is` on the request's types only.
#[test]
fn scopes_are_indexed_by_what_they_compare_with() {
    let text = r#"
        @id("eq-both") permit (principal == Writ::Agent::"a", action, resource == Writ::Role::"p/r");
        @id("eq-principal") permit (principal == Writ::Agent::"a", action, resource in Writ::Provider::"p");
        @id("eq-resource") forbid (principal, action, resource == Writ::Role::"p/r");
        @id("in-principal") permit (principal in Writ::Agent::"b", action, resource);
        @id("is-in-principal") permit (principal is Writ::Agent in Writ::Agent::"a", action, resource);
        @id("in-role") permit (principal, action, resource in Writ::Role::"p/r");
        @id("in-provider") forbid (principal, action, resource in Writ::Provider::"p");
        @id("is-in-provider") permit (principal is Writ::Agent, action, resource is Writ::Role in Writ::Provider::"q");
        @id("is-role") forbid (principal, action, resource is Writ::Role);
        @id("is-provider") permit (principal, action, resource is Writ::Provider);
        @id("is-provider-in") permit (principal, action, resource is Writ::Provider in Writ::Provider::"p");
        @id("is-task") permit (principal is Writ::Task, action, resource);
        @id("any") permit (principal, action, resource);
        @id("other") permit (principal == Writ::Agent::"b", action, resource == Writ::Role::"p/s");
    "#;
    let engine = PolicyEngine::from_text(text).unwrap();
    let loaded = engine.loaded();
    let uid = |s: &str| s.parse::<cedar_policy::EntityUid>().unwrap();
    let ids = |principal: &str, resource: &str| {
        let mut ids: Vec<String> = loaded
            .index
            .assemble(&(uid(principal), uid(resource)))
            .unwrap()
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(r#"Writ::Agent::"a""#, r#"Writ::Role::"p/r""#),
        [
            "any",
            "eq-both",
            "eq-principal",
            "eq-resource",
            "in-provider",
            "in-role",
            "is-in-principal",
            "is-role"
        ]
    );
    assert_eq!(ids(r#"Writ::Agent::"c""#, r#"Writ::Role::"x/y""#), ["any", "is-role"]);
    assert_eq!(
        ids(r#"Writ::Agent::"b""#, r#"Writ::Role::"p/s""#),
        ["any", "in-principal", "in-provider", "is-role", "other"]
    );
    assert_eq!(
        ids(r#"Writ::Agent::"b""#, r#"Writ::Role::"q/s""#),
        ["any", "in-principal", "is-in-provider", "is-role"]
    );
    // `p/r/s` is a role of `p/r` or of `p`: both providers' buckets.
    assert_eq!(ids(r#"Writ::Agent::"c""#, r#"Writ::Role::"p/r/s""#), ["any", "in-provider", "is-role"]);
    // Not a request Writ builds: every policy.
    assert_eq!(ids(r#"Writ::Task::"c""#, r#"Writ::Role::"p/r""#).len(), 14);
    assert_eq!(ids(r#"Writ::Agent::"a""#, r#"Writ::Provider::"p""#).len(), 14);
}

/// The index's reading of `in` (module docs) rests on the entities
/// `GrantFacts::build` makes: an agent with no parents, a role whose only
/// parent is its provider, a provider with no parents. If that changes,
/// this fails, and the index must change with it.
#[test]
fn request_entities_have_the_parents_the_index_assumes() {
    let mut rng = fastrand::Rng::with_seed(0x0011_0002);
    let agent = Agent {
        name: "a0".into(),
        owner: "o@example.com".into(),
        description: String::new(),
        team: String::new(),
        risk_tier: "low".into(),
    };
    let task = task(&mut rng, "a0");
    for provider in PROVIDERS.iter().chain(&["", "a//b", "/"]) {
        for role in ROLES.iter().chain(&["", "/x"]) {
            let facts = GrantFacts {
                action: "issue",
                agent: &agent,
                task: &task,
                role: RoleFacts { provider, role, shape: "revocable" },
                tool: "t0",
                scopes: &[],
                ttl_seconds: 1,
                now: task.created_at,
            };
            let (request, entities) = facts.build(None).unwrap();
            let (principal, resource) = (request.principal().unwrap(), request.resource().unwrap());
            let uid = |s: &str| s.parse::<cedar_policy::EntityUid>().unwrap();
            let provider_uid = cedar_policy::EntityUid::from_type_name_and_id(
                "Writ::Provider".parse().unwrap(),
                cedar_policy::EntityId::new(provider),
            );
            assert_eq!(principal, &uid(r#"Writ::Agent::"a0""#));
            assert_eq!(resource.type_name().to_string(), "Writ::Role");
            let ancestors = |of: &cedar_policy::EntityUid| -> Vec<cedar_policy::EntityUid> {
                entities.ancestors(of).map(|a| a.cloned().collect()).unwrap_or_default()
            };
            assert_eq!(ancestors(principal), [], "an agent has no parents");
            assert_eq!(ancestors(resource), std::slice::from_ref(&provider_uid), "{provider} {role}");
            assert_eq!(ancestors(&provider_uid), [], "a provider has no parents");
            // What the index looks up covers the role's one parent.
            let looked_up = index::resource_ancestors(resource).unwrap().unwrap();
            assert!(looked_up.contains(&provider_uid), "{looked_up:?} {provider_uid}");
        }
    }
}
