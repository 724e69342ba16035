//! Signed checkpoints: the chain's head, signed with Ed25519.
//!
//! The hash chain shows that no record was edited, removed or reordered
//! *relative to the records after it*; whoever can write the file can
//! rewrite it from the top, or cut its tail off, and leave a chain that
//! holds. A checkpoint closes that gap: a record, itself chained, whose
//! `details` carry the sequence number and hash of the record before it,
//! the replica that wrote the log, the signing key's id and an Ed25519
//! signature over all of them. Without the private key no one can make a
//! checkpoint that verifies, so a rewritten log fails at its first
//! checkpoint, and a cut one either ends with records no checkpoint covers
//! or ends before the last checkpoint its reader knows of.
//!
//! The signed message is a fixed, line-based text (never a JSON
//! serialization, whose bytes are not fixed):
//!
//! ```text
//! writ-audit-checkpoint-v1
//! <replica>
//! <key id>
//! <sequence number of the record covered>
//! <hex SHA-256 of that record's line>
//! <RFC 3339 time of the checkpoint>
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use ring::{digest, rand};
use serde::{Deserialize, Serialize};

/// The event name of a checkpoint record.
pub const EVENT: &str = "checkpoint";
const DOMAIN: &str = "writ-audit-checkpoint-v1";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the
/// 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
const PEM_LABEL: &str = "PUBLIC KEY";

/// What a checkpoint record's `details` hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub replica: String,
    pub key_id: String,
    /// The sequence number of the record covered (the one before the
    /// checkpoint).
    pub covers: u64,
    /// The hex SHA-256 of that record's line.
    pub head: String,
    /// When the checkpoint was made, RFC 3339 (signed as written); the
    /// record's `ts` is the same time.
    pub at: String,
    /// Base64url (no padding) Ed25519 signature of the message above.
    pub signature: String,
}

impl Checkpoint {
    fn message(replica: &str, key_id: &str, covers: u64, head: &str, at: &str) -> String {
        format!("{DOMAIN}\n{replica}\n{key_id}\n{covers}\n{head}\n{at}\n")
    }

    /// Whether `key` signed this checkpoint.
    pub fn verify(&self, key: &PublicKey) -> bool {
        let Ok(signature) = URL_SAFE_NO_PAD.decode(&self.signature) else {
            return false;
        };
        let message = Self::message(&self.replica, &self.key_id, self.covers, &self.head, &self.at);
        signature::UnparsedPublicKey::new(&signature::ED25519, &key.bytes)
            .verify(message.as_bytes(), &signature)
            .is_ok()
    }
}

/// Signs checkpoints for one replica. Its `Debug` shows the key id only.
pub struct Signer {
    key: Ed25519KeyPair,
    key_id: String,
    replica: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("key_id", &self.key_id).field("replica", &self.replica).finish()
    }
}

impl Signer {
    /// A signer from a PKCS#8 Ed25519 key (as [`generate_pkcs8`] makes).
    pub fn from_pkcs8(pkcs8: &[u8], replica: &str) -> Result<Self, String> {
        check_replica(replica)?;
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|_| "the audit signing key is not a PKCS#8 Ed25519 key".to_string())?;
        let key_id = key_id(key.public_key().as_ref());
        Ok(Self { key, key_id, replica: replica.to_owned() })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey { bytes: self.key.public_key().as_ref().to_vec(), key_id: self.key_id.clone() }
    }

    /// A checkpoint over record `covers`, whose line hashes to `head`.
    pub fn sign(&self, covers: u64, head: &str, at: DateTime<Utc>) -> Checkpoint {
        // As precise as the record's own `ts`, which must say the same.
        let at = at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let message = Checkpoint::message(&self.replica, &self.key_id, covers, head, &at);
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(message.as_bytes()).as_ref());
        Checkpoint {
            replica: self.replica.clone(),
            key_id: self.key_id.clone(),
            covers,
            head: head.to_owned(),
            at,
            signature,
        }
    }
}

