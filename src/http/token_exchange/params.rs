//! The token request's parameters, read strictly: the form body
//! (RFC 6749 §3.2, Appendix B) and what each parameter means to Writ
//! (docs/token-exchange.md). Pure: no I/O, no configuration; whether the
//! audience names a configured role is checked once the caller is known.

use std::collections::BTreeMap;
use std::time::Duration;

use writ_provider_api::SecretString;

use super::reply::Refusal;
use crate::domain::GrantRequest;
use crate::text::quoted;

pub(super) const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Every parameter Writ reads. Each may be sent once (RFC 6749 §3.2),
/// except `audience` and `resource` (RFC 8693 §2.1); others are ignored.
const READ: [&str; 16] = [
    "grant_type",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "scope",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "writ_task_id",
    "writ_tool",
    "writ_ttl",
    "writ_approval_id",
    "audience",
    "resource",
];
const MAY_REPEAT: [&str; 2] = ["audience", "resource"];

/// The parameters that describe a new grant; a collection names its
/// approval request instead, which fixes all of them.
const GRANT_PARAMETERS: [&str; 5] = ["audience", "scope", "writ_task_id", "writ_tool", "writ_ttl"];

/// The token types Writ reads and writes (RFC 8693 §3, and Writ's own for
/// credentials that are not one token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TokenType {
    AccessToken,
    Jwt,
    IdToken,
    /// An AWS session as JSON: `access_key_id`, `secret_access_key`,
    /// `session_token`.
    AwsSession,
    /// A login as JSON: `username`, `password`, `connection`.
    Password,
}

impl TokenType {
    const ALL: [Self; 5] = [Self::AccessToken, Self::Jwt, Self::IdToken, Self::AwsSession, Self::Password];

    pub(super) fn uri(self) -> &'static str {
        match self {
            Self::AccessToken => "urn:ietf:params:oauth:token-type:access_token",
            Self::Jwt => "urn:ietf:params:oauth:token-type:jwt",
            Self::IdToken => "urn:ietf:params:oauth:token-type:id_token",
            Self::AwsSession => "urn:writ:params:oauth:token-type:aws-session",
            Self::Password => "urn:writ:params:oauth:token-type:password",
        }
    }

    fn parse(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.uri() == uri)
    }
}

/// A token request, read.
#[derive(Debug)]
pub(super) struct TokenRequest {
    /// The agent's workload JWT: its authentication, and what providers
    /// that exchange tokens themselves pass on. Never echoed or logged.
    pub(super) subject_token: SecretString,
    /// `requested_token_type`, if sent.
    pub(super) wanted: Option<TokenType>,
    pub(super) ask: Ask,
}

#[derive(Debug)]
pub(super) enum Ask {
    /// Issue one grant under a task, as `CredentialService/Issue`.
    Issue { task_id: String, tool: String, grant: GrantRequest },
    /// Collect an approved request, as `CredentialService/CollectApproval`.
    Collect { approval_id: String },
}

/// Decodes an `application/x-www-form-urlencoded` body into its
/// name/value pairs, in order. Strict where decoders are often lenient: a
/// `%` not followed by two hex digits, or a name or value that is not
/// UTF-8 once decoded, is refused rather than replaced.
pub(super) fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    let mut pairs = Vec::new();
    for (index, field) in body.split(|&byte| byte == b'&').enumerate() {
        if field.is_empty() {
            continue;
        }
        let (name, value) = match field.iter().position(|&byte| byte == b'=') {
            Some(at) => (&field[..at], &field[at + 1..]),
            None => (field, &b""[..]),
        };
        let decode = |part: &[u8]| {
            decode(part).ok_or_else(|| {
                Refusal::invalid_request(format!(
                    "the form body is malformed at field {}: a % not followed by two hex digits, or text \
                     that is not UTF-8 once decoded",
                    index + 1
                ))
            })
        };
        pairs.push((decode(name)?, decode(value)?));
    }
    Ok(pairs)
}

fn decode(part: &[u8]) -> Option<String> {
    let mut bytes = Vec::with_capacity(part.len());
    let mut rest = part.iter();
    while let Some(&byte) = rest.next() {
        bytes.push(match byte {
            b'+' => b' ',
            b'%' => {
                let high = char::from(*rest.next()?).to_digit(16)?;
                let low = char::from(*rest.next()?).to_digit(16)?;
                u8::try_from(high * 16 + low).ok()?
            }
            other => other,
        });
    }
    String::from_utf8(bytes).ok()
}

/// The parameters Writ reads, by name. An empty value counts as not sent
/// (RFC 6749 §3.2).
struct Parameters<'a>(BTreeMap<&'a str, Vec<&'a str>>);

