//! Opaque secrets (session, verification and transfer tokens, API tokens):
//! 256 random bits shown once to their holder; the database keeps only their
//! SHA-256, so a leaked table grants nothing. A fast hash is right here: the
//! secrets are random, not chosen by people, so there is nothing to guess.
use sha2::{Digest, Sha256};

/// A fresh random token, URL-safe (hex).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// The prefix of API tokens, so that people and secret scanners recognise them.
pub const API_TOKEN_PREFIX: &str = "kl_";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Base62 characters after the prefix: 43 × log2(62) ≈ 256 bits.
const API_TOKEN_CHARS: usize = 43;

/// A fresh API token: `kl_` and 43 base62 characters (256 random bits),
/// each drawn without bias (bytes of 248 and above are drawn again).
pub fn generate_api_token() -> String {
    let mut token = String::with_capacity(API_TOKEN_PREFIX.len() + API_TOKEN_CHARS);
    token.push_str(API_TOKEN_PREFIX);
    let mut bytes = [0u8; 64];
    while token.len() < API_TOKEN_PREFIX.len() + API_TOKEN_CHARS {
        rand::fill(&mut bytes);
        for byte in bytes {
            if byte < 248 && token.len() < API_TOKEN_PREFIX.len() + API_TOKEN_CHARS {
                token.push(BASE62[usize::from(byte % 62)] as char);
            }
        }
    }
    token
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_tokens_are_prefixed_base62_and_distinct() {
        let a = super::generate_api_token();
        let b = super::generate_api_token();
        assert_eq!(a.len(), 46);
        assert!(a.starts_with("kl_"));
        assert!(a[3..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
