//! The signature scheme: `Writ-Signature: v1=<hex HMAC-SHA256(secret,
//! "<Writ-Timestamp>.<raw body>")>`, made afresh for every attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ring::hmac;

use super::WebhookError;

/// The `Writ-Signature` value for `body` sent at unix time `timestamp`.
pub(super) fn sign(key: &hmac::Key, timestamp: i64, body: &[u8]) -> String {
    let mut context = hmac::Context::with_key(key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("v1={}", hex::encode(context.sign().as_ref()))
}

/// Checks a received webhook: `timestamp` and `signature_header` are the
/// `Writ-Timestamp` and `Writ-Signature` headers, `body` the raw bytes as
/// received (before any JSON parsing). Accepts when some `v1=` entry of the
/// header (comma-separated; Writ sends one) is the HMAC of
/// `"<timestamp>.<body>"` under `secret`, compared in constant time, and
/// the timestamp is within `tolerance` of `now` either way.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature_header: &str,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), WebhookError> {
    if timestamp.is_empty() || !timestamp.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(WebhookError::InvalidTimestamp);
    }
    let sent: i64 = timestamp.parse().map_err(|_| WebhookError::InvalidTimestamp)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    let signatures: Vec<&str> =
        signature_header.split(',').filter_map(|entry| entry.trim().strip_prefix("v1=")).collect();
    if signatures.is_empty() {
        return Err(WebhookError::MissingSignature);
    }
    let matched = signatures
        .iter()
        .any(|signature| hex::decode(signature).is_ok_and(|tag| hmac::verify(&key, &message, &tag).is_ok()));
    if !matched {
        return Err(WebhookError::BadSignature);
    }
    let age_seconds = now.timestamp().saturating_sub(sent);
    if age_seconds.unsigned_abs() > tolerance.as_secs() {
        return Err(WebhookError::StaleTimestamp { age_seconds, tolerance_seconds: tolerance.as_secs() });
    }
    Ok(())
}
