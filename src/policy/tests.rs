use chrono::TimeZone;

use super::*;
use crate::model::{Task, TaskContext, TaskState};
use crate::principals::Agent;

const POLICIES: &str = include_str!("../dev/example.cedar");

fn agent(name: &str) -> Agent {
    Agent {
        name: name.into(),
        owner: "o@example.com".into(),
        description: String::new(),
        team: String::new(),
        risk_tier: "low".into(),
    }
}

fn task(environment: &str, classification: &str) -> Task {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    Task {
        id: "t-1".into(),
        agent: "demo-agent".into(),
        context: TaskContext {
            environment: environment.into(),
            data_classification: classification.into(),
            labels: [("team".to_string(), "billing".to_string())].into(),
            ..TaskContext::default()
        },
        state: TaskState::Open,
        created_at: now,
        created_by: "wf".into(),
        deadline: now + chrono::Duration::hours(1),
        closed: None,
    }
}

fn decide(engine: &PolicyEngine, agent: &Agent, task: &Task, role: &str, tool: &str) -> Decision {
    let facts = GrantFacts {
        action: "issue",
        agent,
        task,
        role: RoleFacts { provider: "tokens", role, shape: "revocable" },
        tool,
        scopes: &[],
        ttl_seconds: 300,
        now: task.created_at,
    };
    engine.decide(&facts).unwrap()
}

use chrono::Utc;

#[test]
fn permits_name_the_deciding_policy() {
    let engine = PolicyEngine::from_text(POLICIES).unwrap();
    let decision =
        decide(&engine, &agent("demo-agent"), &task("dev", "internal"), "orders-read", "orders.lookup");
    assert_eq!(decision, Decision::Allow { policies: vec!["demo-agent-reads-orders".into()] });
}

#[test]
fn default_is_deny_with_no_policy_named() {
    let engine = PolicyEngine::from_text(POLICIES).unwrap();
    let decision = decide(&engine, &agent("other-agent"), &task("dev", "internal"), "orders-read", "x");
    assert_eq!(decision, Decision::Deny { policies: vec![] });
    let wrong_tool =
        decide(&engine, &agent("demo-agent"), &task("dev", "internal"), "orders-admin", "orders.lookup");
    assert_eq!(wrong_tool, Decision::Deny { policies: vec![] });
}

#[test]
fn forbid_overrides_permit_and_is_named() {
    let engine = PolicyEngine::from_text(POLICIES).unwrap();
    let decision = decide(&engine, &agent("demo-agent"), &task("dev", "restricted"), "orders-read", "x");
    assert_eq!(decision, Decision::Deny { policies: vec!["no-restricted-data".into()] });
}

#[test]
fn task_labels_are_tags_and_time_is_in_context() {
    let text = r#"
        @id("billing-team-business-hours")
        permit (principal, action == Writ::Action::"issue", resource in Writ::Provider::"tokens")
        when {
          context.task.hasTag("team") && context.task.getTag("team") == "billing" &&
          context.now.hour_utc >= 9 && context.now.hour_utc < 17 && context.ttl_seconds <= 900
        };
    "#;
    let engine = PolicyEngine::from_text(text).unwrap();
    let decision = decide(&engine, &agent("any"), &task("prod", "internal"), "orders-read", "x");
    assert_eq!(decision, Decision::Allow { policies: vec!["billing-team-business-hours".into()] });
    let mut night = task("prod", "internal");
    night.created_at = Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 0).unwrap();
    assert_eq!(
        decide(&engine, &agent("any"), &night, "orders-read", "x"),
        Decision::Deny { policies: vec![] }
    );
}

