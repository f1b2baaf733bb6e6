//! argon2id password hashing. Hashing is CPU-heavy, so it runs on the
//! blocking pool instead of stalling the async workers, and memory-heavy
//! (19 MiB each): at most one per core runs at once, or a burst of logins
//! (a batch of ten, from a few addresses) could hold gigabytes.

use crate::error::{ApiError, ApiResult};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use rapport_domain::Password;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a hash waits for its turn before the request is refused.
const WAIT: Duration = Duration::from_secs(10);

/// A turn to hash, or RATE_LIMITED when the server is busy with others.
/// Owned, so it moves into the blocking task: a request cancelled midway
/// (the client hung up) leaves its hash running, and the turn with it.
async fn turn() -> ApiResult<OwnedSemaphorePermit> {
    static TURNS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let turns = TURNS.get_or_init(|| {
        Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        ))
    });
    turn_of(turns, WAIT).await
}

async fn turn_of(turns: &Arc<Semaphore>, wait: Duration) -> ApiResult<OwnedSemaphorePermit> {
    match tokio::time::timeout(wait, turns.clone().acquire_owned()).await {
        Ok(permit) => permit.map_err(ApiError::internal),
        Err(_) => {
            tracing::warn!("password hashing is saturated; refusing a sign-in");
            Err(ApiError::RateLimited {
                retry_after_secs: 5,
            })
        }
    }
}

pub async fn hash(password: &Password) -> ApiResult<String> {
    let pw = password.expose().to_owned();
    let turn = turn().await?;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
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
pub async fn verify(password: &str, stored: Option<&str>) -> ApiResult<bool> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let found = stored.is_some();
    let stored = stored.map(str::to_owned);
    let pw = password.to_owned();
    let turn = turn().await?;
    let ok = tokio::task::spawn_blocking(move || {
        let _turn = turn;
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
    Ok(ok && found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_wait_for_a_turn_and_give_up_with_rate_limited() {
        let turns = Arc::new(Semaphore::new(2));
        let wait = Duration::from_millis(50);
        let a = turn_of(&turns, wait).await.unwrap();
        let _b = turn_of(&turns, wait).await.unwrap();
        assert!(matches!(
            turn_of(&turns, wait).await,
            Err(ApiError::RateLimited { .. })
        ));
        // A turn held by a blocking task is given back when it ends.
        tokio::task::spawn_blocking(move || drop(a)).await.unwrap();
        assert!(turn_of(&turns, wait).await.is_ok());
    }
}
