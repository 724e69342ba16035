//! Policy as code: Cedar policies, checked against Writ's schema, evaluated
//! for every grant at request time.
//!
//! The principal is the agent, the action `issue` or `renew`, the resource
//! the provider role, and the context the task (with its labels as tags),
//! the tool, the scopes, the clamped TTL and the time. The default is deny.
//! Each policy should carry an `@id("…")` annotation: decisions name the
//! policies that decided by that id (a policy without one is named after its
//! file and position). Policy text is never shown to agents.
//!
//! The loaded set sits behind a lock so a live reload ([`PolicyEngine::reload`],
//! on SIGHUP or an authorized call) can swap it; a set that fails to parse
//! or validate is refused whole, with the file, line and reason, and the
//! running set is kept. Each set is known by its digest (SHA-256 of its
//! files' names and contents), and carries an index ([`index`]) so a
//! decision evaluates only the policies that can apply to its principal
//! and resource (ADR 0011).

pub mod cases;
mod index;
mod request;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use cedar_policy::{
    AuthorizationError, Authorizer, Decision as CedarDecision, PolicyId, PolicySet, Request, Schema,
    ValidationMode, Validator,
};

use index::PolicyIndex;

pub use request::{GrantFacts, RoleFacts};

const SCHEMA: &str = include_str!("writ.cedarschema");

/// The outcome of one authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Permitted by the named policies.
    Allow { policies: Vec<String> },
    /// Permitted by the named policies, at least one of which is marked
    /// `@step_up`: only once `step_up.quorum` approvers of its group agree.
    StepUp { policies: Vec<String>, step_up: StepUp },
    /// Denied: by the named `forbid` policies, or (empty) because no policy
    /// permits.
    Deny { policies: Vec<String> },
}

impl Decision {
    /// `allow`, `step_up` or `deny`: what evidence and explanations call it.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Allow { .. } => "allow",
            Self::StepUp { .. } => "step_up",
            Self::Deny { .. } => "deny",
        }
    }

    /// The deciding policies: the permits that allow, the forbids that deny
    /// (none for a default deny).
    pub fn policies(&self) -> &[String] {
        match self {
            Self::Allow { policies } | Self::StepUp { policies, .. } | Self::Deny { policies } => policies,
        }
    }
}

/// Who must approve a step-up grant: `@step_up("<group>")`, with
/// `@quorum("<n>")` distinct approvers of that group (1 when absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepUp {
    pub group: String,
    pub quorum: u32,
}

/// The largest `@quorum` a policy may ask for.
pub const MAX_QUORUM: u32 = 16;