#[test]
fn a_cached_entity_set_serves_only_equal_facts() {
    // One engine, so the second and later decisions may find a cached set:
    // each changed fact must still change the decision.
    let engine = PolicyEngine::from_text(POLICIES).unwrap();
    let demo = agent("demo-agent");
    let allowed = Decision::Allow { policies: vec!["demo-agent-reads-orders".into()] };
    assert_eq!(decide(&engine, &demo, &task("dev", "internal"), "orders-read", "x"), allowed);
    assert_eq!(decide(&engine, &demo, &task("dev", "internal"), "orders-read", "x"), allowed);
    // The task's context changed (same id): the forbid sees it.
    assert_eq!(
        decide(&engine, &demo, &task("dev", "restricted"), "orders-read", "x"),
        Decision::Deny { policies: vec!["no-restricted-data".into()] }
    );
    assert_eq!(decide(&engine, &demo, &task("dev", "internal"), "orders-read", "x"), allowed);

    let text = r#"
        @id("low-risk-billing")
        permit (principal, action == Writ::Action::"issue", resource in Writ::Provider::"tokens")
        when {
          principal.risk_tier == "low" &&
          context.task.hasTag("team") && context.task.getTag("team") == "billing"
        };
    "#;
    let engine = PolicyEngine::from_text(text).unwrap();
    let allowed = Decision::Allow { policies: vec!["low-risk-billing".into()] };
    let denied = Decision::Deny { policies: vec![] };
    let billing = task("prod", "internal");
    assert_eq!(decide(&engine, &demo, &billing, "orders-read", "x"), allowed);
    // The agent's record changed (same name).
    let risky = Agent { risk_tier: "high".into(), ..demo.clone() };
    assert_eq!(decide(&engine, &risky, &billing, "orders-read", "x"), denied);
    // A label changed (same task id).
    let mut other_team = billing.clone();
    other_team.context.labels.insert("team".into(), "support".into());
    assert_eq!(decide(&engine, &demo, &other_team, "orders-read", "x"), denied);
    assert_eq!(decide(&engine, &demo, &billing, "orders-read", "x"), allowed);
}

#[test]
fn policies_that_do_not_fit_the_schema_are_refused() {
    let typo = r#"permit (principal, action, resource) when { context.task.enviroment == "dev" };"#;
    assert!(matches!(PolicyEngine::from_text(typo), Err(PolicyError::Invalid(_))));
    let garbage = "permit (principal, action, resource";
    assert!(matches!(PolicyEngine::from_text(garbage), Err(PolicyError::Parse { .. })));
}

#[test]
fn files_and_directories_load_and_duplicate_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.cedar"), POLICIES).unwrap();
    std::fs::write(dir.path().join("ignored.txt"), "not cedar").unwrap();
    let engine = PolicyEngine::load(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(engine.len(), 5);
    std::fs::write(dir.path().join("b.cedar"), POLICIES).unwrap();
    assert!(PolicyEngine::load(&[dir.path().to_path_buf()]).is_err());
}

/// `decide` builds requests without checking them against the schema; this
/// checks that what it builds fits it, for every action and with the
/// optional parts (scopes, labels) filled in.
#[test]
fn requests_and_entities_fit_the_schema() {
    let schema = schema().unwrap();
    let agent = agent("demo-agent");
    let task = task("prod", "restricted");
    for action in ["issue", "renew"] {
        let facts = GrantFacts {
            action,
            agent: &agent,
            task: &task,
            role: RoleFacts { provider: "tokens", role: "orders-read", shape: "expiry_only" },
            tool: "orders.lookup",
            scopes: &["orders:read".to_string(), "orders:write".to_string()],
            ttl_seconds: 300,
            now: task.created_at,
        };
        facts.build(Some(&schema)).unwrap_or_else(|error| panic!("{action}: {error}"));
    }
    let wrong = GrantFacts {
        action: "delete",
        agent: &agent,
        task: &task,
        role: RoleFacts { provider: "tokens", role: "orders-read", shape: "revocable" },
        tool: "x",
        scopes: &[],
        ttl_seconds: 1,
        now: task.created_at,
    };
    assert!(wrong.build(Some(&schema)).is_err(), "the check can fail");
}

#[test]
fn step_up_permits_ask_for_their_group_and_quorum() {
    let engine = PolicyEngine::from_text(POLICIES).unwrap();
    let decision =
        decide(&engine, &agent("demo-agent"), &task("prod", "internal"), "orders-admin", "orders.refund");
    let step_up = StepUp { group: "orders-approvers".into(), quorum: 2 };
    assert_eq!(decision, Decision::StepUp { policies: vec!["prod-refunds-need-approval".into()], step_up });
    assert_eq!(decision.outcome(), "step_up");
    // A forbid still wins over a step-up permit.
    let restricted =
        decide(&engine, &agent("demo-agent"), &task("prod", "restricted"), "orders-admin", "orders.refund");
    assert_eq!(restricted, Decision::Deny { policies: vec!["no-restricted-data".into()] });
    assert_eq!(engine.approver_groups().into_iter().collect::<Vec<_>>(), vec!["orders-approvers"]);
}

