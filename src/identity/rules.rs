//! The header and claim rules Writ enforces itself, on top of what
//! `jsonwebtoken` checks. `docs/token-rules.md` lists every rule of RFC
//! 7515, RFC 7519 and RFC 8725 and which component enforces it.
//!
//! Everything here reads the token before its signature is checked, so it
//! only ever refuses: nothing read here is trusted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{AuthError, parse_algorithm};

/// A decoded JOSE header or JWT claims set.
pub type Object = Map<String, Value>;

/// Caller-supplied text (an `iss`, a `kid`, an `alg` from the token) as a
/// message may show it: the one bounded, escaped form every message uses.
pub use crate::text::quoted;

/// Header parameters registered by RFC 7515 and RFC 7518 (JWS and JWE):
/// `crit` must not name them (RFC 7515 §4.1.11).
const REGISTERED: [&str; 20] = [
    "alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit", "enc", "zip", "epk",
    "apu", "apv", "iv", "tag", "p2s", "p2c",
];

/// Header parameters that point at or carry a key. Writ takes keys only from
/// the issuer's JWKS (RFC 8725 §3.10); a token that brings its own key is
/// refused rather than silently ignored.
const KEY_CARRIERS: [&str; 4] = ["jwk", "jku", "x5c", "x5u"];

/// The `typ` values Writ accepts (compared without case and without an
/// `application/` prefix, RFC 7515 §4.1.9): plain JWTs (ID tokens,
/// Kubernetes service account tokens, SPIFFE JWT-SVIDs, which may say
/// `JOSE`) and RFC 9068 access tokens, which OAuth servers issue to agents
/// with `aud` = Writ. Any other type marks another kind of JWT (a security
/// event, a logout token, a DPoP proof, a client assertion …), which is
/// never a workload identity (RFC 8725 §3.11).
const TYPES: [&str; 3] = ["jwt", "jose", "at+jwt"];

/// Splits a compact JWS into its decoded header, payload and signature,
/// refusing anything but three canonical base64url parts, the first two
/// JSON objects without repeated member names.
pub fn split_unverified(token: &str) -> Result<(Object, Object, Vec<u8>), AuthError> {
    let parts: Vec<&str> = token.splitn(6, '.').collect();
    let [header, payload, signature] = parts[..] else {
        if parts.len() == 5 {
            return Err(AuthError::Malformed(
                "the token has five parts, an encrypted JWT (JWE); Writ accepts signed JWTs only".into(),
            ));
        }
        return Err(AuthError::Malformed("a JWT has three dot-separated parts".into()));
    };
    let header = object(header, "header")?;
    let payload = object(payload, "payload")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| AuthError::Malformed("the signature is not unpadded base64url".into()))?;
    Ok((header, payload, signature))
}

fn object(part: &str, what: &str) -> Result<Object, AuthError> {
    // The engine refuses padding, characters outside the URL-safe alphabet
    // and non-zero trailing bits, so each token has one encoding only.
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed(format!("the {what} is not unpadded base64url")))?;
    match serde_json::from_slice::<Strict>(&bytes) {
        Ok(Strict(Value::Object(object))) => Ok(object),
        Ok(_) => Err(AuthError::Malformed(format!("the {what} is not a JSON object"))),
        // The only data error `Strict` raises is a repeated name.
        Err(error) if error.is_data() => {
            Err(AuthError::Malformed(format!("the {what} repeats a member name")))
        }
        Err(_) => Err(AuthError::Malformed(format!("the {what} is not JSON"))),
    }
}

/// Checks the header and returns its algorithm. Unknown parameters that are
/// not marked critical are ignored, as RFC 7515 §4 requires.
pub fn check_header(header: &Object) -> Result<Algorithm, AuthError> {
    let algorithm = match header.get("alg") {
        None => return Err(AuthError::Malformed("the header has no alg".into())),
        Some(Value::String(name)) => {
            parse_algorithm(name).ok_or_else(|| AuthError::Algorithm(name.clone()))?
        }
        Some(_) => return Err(AuthError::Malformed("the header's alg is not a string".into())),
    };
    if let Some(crit) = header.get("crit") {
        return Err(refuse_crit(header, crit));
    }
    if header.contains_key("b64") {
        return Err(AuthError::Refused(
            "the header has b64 (RFC 7797 unencoded payload), which Writ does not support".into(),
        ));
    }
    if header.contains_key("zip") {
        return Err(AuthError::Refused("the header has zip; a signed JWT is never compressed".into()));
    }
    if header.contains_key("enc") {
        return Err(AuthError::Refused("the header has enc; Writ accepts signed JWTs only".into()));
    }
    if let Some(name) = KEY_CARRIERS.into_iter().find(|name| header.contains_key(*name)) {
        return Err(AuthError::Refused(format!(
            "the header carries {name}; Writ takes keys only from the issuer's JWKS"
        )));
    }
    if header.contains_key("cty") {
        return Err(AuthError::Refused("the header has cty; nested JWTs are not accepted".into()));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) => {
            let lower = typ.to_ascii_lowercase();
            let media = lower.strip_prefix("application/").unwrap_or(&lower);
            if !TYPES.contains(&media) {
                return Err(AuthError::Refused(format!(
                    "typ {} marks another kind of JWT; Writ accepts JWT and at+jwt",
                    quoted(typ)
                )));
            }
        }
        Some(_) => return Err(AuthError::Malformed("the header's typ is not a string".into())),
    }
    for name in ["kid", "x5t", "x5t#S256"] {
        if header.get(name).is_some_and(|value| !value.is_string()) {
            return Err(AuthError::Malformed(format!("the header's {name} is not a string")));
        }
    }
    Ok(algorithm)
}

