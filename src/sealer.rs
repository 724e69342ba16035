//! Encryption of revocation material at rest.
//!
//! A provider's revocation handle may be a secret (a refresh token, a
//! session credential), so the store only ever sees it sealed with an AEAD
//! (ChaCha20-Poly1305, from `ring`). Each sealed value names its key id, so
//! keys can rotate: new values use the first configured key, old values
//! open with whichever key sealed them. The lease id is bound in as
//! associated data, so a sealed handle cannot be moved to another lease.

use std::fmt;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;
use writ_provider_api::RevocationHandle;

use crate::model::SealedHandle;

/// Length of a sealing key, in bytes.
pub const KEY_LEN: usize = 32;

pub struct Sealer {
    /// The first key seals; all of them open.
    keys: Vec<(String, LessSafeKey)>,
    rng: SystemRandom,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Sealer").field("key_ids", &ids).finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SealError {
    #[error("no sealing key is configured")]
    NoKey,
    #[error("sealing key {0:?} is not {KEY_LEN} bytes")]
    BadKey(String),
    #[error("no sealing key {0:?} is configured to open this handle")]
    UnknownKey(String),
    #[error("sealed handle failed authentication")]
    Tampered,
    #[error("the system random source failed")]
    Random,
}

impl Sealer {
    /// `keys`: (key id, 32 raw bytes), the sealing key first.
    pub fn new(keys: Vec<(String, Vec<u8>)>) -> Result<Self, SealError> {
        if keys.is_empty() {
            return Err(SealError::NoKey);
        }
        let keys = keys
            .into_iter()
            .map(|(id, bytes)| {
                let unbound =
                    UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| SealError::BadKey(id.clone()))?;
                Ok((id, LessSafeKey::new(unbound)))
            })
            .collect::<Result<Vec<_>, SealError>>()?;
        Ok(Self { keys, rng: SystemRandom::new() })
    }

    /// A fresh random key, for `writ dev` and tests.
    pub fn generate_key() -> Result<[u8; KEY_LEN], SealError> {
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut key).map_err(|_| SealError::Random)?;
        Ok(key)
    }

    pub fn seal(&self, lease_id: Uuid, handle: &RevocationHandle) -> Result<SealedHandle, SealError> {
        let (key_id, key) = self.keys.first().ok_or(SealError::NoKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut in_out = handle.expose().as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(lease_id.as_bytes()),
            &mut in_out,
        )
        .map_err(|_| SealError::Tampered)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        Ok(SealedHandle { key_id: key_id.clone(), sealed })
    }

    pub fn open(&self, lease_id: Uuid, sealed: &SealedHandle) -> Result<RevocationHandle, SealError> {
        let key = self
            .keys
            .iter()
            .find(|(id, _)| *id == sealed.key_id)
            .map(|(_, key)| key)
            .ok_or_else(|| SealError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.sealed.len() < NONCE_LEN {
            return Err(SealError::Tampered);
        }
        let (nonce, ciphertext) = sealed.sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Tampered)?;
        let mut in_out = ciphertext.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(lease_id.as_bytes()), &mut in_out)
            .map_err(|_| SealError::Tampered)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| SealError::Tampered)?;
        Ok(RevocationHandle::new(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(ids: &[&str]) -> Sealer {
        Sealer::new(ids.iter().map(|id| (id.to_string(), Sealer::generate_key().unwrap().to_vec())).collect())
            .unwrap()
    }

    #[test]
    fn seals_and_opens_without_showing_the_secret() {
        let sealer = sealer(&["k1"]);
        let lease = Uuid::now_v7();
        let sealed = sealer.seal(lease, &RevocationHandle::new("refresh-s3cret")).unwrap();
        assert!(!String::from_utf8_lossy(&sealed.sealed).contains("s3cret"));
        assert!(!format!("{sealed:?}").contains("s3cret"));
        assert_eq!(sealer.open(lease, &sealed).unwrap().expose(), "refresh-s3cret");
    }

    #[test]
    fn a_handle_cannot_move_to_another_lease_or_be_altered() {
        let sealer = sealer(&["k1"]);
        let lease = Uuid::now_v7();
        let mut sealed = sealer.seal(lease, &RevocationHandle::new("h")).unwrap();
        assert_eq!(sealer.open(Uuid::now_v7(), &sealed).unwrap_err(), SealError::Tampered);
        let last = sealed.sealed.len() - 1;
        sealed.sealed[last] ^= 1;
        assert_eq!(sealer.open(lease, &sealed).unwrap_err(), SealError::Tampered);
    }

    #[test]
    fn old_keys_still_open_after_rotation() {
        let old = Sealer::generate_key().unwrap().to_vec();
        let new = Sealer::generate_key().unwrap().to_vec();
        let before = Sealer::new(vec![("old".into(), old.clone())]).unwrap();
        let lease = Uuid::now_v7();
        let sealed = before.seal(lease, &RevocationHandle::new("h")).unwrap();
        let after = Sealer::new(vec![("new".into(), new), ("old".into(), old)]).unwrap();
        assert_eq!(after.open(lease, &sealed).unwrap().expose(), "h");
        assert_eq!(after.seal(lease, &RevocationHandle::new("h")).unwrap().key_id, "new");
        let retired = sealer(&["other"]);
        assert_eq!(retired.open(lease, &sealed).unwrap_err(), SealError::UnknownKey("old".into()));
    }

    #[test]
    fn keys_of_the_wrong_length_are_refused() {
        assert_eq!(Sealer::new(vec![("k".into(), vec![0; 16])]).unwrap_err(), SealError::BadKey("k".into()));
        assert_eq!(Sealer::new(vec![]).unwrap_err(), SealError::NoKey);
    }
}
