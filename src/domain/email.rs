//! Email addresses: compared case-insensitively after trimming (product.md
//! "Accounts"), so they are stored normalised.
use std::str::FromStr;

use crate::error::{ApiResult, AppError};

/// Trim and lower-case an address, then check it is a plausible mailbox
/// (`VALIDATION` on `field` otherwise).
pub fn normalize(raw: &str, field: &'static str) -> ApiResult<String> {
    let email = raw.trim().to_lowercase();
    if email.len() > 254 || lettre::Address::from_str(&email).is_err() || !email.contains('.') {
        return Err(AppError::validation(field, "not a valid email address"));
    }
    Ok(email)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_spaces() {
        assert_eq!(
            normalize("  Ada@Example.COM ", "email").unwrap(),
            "ada@example.com"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@@example.com",
            "a b@example.com",
            "ada@localhost",
        ] {
            assert!(normalize(bad, "email").is_err(), "{bad}");
        }
    }
}
