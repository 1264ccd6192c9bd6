//! Opaque secrets (session, verification and transfer tokens): 256 random bits
//! shown once to their holder; the database keeps only their SHA-256, so a
//! leaked table grants nothing.
use sha2::{Digest, Sha256};

/// A fresh random token, URL-safe (hex).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}