impl<'a> Parameters<'a> {
    fn new(pairs: &'a [(String, String)]) -> Result<Self, Refusal> {
        let mut read: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, value) in pairs {
            if value.is_empty() || !READ.contains(&name.as_str()) {
                continue;
            }
            let values = read.entry(name.as_str()).or_default();
            if !values.is_empty() && !MAY_REPEAT.contains(&name.as_str()) {
                return Err(Refusal::invalid_request(format!(
                    "parameter {name} is sent more than once; send each once (RFC 6749 §3.2)"
                )));
            }
            values.push(value.as_str());
        }
        Ok(Self(read))
    }

    fn all(&self, name: &str) -> &[&'a str] {
        self.0.get(name).map_or(&[], Vec::as_slice)
    }

    fn one(&self, name: &str) -> Option<&'a str> {
        self.all(name).first().copied()
    }

    fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }

    fn required(&self, name: &str, what: &str) -> Result<&'a str, Refusal> {
        self.one(name).ok_or_else(|| Refusal::invalid_request(format!("{name} is missing: {what}")))
    }
}

impl TokenRequest {
    /// Reads a token request's parameters. The checks run in this order;
    /// the first failure answers.
    pub(super) fn read(pairs: &[(String, String)]) -> Result<Self, Refusal> {
        let parameters = Parameters::new(pairs)?;
        let grant_type = parameters.required("grant_type", &format!("send grant_type={TOKEN_EXCHANGE}"))?;
        if grant_type != TOKEN_EXCHANGE {
            return Err(Refusal::new(
                "unsupported_grant_type",
                format!("Writ's token endpoint serves only grant_type={TOKEN_EXCHANGE} (RFC 8693)"),
            ));
        }
        if let Some(name) = ["client_secret", "client_assertion", "client_assertion_type"]
            .into_iter()
            .find(|name| parameters.has(name))
        {
            return Err(Refusal::client_authentication(format!(
                "{name}: Writ keeps no OAuth client registrations and takes no client authentication; \
                 the agent is authenticated by its subject_token alone"
            )));
        }
        let subject_token = parameters.required("subject_token", "send the agent's workload JWT")?;
        let token_type = parameters
            .required("subject_token_type", &format!("send subject_token_type={}", TokenType::Jwt.uri()))?;
        if !matches!(TokenType::parse(token_type), Some(TokenType::Jwt | TokenType::IdToken)) {
            return Err(Refusal::invalid_request(format!(
                "subject_token_type {} is not accepted: the subject_token is the agent's workload JWT, of \
                 type {} (or {})",
                quoted(token_type),
                TokenType::Jwt.uri(),
                TokenType::IdToken.uri()
            )));
        }
        if parameters.has("actor_token") || parameters.has("actor_token_type") {
            return Err(Refusal::invalid_request(
                "actor_token is not supported: Writ issues to the agent itself, not to an actor on its \
                 behalf (no delegation)",
            ));
        }
        let wanted = match parameters.one("requested_token_type") {
            None => None,
            Some(uri) => {
                Some(TokenType::parse(uri).filter(|kind| *kind != TokenType::IdToken).ok_or_else(|| {
                    Refusal::invalid_request(format!(
                        "requested_token_type {} is not one Writ issues; leave it unset, or ask for {}",
                        quoted(uri),
                        TokenType::AccessToken.uri()
                    ))
                })?)
            }
        };
        if parameters.has("resource") {
            return Err(Refusal::new(
                "invalid_target",
                "resource is not used: name the grant with audience=<provider>/<role> (see Writ's \
                 token-exchange documentation)",
            ));
        }
        let ask = match parameters.one("writ_approval_id") {
            Some(approval_id) => collect(&parameters, approval_id)?,
            None => issue(&parameters)?,
        };
        Ok(Self { subject_token: SecretString::from(subject_token.to_owned()), wanted, ask })
    }
}

fn collect(parameters: &Parameters<'_>, approval_id: &str) -> Result<Ask, Refusal> {
    if let Some(name) = GRANT_PARAMETERS.into_iter().find(|name| parameters.has(name)) {
        return Err(Refusal::invalid_request(format!(
            "{name} is not sent with writ_approval_id: the approval request fixes the task, tool and grant"
        )));
    }
    Ok(Ask::Collect { approval_id: approval_id.to_owned() })
}

