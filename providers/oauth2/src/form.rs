//! Form POSTs to the authorization server as Writ's client, for the two
//! requests the `oauth2` crate does not make here: RFC 8693 token exchange
//! (it has none) and RFC 7009 revocation (its `revoke_token` refuses any
//! URL that is not `https`, also the loopback `http` this provider allows
//! for tests; the configuration enforces `https` everywhere else).

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;
use url::form_urlencoded::byte_serialize;
use writ_provider_api::ProviderError;

use crate::config::ClientAuth;
use crate::error;
use crate::http::Http;

/// Writ's client at the authorization server.
pub(crate) struct Client {
    pub id: String,
    pub secret: SecretString,
    pub auth: ClientAuth,
}

/// An answer that is not "not now" (those are errors already).
pub(crate) struct Answer {
    pub status: reqwest::StatusCode,
    pub body: Vec<u8>,
}

/// RFC 6749 §5.2.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl Client {
    /// POSTs `params` to `url`, authenticated as configured. `what` names
    /// the request in errors.
    pub(crate) async fn post(
        &self,
        http: &Http,
        url: &Url,
        params: &[(&str, &str)],
        what: &str,
    ) -> Result<Answer, ProviderError> {
        let mut form = params.to_vec();
        if self.auth == ClientAuth::ClientSecretPost {
            form.push(("client_id", &self.id));
            form.push(("client_secret", self.secret.expose_secret()));
        }
        let (status, body) = http
            .send(|client| {
                let request =
                    client.post(url.clone()).header(reqwest::header::ACCEPT, "application/json").form(&form);
                match self.auth {
                    // RFC 6749 §2.3.1: both parts form-encoded before Basic.
                    ClientAuth::ClientSecretBasic => request.basic_auth(
                        byte_serialize(self.id.as_bytes()).collect::<String>(),
                        Some(byte_serialize(self.secret.expose_secret().as_bytes()).collect::<String>()),
                    ),
                    ClientAuth::ClientSecretPost => request,
                }
            })
            .await
            .map_err(|e| e.into_provider_error(what))?;
        Ok(Answer { status, body })
    }

    /// The error an unsuccessful answer stands for. `secrets` (beyond the
    /// client secret) must not appear in it even if the server echoed them.
    pub(crate) fn refusal(&self, answer: &Answer, what: &str, secrets: &[&str]) -> ProviderError {
        let mut secrets = secrets.to_vec();
        secrets.push(self.secret.expose_secret());
        match serde_json::from_slice::<ErrorBody>(&answer.body) {
            Ok(body) => error::server_error(what, &body.error, body.error_description.as_deref(), &secrets),
            Err(_) => ProviderError::Failed(format!(
                "{what}: the authorization server answered HTTP {} without an OAuth2 error",
                answer.status.as_u16()
            )),
        }
    }
}

/// RFC 7009: revokes an access token. The server answers 200 also for a
/// token it does not know (expired, revoked already), so this is idempotent.
pub(crate) async fn revoke(
    http: &Http,
    url: &Url,
    client: &Client,
    access_token: &SecretString,
) -> Result<(), ProviderError> {
    const WHAT: &str = "revocation";
    let params = [("token", access_token.expose_secret()), ("token_type_hint", "access_token")];
    let answer = client.post(http, url, &params, WHAT).await?;
    if answer.status == reqwest::StatusCode::OK {
        Ok(())
    } else {
        Err(client.refusal(&answer, WHAT, &[access_token.expose_secret()]))
    }
}
