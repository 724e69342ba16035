//! AWS SDK failures mapped, once, to what Writ should do about them.
//!
//! Messages carry AWS's error code and message (which name ARNs and
//! actions, never keys) and the SDK's description of a network failure.
//! They never carry a request: requests are signed with Writ's key.

use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use writ_provider_api::ProviderError;

/// What a failure asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaction {
    /// Retry later: the network, throttling, AWS having a bad moment.
    Retry,
    /// Change the request or the setup it needs: access denied, a policy
    /// AWS will not take.
    Refuse,
    /// Give up and alert an operator: everything else.
    GiveUp,
}

/// Sorts an AWS error response by its code and HTTP status.
pub fn classify(code: &str, status: u16) -> Reaction {
    match code {
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "InternalFailure"
        | "InternalError"
        | "RequestTimeout"
        | "RequestTimeoutException"
        | "IDPCommunicationError"
        | "ConcurrentModification" => Reaction::Retry,
        "AccessDenied"
        | "AccessDeniedException"
        | "MalformedPolicyDocument"
        | "MalformedPolicyDocumentException"
        | "PackedPolicyTooLarge"
        | "PackedPolicyTooLargeException"
        | "NoSuchEntity" => Reaction::Refuse,
        _ if status == 429 || status >= 500 => Reaction::Retry,
        _ => Reaction::GiveUp,
    }
}

/// A failed call, made while doing `what`. `refused` adds advice to a
/// `Refused` message (what Writ's identity or the role needs).
pub fn sdk<E>(error: &SdkError<E, HttpResponse>, what: &str, advice: &str) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let body = service.raw().body().bytes().and_then(|body| std::str::from_utf8(body).ok());
            let code = service.err().code().or_else(|| body.and_then(|body| xml_element(body, "Code")));
            let code = code.unwrap_or("an unnamed error");
            let message =
                service.err().message().or_else(|| body.and_then(|body| xml_element(body, "Message")));
            let message = message.unwrap_or("no message");
            let status = service.raw().status().as_u16();
            let text = format!("{what}: AWS answered {code} (HTTP {status}): {message}");
            match classify(code, status) {
                Reaction::Retry => ProviderError::Unavailable(text),
                Reaction::Refuse if advice.is_empty() => ProviderError::Refused(text),
                Reaction::Refuse => ProviderError::Refused(format!("{text}; {advice}")),
                Reaction::GiveUp => ProviderError::Failed(text),
            }
        }
        SdkError::TimeoutError(_) => ProviderError::Unavailable(format!("{what}: timed out")),
        SdkError::DispatchFailure(failure) if failure.is_user() => {
            ProviderError::Failed(format!("{what}: {}", chain(error)))
        }
        SdkError::DispatchFailure(_) => {
            ProviderError::Unavailable(format!("{what}: cannot reach AWS: {}", chain(error)))
        }
        SdkError::ResponseError(response) if response.raw().status().is_server_error() => {
            ProviderError::Unavailable(format!("{what}: {}", chain(error)))
        }
        _ => ProviderError::Failed(format!("{what}: {}", chain(error))),
    }
}

/// An error and its causes, by their `Display` only: `Debug` output of SDK
/// errors holds whole responses.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The text of the first `<name>` element of an XML error body. The SDK
/// reads AWS's `<ErrorResponse><Error>…`; some emulators and proxies wrap
/// the error once more (`<Errors><Error>…`), which the SDK does not read.
fn xml_element<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = body.split_once(&format!("<{name}>"))?;
    let (text, _) = rest.split_once(&format!("</{name}>"))?;
    Some(text).filter(|text| !text.is_empty() && !text.contains('<'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_in_wrapped_error_bodies() {
        let body = "<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code>\
                    <Message>The security token included in the request is invalid.</Message>\
                    </Error></Errors></ErrorResponse>";
        assert_eq!(xml_element(body, "Code"), Some("InvalidClientTokenId"));
        assert_eq!(
            xml_element(body, "Message"),
            Some("The security token included in the request is invalid.")
        );
        assert_eq!(xml_element("<html>Forbidden</html>", "Code"), None);
        assert_eq!(xml_element("<Code><b>x</b></Code>", "Code"), None);
    }

    #[test]
    fn aws_errors_are_sorted_by_what_the_caller_does() {
        for (code, status) in [
            ("Throttling", 400),
            ("RequestLimitExceeded", 400),
            ("ServiceUnavailable", 503),
            ("InternalFailure", 500),
            ("SomethingNew", 502),
            ("SlowDown", 429),
            ("ConcurrentModification", 409),
        ] {
            assert_eq!(classify(code, status), Reaction::Retry, "{code}");
        }
        for (code, status) in [
            ("AccessDenied", 403),
            ("MalformedPolicyDocument", 400),
            ("PackedPolicyTooLarge", 400),
            ("NoSuchEntity", 404),
        ] {
            assert_eq!(classify(code, status), Reaction::Refuse, "{code}");
        }
        for (code, status) in [
            ("ValidationError", 400),
            ("InvalidClientTokenId", 403),
            ("SignatureDoesNotMatch", 403),
            ("ExpiredToken", 400),
            ("RegionDisabledException", 403),
        ] {
            assert_eq!(classify(code, status), Reaction::GiveUp, "{code}");
        }
    }
}
