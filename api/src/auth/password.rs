//! argon2id password hashing. Hashing is CPU-heavy, so it runs on the
//! blocking pool instead of stalling the async workers.

use crate::error::{ApiError, ApiResult};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use rapport_domain::Password;
use std::sync::OnceLock;

pub async fn hash(password: &Password) -> ApiResult<String> {
    let pw = password.expose().to_owned();
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(pw.as_bytes())
            .map(|h| h.to_string())
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

/// True when `password` matches `stored` (a PHC string). With no stored
/// hash (unknown account, invitation not accepted) it verifies against a
/// dummy hash anyway, so response time does not reveal which e-mail
/// addresses are registered.
pub async fn verify(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let found = stored.is_some();
    let stored = stored.map(str::to_owned);
    let pw = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || {
        let argon = Argon2::default();
        let stored = stored.unwrap_or_else(|| {
            DUMMY
                .get_or_init(|| {
                    argon
                        .hash_password(b"rapport timing equaliser")
                        .map(|h| h.to_string())
                        .unwrap_or_default()
                })
                .clone()
        });
        argon
            .verify_password(pw.as_bytes(), stored.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false);
    ok && found
}
