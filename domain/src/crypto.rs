//! Keyed hashing and sealed secrets. HMAC comparisons are constant time
//! (ring's `verify`); channel secrets are sealed with ChaCha20-Poly1305
//! under a deployment key, so a database dump reveals none of them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use thiserror::Error;

pub fn hmac_sha256(secret: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), message)
        .as_ref()
        .to_vec()
}

/// Constant-time check that `tag` is the HMAC-SHA256 of `message`.
pub fn hmac_sha256_matches(secret: &[u8], message: &[u8], tag: &[u8]) -> bool {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, secret), message, tag).is_ok()
}

/// Constant-time equality of two secrets of any length (compares their
/// HMACs under a key of the moment, so length and content leak nothing).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let key = random_bytes::<32>();
    hmac_sha256_matches(&key, a, &hmac_sha256(&key, b))
}

pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random source works");
    buf
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SealError {
    #[error("RAPPORT_SECRET_KEY must be 32 bytes in base64")]
    BadKey,
    #[error("sealed secret is damaged or was sealed with another key")]
    Unreadable,
}

/// Seals and opens channel secrets with one 32-byte deployment key.
pub struct SecretBox {
    key: LessSafeKey,
}

impl SecretBox {
    /// From `RAPPORT_SECRET_KEY`: 32 bytes, base64.
    pub fn from_base64(raw: &str) -> Result<Self, SealError> {
        let bytes = STANDARD.decode(raw.trim()).map_err(|_| SealError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| SealError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    pub fn generate_base64() -> String {
        STANDARD.encode(random_bytes::<32>())
    }

    /// nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                ring::aead::Aad::empty(),
                &mut out,
            )
            .expect("sealing a short secret cannot fail");
        let mut sealed = nonce_bytes.to_vec();
        sealed.extend_from_slice(&out);
        sealed
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Unreadable);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Unreadable)?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, ring::aead::Aad::empty(), &mut buf)
            .map_err(|_| SealError::Unreadable)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_round_trip_and_resist_tampering() {
        let b = SecretBox::from_base64(&SecretBox::generate_base64()).unwrap();
        let sealed = b.seal(b"consumer secret");
        assert_ne!(&sealed[NONCE_LEN..], b"consumer secret");
        assert_eq!(b.open(&sealed).unwrap(), b"consumer secret");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(b.open(&bad), Err(SealError::Unreadable));
        let other = SecretBox::from_base64(&SecretBox::generate_base64()).unwrap();
        assert_eq!(other.open(&sealed), Err(SealError::Unreadable));
        assert!(SecretBox::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_matches(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!hmac_sha256_matches(
            b"Jefe",
            b"what do ya want for nothing!",
            &tag
        ));
    }
}
