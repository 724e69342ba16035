//! `[providers.<name>]` with `kind = "oauth2"`, and the checks it must pass
//! before Writ binds a port.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::{Host, Url};

/// The settings of one OAuth2 provider. Holds no secret: the client secret
/// is named by `client_secret_env` or `client_secret_file` and read when the
/// provider is built, so this prints safely with `Debug`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The authorization server's issuer identifier. Its metadata is fetched
    /// when Writ starts (RFC 8414 `/.well-known/oauth-authorization-server`,
    /// then OpenID `/.well-known/openid-configuration`). Exclusive with
    /// `token_url`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The token endpoint, when the server is not discovered.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The RFC 7009 revocation endpoint, with `token_url`. Without one the
    /// provider's credentials are expiry-only.
    #[serde(default)]
    pub revocation_url: Option<String>,
    /// Writ's own client at the authorization server.
    pub client_id: String,
    /// The environment variable that holds the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// A file that holds the client secret; surrounding whitespace is ignored.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// How Writ authenticates to the token and revocation endpoints.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The longest one request to the authorization server may take.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    pub roles: BTreeMap<String, RoleConfig>,
}

/// RFC 6749 §2.3.1 client authentication with a shared secret.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret (the RFC's default).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the request body.
    ClientSecretPost,
}

impl ClientAuth {
    /// The name used in server metadata (`token_endpoint_auth_methods_supported`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }
}

/// How a role obtains its tokens.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// RFC 6749 §4.4: a token for Writ's own client, narrowed by scope and
    /// resource.
    ClientCredentials,
    /// RFC 8693: the agent's own workload token exchanged for a token that
    /// names the agent as its subject.
    TokenExchange,
}

impl Mode {
    /// The `grant_type` sent to the token endpoint.
    pub fn grant_type(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::TokenExchange => crate::exchange::GRANT_TYPE,
        }
    }
}

/// One role: which grant, which scopes an agent may ask for, and where the
/// token may be used.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub mode: Mode,
    /// The scopes an agent may ask for; each grant asks for a non-empty
    /// subset, so the server's default scopes for the client never apply.
    pub scopes: Vec<String>,
    /// RFC 8707 resource indicators sent with every request: the token is
    /// good only at these resource servers.
    #[serde(default)]
    pub resource: Vec<String>,
    /// RFC 8693 `audience` values (token exchange only).
    #[serde(default)]
    pub audience: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    #[serde(with = "humantime_serde", default = "default_ttl")]
    pub default_ttl: Duration,
    /// The shortest lease Writ asks for. With an expiry-only server, set it
    /// a little above the lifetime of the server's tokens: a token must not
    /// outlive its lease.
    #[serde(with = "humantime_serde", default = "default_min_ttl")]
    pub min_ttl: Duration,
}

/// Under Writ's default `limits.provider_timeout` (10 s), so that a slow
/// server is reported as this provider's timeout, not Writ's.
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_min_ttl() -> Duration {
    Duration::from_secs(1)
}

/// Where the server's endpoints come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// Discovered from the issuer's metadata.
    Issuer(Url),
    /// Configured directly.
    Explicit { token: Url, revocation: Option<Url> },
}

impl OAuth2Config {
    /// Checks everything that can be checked without the network or the
    /// secret, and returns where the server's endpoints come from.
    pub fn validate(&self) -> Result<Server, String> {
        let server = match (&self.issuer, &self.token_url) {
            (Some(_), Some(_)) => {
                return Err("give issuer (discovery) or token_url, not both".into());
            }
            (None, None) => return Err("issuer or token_url is required".into()),
            (Some(issuer), None) => {
                if self.revocation_url.is_some() {
                    return Err("revocation_url goes with token_url; with issuer it is discovered".into());
                }
                let url = endpoint_url("issuer", issuer)?;
                if url.query().is_some() {
                    return Err("issuer must not have a query (RFC 8414)".into());
                }
                Server::Issuer(url)
            }
            (None, Some(token)) => Server::Explicit {
                token: endpoint_url("token_url", token)?,
                revocation: self
                    .revocation_url
                    .as_deref()
                    .map(|url| endpoint_url("revocation_url", url))
                    .transpose()?,
            },
        };
        if self.client_id.is_empty() || self.client_id.chars().any(char::is_control) {
            return Err("client_id must be non-empty, without control characters".into());
        }
        match (&self.client_secret_env, &self.client_secret_file) {
            (Some(_), Some(_)) => {
                return Err("give client_secret_env or client_secret_file, not both".into());
            }
            (None, None) => {
                return Err("client_secret_env or client_secret_file is required (the secret never goes \
                            in the configuration file)"
                    .into());
            }
            (Some(name), None) if name.is_empty() || name.contains(['=', '\0']) => {
                return Err(format!("client_secret_env {name:?} is not an environment variable name"));
            }
            _ => {}
        }
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(300) {
            return Err("timeout must be within [1s, 5m]".into());
        }
        if self.roles.is_empty() {
            return Err("at least one role is required".into());
        }
        self.roles.iter().try_for_each(|(name, role)| role.validate(name))?;
        Ok(server)
    }
}

