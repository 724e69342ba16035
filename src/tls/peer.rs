//! What a certificate says: its validity, and for a client certificate
//! (verified by the handshake against the configured CAs) the names a
//! service can be matched by and its RFC 8705 thumbprint.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

/// A verified client certificate, as Writ matches it to a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// URI subject alternative names (a SPIFFE ID is one).
    pub uris: Vec<String>,
    /// The subject's common names.
    pub common_names: Vec<String>,
    /// base64url (no padding) of the SHA-256 of the DER certificate: what an
    /// RFC 8705 `cnf` claim's `x5t#S256` binds a token to.
    pub thumbprint: String,
}

impl ClientCertificate {
    /// Reads the leaf of a verified chain.
    pub fn read(leaf: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| e.to_string())?;
        let mut uris = Vec::new();
        if let Ok(Some(names)) = cert.subject_alternative_name() {
            for name in &names.value.general_names {
                if let GeneralName::URI(uri) = name {
                    uris.push((*uri).to_owned());
                }
            }
        }
        let common_names = cert
            .subject()
            .iter_common_name()
            .filter_map(|name| name.as_str().ok().map(str::to_owned))
            .collect();
        Ok(Self { uris, common_names, thumbprint: thumbprint(leaf) })
    }

    /// How logs and errors name it: its first URI, else its first CN.
    pub fn describe(&self) -> String {
        match (self.uris.first(), self.common_names.first()) {
            (Some(uri), _) => uri.clone(),
            (None, Some(name)) => format!("CN={name}"),
            (None, None) => format!("x5t#S256={}", self.thumbprint),
        }
    }
}

/// RFC 8705 §3.1: base64url(SHA-256(DER)), unpadded.
pub fn thumbprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A certificate's notBefore and notAfter.
pub fn validity(cert: &CertificateDer<'_>) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let (_, cert) = X509Certificate::from_der(cert.as_ref()).map_err(|e| e.to_string())?;
    let at = |time: x509_parser::time::ASN1Time| {
        DateTime::from_timestamp(time.timestamp(), 0)
            .ok_or_else(|| "a validity date is out of range".to_owned())
    };
    Ok((at(cert.validity().not_before)?, at(cert.validity().not_after)?))
}
