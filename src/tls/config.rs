//! `[server.tls]`: where the listeners' certificate and key are, and which
//! CA client certificates must chain to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1). Must not be readable
    /// by group or others.
    pub key_file: PathBuf,
    /// CAs (PEM) that client certificates must chain to. Set, callers may
    /// present a certificate (mTLS): services are then identified by it,
    /// and agents' tokens may be bound to it. Without it no client
    /// certificate is asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are read again; a change is served to new
    /// connections without a restart.
    #[serde(with = "humantime_serde", default = "default_reload_interval")]
    pub reload_interval: Duration,
    /// Refuse agent tokens that are not bound to the caller's client
    /// certificate (RFC 8705 `cnf` `x5t#S256`). A bound token is always
    /// checked against the certificate, whatever this says.
    #[serde(default)]
    pub require_bound_agent_tokens: bool,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

impl TlsConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.cert_file, &mut self.key_file].into_iter().chain(self.client_ca_file.as_mut())
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.reload_interval < Duration::from_millis(100)
            || self.reload_interval > Duration::from_secs(3600)
        {
            return Err("server.tls.reload_interval must be 100ms to 1h".into());
        }
        if self.require_bound_agent_tokens && self.client_ca_file.is_none() {
            return Err(
                "server.tls.require_bound_agent_tokens needs server.tls.client_ca_file: a token can only be \
                 bound to a client certificate Writ asks for"
                    .into(),
            );
        }
        Ok(())
    }
}

/// `[[services]] certificate = { … }`: the client certificate a service
/// is identified by over mTLS, by exactly one of its names.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertificateMatch {
    /// A URI subject alternative name, such as a SPIFFE ID
    /// (`spiffe://example.org/ns/ci/sa/workflow`), compared exactly.
    #[serde(default)]
    pub uri: Option<String>,
    /// The subject's common name (CN), compared exactly.
    #[serde(default)]
    pub common_name: Option<String>,
}

impl CertificateMatch {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.uri, &self.common_name) {
            (Some(uri), None) if !uri.trim().is_empty() => Ok(()),
            (None, Some(name)) if !name.trim().is_empty() => Ok(()),
            (Some(_), Some(_)) => Err("certificate: give uri or common_name, not both".into()),
            _ => Err("certificate: give a non-empty uri (such as a SPIFFE ID) or common_name".into()),
        }
    }

    pub fn matches(&self, certificate: &super::peer::ClientCertificate) -> bool {
        match (&self.uri, &self.common_name) {
            (Some(uri), _) => certificate.uris.iter().any(|name| name == uri),
            (None, Some(name)) => certificate.common_names.iter().any(|cn| cn == name),
            (None, None) => false,
        }
    }
}
