//! SQL text built by hand. `CREATE ROLE`, `ALTER ROLE`, `GRANT` and the other
//! utility statements take no bind parameters, so role names and literals
//! are spliced into the text here, quoted the way PostgreSQL's own
//! `quote_ident` and `quote_literal` do it, and nowhere else.

use chrono::{DateTime, SubsecRound, Utc};
use ring::digest;
use ring::rand::SecureRandom;
use secrecy::SecretString;
use secrecy::zeroize::Zeroize;
use thiserror::Error;
use uuid::Uuid;

/// What every role Writ mints is called before its lease id. Revocation
/// refuses any handle that does not have this shape, so a damaged handle can
/// never make Writ drop a role it did not create.
pub const ROLE_PREFIX: &str = "writ_";

/// What every group role Writ makes is called before its fingerprint. The
/// `g_` is not a hex digit, so no group name is ever a login's
/// ([`is_role_name`]) and revocation can never be pointed at a group.
pub const GROUP_PREFIX: &str = "writ_g_";

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`). Longer ones
/// are silently truncated, which could make two names one.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// The placeholder a grant template uses for the minted role.
pub const ROLE_PLACEHOLDER: &str = "{{role}}";

/// The transaction-scoped advisory lock (`pg_advisory_xact_lock`) that
/// mints and revocations hold while they change privileges. PostgreSQL
/// rewrites an object's whole ACL row on every GRANT, and two transactions
/// granting on one object concurrently fail with "tuple concurrently
/// updated"; taking turns on this key avoids it. The value spells `writ acl`.
pub const ACL_LOCK: i64 = 0x7772_6974_2061_636c;

const PASSWORD_ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// 32 characters of 62: about 190 bits.
const PASSWORD_LEN: usize = 32;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SqlTextError {
    #[error("an identifier must not be empty")]
    EmptyIdentifier,
    #[error("an identifier must be at most {MAX_IDENTIFIER_BYTES} bytes")]
    IdentifierTooLong,
    #[error("SQL text must not contain a NUL character")]
    Nul,
}

/// The role minted for a lease: `writ_` and the lease id's 32 hex digits,
/// 37 bytes. Derived from the lease id alone, so Writ knows it before
/// minting and can revoke it by name after a crash.
pub fn role_name(lease_id: Uuid) -> String {
    format!("{ROLE_PREFIX}{}", lease_id.simple())
}

/// Whether `name` is a role name [`role_name`] could have produced.
pub fn is_role_name(name: &str) -> bool {
    name.strip_prefix(ROLE_PREFIX).is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The group role holding one template: `writ_g_` and 32 hex digits of a
/// SHA-256 over the database, the Writ role, which template of it
/// (`grants` or `scope <name>`) and its statements, 39 bytes. The same
/// template gets the same group in every Writ replica and after a restart;
/// a changed one gets a new group.
pub fn group_name(database: &str, role: &str, template: &str, statements: &[String]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    // Each part with its length first, so no two inputs read the same.
    let parts = [b"writ group v1".as_slice(), database.as_bytes(), role.as_bytes(), template.as_bytes()];
    for part in parts.into_iter().chain(statements.iter().map(String::as_bytes)) {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let digest = context.finish();
    let hex: String = digest.as_ref()[..16].iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{GROUP_PREFIX}{hex}")
}

/// An identifier in double quotes, inner double quotes doubled. Always
/// quoted, so case and keywords are preserved as written.
pub fn quote_ident(ident: &str) -> Result<String, SqlTextError> {
    if ident.is_empty() {
        return Err(SqlTextError::EmptyIdentifier);
    }
    if ident.len() > MAX_IDENTIFIER_BYTES {
        return Err(SqlTextError::IdentifierTooLong);
    }
    if ident.contains('\0') {
        return Err(SqlTextError::Nul);
    }
    Ok(format!("\"{}\"", ident.replace('"', "\"\"")))
}

/// A string literal in single quotes, inner single quotes doubled. Text
/// with a backslash becomes an `E'…'` literal with backslashes doubled, as
/// `quote_literal` does, so it means the same whatever
/// `standard_conforming_strings` is set to.
pub fn quote_literal(value: &str) -> Result<String, SqlTextError> {
    if value.contains('\0') {
        return Err(SqlTextError::Nul);
    }
    let quoted = value.replace('\'', "''");
    if quoted.contains('\\') {
        Ok(format!("E'{}'", quoted.replace('\\', "\\\\")))
    } else {
        Ok(format!("'{quoted}'"))
    }
}

/// The instant PostgreSQL will store for `at`: `timestamptz` keeps
/// microseconds, so anything finer is dropped (rounding down, so a role
/// never outlives the expiry asked for).
pub fn to_postgres_precision(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// A `timestamptz` literal in UTC for `VALID UNTIL`, read the same way
/// under every `DateStyle` and `TimeZone`.
pub fn timestamp_literal(at: DateTime<Utc>) -> Result<String, SqlTextError> {
    quote_literal(&at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
}

/// A grant template with the placeholder replaced by the quoted role name.
pub fn render(template: &str, quoted_role: &str) -> String {
    template.replace(ROLE_PLACEHOLDER, quoted_role)
}

/// A password of letters and digits from a CSPRNG. The alphabet needs no
/// quoting anywhere (SQL, connection strings, URLs, shells).
pub fn generate_password(rng: &dyn SecureRandom) -> Result<SecretString, ring::error::Unspecified> {
    let mut password = String::with_capacity(PASSWORD_LEN);
    let mut random = [0u8; 64];
    while password.len() < PASSWORD_LEN {
        rng.fill(&mut random)?;
        for &byte in &random {
            // 248 = 4 × 62: bytes above it are skipped so that every
            // character is equally likely.
            if byte < 248 && password.len() < PASSWORD_LEN {
                password.push(char::from(PASSWORD_ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    random.zeroize();
    Ok(SecretString::from(password))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn identifiers_are_quoted_like_quote_ident() {
        assert_eq!(quote_ident("writ_ab").unwrap(), "\"writ_ab\"");
        assert_eq!(quote_ident("Mixed Case").unwrap(), "\"Mixed Case\"");
        assert_eq!(quote_ident("a\"b").unwrap(), "\"a\"\"b\"");
        assert_eq!(quote_ident("\"; DROP ROLE x; --").unwrap(), "\"\"\"; DROP ROLE x; --\"");
        assert_eq!(quote_ident("").unwrap_err(), SqlTextError::EmptyIdentifier);
        assert_eq!(quote_ident("a\0b").unwrap_err(), SqlTextError::Nul);
        assert_eq!(quote_ident(&"x".repeat(63)).unwrap().len(), 65);
        assert_eq!(quote_ident(&"x".repeat(64)).unwrap_err(), SqlTextError::IdentifierTooLong);
    }

    #[test]
    fn literals_are_quoted_like_quote_literal() {
        assert_eq!(quote_literal("plain").unwrap(), "'plain'");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal("'; DROP ROLE x; --").unwrap(), "'''; DROP ROLE x; --'");
        assert_eq!(quote_literal("a\\b'c").unwrap(), "E'a\\\\b''c'");
        assert_eq!(quote_literal("a\0").unwrap_err(), SqlTextError::Nul);
    }

    #[test]
    fn role_names_come_from_the_lease_id_alone() {
        let lease = Uuid::parse_str("0190f1a2-b3c4-7d5e-8f60-718293a4b5c6").unwrap();
        let name = role_name(lease);
        assert_eq!(name, "writ_0190f1a2b3c47d5e8f60718293a4b5c6");
        assert_eq!(role_name(lease), name);
        assert!(name.len() <= MAX_IDENTIFIER_BYTES);
        assert!(is_role_name(&name));
        for not_ours in [
            "postgres",
            "writ_",
            "writ_0190F1A2B3C47D5E8F60718293A4B5C6",
            &format!("{name}0"),
            "xwrit_0190f1a2b3c47d5e8f60718293a4b5c",
        ] {
            assert!(!is_role_name(not_ours), "{not_ours}");
        }
    }

    #[test]
    fn group_names_are_fingerprints_of_their_template() {
        let statements = vec!["GRANT SELECT ON t TO {{role}}".to_string()];
        let name = group_name("app", "reader", "grants", &statements);
        assert_eq!(name, group_name("app", "reader", "grants", &statements), "deterministic");
        assert!(name.starts_with(GROUP_PREFIX) && name.len() == 39, "{name}");
        assert!(quote_ident(&name).is_ok());
        assert!(!is_role_name(&name), "a group is never taken for a login");
        let others = [
            group_name("other", "reader", "grants", &statements),
            group_name("app", "writer", "grants", &statements),
            group_name("app", "reader", "scope write", &statements),
            group_name("app", "reader", "grants", &["GRANT SELECT ON u TO {{role}}".to_string()]),
            group_name("app", "reader", "grants", &[]),
            // The boundaries between parts count.
            group_name("ap", "preader", "grants", &statements),
            group_name("app", "reader", "grants", &["GRANT SELECT ON t".into(), " TO {{role}}".into()]),
        ];
        for other in others {
            assert_ne!(other, name);
        }
    }

    #[test]
    fn timestamps_keep_microseconds_and_round_down() {
        let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.123456789Z").unwrap().with_timezone(&Utc);
        let stored = to_postgres_precision(at);
        assert!(stored <= at);
        assert_eq!(timestamp_literal(stored).unwrap(), "'2030-01-02 03:04:05.123456+00'");
    }

    #[test]
    fn templates_name_the_quoted_role() {
        let rendered = render("GRANT SELECT ON t TO {{role}}, {{role}}", "\"writ_1\"");
        assert_eq!(rendered, "GRANT SELECT ON t TO \"writ_1\", \"writ_1\"");
    }

    #[test]
    fn passwords_are_long_random_and_plain() {
        let rng = ring::rand::SystemRandom::new();
        let first = generate_password(&rng).unwrap();
        let second = generate_password(&rng).unwrap();
        assert_eq!(first.expose_secret().len(), PASSWORD_LEN);
        assert!(first.expose_secret().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(first.expose_secret(), second.expose_secret());
    }
}
