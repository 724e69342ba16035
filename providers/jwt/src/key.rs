use std::fmt;
use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use secrecy::{ExposeSecret, SecretSlice};
use serde::Deserialize;

/// The signature algorithms Writ signs tokens with.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum SigningAlgorithm {
    #[default]
    ES256,
    EdDSA,
}

impl SigningAlgorithm {
    pub fn jose(self) -> Algorithm {
        match self {
            Self::ES256 => Algorithm::ES256,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }
}

/// A PKCS#8 private key. Redacted in `Debug`, zeroed on drop.
pub struct SigningKey {
    algorithm: SigningAlgorithm,
    pkcs8: SecretSlice<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, <redacted>)", self.algorithm.name())
    }
}

impl SigningKey {
    /// Generates a fresh key.
    pub fn generate(algorithm: SigningAlgorithm) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let document = match algorithm {
            SigningAlgorithm::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
            SigningAlgorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng),
        }
        .map_err(|_| "key generation failed".to_string())?;
        Self::from_pkcs8(algorithm, document.as_ref())
    }

    /// Reads a PKCS#8 key, PEM (`-----BEGIN PRIVATE KEY-----`) or DER.
    pub fn load(algorithm: SigningAlgorithm, path: &Path) -> Result<Self, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read signing key {}: {e}", path.display()))?;
        let der = match std::str::from_utf8(&bytes) {
            Ok(text) if text.contains("-----BEGIN") => {
                pem_body(text).ok_or_else(|| format!("{}: not a PKCS#8 PEM private key", path.display()))?
            }
            _ => bytes,
        };
        Self::from_pkcs8(algorithm, &der).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_pkcs8(algorithm: SigningAlgorithm, der: &[u8]) -> Result<Self, String> {
        let valid = match algorithm {
            SigningAlgorithm::ES256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new()).is_ok()
            }
            SigningAlgorithm::EdDSA => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok(),
        };
        if !valid {
            return Err(format!("not a PKCS#8 {} private key", algorithm.name()));
        }
        let der = match algorithm {
            SigningAlgorithm::ES256 => der.to_vec(),
            SigningAlgorithm::EdDSA => ed25519_v1(der)?,
        };
        Ok(Self { algorithm, pkcs8: SecretSlice::from(der) })
    }

    /// Writes the key as PKCS#8 DER, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        write_private(path, self.pkcs8.expose_secret())
            .map_err(|e| format!("cannot write signing key {}: {e}", path.display()))
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The public key as a JWK (with `kid`, its RFC 7638 SHA-256
    /// thumbprint, `use: sig` and `alg`), and the `kid`. Needs
    /// `writ_jose::install` to have run.
    pub fn public_jwk(&self) -> Result<(serde_json::Value, String), String> {
        let algorithm = self.algorithm.jose();
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.encoding_key(), algorithm)
            .map_err(|e| format!("the signing key does not fit {algorithm:?}: {e}"))?;
        let kid = jwk
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .map_err(|e| format!("cannot compute the key id: {e}"))?;
        let mut published = serde_json::to_value(&jwk).map_err(|e| e.to_string())?;
        if let Some(object) = published.as_object_mut() {
            object.insert("kid".into(), serde_json::Value::String(kid.clone()));
            object.insert("use".into(), serde_json::Value::String("sig".into()));
            object.insert("alg".into(), serde_json::Value::String(self.algorithm.name().into()));
        }
        Ok((published, kid))
    }

    pub fn encoding_key(&self) -> EncodingKey {
        match self.algorithm {
            SigningAlgorithm::ES256 => EncodingKey::from_ec_der(self.pkcs8.expose_secret()),
            SigningAlgorithm::EdDSA => EncodingKey::from_ed_der(self.pkcs8.expose_secret()),
        }
    }
}

/// `jsonwebtoken` derives an Ed25519 JWK only from a PKCS#8 v1 document (the
/// 32-byte seed behind a fixed 16-byte header), while `ring` generates v2
/// documents that also carry the public key. Both start with the same header
/// shape and the seed at the same offset, so re-wrap the seed as v1.
fn ed25519_v1(der: &[u8]) -> Result<Vec<u8>, String> {
    const V1_HEADER: [u8; 16] =
        [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    const SEED_TAIL: [u8; 11] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let seed = der
        .get(5..48)
        .filter(|window| window.starts_with(&SEED_TAIL))
        .map(|window| &window[SEED_TAIL.len()..])
        .ok_or("not a PKCS#8 Ed25519 private key")?;
    let mut v1 = V1_HEADER.to_vec();
    v1.extend_from_slice(seed);
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&v1).map_err(|_| "bad Ed25519 seed".to_string())?;
    Ok(v1)
}

fn pem_body(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body: String = text
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN PRIVATE KEY-----"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
