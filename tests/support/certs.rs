//! Test certificates made at run time with rcgen (no private key is ever
//! committed): a CA, server certificates for `localhost` and 127.0.0.1,
//! and client certificates naming a SPIFFE ID.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};

pub struct TestCa {
    pub name: String,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { name: name.into(), pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }

    /// A server certificate for `localhost` and 127.0.0.1 (or `names`).
    pub fn server(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = if names.is_empty() {
            vec!["localhost".into(), "127.0.0.1".into()]
        } else {
            names.iter().map(|name| name.to_string()).collect()
        };
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "writ test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A server certificate that expired in 2020.
    pub fn expired_server(&self) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate naming `uri` (a SPIFFE ID) and `common_name`.
    pub fn client(&self, uri: &str, common_name: &str) -> Leaf {
        self.client_with(uri, common_name, false)
    }

    /// The same, expired in 2020.
    pub fn expired_client(&self, uri: &str, common_name: &str) -> Leaf {
        self.client_with(uri, common_name, true)
    }

    fn client_with(&self, uri: &str, common_name: &str, expired: bool) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        self.sign(params)
    }

    /// Writes the CA certificate to `dir/<file>`.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

impl Leaf {
    /// Writes the certificate and key (mode 0600) as `dir/<stem>.crt` and
    /// `dir/<stem>.key`, each replaced whole (written aside, then renamed),
    /// as a certificate manager rotates them.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        replace(&key, self.key_pem.as_bytes(), 0o600);
        replace(&cert, self.cert_pem.as_bytes(), 0o644);
        (cert, key)
    }
}

pub fn replace(path: &Path, bytes: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let aside = path.with_extension("writing");
    std::fs::write(&aside, bytes).unwrap();
    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&aside, path).unwrap();
}
