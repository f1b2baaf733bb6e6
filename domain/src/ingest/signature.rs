//! Webhook signatures, checked on the raw body bytes.
//!
//! - X: `x-twitter-webhooks-signature: sha256=<base64 HMAC-SHA256(consumer secret, body)>`;
//!   the CRC challenge answers `sha256=<base64 HMAC-SHA256(consumer secret, crc_token)>`.
//! - Facebook / Instagram: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>`.
//! - GENERIC: `X-Rapport-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//!   refused when `t` is more than five minutes away from now (replays).

use crate::crypto::{hmac_sha256, hmac_sha256_matches};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use thiserror::Error;

pub const X_HEADER: &str = "x-twitter-webhooks-signature";
pub const META_HEADER: &str = "x-hub-signature-256";
pub const GENERIC_HEADER: &str = "x-rapport-signature";
pub const GENERIC_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("signature header is missing")]
    Missing,
    #[error("signature header is malformed")]
    Malformed,
    #[error("signature does not match the body")]
    Mismatch,
    #[error("signature timestamp is too old or in the future")]
    Stale,
}

impl SignatureError {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing",
            SignatureError::Malformed => "malformed",
            SignatureError::Mismatch => "mismatch",
            SignatureError::Stale => "stale",
        }
    }
}

/// A `crc_token` as X sends them: up to 256 characters of letters, digits
/// and `+/=_-.~`. X signs webhook bodies with the same key and the same
/// HMAC as the CRC answer, so answering any text would sign any body: a
/// JSON payload sent as the token would come back as its valid signature.
/// No JSON body can be written in these characters.
#[derive(Debug, Clone, PartialEq)]
pub struct CrcToken(String);

impl CrcToken {
    pub fn parse(raw: &str) -> Result<Self, crate::ParseError> {
        let ok = !raw.is_empty()
            && raw.len() <= 256
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=_-.~".contains(c));
        if ok {
            Ok(Self(raw.to_string()))
        } else {
            Err(crate::ParseError::new(
                "crc_token",
                "must be 1 to 256 letters, digits or +/=_-.~",
            ))
        }
    }
}

/// The `response_token` for X's CRC check.
pub fn x_crc_response(secret: &[u8], crc_token: &CrcToken) -> String {
    format!(
        "sha256={}",
        STANDARD.encode(hmac_sha256(secret, crc_token.0.as_bytes()))
    )
}

pub fn x_sign(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", STANDARD.encode(hmac_sha256(secret, body)))
}

pub fn verify_x(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let raw = header.ok_or(SignatureError::Missing)?.trim();
    let b64 = raw
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let tag = STANDARD
        .decode(b64)
        .map_err(|_| SignatureError::Malformed)?;
    check(secret, body, &tag)
}

pub fn meta_sign(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac_sha256(secret, body)))
}

pub fn verify_meta(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let raw = header.ok_or(SignatureError::Missing)?.trim();
    let hex_tag = raw
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let tag = unhex(hex_tag).ok_or(SignatureError::Malformed)?;
    check(secret, body, &tag)
}

pub fn generic_sign(secret: &[u8], body: &[u8], unix: i64) -> String {
    format!(
        "t={unix},v1={}",
        hex(&hmac_sha256(secret, &generic_message(unix, body)))
    )
}

pub fn verify_generic(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
    now_unix: i64,
) -> Result<(), SignatureError> {
    let raw = header.ok_or(SignatureError::Missing)?;
    let (mut t, mut v1) = (None, None);
    for part in raw.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = unhex(v),
            _ => {}
        }
    }
    let (t, tag) = (
        t.ok_or(SignatureError::Malformed)?,
        v1.ok_or(SignatureError::Malformed)?,
    );
    // Check the MAC first: an attacker must not learn anything from timing
    // about whether the timestamp alone was the problem.
    check(secret, &generic_message(t, body), &tag)?;
    if (now_unix - t).abs() > GENERIC_TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

fn generic_message(unix: i64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{unix}.").into_bytes();
    m.extend_from_slice(body);
    m
}

fn check(secret: &[u8], message: &[u8], tag: &[u8]) -> Result<(), SignatureError> {
    if hmac_sha256_matches(secret, message, tag) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"app-secret";
    // Emoji and accents: signatures cover the raw bytes, not a re-encoding.
    const BODY: &[u8] = "{\"text\":\"Café au lait ☕ — très déçu 😡\"}".as_bytes();

    #[test]
    fn x_signatures() {
        let sig = x_sign(SECRET, BODY);
        assert_eq!(verify_x(SECRET, BODY, Some(&sig)), Ok(()));
        assert_eq!(
            verify_x(b"wrong", BODY, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        let mut altered = BODY.to_vec();
        altered[3] ^= 1;
        assert_eq!(
            verify_x(SECRET, &altered, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify_x(SECRET, BODY, None), Err(SignatureError::Missing));
        assert_eq!(
            verify_x(SECRET, BODY, Some("md5=abc")),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn x_crc_matches_the_documented_construction() {
        // base64(HMAC-SHA256(key="Jefe", "what do ya want for nothing?")) per RFC 4231 case 2.
        assert_eq!(
            x_crc_response(b"Jefe", &CrcToken("what do ya want for nothing?".into())),
            "sha256=W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
    }

    #[test]
    fn crc_tokens_cannot_carry_a_payload() {
        for ok in ["challenge-abc", "MTQ3NzI4MDg5NjU0Mg==", "a_b.c~d/e+f"] {
            assert!(CrcToken::parse(ok).is_ok(), "{ok}");
        }
        let body = r#"{"for_user_id":"1","tweet_create_events":[]}"#;
        for bad in ["", body, "a b", "a\n", &"a".repeat(257)] {
            assert!(CrcToken::parse(bad).is_err(), "{bad:?}");
        }
        // Why: the CRC answer for a text is that text's webhook signature.
        let token = CrcToken("abc".into());
        assert_eq!(
            verify_x(SECRET, b"abc", Some(&x_crc_response(SECRET, &token))),
            Ok(())
        );
    }

    #[test]
    fn meta_signatures() {
        let sig = meta_sign(SECRET, BODY);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert_eq!(verify_meta(SECRET, BODY, Some(&sig)), Ok(()));
        assert_eq!(
            verify_meta(b"other", BODY, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_meta(SECRET, b"{}", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_meta(SECRET, BODY, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_meta(SECRET, BODY, None),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn generic_signatures_expire() {
        let now = 1_800_000_000;
        let sig = generic_sign(SECRET, BODY, now);
        assert_eq!(verify_generic(SECRET, BODY, Some(&sig), now + 10), Ok(()));
        assert_eq!(
            verify_generic(SECRET, BODY, Some(&sig), now + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_generic(b"x", BODY, Some(&sig), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_generic(SECRET, BODY, Some("v1=00"), now),
            Err(SignatureError::Malformed)
        );
    }
}
