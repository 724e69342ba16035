//! IAM policy documents this provider writes: the session policy that
//! narrows a session to the scopes of its grant, and the role policy that
//! cuts off every session issued before a revocation.
//!
//! Statements come from the configuration as JSON text. They are checked
//! when the configuration loads, against the parts of IAM's grammar a
//! session policy may use, so a typo fails at start-up and not at an
//! agent's first mint.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// AWS's limit on the plaintext of `AssumeRole`'s `Policy`, in characters.
/// AWS also limits the packed (compressed) size of the policy and the
/// session tags together; that is not knowable here, and AWS refuses a
/// session over it with `PackedPolicyTooLarge`.
pub const MAX_SESSION_POLICY_CHARS: usize = 2048;

const VERSION: &str = "2012-10-17";

/// The inline role policy the optional revocation keeps, one per role.
pub const REVOCATION_POLICY_NAME: &str = "writ-revoke-older-sessions";
const REVOCATION_SID: &str = "WritRevokeOlderSessions";

/// Parses a scope's (or a role's) statements: a JSON array of statement
/// objects, or one object.
pub fn parse_statements(text: &str) -> Result<Vec<Value>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("is not valid JSON: {e}"))?;
    let statements = match value {
        Value::Array(statements) => statements,
        object @ Value::Object(_) => vec![object],
        _ => return Err("must be a JSON statement object or an array of them".into()),
    };
    if statements.is_empty() {
        return Err("has no statements".into());
    }
    for (index, statement) in statements.iter().enumerate() {
        check_statement(statement).map_err(|e| format!("statement {index}: {e}"))?;
    }
    Ok(statements)
}

fn check_statement(statement: &Value) -> Result<(), String> {
    let Value::Object(fields) = statement else { return Err("must be a JSON object".into()) };
    if fields.contains_key("Statement") || fields.contains_key("Version") {
        return Err("give the statements, not a whole policy document".into());
    }
    for key in fields.keys() {
        match key.as_str() {
            "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource" | "Condition" => {}
            "Principal" | "NotPrincipal" => return Err(format!("a session policy takes no {key}")),
            other => return Err(format!("unknown element {other:?}")),
        }
    }
    if let Some(sid) = fields.get("Sid") {
        let valid = sid.as_str().is_some_and(|sid| sid.chars().all(|c| c.is_ascii_alphanumeric()));
        if !valid {
            return Err("Sid must be a string of letters and digits".into());
        }
    }
    match fields.get("Effect").and_then(Value::as_str) {
        Some("Allow" | "Deny") => {}
        _ => return Err("Effect must be \"Allow\" or \"Deny\"".into()),
    }
    one_of(fields, "Action", "NotAction", check_action)?;
    one_of(fields, "Resource", "NotResource", check_resource)?;
    if let Some(condition) = fields.get("Condition") {
        let valid = condition
            .as_object()
            .is_some_and(|operators| !operators.is_empty() && operators.values().all(Value::is_object));
        if !valid {
            return Err("Condition must map condition operators to objects of keys and values".into());
        }
    }
    Ok(())
}

/// Exactly one of `name` and `negated`, each a string or a non-empty array
/// of strings that pass `check`.
fn one_of(
    fields: &Map<String, Value>,
    name: &str,
    negated: &str,
    check: fn(&str) -> bool,
) -> Result<(), String> {
    let (key, value) = match (fields.get(name), fields.get(negated)) {
        (Some(value), None) => (name, value),
        (None, Some(value)) => (negated, value),
        (Some(_), Some(_)) => return Err(format!("give {name} or {negated}, not both")),
        (None, None) => return Err(format!("{name} (or {negated}) is required")),
    };
    let items: Vec<&Value> = match value {
        Value::Array(items) if !items.is_empty() => items.iter().collect(),
        Value::String(_) => vec![value],
        _ => return Err(format!("{key} must be a string or a non-empty array of strings")),
    };
    for item in items {
        match item.as_str() {
            Some(text) if check(text) => {}
            _ => return Err(format!("{key}: {item} is not valid")),
        }
    }
    Ok(())
}

/// `*`, or `service:Action` where the action may hold `*` and `?`.
fn check_action(action: &str) -> bool {
    if action == "*" {
        return true;
    }
    let Some((service, name)) = action.split_once(':') else { return false };
    !service.is_empty()
        && service.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?')
}

/// `*` or an ARN (which may hold wildcards and policy variables).
fn check_resource(resource: &str) -> bool {
    resource == "*" || (resource.starts_with("arn:") && !resource.chars().any(char::is_whitespace))
}

/// The session policy for a grant: the role's own statements, then each
/// granted scope's. Compact JSON, as short as the statements allow.
pub fn session_policy<'a>(statements: impl IntoIterator<Item = &'a Value>) -> String {
    let statements: Vec<&Value> = statements.into_iter().collect();
    let document = if statements.is_empty() {
        // A session policy grants at most what it allows; with nothing to
        // allow, say so explicitly (IAM takes no empty Statement list).
        json!({ "Version": VERSION, "Statement": [{ "Effect": "Deny", "Action": "*", "Resource": "*" }] })
    } else {
        json!({ "Version": VERSION, "Statement": statements })
    };
    document.to_string()
}

