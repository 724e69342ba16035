//! `writ policy test`: a file of cases (a request and the decision it
//! should get) run against a policy set, offline: no server, no store, no
//! issuer. Policies load exactly as Writ loads them ([`PolicyEngine::load`])
//! and every case is decided by the broker's own [`PolicyEngine::decide`],
//! so a set that passes here decides the same way in Writ.
//!
//! The format is documented in docs/policy.md ("Testing policies").

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{Decision, GrantFacts, PolicyEngine, RoleFacts};
use crate::model::{Task, TaskContext, TaskState};
use crate::principals::Agent;

/// Every case passed.
pub const EXIT_PASSED: i32 = 0;
/// At least one case got another decision than it expects.
pub const EXIT_FAILED: i32 = 1;
/// The cases file or the policy set is unusable; nothing was decided.
pub const EXIT_UNUSABLE: i32 = 2;

/// The time a case is decided at when it gives no `at`: a Monday, 10:00
/// UTC. Fixed, not the wall clock, so a run is reproducible.
pub const DEFAULT_AT: &str = "2026-01-05T10:00:00Z";
/// The TTL policy sees (`context.ttl_seconds`) when a case gives no `ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The task id when a case gives none.
pub const DEFAULT_TASK_ID: &str = "test-task";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    /// Policy files and directories, relative to the cases file.
    #[serde(default)]
    policies: Vec<PathBuf>,
    #[serde(default, rename = "case")]
    cases: Vec<CaseSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    #[serde(default)]
    action: Action,
    agent: AgentSpec,
    task: TaskSpec,
    tool: String,
    grant: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
    #[serde(default)]
    shape: Shape,
    /// A quoted RFC 3339 string or a TOML offset date-time.
    #[serde(default)]
    at: Option<toml::Value>,
    expect: Expect,
    /// With `expect = "step_up"`: the approver group the policy must name.
    #[serde(default)]
    group: Option<String>,
    /// With `expect = "step_up"`: the quorum the policy must ask for.
    #[serde(default)]
    quorum: Option<u32>,
    #[serde(default)]
    policies: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSpec {
    name: String,
    owner: String,
    #[serde(default)]
    team: String,
    risk_tier: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskSpec {
    #[serde(default)]
    id: Option<String>,
    environment: String,
    data_classification: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    #[default]
    Issue,
    Renew,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Renew => "renew",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Shape {
    #[default]
    Revocable,
    ExpiryOnly,
}

impl Shape {
    fn as_str(self) -> &'static str {
        match self {
            Self::Revocable => "revocable",
            Self::ExpiryOnly => "expiry_only",
        }
    }
}

/// The decision a case expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Allow,
    Deny,
    /// Permitted only with approval (a `@step_up` policy decides).
    StepUp,
}

/// One checked case, ready to decide.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    action: Action,
    agent: Agent,
    task: Task,
    tool: String,
    provider: String,
    role: String,
    shape: Shape,
    scopes: Vec<String>,
    ttl_seconds: i64,
    at: DateTime<Utc>,
    expect: Expect,
    group: Option<String>,
    quorum: Option<u32>,
    policies: Option<BTreeSet<String>>,
}

/// A parsed and checked cases file.
#[derive(Debug)]
pub struct CaseFile {
    /// The policies the file names, resolved against its directory.
    pub policies: Vec<PathBuf>,
    pub cases: Vec<Case>,
}

/// What one case got.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// A decision other than the expected one.
    Mismatch {
        expected: String,
        got: String,
    },
}

