//! A [`jsonwebtoken`] crypto provider backed by `ring`.
//!
//! `jsonwebtoken` 11 separates JOSE processing (parsing, claim validation,
//! JWK handling) from the signature primitives. Writ keeps the JOSE work in
//! that maintained crate and plugs in `ring` for the primitives: it is on
//! the design card, constant-time, and several times faster than the
//! pure-Rust ECDSA verifier on the machines Writ targets.
//!
//! Only asymmetric algorithms are supported. HMAC is refused outright, so a
//! token signed with `HS256` keyed by a published public key can never pass,
//! whatever the caller's allow-list says.
//!
//! Call [`install`] once, early in `main` (and in tests); it is idempotent.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use jsonwebtoken::{AlgorithmFamily, DecodingKeyKind};
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};

/// The ring-backed provider. Install it with [`install`].
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_component_from_private_key,
        compute_digest,
    },
};

/// Installs [`RING_PROVIDER`] as the process default. Safe to call many
/// times; a provider installed earlier by someone else is left in place
/// only if it is this one (anything else is reported as an error).
pub fn install() -> std::result::Result<(), &'static str> {
    match RING_PROVIDER.install_default() {
        Ok(()) => Ok(()),
        Err(existing) if std::ptr::eq(existing, &RING_PROVIDER) => Ok(()),
        Err(_) => Err("another jsonwebtoken crypto provider is already installed"),
    }
}

/// HMAC and anything unknown: Writ never verifies or signs symmetric JWTs.
fn unsupported(_algorithm: &Algorithm) -> Error {
    ErrorKind::InvalidAlgorithm.into()
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    let pair = match (algorithm, key.family()) {
        (Algorithm::ES256 | Algorithm::ES384, AlgorithmFamily::Ec)
        | (Algorithm::EdDSA, AlgorithmFamily::Ed)
        | (
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
            AlgorithmFamily::Rsa,
        ) => parsed(*algorithm, key.as_bytes())?,
        (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, _) => return Err(unsupported(algorithm)),
        _ => return Err(ErrorKind::InvalidKeyFormat.into()),
    };
    Ok(Box::new(Signer { algorithm: *algorithm, pair }))
}

/// A parsed private key.
enum PrivateKey {
    Ecdsa(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
    Rsa(sig::RsaKeyPair),
}

/// How many parsed keys [`parsed`] keeps. Writ signs with a handful; the
/// cache is emptied when it is full, so rotating keys never fills it for good.
const MAX_PARSED_KEYS: usize = 16;

type ParsedKeys = Mutex<HashMap<[u8; 32], Arc<PrivateKey>>>;

/// The parsed key for `algorithm` and these key bytes, parsed once.
///
/// `jsonwebtoken::encode` asks the provider for a new signer for every
/// token, and parsing is the expensive part of signing: ring checks an
/// ECDSA key with a scalar multiplication and validates an RSA key's
/// primes. Parsed keys are kept by the SHA-256 of algorithm and key bytes.
fn parsed(algorithm: Algorithm, der: &[u8]) -> Result<Arc<PrivateKey>> {
    static PARSED: OnceLock<ParsedKeys> = OnceLock::new();
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(format!("{algorithm:?}\0").as_bytes());
    context.update(der);
    let mut id = [0u8; 32];
    id.copy_from_slice(context.finish().as_ref());
    let cache = PARSED.get_or_init(ParsedKeys::default);
    if let Some(pair) = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&id) {
        return Ok(pair.clone());
    }
    let pair = Arc::new(parse(algorithm, der)?);
    let mut cached = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if cached.len() >= MAX_PARSED_KEYS {
        cached.clear();
    }
    cached.insert(id, pair.clone());
    Ok(pair)
}

fn parse(algorithm: Algorithm, der: &[u8]) -> Result<PrivateKey> {
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => {
            let signing = match algorithm {
                Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                _ => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            };
            sig::EcdsaKeyPair::from_pkcs8(signing, der, &SystemRandom::new())
                .map(PrivateKey::Ecdsa)
                .map_err(|_| ErrorKind::InvalidEcdsaKey.into())
        }
        Algorithm::EdDSA => sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(PrivateKey::Ed25519)
            .map_err(|_| ErrorKind::InvalidEddsaKey.into()),
        _ => sig::RsaKeyPair::from_der(der)
            .or_else(|_| sig::RsaKeyPair::from_pkcs8(der))
            .map(PrivateKey::Rsa)
            .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()).into()),
    }
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let parameters: &'static dyn sig::VerificationAlgorithm = match (algorithm, key.family()) {
        (Algorithm::ES256, AlgorithmFamily::Ec) => &sig::ECDSA_P256_SHA256_FIXED,
        (Algorithm::ES384, AlgorithmFamily::Ec) => &sig::ECDSA_P384_SHA384_FIXED,
        (Algorithm::EdDSA, AlgorithmFamily::Ed) => &sig::ED25519,
        (Algorithm::RS256 | Algorithm::PS256, AlgorithmFamily::Rsa)
        | (Algorithm::RS384 | Algorithm::PS384, AlgorithmFamily::Rsa)
        | (Algorithm::RS512 | Algorithm::PS512, AlgorithmFamily::Rsa) => {
            return Ok(Box::new(RsaVerifier {
                algorithm: *algorithm,
                parameters: rsa_parameters(algorithm),
                key: key.clone(),
            }));
        }
        (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, _) => {
            return Err(unsupported(algorithm));
        }
        _ => return Err(ErrorKind::InvalidKeyFormat.into()),
    };
    let public_key = key.try_get_as_bytes()?.to_vec();
    Ok(Box::new(PublicKeyVerifier { algorithm: *algorithm, parameters, public_key }))
}