impl RoleConfig {
    fn validate(&self, name: &str) -> Result<(), String> {
        let valid_name =
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid_name {
            return Err(format!("role {name:?}: names are letters, digits and -_."));
        }
        if self.scopes.is_empty() {
            return Err(format!("role {name:?}: scopes must list at least one scope"));
        }
        let mut seen = BTreeSet::new();
        for scope in &self.scopes {
            if !is_scope_token(scope) {
                return Err(format!(
                    "role {name:?}: scope {scope:?} is not an RFC 6749 scope token (printable ASCII, no \
                     space, '\"' or '\\')"
                ));
            }
            if !seen.insert(scope) {
                return Err(format!("role {name:?}: scope {scope:?} is listed twice"));
            }
        }
        for resource in &self.resource {
            let url = Url::parse(resource)
                .map_err(|e| format!("role {name:?}: resource {resource:?} is not an absolute URI: {e}"))?;
            if url.fragment().is_some() {
                return Err(format!(
                    "role {name:?}: resource {resource:?} must not have a fragment (RFC 8707)"
                ));
            }
        }
        if !self.audience.is_empty() && self.mode != Mode::TokenExchange {
            return Err(format!("role {name:?}: audience applies only to mode = \"token_exchange\""));
        }
        if let Some(audience) = self.audience.iter().find(|a| a.is_empty() || a.chars().any(char::is_control))
        {
            return Err(format!(
                "role {name:?}: audience {audience:?} must be non-empty, without control characters"
            ));
        }
        if self.max_ttl < Duration::from_secs(1) {
            return Err(format!("role {name:?}: max_ttl must be at least 1s"));
        }
        if self.min_ttl < Duration::from_secs(1) || self.min_ttl > self.default_ttl {
            return Err(format!("role {name:?}: min_ttl must be within [1s, default_ttl]"));
        }
        if self.default_ttl > self.max_ttl {
            return Err(format!("role {name:?}: default_ttl must be within [min_ttl, max_ttl]"));
        }
        Ok(())
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty() && scope.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

/// Parses and checks an endpoint URL named `field`.
pub(crate) fn endpoint_url(field: &str, value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("{field} is not an absolute URL: {e}"))?;
    check_endpoint(field, &url)?;
    Ok(url)
}

/// HTTPS only, except plain HTTP to a loopback address (a server on the
/// same host, as in tests); no credentials or fragment in the URL. Applied
/// to configured and discovered endpoints alike. Messages never repeat a
/// URL that carries credentials.
pub(crate) fn check_endpoint(field: &str, url: &Url) -> Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{field} must not carry credentials; give the client secret by client_secret_env or \
             client_secret_file"
        ));
    }
    let Some(host) = url.host() else {
        return Err(format!("{field} {url} has no host"));
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => {
            return Err(format!(
                "{field} {url} must use https (plain http is allowed only to a loopback address)"
            ));
        }
        scheme => return Err(format!("{field} {url}: the scheme {scheme:?} is not https")),
    }
    if url.fragment().is_some() {
        return Err(format!("{field} {url} must not have a fragment"));
    }
    Ok(())
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of `docs/providers/oauth2.md`, as Writ reads it.
    const EXAMPLE: &str = r#"
[providers.orders]
kind = "oauth2"
issuer = "https://login.example.com/realms/agents"
client_id = "writ"
client_secret_env = "WRIT_ORDERS_CLIENT_SECRET"
client_auth = "client_secret_basic"
timeout = "5s"

[providers.orders.roles.reader]
mode = "client_credentials"
scopes = ["orders:read"]
resource = ["https://orders.example.com/"]
max_ttl = "15m"
default_ttl = "5m"