impl CaseFile {
    /// Reads and checks `path`. The error names the file, the case (by
    /// position and name) where one is to blame, and the reason.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parses cases text; `path` names the file in errors and anchors
    /// relative policy paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self, String> {
        let file = path.display();
        let spec: FileSpec = toml::from_str(text).map_err(|e| match locate(text, &e) {
            Some(case) => format!("{file}: {case}: {}", e.to_string().trim_end()),
            None => format!("{file}: {}", e.to_string().trim_end()),
        })?;
        if spec.cases.is_empty() {
            return Err(format!("{file}: no cases (add [[case]] tables)"));
        }
        let base = path.parent().unwrap_or_else(|| Path::new(""));
        let policies = spec.policies.iter().map(|p| base.join(p)).collect();
        let mut seen = BTreeMap::new();
        let mut cases = Vec::with_capacity(spec.cases.len());
        for (index, case) in spec.cases.into_iter().enumerate() {
            let number = index + 1;
            let label = format!("case {number} ({:?})", case.name);
            if case.name.trim().is_empty() {
                return Err(format!("{file}: case {number}: name is empty"));
            }
            if let Some(first) = seen.insert(case.name.clone(), number) {
                return Err(format!("{file}: {label}: the name is also case {first}'s"));
            }
            cases.push(prepare(case).map_err(|reason| format!("{file}: {label}: {reason}"))?);
        }
        Ok(Self { policies, cases })
    }
}

/// Which case an error's position falls in, as "case N" or "case N (name)".
/// A `[[case]]` table's span is its header, so the case is the last one
/// that starts before the error, unless another top-level table starts in
/// between.
fn locate(text: &str, error: &toml::de::Error) -> Option<String> {
    #[derive(Deserialize)]
    struct Cases {
        #[serde(default)]
        case: Vec<toml::Spanned<toml::Table>>,
    }
    let at = error.span()?.start;
    let cases: Cases = toml::from_str(text).ok()?;
    let others: BTreeMap<String, toml::Spanned<serde::de::IgnoredAny>> = toml::from_str(text).ok()?;
    let mut starts: Vec<(usize, Option<usize>)> =
        cases.case.iter().enumerate().map(|(i, c)| (c.span().start, Some(i))).collect();
    starts
        .extend(others.iter().filter(|(key, _)| *key != "case").map(|(_, value)| (value.span().start, None)));
    let (_, index) = starts.into_iter().filter(|(start, _)| *start <= at).max_by_key(|(start, _)| *start)?;
    let index = index?;
    let name =
        cases.case.get(index).and_then(|case| case.get_ref().get("name")).and_then(toml::Value::as_str);
    Some(match name {
        Some(name) => format!("case {} ({name:?})", index + 1),
        None => format!("case {}", index + 1),
    })
}

fn prepare(spec: CaseSpec) -> Result<Case, String> {
    if spec.expect != Expect::StepUp && (spec.group.is_some() || spec.quorum.is_some()) {
        return Err("group and quorum belong to a case that expects \"step_up\"".into());
    }
    let (provider, role) = spec
        .grant
        .split_once('/')
        .filter(|(provider, role)| !provider.is_empty() && !role.is_empty())
        .ok_or_else(|| format!("grant {:?} is not provider/role", spec.grant))?;
    let ttl = spec.ttl.unwrap_or(DEFAULT_TTL);
    if ttl.is_zero() {
        return Err("ttl must be longer than zero".into());
    }
    let ttl_seconds = i64::try_from(ttl.as_secs()).map_err(|_| "ttl is too long".to_string())?;
    let at = match &spec.at {
        None => parse_time(DEFAULT_AT)?,
        Some(toml::Value::String(text)) => parse_time(text)?,
        Some(toml::Value::Datetime(time)) => parse_time(&time.to_string())?,
        Some(other) => return Err(format!("at is a {}, not an RFC 3339 time", other.type_str())),
    };
    let deadline = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| at.checked_add_signed(ttl))
        .ok_or_else(|| "at plus ttl is out of range".to_string())?;
    let agent = Agent {
        name: spec.agent.name,
        owner: spec.agent.owner,
        team: spec.agent.team,
        description: spec.agent.description,
        risk_tier: spec.agent.risk_tier,
    };
    let task = Task {
        id: spec.task.id.unwrap_or_else(|| DEFAULT_TASK_ID.into()),
        agent: agent.name.clone(),
        context: TaskContext {
            purpose: spec.task.purpose,
            environment: spec.task.environment,
            data_classification: spec.task.data_classification,
            ticket: spec.task.ticket,
            labels: spec.task.labels,
        },
        state: TaskState::Open,
        created_at: at,
        created_by: "writ policy test".into(),
        deadline,
        closed: None,
    };
    Ok(Case {
        name: spec.name,
        action: spec.action,
        agent,
        task,
        tool: spec.tool,
        provider: provider.into(),
        role: role.into(),
        shape: spec.shape,
        scopes: spec.scopes,
        ttl_seconds,
        at,
        expect: spec.expect,
        group: spec.group,
        quorum: spec.quorum,
        policies: spec.policies.map(|ids| ids.into_iter().collect()),
    })
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|e| format!("at {text:?} is not an RFC 3339 time with an offset: {e}"))
}

