//! Authorization-server failures mapped, once, to what Writ should do
//! about them.
//!
//! Messages carry the server's error code and a cleaned-up description,
//! never a token, the client secret or a response body: a body that did
//! not parse may be a token response.

use oauth2::{ErrorResponse, RequestTokenError, StandardErrorResponse};
use writ_provider_api::ProviderError;

use crate::http::HttpError;

/// The longest server description kept in a message.
const MAX_DESCRIPTION: usize = 200;

/// A failed request to an endpoint, as `oauth2` reports it. `secrets` must
/// not appear in the message even if the server echoed them.
pub(crate) fn request<T>(
    error: RequestTokenError<HttpError, StandardErrorResponse<T>>,
    what: &str,
    secrets: &[&str],
) -> ProviderError
where
    T: oauth2::ErrorResponseType + AsRef<str> + std::fmt::Display + 'static,
    StandardErrorResponse<T>: ErrorResponse,
{
    match error {
        RequestTokenError::ServerResponse(response) => server_error(
            what,
            response.error().as_ref(),
            response.error_description().map(String::as_str),
            secrets,
        ),
        RequestTokenError::Request(error) => error.into_provider_error(what),
        // Only where in the document it broke, never serde's text: it may
        // quote a value of the body.
        RequestTokenError::Parse(error, _body) => unparsable(what, &error.path().to_string()),
        RequestTokenError::Other(text) => ProviderError::Failed(format!("{what}: {text}")),
    }
}

/// A response whose JSON did not have the expected shape at `path`.
pub(crate) fn unparsable(what: &str, path: &str) -> ProviderError {
    ProviderError::Failed(format!("{what}: the authorization server's answer does not parse (at {path})"))
}

/// An RFC 6749 §5.2 error response: `code` and `description` as the server
/// sent them. `secrets` are values that must not appear in the message even
/// if the server echoed them (the subject token).
pub(crate) fn server_error(
    what: &str,
    code: &str,
    description: Option<&str>,
    secrets: &[&str],
) -> ProviderError {
    let code = sanitize(code, secrets);
    let message = match description.map(|text| sanitize(text, secrets)).filter(|text| !text.is_empty()) {
        Some(description) => format!("{what}: the authorization server refused: {code} ({description})"),
        None => format!("{what}: the authorization server refused: {code}"),
    };
    match code.as_str() {
        // The request asked for something this client may not have, or the
        // agent's token was not accepted: the caller must change the request.
        "invalid_scope" | "invalid_target" | "unauthorized_client" | "invalid_grant" | "access_denied" => {
            ProviderError::Refused(message)
        }
        "temporarily_unavailable" | "server_error" | "slow_down" => ProviderError::Unavailable(message),
        // invalid_client, invalid_request, unsupported_grant_type,
        // unsupported_token_type, …: Writ's registration or configuration
        // is wrong, which an operator must fix.
        _ => ProviderError::Failed(message),
    }
}

/// Printable ASCII only, no known secret, nothing shaped like a JWT, and
/// short. RFC 6749 allows only `%x20-21 / %x23-5B / %x5D-7E` in a
/// description anyway; this keeps a server that ignores that from putting
/// anything else into Writ's messages and logs.
pub(crate) fn sanitize(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        text = text.replace(secret, "<redacted>");
    }
    let words: Vec<String> = text
        .split(' ')
        .map(|word| if looks_like_jwt(word) { "<redacted>".to_string() } else { word.to_string() })
        .collect();
    let cleaned: String =
        words.join(" ").chars().map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect();
    if cleaned.chars().count() > MAX_DESCRIPTION {
        let mut short: String = cleaned.chars().take(MAX_DESCRIPTION).collect();
        short.push('…');
        short
    } else {
        cleaned
    }
}

/// Three or more base64url segments joined by dots, long enough to be a
/// token rather than a version number.
fn looks_like_jwt(word: &str) -> bool {
    let segments: Vec<&str> = word.split('.').collect();
    segments.len() >= 3
        && word.len() >= 40
        && segments.iter().take(2).all(|segment| {
            !segment.is_empty()
                && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_the_agent_can_fix_are_refusals() {
        for code in ["invalid_scope", "invalid_target", "unauthorized_client", "invalid_grant"] {
            let error = server_error("token request", code, Some("not for you"), &[]);
            let ProviderError::Refused(message) = &error else { panic!("{code}: {error:?}") };
            assert!(message.contains(code) && message.contains("not for you"), "{message}");
        }
        for code in ["server_error", "temporarily_unavailable"] {
            assert!(server_error("x", code, None, &[]).is_retryable(), "{code}");
        }
        for code in ["invalid_client", "invalid_request", "unsupported_grant_type", "something_else"] {
            assert!(matches!(server_error("x", code, None, &[]), ProviderError::Failed(_)), "{code}");
        }
    }

    #[test]
    fn descriptions_lose_secrets_tokens_and_control_characters() {
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZ2VudC1hIn0.c2lnbmF0dXJlLWJ5dGVz";
        let text = format!("bad token {jwt}, secret s3cret-value\r\ninjected \u{1b}[31m");
        let cleaned = sanitize(&text, &["s3cret-value"]);
        assert!(!cleaned.contains(jwt) && !cleaned.contains("s3cret"), "{cleaned}");
        assert!(!cleaned.contains('\n') && !cleaned.contains('\u{1b}'), "{cleaned}");
        assert!(cleaned.starts_with("bad token <redacted>"), "{cleaned}");
        assert_eq!(sanitize("version 1.2.3 is fine", &[]), "version 1.2.3 is fine");
        let long = "x".repeat(1000);
        assert_eq!(sanitize(&long, &[]).chars().count(), MAX_DESCRIPTION + 1);
        let error = server_error("exchange", "invalid_grant", Some(&format!("got {jwt}")), &[]);
        assert!(!error.to_string().contains(jwt), "{error}");
    }
}
