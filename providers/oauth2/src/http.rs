//! The one HTTP client every request to the authorization server goes
//! through, and the first sorting of its failures.
//!
//! `oauth2` reads any status other than 200 as an OAuth2 error body and
//! drops the status, so a `503` with an HTML page would look like a
//! malformed answer. [`Http`] wraps the crate's own `reqwest` client and
//! turns a 5xx or 429 into [`HttpError::Busy`] before `oauth2` sees it:
//! those say "not now", and Writ retries them.

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::{AsyncHttpClient, HttpClientError, HttpRequest, HttpResponse};
use reqwest::StatusCode;
use writ_provider_api::ProviderError;

/// A `reqwest` client that follows no redirects (a token request must not
/// be sent on to wherever a response points) and gives up after `timeout`.
#[derive(Clone, Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
}

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// No answer: refused, reset, timed out, TLS failed.
    #[error("{0}")]
    Unreachable(String),
    /// The server answered that it cannot serve now (5xx, 429).
    #[error("the authorization server answered HTTP {0}")]
    Busy(StatusCode),
    /// The request could not be built; retrying will not help.
    #[error("cannot build the request: {0}")]
    Malformed(String),
}

impl HttpError {
    pub(crate) fn into_provider_error(self, what: &str) -> ProviderError {
        match self {
            Self::Unreachable(_) | Self::Busy(_) => ProviderError::Unavailable(format!("{what}: {self}")),
            Self::Malformed(_) => ProviderError::Failed(format!("{what}: {self}")),
        }
    }

    /// Only a request that could not be built is this side's fault; any
    /// failure to send or to read the answer (refused, reset, timed out,
    /// cut short) may pass.
    fn from_reqwest(error: &reqwest::Error) -> Self {
        if error.is_builder() { Self::Malformed(describe(error)) } else { Self::Unreachable(describe(error)) }
    }
}

/// The error with its causes ("connection refused" is a cause of reqwest's
/// "error sending request"). Holds the URL, which carries no secret
/// (configuration refuses credentials in URLs); never a header or body.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return match error.url() {
            Some(url) => format!("no answer from {url} in time"),
            None => "no answer in time".into(),
        };
    }
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether a status says "not now" rather than "not like this".
fn is_busy(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

impl Http {
    pub(crate) fn new(timeout: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("writ-provider-oauth2/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", describe(&e)))?;
        Ok(Self { client })
    }

    /// Sends a request built on this client; answers with the status and
    /// body unless the server is busy.
    pub(crate) async fn send(
        &self,
        request: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), HttpError> {
        let response = request(&self.client).send().await.map_err(|e| HttpError::from_reqwest(&e))?;
        let status = response.status();
        if is_busy(status) {
            return Err(HttpError::Busy(status));
        }
        let body = response.bytes().await.map_err(|e| HttpError::from_reqwest(&e))?;
        Ok((status, body.to_vec()))
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self.client.call(request).await.map_err(|error| match error {
                HttpClientError::Reqwest(error) => HttpError::from_reqwest(&error),
                HttpClientError::Http(error) => HttpError::Malformed(error.to_string()),
                HttpClientError::Io(error) => HttpError::Unreachable(error.to_string()),
                HttpClientError::Other(text) => HttpError::Unreachable(text),
                // The enum is non-exhaustive.
                other => HttpError::Unreachable(other.to_string()),
            })?;
            if is_busy(response.status()) {
                return Err(HttpError::Busy(response.status()));
            }
            Ok(response)
        })
    }
}
