//! The intent template: how a lease's revocation handle is derived from its
//! id and role without asking the plugin. The trait's `intent` is
//! synchronous and must not fail for lack of a network, so the plugin states
//! the rule once in `Describe` and Writ applies it.

use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    LeaseId,
    LeaseHex,
    Role,
}

/// A parsed `intent_template`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IntentTemplate(Vec<Piece>);

impl IntentTemplate {
    /// Parses a template; empty means `{lease_id}`. It must mention the
    /// lease, or two leases would share one handle.
    pub(crate) fn parse(template: &str) -> Result<Self, String> {
        let template = if template.is_empty() { "{lease_id}" } else { template };
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => {
                                return Err(
                                    "intent_template: unclosed '{' (write '{{' for a literal brace)".into()
                                );
                            }
                        }
                    }
                    let piece = match name.as_str() {
                        "lease_id" => Piece::LeaseId,
                        "lease_hex" => Piece::LeaseHex,
                        "role" => Piece::Role,
                        other => return Err(format!("intent_template: unknown placeholder {{{other}}}")),
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                }
                '}' => return Err("intent_template: unmatched '}' (write '}}' for a literal brace)".into()),
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if !pieces.iter().any(|p| matches!(p, Piece::LeaseId | Piece::LeaseHex)) {
            return Err("intent_template must contain {lease_id} or {lease_hex}".into());
        }
        Ok(Self(pieces))
    }

    pub(crate) fn expand(&self, lease_id: Uuid, role: &str) -> String {
        let mut handle = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => handle.push_str(text),
                Piece::LeaseId => handle.push_str(&lease_id.hyphenated().to_string()),
                Piece::LeaseHex => handle.push_str(&lease_id.simple().to_string()),
                Piece::Role => handle.push_str(role),
            }
        }
        handle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_every_placeholder() {
        let lease: Uuid = "0190f5e4-3b1a-7c3e-9a51-3f0f1e2d4c5b".parse().unwrap();
        let expand = |t: &str| IntentTemplate::parse(t).unwrap().expand(lease, "reports-read");
        assert_eq!(expand(""), "0190f5e4-3b1a-7c3e-9a51-3f0f1e2d4c5b");
        assert_eq!(expand("writ_{lease_hex}"), "writ_0190f5e43b1a7c3e9a513f0f1e2d4c5b");
        assert_eq!(expand("{role}/{lease_id}"), "reports-read/0190f5e4-3b1a-7c3e-9a51-3f0f1e2d4c5b");
        assert_eq!(expand("{{x}}{lease_hex}"), "{x}0190f5e43b1a7c3e9a513f0f1e2d4c5b");
    }

    #[test]
    fn rejects_templates_that_do_not_name_the_lease_or_are_malformed() {
        for bad in ["constant", "{role}", "{lease}", "{lease_id", "a}b{lease_id}"] {
            assert!(IntentTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