impl Case {
    /// Decides the case with the broker's own engine.
    pub fn run(&self, engine: &PolicyEngine) -> Outcome {
        let facts = GrantFacts {
            action: self.action.as_str(),
            agent: &self.agent,
            task: &self.task,
            role: RoleFacts { provider: &self.provider, role: &self.role, shape: self.shape.as_str() },
            tool: &self.tool,
            scopes: &self.scopes,
            ttl_seconds: self.ttl_seconds,
            now: self.at,
        };
        let decision = match engine.decide(&facts) {
            Ok(decision) => decision,
            // Writ fails such a request closed, but not as a policy
            // decision: no expectation matches it.
            Err(error) => {
                return Outcome::Mismatch { expected: self.expected(), got: format!("error: {error}") };
            }
        };
        let got: BTreeSet<String> = decision.policies().iter().cloned().collect();
        let (kind, group, quorum) = match &decision {
            Decision::Allow { .. } => (Expect::Allow, None, None),
            Decision::StepUp { step_up, .. } => (Expect::StepUp, Some(&step_up.group), Some(step_up.quorum)),
            Decision::Deny { .. } => (Expect::Deny, None, None),
        };
        let decision_matches = kind == self.expect
            && self.group.as_ref().is_none_or(|expected| Some(expected) == group)
            && self.quorum.is_none_or(|expected| Some(expected) == quorum);
        let policies_match = self.policies.as_ref().is_none_or(|expected| *expected == got);
        if decision_matches && policies_match {
            Outcome::Passed
        } else {
            let approval = group.map(|group| (group.as_str(), quorum.unwrap_or(1)));
            Outcome::Mismatch { expected: self.expected(), got: describe(kind, approval, Some(&got)) }
        }
    }

    fn expected(&self) -> String {
        let approval = self.group.as_deref().map(|group| (group, self.quorum.unwrap_or(1)));
        let approval = approval.or_else(|| self.quorum.map(|quorum| ("any group", quorum)));
        describe(self.expect, approval, self.policies.as_ref())
    }
}

/// "allow by a, b", "deny by x", "deny (no policy permits)", "step_up
/// (2 of dba) by p", or just the decision when the policies do not matter.
fn describe(kind: Expect, approval: Option<(&str, u32)>, policies: Option<&BTreeSet<String>>) -> String {
    let mut decision = match kind {
        Expect::Allow => "allow".to_string(),
        Expect::Deny => "deny".to_string(),
        Expect::StepUp => "step_up".to_string(),
    };
    if let Some((group, quorum)) = approval {
        decision = format!("{decision} ({quorum} of {group})");
    }
    match policies {
        None => decision,
        Some(ids) if ids.is_empty() && kind == Expect::Deny => "deny (no policy permits)".to_string(),
        Some(ids) if ids.is_empty() => format!("{decision} by no policy"),
        Some(ids) => {
            format!("{decision} by {}", ids.iter().map(String::as_str).collect::<Vec<_>>().join(", "))
        }
    }
}

