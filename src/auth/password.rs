//! Password rules and argon2id hashing (default parameters of the argon2
//! crate: m = 19 MiB, t = 2, p = 1, OWASP's recommendation). Hashing runs on
//! the blocking pool so it never stalls the async workers, a few at a time
//! ([`HASHING`]).
use std::sync::{Arc, LazyLock};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiResult, AppError};

/// NIST SP 800-63B asks for at least 8 characters and no composition rules;
/// we ask for 10 because argon2 guards the stored hash but not a guessable
/// password tried online, and 10 characters put the common lists out of reach.
pub const MIN_LEN: usize = 10;
/// Upper bound so a megabyte "password" cannot be used to burn CPU.
pub const MAX_LEN: usize = 128;

pub fn validate(password: &str) -> ApiResult<()> {
    let chars = password.chars().count();
    if chars < MIN_LEN {
        return Err(AppError::validation(
            "password",
            format!("password must be at least {MIN_LEN} characters"),
        ));
    }
    if chars > MAX_LEN {
        return Err(AppError::validation(
            "password",
            format!("password must be at most {MAX_LEN} characters"),
        ));
    }
    if password
        .chars()
        .all(|c| c == password.chars().next().unwrap_or(' '))
    {
        return Err(AppError::validation(
            "password",
            "password is a single repeated character",
        ));
    }
    Ok(())
}

/// Most argon2 computations (hashes and verifications) running at once: one
/// per core. Each holds 19 MiB and keeps a core busy, so more at once would
/// not finish sooner; they would only take more memory and blocking-pool
/// threads (tokio allows 512: hundreds of concurrent sign-ins reached
/// gigabytes). The rest wait in line (fairly, first come first served)
/// rather than being refused: the rate limits of sign-in bound how long the
/// line gets. Memory for hashing stays under `permits × 19 MiB`.
static HASHING: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(Semaphore::new(cores))
});

/// Wait for a turn to hash. The permit moves into the blocking task, so it is
/// released when the computation ends, even if the request was dropped while
/// it ran.
async fn hashing_turn() -> ApiResult<OwnedSemaphorePermit> {
    HASHING
        .clone()
        .acquire_owned()
        .await
        .map_err(AppError::internal)
}

pub async fn hash(password: String) -> ApiResult<String> {
    let turn = hashing_turn().await?;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
    })
    .await
    .map_err(AppError::internal)?
    .map_err(AppError::internal)
}

/// A hash of a random password, verified against when the email is unknown so
/// that "unknown email" and "wrong password" take the same time.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    Argon2::default()
        .hash_password(crate::auth::token::generate().as_bytes())
        .map(|hash| hash.to_string())
        .unwrap_or_default()
});

/// True when `password` matches `stored` (or, with no account, after the same work).
pub async fn verify(password: String, stored: Option<String>) -> ApiResult<bool> {
    let turn = hashing_turn().await?;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok();
        known && matches
    })
    .await
    .map_err(AppError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many verifications at once all finish, taking every turn meanwhile
    /// and giving every turn back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_waits_its_turn() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stored = hash("correct horse battery".into()).await.unwrap();
        let checks = (0..4 * cores).map(|i| {
            let stored = stored.clone();
            tokio::spawn(async move { verify(format!("guess {i}"), Some(stored)).await })
        });
        let sampler = tokio::spawn(async {
            let mut least = usize::MAX;
            for _ in 0..200 {
                least = least.min(HASHING.available_permits());
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            least
        });
        for check in futures_util::future::join_all(checks).await {
            assert!(!check.unwrap().unwrap());
        }
        assert_eq!(sampler.await.unwrap(), 0, "all turns were in use at times");
        assert_eq!(HASHING.available_permits(), cores);
    }
}