fn issue(parameters: &Parameters<'_>) -> Result<Ask, Refusal> {
    let audiences = parameters.all("audience");
    let audience = match audiences {
        [] => {
            return Err(Refusal::invalid_request(
                "audience is missing: name the grant as audience=<provider>/<role>",
            ));
        }
        [one] => *one,
        _ => {
            return Err(Refusal::new(
                "invalid_target",
                format!(
                    "{} audience values: Writ issues one grant per token request; send one \
                     audience=<provider>/<role>",
                    audiences.len()
                ),
            ));
        }
    };
    let (provider, role) = target(audience)?;
    let task_id = parameters.required("writ_task_id", "name the task the credential is for")?;
    let tool = parameters.required("writ_tool", "name the tool about to be called")?;
    let scopes = parameters.one("scope").map(scopes).transpose()?.unwrap_or_default();
    let ttl = parameters.one("writ_ttl").map(ttl).transpose()?;
    Ok(Ask::Issue {
        task_id: task_id.to_owned(),
        tool: tool.to_owned(),
        grant: GrantRequest { provider: provider.to_owned(), role: role.to_owned(), scopes, ttl },
    })
}

/// `<provider>/<role>`: provider names have no `/`, so the first one
/// splits.
fn target(audience: &str) -> Result<(&str, &str), Refusal> {
    match audience.split_once('/') {
        Some((provider, role)) if !provider.is_empty() && !role.is_empty() => Ok((provider, role)),
        _ => Err(Refusal::new(
            "invalid_target",
            format!("audience {} is not <provider>/<role>, such as tokens/orders-read", quoted(audience)),
        )),
    }
}

/// A `scope` value (RFC 6749 §3.3): scope tokens of printable ASCII
/// without `"` or `\`, separated by spaces; a repeated one counts once.
fn scopes(value: &str) -> Result<Vec<String>, Refusal> {
    let mut scopes: Vec<String> = Vec::new();
    for scope in value.split(' ').filter(|scope| !scope.is_empty()) {
        let allowed = |c: char| matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e');
        if !scope.chars().all(allowed) {
            return Err(Refusal::new(
                "invalid_scope",
                format!(
                    "scope {} is not a scope token: printable ASCII except \" and \\, separated by spaces",
                    quoted(scope)
                ),
            ));
        }
        if !scopes.iter().any(|seen| seen == scope) {
            scopes.push(scope.to_owned());
        }
    }
    Ok(scopes)
}

