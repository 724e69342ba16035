//! Finding the authorization server's endpoints from its issuer identifier
//! (RFC 8414, with OpenID Connect Discovery as the fallback), once, when
//! Writ starts: the credential shape Writ reports depends on whether there
//! is a revocation endpoint, and it is read only once.

use serde::Deserialize;
use url::Url;

use crate::config::{self, ClientAuth, Mode};
use crate::http::Http;

/// Where tokens are requested and revoked.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub token: Url,
    /// RFC 7009; without it tokens are expiry-only.
    pub revocation: Option<Url>,
    /// The metadata document they came from, which health checks fetch.
    pub metadata: Option<Url>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |url: &Option<Url>| url.as_ref().map(Url::as_str).map(str::to_string);
        f.debug_struct("Endpoints")
            .field("token", &self.token.as_str())
            .field("revocation", &text(&self.revocation))
            .field("metadata", &text(&self.metadata))
            .finish()
    }
}

/// The parts of RFC 8414 metadata this provider reads.
#[derive(Debug, Deserialize)]
struct Metadata {
    issuer: String,
    token_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    revocation_endpoint_auth_methods_supported: Option<Vec<String>>,
    grant_types_supported: Option<Vec<String>>,
}

/// The two places metadata may be, in the order they are tried: RFC 8414
/// inserts the well-known segment before the issuer's path, OpenID appends
/// it after.
pub(crate) fn metadata_urls(issuer: &Url) -> [Url; 2] {
    let path = issuer.path().trim_end_matches('/');
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut openid = issuer.clone();
    openid.set_path(&format!("{path}/.well-known/openid-configuration"));
    [rfc8414, openid]
}

/// Fetches the issuer's metadata and checks that the server offers what the
/// configuration needs: the grant types of its roles and the client
/// authentication method, where the metadata lists them.
pub(crate) async fn discover(
    http: &Http,
    issuer: &Url,
    auth: ClientAuth,
    modes: impl Iterator<Item = Mode>,
) -> Result<Endpoints, String> {
    let mut tried = Vec::new();
    let mut found = None;
    for url in metadata_urls(issuer) {
        let fetched = http
            .send(|client| client.get(url.clone()).header(reqwest::header::ACCEPT, "application/json"))
            .await
            .map_err(|e| format!("cannot fetch the metadata of issuer {issuer}: {e}"))?;
        match fetched {
            (status, body) if status.is_success() => {
                let metadata: Metadata = serde_json::from_slice(&body)
                    .map_err(|e| format!("the metadata at {url} does not parse: {e}"))?;
                found = Some((url, metadata));
                break;
            }
            (status, _) => tried.push(format!("{url} (HTTP {})", status.as_u16())),
        }
    }
    let Some((url, metadata)) = found else {
        return Err(format!("issuer {issuer} publishes no metadata: tried {}", tried.join(", ")));
    };
    check(issuer, &url, metadata, auth, modes)
}

fn check(
    issuer: &Url,
    url: &Url,
    metadata: Metadata,
    auth: ClientAuth,
    modes: impl Iterator<Item = Mode>,
) -> Result<Endpoints, String> {
    // RFC 8414 §3.3: the document must name the issuer it was fetched for,
    // or it may be another server's.
    if metadata.issuer.trim_end_matches('/') != issuer.as_str().trim_end_matches('/') {
        return Err(format!("the metadata at {url} is for issuer {:?}, not {issuer}", metadata.issuer));
    }
    let token =
        metadata.token_endpoint.ok_or_else(|| format!("the metadata at {url} has no token_endpoint"))?;
    let token = config::endpoint_url("the discovered token_endpoint", &token)?;
    let revocation = metadata
        .revocation_endpoint
        .map(|revocation| config::endpoint_url("the discovered revocation_endpoint", &revocation))
        .transpose()?;
    let offers = |list: &Option<Vec<String>>, wanted: &str| {
        list.as_ref().is_none_or(|list| list.iter().any(|item| item == wanted))
    };
    if !offers(&metadata.token_endpoint_auth_methods_supported, auth.as_str()) {
        return Err(format!(
            "issuer {issuer} does not accept client_auth = {:?} at its token endpoint",
            auth.as_str()
        ));
    }
    if revocation.is_some() && !offers(&metadata.revocation_endpoint_auth_methods_supported, auth.as_str()) {
        return Err(format!(
            "issuer {issuer} does not accept client_auth = {:?} at its revocation endpoint",
            auth.as_str()
        ));
    }
    for mode in modes {
        if !offers(&metadata.grant_types_supported, mode.grant_type()) {
            return Err(format!(
                "issuer {issuer} does not list the grant type {:?} in grant_types_supported",
                mode.grant_type()
            ));
        }
    }
    Ok(Endpoints { token, revocation, metadata: Some(url.clone()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(issuer: &str) -> Metadata {
        serde_json::from_value(serde_json::json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}/token"),
            "revocation_endpoint": format!("{issuer}/token/revocation"),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            "grant_types_supported": ["client_credentials"],
            "some_other_field": true,
        }))
        .unwrap()
    }

    #[test]
    fn metadata_is_looked_for_where_both_standards_put_it() {
        let [rfc8414, openid] = metadata_urls(&Url::parse("https://as.example.com").unwrap());
        assert_eq!(rfc8414.as_str(), "https://as.example.com/.well-known/oauth-authorization-server");
        assert_eq!(openid.as_str(), "https://as.example.com/.well-known/openid-configuration");
        let [rfc8414, openid] = metadata_urls(&Url::parse("https://as.example.com/realms/a/").unwrap());
        assert_eq!(
            rfc8414.as_str(),
            "https://as.example.com/.well-known/oauth-authorization-server/realms/a"
        );
        assert_eq!(openid.as_str(), "https://as.example.com/realms/a/.well-known/openid-configuration");
    }

    #[test]
    fn metadata_must_match_the_issuer_and_offer_what_the_roles_need() {
        let issuer = Url::parse("https://as.example.com").unwrap();
        let url = metadata_urls(&issuer)[0].clone();
        let cc = || [Mode::ClientCredentials].into_iter();
        let endpoints =
            check(&issuer, &url, metadata("https://as.example.com"), ClientAuth::ClientSecretBasic, cc())
                .unwrap();
        assert_eq!(endpoints.token.as_str(), "https://as.example.com/token");
        assert_eq!(endpoints.revocation.unwrap().as_str(), "https://as.example.com/token/revocation");

        let other =
            check(&issuer, &url, metadata("https://evil.example.com"), ClientAuth::ClientSecretBasic, cc());
        assert!(other.unwrap_err().contains("is for issuer \"https://evil.example.com\""));
        let post =
            check(&issuer, &url, metadata("https://as.example.com"), ClientAuth::ClientSecretPost, cc());
        assert!(post.unwrap_err().contains("client_auth = \"client_secret_post\""));
        let exchange = check(
            &issuer,
            &url,
            metadata("https://as.example.com"),
            ClientAuth::ClientSecretBasic,
            [Mode::TokenExchange].into_iter(),
        );
        assert!(exchange.unwrap_err().contains("urn:ietf:params:oauth:grant-type:token-exchange"));

        let mut plain = metadata("https://as.example.com");
        plain.token_endpoint = Some("http://as.example.com/token".into());
        let error = check(&issuer, &url, plain, ClientAuth::ClientSecretBasic, cc()).unwrap_err();
        assert!(error.contains("token_endpoint") && error.contains("https"), "{error}");
    }
}