/// Why a header with `crit` is refused: Writ understands no extension, so
/// every `crit` is refused, but the message says what is wrong with it.
fn refuse_crit(header: &Object, crit: &Value) -> AuthError {
    let Some(names) = crit.as_array() else {
        return AuthError::Malformed("crit is not a list of header parameter names".into());
    };
    if names.is_empty() {
        return AuthError::Malformed("crit is an empty list".into());
    }
    let mut names_as_text = Vec::with_capacity(names.len());
    for name in names {
        let Some(name) = name.as_str() else {
            return AuthError::Malformed("crit is not a list of header parameter names".into());
        };
        names_as_text.push(name);
    }
    for name in &names_as_text {
        if REGISTERED.contains(name) {
            return AuthError::Malformed(format!(
                "crit names {}, a registered header parameter",
                quoted(name)
            ));
        }
        if !header.contains_key(*name) {
            return AuthError::Malformed(format!("crit names {}, which the header lacks", quoted(name)));
        }
    }
    let first = names_as_text.first().copied().unwrap_or_default();
    AuthError::Refused(format!(
        "the header marks {} critical, an extension Writ does not understand",
        quoted(first)
    ))
}

/// Checks the types of the claims Writ reads, before the signature: `iss`,
/// `sub`, `aud` and the lifetimes. Whether `aud` names Writ is checked with
/// the signature, by `jsonwebtoken`.
pub fn check_claims(claims: &Object) -> Result<(), AuthError> {
    for name in ["iss", "sub"] {
        match claims.get(name) {
            None => return Err(AuthError::MissingClaim(name.into())),
            Some(Value::String(text)) if text.is_empty() => return Err(AuthError::MissingClaim(name.into())),
            Some(Value::String(_)) => {}
            Some(_) => return Err(AuthError::Malformed(format!("claim {name} is not a string"))),
        }
    }
    match claims.get("aud") {
        None => return Err(AuthError::MissingClaim("aud".into())),
        Some(Value::String(_)) => {}
        Some(Value::Array(audiences)) if audiences.iter().all(Value::is_string) => {}
        Some(_) => return Err(AuthError::Malformed("claim aud is not a string or a list of strings".into())),
    }
    if !claims.contains_key("exp") {
        return Err(AuthError::MissingClaim("exp".into()));
    }
    for name in ["exp", "nbf", "iat"] {
        numeric_date(claims, name, Round::Down)?;
    }
    Ok(())
}

/// How a fractional NumericDate becomes whole seconds: always towards the
/// stricter answer (an earlier `exp`, a later `nbf` and `iat`).
#[derive(Clone, Copy)]
pub enum Round {
    Down,
    Up,
}

/// A NumericDate claim (RFC 7519 §2: seconds since 1970, possibly
/// fractional) in whole seconds, or `None` when absent. Anything but a
/// JSON number is refused; values beyond the range of `i64` saturate.
pub fn numeric_date(claims: &Object, name: &str, round: Round) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(number)) => Ok(Some(seconds(number, round))),
        Some(_) => Err(AuthError::Malformed(format!("claim {name} is not a number of seconds since 1970"))),
    }
}

fn seconds(number: &Number, round: Round) -> i64 {
    if let Some(whole) = number.as_i64() {
        return whole;
    }
    if number.is_u64() {
        return i64::MAX;
    }
    let fractional = number.as_f64().unwrap_or(0.0);
    // `as` saturates; JSON has no NaN or infinity.
    match round {
        Round::Down => fractional.floor() as i64,
        Round::Up => fractional.ceil() as i64,
    }
}

/// A JSON value read with repeated member names refused at any depth
/// (RFC 7515 §5.2, RFC 7519 §4), where `serde_json` would keep the last.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Number::from_f64(value).map(Value::Number).ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        while let Some(Strict(value)) = seq.next_element()? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if object.contains_key(&name) {
                return Err(de::Error::custom("repeated member name"));
            }
            let Strict(value) = map.next_value()?;
            object.insert(name, value);
        }
        Ok(Value::Object(object))
    }
}