fn rsa_parameters(algorithm: &Algorithm) -> &'static sig::RsaParameters {
    match algorithm {
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => &sig::RSA_PKCS1_2048_8192_SHA256,
    }
}

fn rsa_encoding(algorithm: Algorithm) -> &'static dyn sig::RsaEncoding {
    match algorithm {
        Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_SHA512,
        _ => &sig::RSA_PKCS1_SHA256,
    }
}

/// Signs with a parsed key shared by every signer of that key.
struct Signer {
    algorithm: Algorithm,
    pair: Arc<PrivateKey>,
}

impl signature::Signer<Vec<u8>> for Signer {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        match &*self.pair {
            PrivateKey::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|signed| signed.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            PrivateKey::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            PrivateKey::Rsa(pair) => {
                let mut signed = vec![0; pair.public().modulus_len()];
                pair.sign(rsa_encoding(self.algorithm), &SystemRandom::new(), message, &mut signed)
                    .map_err(|_| signature::Error::new())?;
                Ok(signed)
            }
        }
    }
}

impl JwtSigner for Signer {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// Verifies with a key given as raw public bytes (EC point, Ed25519 key) or
/// an RSA `SubjectPublicKeyInfo`-less DER.
struct PublicKeyVerifier {
    algorithm: Algorithm,
    parameters: &'static dyn sig::VerificationAlgorithm,
    public_key: Vec<u8>,
}

impl signature::Verifier<Vec<u8>> for PublicKeyVerifier {
    fn verify(&self, message: &[u8], signed: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        sig::UnparsedPublicKey::new(self.parameters, &self.public_key)
            .verify(message, signed)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for PublicKeyVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

struct RsaVerifier {
    algorithm: Algorithm,
    parameters: &'static sig::RsaParameters,
    key: DecodingKey,
}

impl signature::Verifier<Vec<u8>> for RsaVerifier {
    fn verify(&self, message: &[u8], signed: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let outcome = match self.key.kind() {
            DecodingKeyKind::SecretOrDer(der) => {
                sig::UnparsedPublicKey::new(self.parameters, der).verify(message, signed)
            }
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                sig::RsaPublicKeyComponents { n, e }.verify(self.parameters, message, signed)
            }
        };
        outcome.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RsaVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let pair = sig::RsaKeyPair::from_der(der)
        .or_else(|_| sig::RsaKeyPair::from_pkcs8(der))
        .map_err(|e| Error::from(ErrorKind::InvalidRsaKey(e.to_string())))?;
    let components: sig::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
    Ok((components.n, components.e))
}

fn rsa_components_from_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    // ring parses RSA public keys only while verifying; split the PKCS#1
    // `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
    let mut reader = DerReader(der);
    let mut sequence = DerReader(reader.read(0x30)?);
    let n = strip_leading_zero(sequence.read(0x02)?);
    let e = strip_leading_zero(sequence.read(0x02)?);
    Ok((n.to_vec(), e.to_vec()))
}

fn strip_leading_zero(bytes: &[u8]) -> &[u8] {
    match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => bytes,
    }
}

/// Just enough DER to read the two integers of a PKCS#1 public key.
struct DerReader<'a>(&'a [u8]);

impl<'a> DerReader<'a> {
    fn read(&mut self, tag: u8) -> Result<&'a [u8]> {
        let invalid = || Error::from(ErrorKind::InvalidRsaKey("malformed DER".into()));
        let (&found, rest) = self.0.split_first().ok_or_else(invalid)?;
        if found != tag {
            return Err(invalid());
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(invalid)?;
        let length = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return Err(invalid());
            }
            let (digits, tail) = rest.split_at(count);
            rest = tail;
            digits.iter().fold(0usize, |acc, d| (acc << 8) | usize::from(*d))
        };
        if rest.len() < length {
            return Err(invalid());
        }
        let (value, tail) = rest.split_at(length);
        self.0 = tail;
        Ok(value)
    }
}

fn ec_components_from_private_key(
    der: &[u8],
    algorithm: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    let (signing, curve, width) = match algorithm {
        Algorithm::ES256 => (&sig::ECDSA_P256_SHA256_FIXED_SIGNING, EllipticCurve::P256, 32),
        Algorithm::ES384 => (&sig::ECDSA_P384_SHA384_FIXED_SIGNING, EllipticCurve::P384, 48),
        _ => return Err(ErrorKind::InvalidEcdsaKey.into()),
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, der, &SystemRandom::new())
        .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
    match pair.public_key().as_ref() {
        [4, point @ ..] if point.len() == 2 * width => {
            let (x, y) = point.split_at(width);
            Ok((curve, x.to_vec(), y.to_vec()))
        }
        _ => Err(ErrorKind::InvalidEcdsaKey.into()),
    }
}

fn ed_component_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>> {
    match curve {
        EllipticCurve::Ed25519 => Ok(sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| Error::from(ErrorKind::InvalidEddsaKey))?
            .public_key()
            .as_ref()
            .to_vec()),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

#[cfg(test)]
mod tests;
