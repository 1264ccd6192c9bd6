//! Password rules and argon2id hashing (default parameters of the argon2
//! crate: m = 19 MiB, t = 2, p = 1, OWASP's recommendation). Hashing runs on
//! the blocking pool so it never stalls the async workers.
use std::sync::LazyLock;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

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

pub async fn hash(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
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
    tokio::task::spawn_blocking(move || {
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