impl StepUp {
    /// The step-up a policy's annotations ask for, if any, checked: only
    /// on a `permit`, a group of letters, digits, `-`, `_` or `.`, and a
    /// quorum of 1 to [`MAX_QUORUM`].
    fn of(policy: &cedar_policy::Policy) -> Result<Option<Self>, String> {
        let quorum = policy.annotation("quorum");
        let Some(group) = policy.annotation("step_up") else {
            return match quorum {
                Some(_) => Err("@quorum needs @step_up(\"<approver group>\")".into()),
                None => Ok(None),
            };
        };
        if policy.effect() != cedar_policy::Effect::Permit {
            return Err("@step_up belongs on a permit policy, not a forbid".into());
        }
        let valid_group = !group.is_empty()
            && group.len() <= 64
            && group.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_group {
            return Err(format!(
                "@step_up({group:?}) must name an approver group: 1 to 64 letters, digits, -, _ or ."
            ));
        }
        let quorum = match quorum {
            None => 1,
            Some(text) => {
                text.parse::<u32>().ok().filter(|quorum| (1..=MAX_QUORUM).contains(quorum)).ok_or_else(
                    || format!("@quorum({text:?}) must be a whole number from 1 to {MAX_QUORUM}"),
                )?
            }
        };
        Ok(Some(Self { group: group.to_owned(), quorum }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("policy {path} does not parse: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("policies do not fit the schema: {0}")]
    Invalid(String),
    #[error("policy request could not be built: {0}")]
    Request(String),
    #[error("a policy failed to evaluate: {0}")]
    Evaluation(String),
}

/// One validated policy set, with the schema it was checked against.
struct Loaded {
    policies: PolicySet,
    /// Hex SHA-256 of the files (names and contents) the set came from.
    digest: Arc<str>,
    /// Built with the set, never per request.
    index: PolicyIndex,
    /// The permits marked `@step_up`, checked when the set was parsed.
    step_ups: std::collections::HashMap<PolicyId, StepUp>,
}

impl Loaded {
    fn new(policies: PolicySet, digest: Arc<str>) -> Self {
        let index = PolicyIndex::new(&policies);
        let step_ups = policies
            .policies()
            .filter_map(|policy| Some((policy.id().clone(), StepUp::of(policy).ok().flatten()?)))
            .collect();
        Self { policies, digest, index, step_ups }
    }

    /// The step-up the deciding permits ask for: none, or the one group
    /// they name with the largest quorum among them. Permits naming
    /// different groups for one request cannot both be satisfied by one
    /// approval, so that fails closed.
    fn step_up(&self, reasons: &[PolicyId]) -> Result<Option<StepUp>, PolicyError> {
        let mut asked: Option<(StepUp, &PolicyId)> = None;
        for id in reasons {
            let Some(step_up) = self.step_ups.get(id) else { continue };
            asked = match asked {
                None => Some((step_up.clone(), id)),
                Some((current, first)) if current.group == step_up.group => {
                    Some((StepUp { quorum: current.quorum.max(step_up.quorum), ..current }, first))
                }
                Some((current, first)) => {
                    return Err(PolicyError::Evaluation(format!(
                        "policies {first} and {id} both permit this request but ask for approval by \
                         different groups ({} and {}); make them exclusive",
                        current.group, step_up.group
                    )));
                }
            };
        }
        Ok(asked.map(|(step_up, _)| step_up))
    }

    /// Every approver group the set names.
    fn groups(&self) -> std::collections::BTreeSet<String> {
        self.step_ups.values().map(|step_up| step_up.group.clone()).collect()
    }
}

/// Which policies a decision hands to Cedar. Only [`Scope::Indexed`] is used
/// in service; the others are there so benchmarks and the equality test can
/// compare against the full scan.
#[derive(Clone, Copy, Debug)]
enum Scope {
    All,
    Indexed,
    IndexedUncached,
}

pub struct PolicyEngine {
    authorizer: Authorizer,
    /// The active set; replaced whole on reload.
    current: RwLock<Arc<Loaded>>,
    /// Where the set was loaded from, read again on reload (none for a set
    /// built from text).
    paths: Vec<PathBuf>,
    /// The approver groups Writ has, when known: a set whose `@step_up`
    /// names another is refused ([`Self::require_groups`]).
    approver_groups: Option<std::collections::BTreeSet<String>>,
    /// Entity sets of earlier decisions, reused for equal facts.
    entities: request::EntityCache,
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    pub previous: Arc<str>,
    pub digest: Arc<str>,
    pub policies: usize,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyEngine")
    }
}

impl PolicyEngine {
    /// Loads every `*.cedar` file under `paths` and validates the set.
    pub fn load(paths: &[PathBuf]) -> Result<Self, PolicyError> {
        let loaded = load_set(paths, &schema()?)?;
        Ok(Self {
            authorizer: Authorizer::new(),
            entities: request::EntityCache::default(),
            current: RwLock::new(Arc::new(loaded)),
            paths: paths.to_vec(),
            approver_groups: None,
        })
    }

    /// Loads the set again from its files and, if it parses and validates,
    /// puts it in force for every decision from now on. On any error the
    /// running set is kept and the error names the file, line and reason.
    pub fn reload(&self) -> Result<Reloaded, PolicyError> {
        if self.paths.is_empty() {
            return Err(PolicyError::Invalid("this policy set was not loaded from files".into()));
        }
        let loaded = Arc::new(load_set(&self.paths, &schema()?)?);
        if let Some(groups) = &self.approver_groups {
            check_groups(&loaded, groups)?;
        }
        let reloaded = Reloaded {
            previous: self.digest(),
            digest: loaded.digest.clone(),
            policies: loaded.policies.policies().count(),
        };
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = loaded;
        Ok(reloaded)
    }

    /// The digest of the set in force.
    pub fn digest(&self) -> Arc<str> {
        self.loaded().digest.clone()
    }

    /// Builds an engine from policy text, for tests and benchmarks.
    pub fn from_text(text: &str) -> Result<Self, PolicyError> {
        let schema = schema()?;
        let inline = Path::new("<inline>");
        let policies = parse_file(inline, text)?;
        let sources = Sources::of(inline, text, &policies);
        validate(&policies, &schema, &sources)?;
        let mut digest = Digest::default();
        digest.add(inline, text);
        let loaded = Loaded::new(policies, digest.finish());
        Ok(Self {
            authorizer: Authorizer::new(),
            entities: request::EntityCache::default(),
            current: RwLock::new(Arc::new(loaded)),
            paths: Vec::new(),
            approver_groups: None,
        })
    }

    /// Refuses, now and on every reload, a set whose `@step_up` names an
    /// approver group not in `groups`.
    pub fn require_groups(mut self, groups: std::collections::BTreeSet<String>) -> Result<Self, PolicyError> {
        check_groups(&self.loaded(), &groups)?;
        self.approver_groups = Some(groups);
        Ok(self)
    }

    /// Every approver group a `@step_up` of the set in force names.
    pub fn approver_groups(&self) -> std::collections::BTreeSet<String> {
        self.loaded().groups()
    }

    /// The number of policies in force.
    pub fn len(&self) -> usize {
        self.loaded().policies.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Decides one grant.
    pub fn decide(&self, facts: &GrantFacts<'_>) -> Result<Decision, PolicyError> {
        self.decide_in(facts, Scope::Indexed)
    }

    /// Decides one grant against every loaded policy, without the index:
    /// the reference the index is measured and tested against.
    #[doc(hidden)]
    pub fn decide_scanning_all(&self, facts: &GrantFacts<'_>) -> Result<Decision, PolicyError> {
        self.decide_in(facts, Scope::All)
    }

    /// Decides one grant through the index but assembling the candidate set
    /// afresh, as on the first request for a (principal, resource): for
    /// benchmarks.
    #[doc(hidden)]
    pub fn decide_uncached(&self, facts: &GrantFacts<'_>) -> Result<Decision, PolicyError> {
        self.decide_in(facts, Scope::IndexedUncached)
    }

    /// Decides one grant and names the set that decided it (its digest),
    /// for the decision's evidence: the set read once, so a reload at the
    /// same moment cannot make the record name another set.
    pub fn decide_with_digest(&self, facts: &GrantFacts<'_>) -> Result<(Decision, Arc<str>), PolicyError> {
        let loaded = self.loaded();
        let decision = self.decide_on(&loaded, facts, Scope::Indexed)?;
        Ok((decision, loaded.digest.clone()))
    }

    fn decide_in(&self, facts: &GrantFacts<'_>, scope: Scope) -> Result<Decision, PolicyError> {
        self.decide_on(&self.loaded(), facts, scope)
    }

    fn decide_on(
        &self,
        loaded: &Loaded,
        facts: &GrantFacts<'_>,
        scope: Scope,
    ) -> Result<Decision, PolicyError> {
        let request = facts.request(None)?;
        let entities = self.entities.entities(facts)?;
        let entities = &*entities;
        let response = match scope {
            Scope::All => self.authorizer.is_authorized(&request, &loaded.policies, entities),
            Scope::Indexed => {
                let (principal, resource) = request_key(&request)?;
                let candidates = loaded.index.candidates(principal, resource)?;
                self.authorizer.is_authorized(&request, &candidates, entities)
            }
            Scope::IndexedUncached => {
                let (principal, resource) = request_key(&request)?;
                let candidates = loaded.index.assemble(&(principal.clone(), resource.clone()))?;
                self.authorizer.is_authorized(&request, &candidates, entities)
            }
        };
        let diagnostics = response.diagnostics();
        // The error named is the one of the lowest policy id, so which one
        // is reported does not depend on the order Cedar iterates a set in
        // (which differs between the full set and a candidate set).
        let first_error = diagnostics.errors().min_by(|a, b| errored_policy(a).cmp(errored_policy(b)));
        if let Some(error) = first_error {
            // Cedar skips a policy that fails to evaluate. A skipped `forbid`
            // could turn into an allow, so any error fails closed.
            tracing::error!(error = %error, "a policy failed to evaluate; denying");
            return Err(PolicyError::Evaluation(error.to_string()));
        }
        let mut reasons: Vec<PolicyId> = diagnostics.reason().cloned().collect();
        reasons.sort();
        let policies: Vec<String> = reasons.iter().map(PolicyId::to_string).collect();
        Ok(match response.decision() {
            CedarDecision::Allow => match loaded.step_up(&reasons)? {
                Some(step_up) => Decision::StepUp { policies, step_up },
                None => Decision::Allow { policies },
            },
            CedarDecision::Deny => Decision::Deny { policies },
        })
    }
}

fn check_groups(loaded: &Loaded, groups: &std::collections::BTreeSet<String>) -> Result<(), PolicyError> {
    let mut unknown: Vec<(String, String)> = loaded
        .step_ups
        .iter()
        .filter(|(_, step_up)| !groups.contains(&step_up.group))
        .map(|(id, step_up)| (id.to_string(), step_up.group.clone()))
        .collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some((policy, group)) => Err(PolicyError::Invalid(format!(
            "policy {policy:?} asks for approval by group {group:?}, which is not in [approvals.groups] \
             (configured: {})",
            if groups.is_empty() {
                "none".to_string()
            } else {
                groups.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        ))),
    }
}

/// The request's principal and resource; [`GrantFacts::build`] always sets
/// both.
fn request_key(
    request: &Request,
) -> Result<(&cedar_policy::EntityUid, &cedar_policy::EntityUid), PolicyError> {
    match (request.principal(), request.resource()) {
        (Some(principal), Some(resource)) => Ok((principal, resource)),
        _ => Err(PolicyError::Request("request without a principal or resource".into())),
    }
}

fn errored_policy(error: &AuthorizationError) -> &str {
    match error {
        AuthorizationError::PolicyEvaluationError(error) => error.policy_id().as_ref(),
    }
}

fn schema() -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(schema, _warnings)| schema)
        .map_err(|e| PolicyError::Invalid(format!("built-in schema: {e}")))
}

fn load_set(paths: &[PathBuf], schema: &Schema) -> Result<Loaded, PolicyError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path)
                .map_err(|e| PolicyError::Read { path: path.clone(), message: e.to_string() })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|file| file.extension().is_some_and(|ext| ext == "cedar"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut set = PolicySet::new();
    let mut sources = Sources::default();
    let mut digest = Digest::default();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| PolicyError::Read { path: file.clone(), message: e.to_string() })?;
        digest.add(&file, &text);
        let parsed = parse_file(&file, &text)?;
        sources.extend(Sources::of(&file, &text, &parsed));
        for policy in parsed.policies() {
            set.add(policy.clone()).map_err(|e| PolicyError::Parse {
                path: file.clone(),
                message: format!("{e} (is an @id used twice?)"),
            })?;
        }
    }
    validate(&set, schema, &sources)?;
    Ok(Loaded::new(set, digest.finish()))
}

