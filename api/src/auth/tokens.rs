//! Access tokens are short-lived HS256 JWTs naming user, agency, role and
//! session. Refresh tokens are random, shown once, and stored only hashed;
//! each names its session under a MAC, so a spent one is recognised as
//! this server's without keeping every hash ever issued.

use crate::error::{ApiError, ApiResult};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rapport_domain::crypto::{hmac_sha256, hmac_sha256_matches};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use uuid::Uuid;

pub const ISSUER: &str = "rapport";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub sub: Uuid,
    pub agency: Uuid,
    pub role: String,
    /// Session id: logout revokes it, and with it every access token issued for it.
    pub sid: Uuid,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tags refresh tokens; derived from the JWT secret, apart from it.
    refresh_key: Vec<u8>,
}

impl JwtKeys {
    pub fn new(secret: &str) -> Self {
        // Only HS256 is accepted: `alg: none` and every other algorithm fail.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            refresh_key: hmac_sha256(secret.as_bytes(), b"rapport refresh tokens v1"),
        }
    }

    /// A new refresh token for `session`: `<session>.<random>.<tag>`. The
    /// random part makes it unguessable; the tag lets [`Self::refresh_session`]
    /// tell a spent token of this server's from a forgery.
    pub fn mint_refresh(&self, session: Uuid) -> ApiResult<String> {
        let body = format!("{}.{}", session.simple(), random_token()?);
        let tag = URL_SAFE_NO_PAD.encode(hmac_sha256(&self.refresh_key, body.as_bytes()));
        Ok(format!("{body}.{tag}"))
    }

    /// The session a refresh token was minted for, if this server minted
    /// it (current or spent; the stored hash tells which).
    pub fn refresh_session(&self, token: &str) -> Option<Uuid> {
        let (body, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if !hmac_sha256_matches(&self.refresh_key, body.as_bytes(), &tag) {
            return None;
        }
        Uuid::try_parse(body.split_once('.')?.0).ok()
    }

    pub fn issue(
        &self,
        user: Uuid,
        agency: Uuid,
        role: &str,
        session: Uuid,
        ttl: Duration,
    ) -> ApiResult<(String, DateTime<Utc>)> {
        let now = Utc::now();
        let exp = now + chrono::Duration::from_std(ttl).map_err(ApiError::internal)?;
        let claims = Claims {
            sub: user,
            agency,
            role: role.to_string(),
            sid: session,
            iss: ISSUER.into(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)?;
        Ok((token, exp))
    }

    /// Checks signature, algorithm, issuer and expiry.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

/// A new random opaque token (refresh or invitation): 32 bytes, base64url.
pub fn random_token() -> ApiResult<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(ApiError::internal)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// What is stored for a token: hex SHA-256. Tokens carry 256 bits of
/// entropy, so a fast hash is enough (no dictionary to attack).
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_and_verifies_and_rejects_other_keys() {
        let keys = JwtKeys::new("secret-a");
        let (t, _) = keys
            .issue(
                Uuid::now_v7(),
                Uuid::now_v7(),
                "OWNER",
                Uuid::now_v7(),
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(keys.verify(&t).is_some());
        assert!(JwtKeys::new("secret-b").verify(&t).is_none());
        assert!(keys.verify("garbage").is_none());
    }

    #[test]
    fn refresh_tokens_name_their_session_under_this_servers_tag() {
        let keys = JwtKeys::new("secret-a");
        let sid = Uuid::now_v7();
        let t = keys.mint_refresh(sid).unwrap();
        assert_eq!(keys.refresh_session(&t), Some(sid));
        assert_ne!(keys.mint_refresh(sid).unwrap(), t, "random each time");
        assert_eq!(JwtKeys::new("secret-b").refresh_session(&t), None);
        let other = Uuid::now_v7().simple().to_string();
        let (_, rest) = t.split_once('.').unwrap();
        assert_eq!(keys.refresh_session(&format!("{other}.{rest}")), None);
        for bad in ["", "a.b", "a.b.c", "nope"] {
            assert_eq!(keys.refresh_session(bad), None);
        }
    }

    #[test]
    fn hashes_are_stable_hex() {
        assert_eq!(token_hash("a"), token_hash("a"));
        assert_eq!(token_hash("a").len(), 64);
        assert_ne!(random_token().unwrap(), random_token().unwrap());
    }
}