/// The role policy that denies everything to sessions of the role issued
/// before `cutoff` (`aws:TokenIssueTime`), and nothing to later ones.
pub fn revocation_policy(cutoff: DateTime<Utc>) -> String {
    json!({
        "Version": VERSION,
        "Statement": [{
            "Sid": REVOCATION_SID,
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": { "DateLessThan": { "aws:TokenIssueTime": cutoff_text(cutoff) } },
        }],
    })
    .to_string()
}

fn cutoff_text(cutoff: DateTime<Utc>) -> String {
    cutoff.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The cutoff of a revocation policy this provider wrote, from the text
/// IAM returns (URL-encoded by real IAM, plain by some emulators).
/// `None` if the document is not one.
pub fn revocation_cutoff(document: &str) -> Option<DateTime<Utc>> {
    let text =
        if document.trim_start().starts_with('{') { document.to_string() } else { percent_decode(document)? };
    let value: Value = serde_json::from_str(&text).ok()?;
    let statement = value.get("Statement")?.as_array()?.iter().find(|s| s["Sid"] == REVOCATION_SID)?;
    let cutoff = statement.pointer("/Condition/DateLessThan/aws:TokenIssueTime")?.as_str()?;
    DateTime::parse_from_rfc3339(cutoff).ok().map(|cutoff| cutoff.with_timezone(&Utc))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: &str = r#"[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],
        "Resource":["arn:aws:s3:::reports","arn:aws:s3:::reports/*"]}]"#;

    #[test]
    fn valid_statements_parse() {
        assert_eq!(parse_statements(READ).unwrap().len(), 1);
        let one = r#"{"Sid":"Put1","Effect":"Deny","NotAction":"s3:Get*","NotResource":"*",
            "Condition":{"StringEquals":{"aws:RequestedRegion":["eu-west-1"]}}}"#;
        assert_eq!(parse_statements(one).unwrap().len(), 1);
    }

    #[test]
    fn invalid_statements_are_refused_precisely() {
        let cases = [
            ("not json", "is not valid JSON"),
            ("[]", "has no statements"),
            ("\"s3:GetObject\"", "statement object or an array"),
            (r#"[1]"#, "statement 0: must be a JSON object"),
            (r#"{"Version":"2012-10-17","Statement":[]}"#, "not a whole policy document"),
            (r#"{"Effect":"Allow","Action":"*","Resource":"*","Principal":"*"}"#, "takes no Principal"),
            (
                r#"{"Effect":"Allow","Action":"*","Resource":"*","Actions":"*"}"#,
                "unknown element \"Actions\"",
            ),
            (r#"{"Effect":"allow","Action":"*","Resource":"*"}"#, "Effect must be"),
            (r#"{"Effect":"Allow","Resource":"*"}"#, "Action (or NotAction) is required"),
            (r#"{"Effect":"Allow","Action":"*","NotAction":"s3:*","Resource":"*"}"#, "not both"),
            (r#"{"Effect":"Allow","Action":[],"Resource":"*"}"#, "non-empty array"),
            (r#"{"Effect":"Allow","Action":"s3 GetObject","Resource":"*"}"#, "Action: \"s3 GetObject\""),
            (r#"{"Effect":"Allow","Action":"S3:Get","Resource":"*"}"#, "is not valid"),
            (r#"{"Effect":"Allow","Action":"s3:Get","Resource":"bucket"}"#, "Resource: \"bucket\""),
            (r#"{"Effect":"Allow","Action":"s3:Get","Resource":"*","Condition":{}}"#, "Condition must"),
            (r#"{"Sid":"a b","Effect":"Allow","Action":"s3:Get","Resource":"*"}"#, "Sid must"),
            (
                r#"[{"Effect":"Allow","Action":"s3:Get","Resource":"*"},{"Effect":"Allow","Resource":"*"}]"#,
                "statement 1:",
            ),
        ];
        for (text, expected) in cases {
            let error = parse_statements(text).unwrap_err();
            assert!(error.contains(expected), "{text}: expected {expected:?}, got {error:?}");
        }
    }

    #[test]
    fn the_session_policy_holds_exactly_the_given_statements() {
        let read = parse_statements(READ).unwrap();
        let write = parse_statements(r#"{"Effect":"Allow","Action":"s3:PutObject","Resource":"*"}"#).unwrap();
        let policy: Value = serde_json::from_str(&session_policy(read.iter().chain(&write))).unwrap();
        assert_eq!(policy["Version"], VERSION);
        assert_eq!(policy["Statement"].as_array().unwrap(), &[read[0].clone(), write[0].clone()]);

        let nothing: Value = serde_json::from_str(&session_policy([])).unwrap();
        assert_eq!(nothing["Statement"], json!([{ "Effect": "Deny", "Action": "*", "Resource": "*" }]));
        assert!(!session_policy(&read).contains(char::is_whitespace), "compact");
    }

    #[test]
    fn revocation_policies_round_trip_plain_and_url_encoded() {
        let cutoff = DateTime::parse_from_rfc3339("2026-05-01T12:30:05Z").unwrap().with_timezone(&Utc);
        let document = revocation_policy(cutoff);
        assert!(document.contains(r#""aws:TokenIssueTime":"2026-05-01T12:30:05Z""#), "{document}");
        assert_eq!(revocation_cutoff(&document), Some(cutoff));
        let encoded: String = document
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        assert_eq!(revocation_cutoff(&encoded), Some(cutoff));
        assert_eq!(revocation_cutoff(&session_policy([])), None);
        assert_eq!(revocation_cutoff("%zz"), None);
    }
}
