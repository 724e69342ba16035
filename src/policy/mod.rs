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
    /// Denied: by the named `forbid` policies, or (empty) because no policy
    /// permits.
    Deny { policies: Vec<String> },
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
}

impl Loaded {
    fn new(policies: PolicySet, digest: Arc<str>) -> Self {
        let index = PolicyIndex::new(&policies);
        Self { policies, digest, index }
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
            current: RwLock::new(Arc::new(loaded)),
            paths: paths.to_vec(),
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
        Ok(Self { authorizer: Authorizer::new(), current: RwLock::new(Arc::new(loaded)), paths: Vec::new() })
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
        let (request, entities) = facts.build(None)?;
        let response = match scope {
            Scope::All => self.authorizer.is_authorized(&request, &loaded.policies, &entities),
            Scope::Indexed => {
                let (principal, resource) = request_key(&request)?;
                let candidates = loaded.index.candidates(principal, resource)?;
                self.authorizer.is_authorized(&request, &candidates, &entities)
            }
            Scope::IndexedUncached => {
                let (principal, resource) = request_key(&request)?;
                let candidates = loaded.index.assemble(&(principal.clone(), resource.clone()))?;
                self.authorizer.is_authorized(&request, &candidates, &entities)
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
        let mut policies: Vec<String> = diagnostics.reason().map(PolicyId::to_string).collect();
        policies.sort();
        Ok(match response.decision() {
            CedarDecision::Allow => Decision::Allow { policies },
            CedarDecision::Deny => Decision::Deny { policies },
        })
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