/// A new Ed25519 key, PKCS#8 v2 DER.
pub fn generate_pkcs8() -> Result<Vec<u8>, String> {
    Ed25519KeyPair::generate_pkcs8(&rand::SystemRandom::new())
        .map(|document| document.as_ref().to_vec())
        .map_err(|_| "cannot generate an Ed25519 key".to_string())
}

/// An Ed25519 public key that verifies checkpoints, with its key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    bytes: Vec<u8>,
    key_id: String,
}

impl PublicKey {
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key as PEM (`-----BEGIN PUBLIC KEY-----`, RFC 8410), as
    /// OpenSSL writes it.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.bytes);
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> =
            body.as_bytes().chunks(64).map(|chunk| std::str::from_utf8(chunk).unwrap_or_default()).collect();
        format!("-----BEGIN {PEM_LABEL}-----\n{}\n-----END {PEM_LABEL}-----\n", lines.join("\n"))
    }

    /// Reads a PEM public key as [`Self::to_pem`] (or OpenSSL's `pkey
    /// -pubout`) writes it.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        let begin = format!("-----BEGIN {PEM_LABEL}-----");
        let end = format!("-----END {PEM_LABEL}-----");
        let body = text
            .trim()
            .strip_prefix(&begin)
            .and_then(|rest| rest.strip_suffix(&end))
            .ok_or_else(|| format!("not a PEM public key (expected {begin} … {end})"))?;
        let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| "the PEM body is not base64".to_string())?;
        match der.strip_prefix(&SPKI_PREFIX[..]) {
            Some(bytes) if bytes.len() == 32 => Ok(Self { key_id: key_id(bytes), bytes: bytes.to_vec() }),
            _ => Err("not an Ed25519 public key".to_string()),
        }
    }
}

/// A key's id: `ed25519:` and the first 16 hex digits of the SHA-256 of
/// its 32 public bytes. Derived, so a verifier finds the key a checkpoint
/// names among those it was given.
fn key_id(public: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, public);
    format!("ed25519:{}", hex::encode(&hash.as_ref()[..8]))
}

/// A replica name: 1 to 64 letters, digits, `.`, `_` or `-` (it is one
/// line of the signed message).
pub fn check_replica(replica: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&replica.len())
        && replica.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!("replica name {replica:?} must be 1 to 64 letters, digits, '.', '_' or '-'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::from_pkcs8(&generate_pkcs8().unwrap(), "replica-a").unwrap()
    }

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        let (signer, other) = (signer(), signer());
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let checkpoint = signer.sign(41, &"ab".repeat(32), at);
        assert!(checkpoint.verify(&signer.public_key()));
        assert!(!checkpoint.verify(&other.public_key()), "another key");
        for tampered in [
            Checkpoint { covers: 40, ..checkpoint.clone() },
            Checkpoint { head: "cd".repeat(32), ..checkpoint.clone() },
            Checkpoint { replica: "replica-b".into(), ..checkpoint.clone() },
            Checkpoint { at: "2027-01-15T08:00:01.000Z".into(), ..checkpoint.clone() },
            Checkpoint { signature: "not base64!".into(), ..checkpoint.clone() },
        ] {
            assert!(!tampered.verify(&signer.public_key()), "{tampered:?}");
        }
    }

    #[test]
    fn public_keys_round_trip_through_pem_and_name_their_key() {
        let signer = signer();
        let key = signer.public_key();
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), key);
        assert_eq!(key.key_id(), signer.key_id());
        assert!(key.key_id().starts_with("ed25519:") && key.key_id().len() == 24, "{}", key.key_id());
        assert!(PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
        assert!(PublicKey::from_pem("hello").is_err());
        assert!(!format!("{signer:?}").contains(&pem), "Debug shows no key material");
    }

    #[test]
    fn replica_names_are_one_line_of_safe_characters() {
        for good in ["a", "writ-0", "pod.ns_1"] {
            assert!(check_replica(good).is_ok(), "{good}");
        }
        for bad in ["", "a\nb", "a b", &"x".repeat(65)] {
            assert!(check_replica(bad).is_err(), "{bad:?}");
        }
        assert!(Signer::from_pkcs8(b"junk", "a").is_err());
    }
}