/// The digest of a set's sources: each file's name and contents, in load
/// order, so that any change to what is loaded changes it.
#[derive(Default)]
struct Digest(Vec<u8>);

impl Digest {
    fn add(&mut self, file: &Path, text: &str) {
        for part in [file.to_string_lossy().as_bytes(), text.as_bytes()] {
            self.0.extend_from_slice(&(part.len() as u64).to_be_bytes());
            self.0.extend_from_slice(part);
        }
    }

    fn finish(self) -> Arc<str> {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &self.0).as_ref()).into()
    }
}

/// Which file and text each policy came from, so that an error names the
/// file and line, not only the policy.
#[derive(Default)]
struct Sources(std::collections::HashMap<PolicyId, (PathBuf, Arc<str>)>);

impl Sources {
    fn of(file: &Path, text: &str, set: &PolicySet) -> Self {
        let text: Arc<str> = text.into();
        Self(set.policies().map(|policy| (policy.id().clone(), (file.to_path_buf(), text.clone()))).collect())
    }

    fn extend(&mut self, other: Self) {
        self.0.extend(other.0);
    }

    /// `file, line N` of an error about `policy`, from the error's first
    /// source label (an offset into the policy's file).
    fn locate(&self, policy: &PolicyId, error: &dyn miette::Diagnostic) -> String {
        let Some((file, text)) = self.0.get(policy) else { return format!("policy {policy}") };
        match error.labels().and_then(|mut labels| labels.next()) {
            Some(label) => format!("{}, line {}", file.display(), line_at(text, label.offset())),
            None => format!("{}", file.display()),
        }
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&byte| byte == b'\n').count() + 1
}