/// Runs `writ policy test`: reads the cases file, loads the policies it
/// names (or `policies`, when given), decides every case, and writes one
/// line per case and a summary to `out`, problems to `err`. Returns the
/// exit code: [`EXIT_PASSED`], [`EXIT_FAILED`] or [`EXIT_UNUSABLE`].
pub fn run(cases: &Path, policies: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let file = match CaseFile::read(cases) {
        Ok(file) => file,
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            return EXIT_UNUSABLE;
        }
    };
    let paths = if policies.is_empty() { file.policies.clone() } else { policies.to_vec() };
    if paths.is_empty() {
        let _ = writeln!(
            err,
            "error: {}: no policies to test: list them in the file (policies = [\"…\"]) or pass --policies",
            cases.display()
        );
        return EXIT_UNUSABLE;
    }
    let engine = match PolicyEngine::load(&paths) {
        Ok(engine) => engine,
        Err(error) => {
            // The words Writ refuses to start with.
            let _ = writeln!(err, "error: loading policies: {error}");
            return EXIT_UNUSABLE;
        }
    };
    let mut failed = 0;
    for case in &file.cases {
        match case.run(&engine) {
            Outcome::Passed => {
                let _ = writeln!(out, "ok    {}", case.name);
            }
            Outcome::Mismatch { expected, got } => {
                failed += 1;
                let _ = writeln!(out, "FAIL  {}: expected {expected}, got {got}", case.name);
            }
        }
    }
    let _ = writeln!(out, "{} passed, {failed} failed", file.cases.len() - failed);
    if failed == 0 { EXIT_PASSED } else { EXIT_FAILED }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = include_str!("../dev/example.cedar");
    const EXAMPLE: &str = include_str!("../dev/example-cases.toml");

    const ONE: &str = r#"