/// `writ_ttl`: whole seconds, converted and bounded as the gRPC API's
/// `ttl` is; zero and values below the role's minimum are the broker's to
/// refuse.
fn ttl(value: &str) -> Result<Duration, Refusal> {
    let malformed = || {
        Refusal::invalid_request(format!(
            "writ_ttl {} is not a whole number of seconds, such as 300",
            quoted(value)
        ))
    };
    if !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(malformed());
    }
    let seconds = value.parse::<i64>().map_err(|_| malformed())?;
    crate::api::convert::from_duration("writ_ttl", &prost_types::Duration { seconds, nanos: 0 })
        .map_err(|status| Refusal::invalid_request(status.message()))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use writ_provider_api::ExposeSecret;

    use super::*;

    fn form(text: &str) -> Vec<(String, String)> {
        parse_form(text.as_bytes()).unwrap()
    }

    const BASE: &str = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
        &subject_token=eyJ.a.b&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt";

    fn read(extra: &str) -> Result<TokenRequest, Refusal> {
        TokenRequest::read(&form(&format!("{BASE}&{extra}")))
    }

    fn refused(extra: &str) -> (StatusCode, &'static str, String) {
        let refusal = read(extra).unwrap_err();
        (refusal.status, refusal.error, refusal.description)
    }

    const GRANT: &str = "audience=tokens%2Forders-read&writ_task_id=demo-1&writ_tool=orders.lookup";

    #[test]
    fn forms_decode_strictly() {
        assert_eq!(
            form("a=1+2%2B3&b=%C3%A9&&c&d="),
            vec![
                ("a".into(), "1 2+3".into()),
                ("b".into(), "é".into()),
                ("c".into(), String::new()),
                ("d".into(), String::new()),
            ]
        );
        assert_eq!(form(""), Vec::<(String, String)>::new());
        for bad in ["a=%", "a=%4", "a=%zz", "a=%C3", "%FF=1"] {
            let refusal = parse_form(bad.as_bytes()).unwrap_err();
            assert_eq!(
                (refusal.status, refusal.error),
                (StatusCode::BAD_REQUEST, "invalid_request"),
                "{bad}"
            );
            assert!(refusal.description.contains("field 1"), "{}", refusal.description);
        }
    }

    #[test]
    fn a_grant_maps_to_one_issue_request() {
        let request =
            read(&format!("{GRANT}&scope=orders%3Aread+orders%3Alist+orders%3Aread&writ_ttl=300")).unwrap();
        assert_eq!(request.subject_token.expose_secret(), "eyJ.a.b");
        assert_eq!(request.wanted, None);
        let Ask::Issue { task_id, tool, grant } = request.ask else { panic!("an issue") };
        assert_eq!((task_id.as_str(), tool.as_str()), ("demo-1", "orders.lookup"));
        assert_eq!((grant.provider.as_str(), grant.role.as_str()), ("tokens", "orders-read"));
        assert_eq!(grant.scopes, ["orders:read", "orders:list"], "a repeated scope counts once");
        assert_eq!(grant.ttl, Some(Duration::from_secs(300)));

        let Ask::Issue { grant, .. } = read(GRANT).unwrap().ask else { panic!("an issue") };
        assert_eq!((grant.scopes.len(), grant.ttl), (0, None), "no scope asks for none; no ttl, the default");
        let Ask::Issue { grant, .. } = read(&format!("{GRANT}&scope=&writ_ttl=")).unwrap().ask else {
            panic!("an issue")
        };
        assert_eq!((grant.scopes.len(), grant.ttl), (0, None), "an empty value is as if not sent");
        let Ask::Issue { grant, .. } = read(&format!("{GRANT}&scope=+a++b+")).unwrap().ask else {
            panic!("an issue")
        };
        assert_eq!(grant.scopes, ["a", "b"]);
        let Ask::Issue { grant, .. } =
            read("audience=pg%2Fteam%2Freader&writ_task_id=t&writ_tool=x").unwrap().ask
        else {
            panic!("an issue")
        };
        assert_eq!((grant.provider.as_str(), grant.role.as_str()), ("pg", "team/reader"));
    }

    #[test]
    fn unknown_parameters_are_ignored_and_known_ones_sent_once() {
        assert!(read(&format!("{GRANT}&client_id=me&foo=1&foo=2&state=x")).is_ok());
        let (status, error, description) = refused(&format!("{GRANT}&writ_tool=other"));
        assert_eq!((status, error), (StatusCode::BAD_REQUEST, "invalid_request"));
        assert_eq!(description, "parameter writ_tool is sent more than once; send each once (RFC 6749 §3.2)");
        let (_, error, description) = refused(&format!("{GRANT}&audience=tokens%2Forders-admin"));
        assert_eq!(error, "invalid_target");
        assert!(description.starts_with("2 audience values"), "{description}");
    }

    #[test]
    fn the_grant_type_and_subject_token_come_first() {
        let refusal = TokenRequest::read(&form(GRANT)).unwrap_err();
        assert_eq!(
            (refusal.error, refusal.description.starts_with("grant_type is missing")),
            ("invalid_request", true)
        );
        let refusal = TokenRequest::read(&form("grant_type=client_credentials&scope=a")).unwrap_err();
        assert_eq!((refusal.status, refusal.error), (StatusCode::BAD_REQUEST, "unsupported_grant_type"));
        let exchange = format!("grant_type={TOKEN_EXCHANGE}&{GRANT}");
        let refusal = TokenRequest::read(&form(&exchange)).unwrap_err();
        assert_eq!(
            (refusal.error, refusal.description.as_str()),
            ("invalid_request", "subject_token is missing: send the agent's workload JWT")
        );
        let refusal = TokenRequest::read(&form(&format!("{exchange}&subject_token=x"))).unwrap_err();
        assert!(refusal.description.starts_with("subject_token_type is missing"), "{refusal:?}");
        for (kind, accepted) in [
            ("urn:ietf:params:oauth:token-type:jwt", true),
            ("urn:ietf:params:oauth:token-type:id_token", true),
            ("urn:ietf:params:oauth:token-type:access_token", false),
            ("urn:ietf:params:oauth:token-type:saml2", false),
            ("jwt", false),
        ] {
            let request =
                TokenRequest::read(&form(&format!("{exchange}&subject_token=x&subject_token_type={kind}")));
            assert_eq!(request.is_ok(), accepted, "{kind}: {request:?}");
            if let Err(refusal) = request {
                assert_eq!(refusal.error, "invalid_request");
                assert!(refusal.description.contains("workload JWT"), "{refusal:?}");
            }
        }
    }

    #[test]
    fn client_authentication_and_delegation_are_refused() {
        let (status, error, description) = refused(&format!("{GRANT}&client_secret=s"));
        assert_eq!((status, error), (StatusCode::UNAUTHORIZED, "invalid_client"));
        assert!(description.contains("no OAuth client registrations"), "{description}");
        let (status, error, description) = refused(&format!("{GRANT}&actor_token=a&actor_token_type=b"));
        assert_eq!((status, error), (StatusCode::BAD_REQUEST, "invalid_request"));
        assert!(description.starts_with("actor_token is not supported"), "{description}");
    }

    #[test]
    fn the_target_is_one_audience_of_provider_and_role() {
        let (_, error, description) = refused("writ_task_id=t&writ_tool=x");
        assert_eq!(
            (error, description.as_str()),
            ("invalid_request", "audience is missing: name the grant as audience=<provider>/<role>")
        );
        for audience in ["orders-api", "tokens%2F", "%2Forders-read"] {
            let (_, error, description) = refused(&format!("audience={audience}&writ_task_id=t&writ_tool=x"));
            assert_eq!(error, "invalid_target", "{audience}");
            assert!(description.contains("is not <provider>/<role>"), "{description}");
        }
        let (_, error, description) = refused(&format!("{GRANT}&resource=https%3A%2F%2Forders.example"));
        assert_eq!(error, "invalid_target");
        assert!(description.starts_with("resource is not used"), "{description}");
    }

    #[test]
    fn task_tool_scope_and_ttl_are_checked_for_form() {
        let (_, error, description) = refused("audience=tokens%2Forders-read&writ_tool=x");
        assert_eq!(
            (error, description.as_str()),
            ("invalid_request", "writ_task_id is missing: name the task the credential is for")
        );
        let (_, error, description) = refused("audience=tokens%2Forders-read&writ_task_id=t");
        assert_eq!(
            (error, description.as_str()),
            ("invalid_request", "writ_tool is missing: name the tool about to be called")
        );
        let (_, error, description) = refused(&format!("{GRANT}&scope=orders%3Aread+%22quoted%22"));
        assert_eq!(error, "invalid_scope");
        assert!(description.starts_with("scope \"\\\"quoted\\\"\" is not a scope token"), "{description}");
        for ttl in ["-5", "5s", "1.5", "99999999999999999999", "%2B5"] {
            let (_, error, description) = refused(&format!("{GRANT}&writ_ttl={ttl}"));
            assert_eq!(error, "invalid_request", "{ttl}");
            assert!(description.contains("whole number of seconds"), "{description}");
        }
        let (_, error, description) = refused(&format!("{GRANT}&writ_ttl=315576000001"));
        assert_eq!(
            (error, description.as_str()),
            ("invalid_request", "writ_ttl is not a valid duration: seconds must be within ±315576000000"),
            "bounded as the gRPC API bounds a ttl"
        );
        let Ask::Issue { grant, .. } = read(&format!("{GRANT}&writ_ttl=0")).unwrap().ask else { panic!() };
        assert_eq!(grant.ttl, Some(Duration::ZERO), "zero is the broker's to refuse, as over gRPC");
    }

    #[test]
    fn requested_token_types_are_known_ones() {
        for (kind, wanted) in [
            ("urn:ietf:params:oauth:token-type:access_token", TokenType::AccessToken),
            ("urn:ietf:params:oauth:token-type:jwt", TokenType::Jwt),
            ("urn:writ:params:oauth:token-type:aws-session", TokenType::AwsSession),
            ("urn:writ:params:oauth:token-type:password", TokenType::Password),
        ] {
            assert_eq!(read(&format!("{GRANT}&requested_token_type={kind}")).unwrap().wanted, Some(wanted));
        }
        for kind in ["urn:ietf:params:oauth:token-type:id_token", "urn:ietf:params:oauth:token-type:saml2"] {
            let (_, error, description) = refused(&format!("{GRANT}&requested_token_type={kind}"));
            assert_eq!(error, "invalid_request");
            assert!(description.contains("is not one Writ issues"), "{description}");
        }
    }

    #[test]
    fn a_collection_names_only_its_approval() {
        let approval = "0199a0b0-0000-7000-8000-000000000000";
        let request = read(&format!("writ_approval_id={approval}")).unwrap();
        assert!(matches!(request.ask, Ask::Collect { approval_id } if approval_id == approval));
        for extra in [GRANT, "scope=a", "writ_ttl=5"] {
            let (_, error, description) = refused(&format!("writ_approval_id={approval}&{extra}"));
            assert_eq!(error, "invalid_request", "{extra}");
            assert!(description.contains("the approval request fixes"), "{description}");
        }
    }

    #[test]
    fn a_request_never_shows_its_subject_token() {
        let request = read(GRANT).unwrap();
        assert!(!format!("{request:?}").contains("eyJ.a.b"), "{request:?}");
    }
}