const BROAD: &str = r#"
@id("broad") permit (principal, action, resource == Writ::Role::"tokens/orders-admin");
"#;

#[test]
fn one_step_up_permit_is_enough_to_need_approval() {
    // A plain permit beside a step-up permit does not bypass the approval:
    // the decision needs it if any deciding permit asks for it.
    let engine = PolicyEngine::from_text(&format!("{POLICIES}{BROAD}")).unwrap();
    let decision =
        decide(&engine, &agent("demo-agent"), &task("prod", "internal"), "orders-admin", "orders.refund");
    assert!(
        matches!(&decision, Decision::StepUp { policies, step_up }
            if policies == &["broad".to_string(), "prod-refunds-need-approval".to_string()] && step_up.quorum == 2),
        "{decision:?}"
    );
    let elsewhere =
        decide(&engine, &agent("demo-agent"), &task("dev", "internal"), "orders-admin", "orders.lookup");
    assert_eq!(elsewhere, Decision::Allow { policies: vec!["broad".into()] });
}

#[test]
fn step_ups_of_one_group_take_the_largest_quorum_and_of_two_groups_fail_closed() {
    let same = r#"
        @id("one") @step_up("dba") permit (principal, action, resource == Writ::Role::"tokens/orders-admin");
        @id("three") @step_up("dba") @quorum("3") permit (principal, action, resource);
    "#;
    let engine = PolicyEngine::from_text(same).unwrap();
    let decision = decide(&engine, &agent("a"), &task("dev", "internal"), "orders-admin", "x");
    assert!(
        matches!(&decision, Decision::StepUp { step_up, .. } if step_up.quorum == 3 && step_up.group == "dba")
    );
    let two = r#"
        @id("one") @step_up("dba") permit (principal, action, resource == Writ::Role::"tokens/orders-admin");
        @id("two") @step_up("security") permit (principal, action, resource);
    "#;
    let engine = PolicyEngine::from_text(two).unwrap();
    let facts = GrantFacts {
        action: "issue",
        agent: &agent("a"),
        task: &task("dev", "internal"),
        role: RoleFacts { provider: "tokens", role: "orders-admin", shape: "revocable" },
        tool: "x",
        scopes: &[],
        ttl_seconds: 300,
        now: task("dev", "internal").created_at,
    };
    let error = engine.decide(&facts).unwrap_err().to_string();
    assert!(error.contains("different groups (dba and security)"), "{error}");
}

#[test]
fn step_up_annotations_are_checked_when_loaded() {
    for (text, reason) in [
        (r#"@id("f") @step_up("dba") forbid (principal, action, resource);"#, "belongs on a permit"),
        (r#"@id("q") @quorum("2") permit (principal, action, resource);"#, "@quorum needs @step_up"),
        (r#"@id("z") @step_up("dba") @quorum("0") permit (principal, action, resource);"#, "from 1 to 16"),
        (r#"@id("x") @step_up("dba") @quorum("two") permit (principal, action, resource);"#, "from 1 to 16"),
        (r#"@id("g") @step_up("db a") permit (principal, action, resource);"#, "must name an approver group"),
        (r#"@id("e") @step_up("") permit (principal, action, resource);"#, "must name an approver group"),
    ] {
        let error = PolicyEngine::from_text(text).unwrap_err().to_string();
        assert!(error.contains(reason) && error.contains("line 1"), "{text}: {error}");
    }
}

#[test]
fn a_set_naming_an_unconfigured_group_is_refused_now_and_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.cedar"), POLICIES).unwrap();
    let known = |names: &[&str]| names.iter().map(|name| name.to_string()).collect();
    let error = PolicyEngine::load(&[dir.path().to_path_buf()])
        .unwrap()
        .require_groups(known(&["dba"]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("\"orders-approvers\", which is not in [approvals.groups] (configured: dba)"),
        "{error}"
    );
    let engine = PolicyEngine::load(&[dir.path().to_path_buf()])
        .unwrap()
        .require_groups(known(&["orders-approvers"]))
        .unwrap();
    let digest = engine.digest();
    std::fs::write(
        dir.path().join("b.cedar"),
        r#"@id("new") @step_up("nobody") permit (principal, action, resource);"#,
    )
    .unwrap();
    assert!(engine.reload().unwrap_err().to_string().contains("\"nobody\""));
    assert_eq!(engine.digest(), digest, "the running set is kept");
}