[providers.orders.roles.on-behalf]
mode = "token_exchange"
scopes = ["orders:read", "orders:write"]
resource = ["https://orders.example.com/"]
audience = ["orders-api"]
max_ttl = "15m"
default_ttl = "5m"
"#;

    /// Parses the example the way Writ does: `kind` belongs to Writ's own
    /// table, the rest to the provider.
    fn example_table() -> toml::Table {
        let document: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let mut table = document["providers"]["orders"].as_table().unwrap().clone();
        assert_eq!(table.remove("kind").unwrap().as_str(), Some(crate::KIND));
        table
    }

    fn example() -> OAuth2Config {
        toml::Value::Table(example_table()).try_into().unwrap()
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let config = example();
        let server = config.validate().unwrap();
        assert_eq!(server, Server::Issuer(Url::parse("https://login.example.com/realms/agents").unwrap()));
        assert_eq!(config.roles["reader"].mode, Mode::ClientCredentials);
        assert_eq!(config.roles["on-behalf"].mode, Mode::TokenExchange);
        assert_eq!(config.roles["reader"].max_ttl, Duration::from_secs(900));
        assert_eq!(config.roles["reader"].min_ttl, Duration::from_secs(1));
        assert_eq!(config.client_auth, ClientAuth::ClientSecretBasic);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut table = example_table();
        table.insert("client_secret".into(), "s3cret".into());
        let error = toml::Value::Table(table).try_into::<OAuth2Config>().unwrap_err();
        assert!(error.to_string().contains("client_secret"), "{error}");

        let mut table = example_table();
        let roles = table.get_mut("roles").unwrap().as_table_mut().unwrap();
        roles["reader"].as_table_mut().unwrap().insert("scope".into(), "x".into());
        let error = toml::Value::Table(table).try_into::<OAuth2Config>().unwrap_err();
        assert!(error.to_string().contains("scope"), "{error}");
    }

    #[test]
    fn endpoints_must_be_https_except_on_loopback() {
        for allowed in [
            "https://as.example.com/token",
            "http://127.0.0.1:8080/token",
            "http://[::1]:8080/token",
            "http://localhost/token",
        ] {
            endpoint_url("token_url", allowed).unwrap();
        }
        let cases = [
            ("http://as.example.com/token", "must use https"),
            ("http://10.0.0.1/token", "must use https"),
            ("ftp://as.example.com/token", "not https"),
            ("https://as.example.com/token#x", "fragment"),
            ("/token", "not an absolute URL"),
            ("https://writ:pa55word@as.example.com/token", "must not carry credentials"),
        ];
        for (url, expected) in cases {
            let error = endpoint_url("token_url", url).unwrap_err();
            assert!(error.starts_with("token_url") && error.contains(expected), "{url}: {error}");
            assert!(!error.contains("pa55word"), "{error}");
        }
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        type Breaks = fn(&mut OAuth2Config);
        let checks: Vec<(Breaks, &str)> = vec![
            (|c| c.token_url = Some("https://as.example.com/token".into()), "not both"),
            (|c| c.issuer = None, "issuer or token_url is required"),
            (|c| c.revocation_url = Some("https://as.example.com/revoke".into()), "goes with token_url"),
            (|c| c.issuer = Some("https://as.example.com/?tenant=a".into()), "must not have a query"),
            (
                |c| c.issuer = Some("http://as.example.com".into()),
                "issuer http://as.example.com/ must use https",
            ),
            (|c| c.client_id = String::new(), "client_id"),
            (|c| c.client_secret_file = Some("/etc/writ/secret".into()), "not both"),
            (|c| c.client_secret_env = None, "client_secret_env or client_secret_file is required"),
            (|c| c.client_secret_env = Some("A=B".into()), "not an environment variable name"),
            (|c| c.timeout = Duration::ZERO, "timeout"),
            (|c| c.roles.clear(), "at least one role"),
        ];
        for (breaks, expected) in checks {
            let mut config = example();
            breaks(&mut config);
            let error = config.validate().unwrap_err();
            assert!(error.contains(expected), "expected {expected:?}: {error}");
        }
        type BreaksRole = fn(&mut RoleConfig);
        let role_checks: Vec<(BreaksRole, &str)> = vec![
            (|r| r.scopes.clear(), "at least one scope"),
            (|r| r.scopes.push("two words".into()), "not an RFC 6749 scope token"),
            (|r| r.scopes.push("quote\"d".into()), "not an RFC 6749 scope token"),
            (|r| r.scopes.push("orders:read".into()), "listed twice"),
            (|r| r.resource = vec!["orders".into()], "not an absolute URI"),
            (|r| r.resource = vec!["https://orders.example.com/#x".into()], "fragment"),
            (|r| r.audience = vec!["orders-api".into()], "only to mode = \"token_exchange\""),
            (|r| r.max_ttl = Duration::ZERO, "max_ttl"),
            (|r| r.default_ttl = Duration::from_secs(3600), "default_ttl"),
            (|r| r.min_ttl = Duration::from_secs(600), "min_ttl"),
            (|r| r.min_ttl = Duration::ZERO, "min_ttl"),
        ];
        for (breaks, expected) in role_checks {
            let mut config = example();
            breaks(config.roles.get_mut("reader").unwrap());
            let error = config.validate().unwrap_err();
            assert!(
                error.starts_with("role \"reader\"") && error.contains(expected),
                "{expected:?}: {error}"
            );
        }
        let mut exchange = example();
        exchange.roles.get_mut("on-behalf").unwrap().audience = vec![String::new()];
        assert!(exchange.validate().unwrap_err().contains("audience \"\" must be non-empty"));

        let mut renamed = example();
        let reader = renamed.roles.remove("reader").unwrap();
        renamed.roles.insert("bad name".into(), reader);
        assert!(renamed.validate().unwrap_err().contains("letters, digits"));
    }

    #[test]
    fn explicit_endpoints_are_parsed() {
        let mut config = example();
        config.issuer = None;
        config.token_url = Some("https://as.example.com/oauth/token".into());
        assert!(matches!(config.validate().unwrap(), Server::Explicit { revocation: None, .. }));
        config.revocation_url = Some("https://as.example.com/oauth/revoke".into());
        let Server::Explicit { token, revocation } = config.validate().unwrap() else { panic!() };
        assert_eq!(token.path(), "/oauth/token");
        assert_eq!(revocation.unwrap().path(), "/oauth/revoke");
        config.revocation_url = Some("http://as.example.com/oauth/revoke".into());
        assert!(config.validate().unwrap_err().starts_with("revocation_url"));
    }
}
