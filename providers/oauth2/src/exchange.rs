//! RFC 8693 token exchange, which the `oauth2` crate does not offer: a form
//! POST to the token endpoint on the same HTTP client, authenticated like
//! every other request (`form.rs`), and its answer.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;
use writ_provider_api::ProviderError;

use crate::Issued;
use crate::error;
use crate::form::Client;
use crate::http::Http;

pub(crate) const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const WHAT: &str = "token exchange";

/// What to exchange, for what.
pub(crate) struct Exchange<'a> {
    pub subject_token: &'a SecretString,
    pub scopes: &'a [String],
    pub resources: &'a [String],
    pub audiences: &'a [String],
}

/// RFC 8693 §2.2.1, plus `scope` as RFC 6749 words it.
#[derive(Deserialize)]
struct Response {
    access_token: String,
    #[serde(default)]
    issued_token_type: Option<String>,
    token_type: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

/// Exchanges the agent's token for an access token.
pub(crate) async fn exchange(
    http: &Http,
    token_url: &Url,
    client: &Client,
    exchange: &Exchange<'_>,
) -> Result<Issued, ProviderError> {
    let scope = exchange.scopes.join(" ");
    let mut params: Vec<(&str, &str)> = vec![
        ("grant_type", GRANT_TYPE),
        ("subject_token", exchange.subject_token.expose_secret()),
        ("subject_token_type", JWT),
        ("requested_token_type", ACCESS_TOKEN),
        ("scope", &scope),
    ];
    params.extend(exchange.resources.iter().map(|resource| ("resource", resource.as_str())));
    params.extend(exchange.audiences.iter().map(|audience| ("audience", audience.as_str())));
    let answer = client.post(http, token_url, &params, WHAT).await?;
    let secrets = [exchange.subject_token.expose_secret(), client.secret.expose_secret()];
    if !answer.status.is_success() {
        return Err(client.refusal(&answer, WHAT, &secrets));
    }
    let response: Response = parse_success(&answer.body)?;
    if let Some(issued) = response.issued_token_type.as_deref()
        && issued != ACCESS_TOKEN
        && issued != JWT
    {
        return Err(ProviderError::Failed(format!(
            "{WHAT}: the authorization server issued a {:?}, not an access token",
            error::sanitize(issued, &secrets)
        )));
    }
    Ok(Issued {
        access_token: SecretString::from(response.access_token),
        token_type: response.token_type,
        expires_in: response.expires_in.map(Duration::from_secs),
        scopes: response
            .scope
            .map(|scope| scope.split(' ').filter(|s| !s.is_empty()).map(String::from).collect()),
    })
}

/// Parses a success body; on failure says only where it broke (the body
/// holds a token).
fn parse_success(body: &[u8]) -> Result<Response, ProviderError> {
    serde_json::from_slice::<Response>(body).map_err(|e| {
        error::unparsable(WHAT, &format!("line {} column {}, {:?}", e.line(), e.column(), e.classify()))
    })
}