/// Parses one file and renames each policy after its `@id` annotation.
fn parse_file(path: &Path, text: &str) -> Result<PolicySet, PolicyError> {
    let parse_error = |message: String| PolicyError::Parse { path: path.into(), message };
    let parsed: PolicySet = text.parse().map_err(|e: cedar_policy::ParseErrors| {
        use miette::Diagnostic as _;
        match e.labels().and_then(|mut labels| labels.next()) {
            Some(label) => parse_error(format!("line {}: {e}", line_at(text, label.offset()))),
            None => parse_error(e.to_string()),
        }
    })?;
    if parsed.templates().next().is_some() {
        return Err(parse_error("policy templates are not supported".into()));
    }
    let file = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let mut named = PolicySet::new();
    for (index, policy) in parsed.policies().enumerate() {
        let id = policy.annotation("id").map(str::to_string).unwrap_or_else(|| format!("{file}#{index}"));
        if let Err(message) = StepUp::of(policy) {
            // Cedar keeps no position for a policy; its `@id` names the line.
            let line = text
                .find(&format!("@id({id:?})"))
                .map_or(String::new(), |offset| format!("line {}: ", line_at(text, offset)));
            return Err(parse_error(format!("{line}policy {id:?}: {message}")));
        }
        named
            .add(policy.new_id(PolicyId::new(&id)))
            .map_err(|e| parse_error(format!("policy {id:?}: {e}")))?;
    }
    Ok(named)
}

fn validate(set: &PolicySet, schema: &Schema, sources: &Sources) -> Result<(), PolicyError> {
    let result = Validator::new(schema.clone()).validate(set, ValidationMode::Strict);
    if result.validation_passed() {
        return Ok(());
    }
    let errors: Vec<String> = result
        .validation_errors()
        .map(|error| format!("{}: {error}", sources.locate(error.policy_id(), error)))
        .collect();
    Err(PolicyError::Invalid(errors.join("; ")))
}

#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod tests;