[[case]]
name = "reads"
agent = { name = "demo-agent", owner = "o@example.com", risk_tier = "low" }
task = { environment = "dev", data_classification = "internal" }
tool = "orders.lookup"
grant = "tokens/orders-read"
expect = "allow"
"#;

    fn parse(text: &str) -> Result<CaseFile, String> {
        CaseFile::parse(Path::new("dir/cases.toml"), text)
    }

    fn engine() -> PolicyEngine {
        PolicyEngine::from_text(POLICY).unwrap()
    }

    /// Writes `cases` and the example policy to a temp dir and runs them.
    fn run_in_dir(cases: &str, policy: &str) -> (i32, String, String) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/example.cedar"), policy).unwrap();
        let path = dir.path().join("cases.toml");
        std::fs::write(&path, cases).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&path, &[], &mut out, &mut err);
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    #[test]
    fn defaults_fill_a_minimal_case() {
        let file = parse(ONE).unwrap();
        let case = &file.cases[0];
        assert_eq!(case.action, Action::Issue);
        assert_eq!(case.shape, Shape::Revocable);
        assert_eq!(case.ttl_seconds, 300);
        assert_eq!(case.at, parse_time(DEFAULT_AT).unwrap());
        assert_eq!(case.task.id, DEFAULT_TASK_ID);
        assert_eq!(case.task.agent, "demo-agent");
        assert_eq!((case.provider.as_str(), case.role.as_str()), ("tokens", "orders-read"));
        assert!(case.policies.is_none());
        assert!(file.policies.is_empty());
    }

    #[test]
    fn every_field_parses() {
        let file = parse(
            r#"
policies = ["../policies", "/abs/extra.cedar"]
[[case]]
name = "all"
action = "renew"
agent = { name = "a", owner = "o", risk_tier = "high", description = "d" }
task = { id = "t-9", environment = "prod", data_classification = "internal", purpose = "p", ticket = "T-1", labels = { team = "billing" } }
tool = "x"
grant = "tokens/orders-read"
scopes = ["orders:read"]
ttl = "90s"
shape = "expiry_only"
at = 2026-02-01T08:30:00+01:00
expect = "deny"
policies = ["b", "a"]
"#,
        )
        .unwrap();
        assert_eq!(file.policies, [PathBuf::from("dir/../policies"), PathBuf::from("/abs/extra.cedar")]);
        let case = &file.cases[0];
        assert_eq!(case.action, Action::Renew);
        assert_eq!(case.shape, Shape::ExpiryOnly);
        assert_eq!(case.ttl_seconds, 90);
        assert_eq!(case.at, parse_time("2026-02-01T07:30:00Z").unwrap());
        assert_eq!(case.task.id, "t-9");
        assert_eq!(case.task.context.labels["team"], "billing");
        assert_eq!(case.agent.description, "d");
        assert_eq!(case.expect, Expect::Deny);
        assert_eq!(case.policies, Some(["a".to_string(), "b".to_string()].into()));
    }

    #[test]
    fn an_unknown_field_names_the_case_and_keeps_the_position() {
        let error = parse(&ONE.replace("tool =", "tols =")).unwrap_err();
        assert!(error.starts_with("dir/cases.toml: case 1 (\"reads\"): "), "{error}");
        assert!(error.contains("line 6, column 1"), "{error}");
        assert!(error.contains("tols"), "{error}");

        let two = format!("{ONE}{}", ONE.replace("\"reads\"", "\"second\"").replace("risk_tier", "risk"));
        let error = parse(&two).unwrap_err();
        assert!(error.starts_with("dir/cases.toml: case 2 (\"second\"): "), "{error}");
        assert!(error.contains("line 12"), "{error}");

        let error = parse(&format!("{ONE}\n[extra]\nx = 1\n")).unwrap_err();
        assert!(error.starts_with("dir/cases.toml: TOML parse error"), "{error}");
        assert!(error.contains("unknown field `extra`"), "{error}");
    }

    #[test]
    fn bad_syntax_names_the_file_and_line() {
        let error = parse("[[case]\nname = 1").unwrap_err();
        assert!(error.starts_with("dir/cases.toml: "), "{error}");
        assert!(error.contains("line 1"), "{error}");
    }

    #[test]
    fn checked_values_name_the_case() {
        let second = format!("{ONE}{}", ONE.replace("\"reads\"", "\"second\""));
        for (text, reason) in [
            (
                second.replace(
                    "tokens/orders-read\"\nexpect = \"allow\"\n\n",
                    "tokens\"\nexpect = \"allow\"\n\n",
                ),
                "case 1 (\"reads\"): grant \"tokens\" is not provider/role",
            ),
            (
                second.replace("tokens/orders-read", "/orders-read"),
                "case 1 (\"reads\"): grant \"/orders-read\" is not provider/role",
            ),
            (
                format!("{second}at = \"yesterday\"\n"),
                "case 2 (\"second\"): at \"yesterday\" is not an RFC 3339 time",
            ),
            (format!("{second}at = 5\n"), "case 2 (\"second\"): at is a integer"),
            (format!("{second}ttl = \"0s\"\n"), "case 2 (\"second\"): ttl must be longer than zero"),
            (format!("{ONE}{ONE}"), "case 2 (\"reads\"): the name is also case 1's"),
            (ONE.replace("\"reads\"", "\" \""), "case 1: name is empty"),
            (
                format!("{ONE}group = \"dba\"\n"),
                "case 1 (\"reads\"): group and quorum belong to a case that expects \"step_up\"",
            ),
            ("policies = [\"p\"]\n".to_string(), "no cases"),
        ] {
            let error = parse(&text).unwrap_err();
            assert!(error.starts_with(&format!("dir/cases.toml: {reason}")), "{error}");
        }
        let error = parse(&ONE.replace("expect = \"allow\"", "expect = \"permit\"")).unwrap_err();
        assert!(
            error.contains("unknown variant `permit`, expected one of `allow`, `deny`, `step_up`"),
            "{error}"
        );
    }

    #[test]
    fn a_mismatch_shows_both_sides_with_policy_ids() {
        let engine = engine();
        let case = |text: &str| parse(text).unwrap().cases.remove(0);
        assert_eq!(case(ONE).run(&engine), Outcome::Passed);
        assert_eq!(
            case(&ONE.replace("\"allow\"", "\"deny\"")).run(&engine),
            Outcome::Mismatch { expected: "deny".into(), got: "allow by demo-agent-reads-orders".into() }
        );
        assert_eq!(
            case(&format!("{ONE}policies = [\"refunds-only-in-dev\"]\n")).run(&engine),
            Outcome::Mismatch {
                expected: "allow by refunds-only-in-dev".into(),
                got: "allow by demo-agent-reads-orders".into()
            }
        );
        assert_eq!(
            case(&ONE.replace("demo-agent", "other")).run(&engine),
            Outcome::Mismatch { expected: "allow".into(), got: "deny (no policy permits)".into() }
        );
    }

    #[test]
    fn the_example_cases_pass_against_the_example_policy() {
        let (code, out, err) = run_in_dir(EXAMPLE, POLICY);
        assert_eq!(code, EXIT_PASSED, "{out}{err}");
        assert!(out.ends_with("10 passed, 0 failed\n"), "{out}");
        assert!(!out.contains("FAIL"), "{out}");
        assert_eq!(err, "");
    }

    #[test]
    fn a_mismatch_exits_1_and_names_the_case() {
        let flipped = EXAMPLE.replacen("expect = \"allow\"", "expect = \"deny\"", 1);
        let (code, out, _) = run_in_dir(&flipped, POLICY);
        assert_eq!(code, EXIT_FAILED);
        assert!(
            out.contains("FAIL  demo-agent reads orders: expected deny by demo-agent-reads-orders, got allow by demo-agent-reads-orders\n"),
            "{out}"
        );
        assert!(out.ends_with("9 passed, 1 failed\n"), "{out}");
    }

    #[test]
    fn a_policy_set_writ_refuses_exits_2_with_writs_message() {
        let (code, out, err) =
            run_in_dir(EXAMPLE, &POLICY.replace("context.task.environment", "context.task.enviroment"));
        assert_eq!(code, EXIT_UNUSABLE);
        assert_eq!(out, "");
        assert!(err.starts_with("error: loading policies: policies do not fit the schema: "), "{err}");
        assert!(err.contains("enviroment"), "{err}");
        let (code, _, err) = run_in_dir(EXAMPLE, "permit (");
        assert_eq!(code, EXIT_UNUSABLE);
        assert!(err.starts_with("error: loading policies: policy "), "{err}");
        assert!(err.contains("example.cedar does not parse"), "{err}");
    }

    #[test]
    fn a_bad_cases_file_exits_2() {
        let (code, out, err) = run_in_dir(&EXAMPLE.replace("tool = \"orders.lookup\"", "tool = 3"), POLICY);
        assert_eq!(code, EXIT_UNUSABLE);
        assert_eq!(out, "");
        assert!(err.contains("cases.toml: case 1 (\"demo-agent reads orders\"): "), "{err}");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(Path::new("/nonexistent/cases.toml"), &[], &mut out, &mut err), EXIT_UNUSABLE);
        assert!(String::from_utf8(err).unwrap().starts_with("error: cannot read /nonexistent/cases.toml: "));
    }

    #[test]
    fn policies_come_from_the_flag_over_the_file_and_must_exist() {
        let (code, _, err) = run_in_dir(&EXAMPLE.replace("policies = [\"policies\"]", ""), POLICY);
        assert_eq!(code, EXIT_UNUSABLE);
        assert!(err.contains("no policies to test"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("only.cedar");
        std::fs::write(&policy, POLICY).unwrap();
        let path = dir.path().join("cases.toml");
        std::fs::write(&path, EXAMPLE.replace("[\"policies\"]", "[\"missing\"]")).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&path, &[], &mut out, &mut err), EXIT_UNUSABLE);
        assert!(String::from_utf8(err).unwrap().contains("cannot read policy"));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&path, &[policy], &mut out, &mut err), EXIT_PASSED);
    }

    #[test]
    fn the_clock_and_ttl_reach_policy() {
        let policy = r#"
@id("office-hours")
permit (principal, action, resource)
when { context.now.hour_utc >= 9 && context.now.hour_utc < 17 && context.now.weekday <= 5 && context.ttl_seconds <= 300 && resource.shape == "revocable" };
"#;
        let engine = PolicyEngine::from_text(policy).unwrap();
        let decide = |extra: &str| parse(&format!("{ONE}{extra}")).unwrap().cases.remove(0).run(&engine);
        assert_eq!(decide(""), Outcome::Passed, "the default time is a monday in office hours");
        assert!(matches!(decide("at = \"2026-01-05T18:00:00Z\"\n"), Outcome::Mismatch { .. }));
        assert!(matches!(decide("at = \"2026-01-10T10:00:00Z\"\n"), Outcome::Mismatch { .. }));
        assert!(matches!(decide("ttl = \"6m\"\n"), Outcome::Mismatch { .. }));
        assert!(matches!(decide("shape = \"expiry_only\"\n"), Outcome::Mismatch { .. }));
    }
}
