//! The key offline license certificates are signed with (Ed25519, compact
//! JWS with `alg: EdDSA`), and the public keys published in the JWKS.
//!
//! The private key is a PKCS#8 PEM file (`LICENSE_SIGNING_KEY`); on the
//! embedded default (SQLite) without one, a key is made on first start
//! beside the database file and reused. Every public key an instance signs
//! with is filed in `signing_keys` at start, so that after a rotation the
//! JWKS still lists the retired one while certificates it signed are in use.
//! A key's `kid` is its RFC 7638 thumbprint.
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes, spki::der::pem::LineEnding},
};
use entity::signing_key;
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash},
};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, QueryFilter, QueryOrder,
};
use serde::Serialize;

/// The file a key is made in, beside the SQLite database, when
/// `LICENSE_SIGNING_KEY` is unset.
pub const DEFAULT_FILE: &str = "keyledger-signing.pem";

/// Why the signing key could not be loaded; each names `LICENSE_SIGNING_KEY`.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error(
        "LICENSE_SIGNING_KEY is required on PostgreSQL (a path to an Ed25519 PKCS#8 PEM file; `keyledger keygen` makes one)"
    )]
    Missing,
    #[error("LICENSE_SIGNING_KEY {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("LICENSE_SIGNING_KEY {path}: not an Ed25519 private key in PKCS#8 PEM")]
    Malformed { path: PathBuf },
    #[error("LICENSE_SIGNING_KEY: {0}")]
    Other(String),
    #[error("LICENSE_SIGNING_KEY: could not file its public key: {0}")]
    Database(#[from] sea_orm::DbErr),
}

/// A new Ed25519 private key as PKCS#8 PEM (`keyledger keygen`): 32 bytes
/// of the OS-seeded CSPRNG. The PEM holds the private key alone (PKCS#8 v1,
/// as `openssl genpkey -algorithm ed25519` writes it).
pub fn generate_pem() -> Result<String, SigningKeyError> {
    let mut secret_key = [0u8; 32];
    rand::fill(&mut secret_key);
    let pem = KeypairBytes {
        secret_key,
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| SigningKeyError::Other(e.to_string()))?;
    Ok(pem.to_string())
}

/// What [`Signer`] signs: the claims of an offline certificate.
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    /// The license (key) id.
    pub sub: String,
    /// The product's catalog code.
    pub product: &'a str,
    /// The order's number.
    pub order: String,
    /// The device fingerprint the certificate is for.
    pub fpr: &'a str,
    pub iat: i64,
    pub exp: i64,
}

/// The instance's signing key.
pub struct Signer {
    key: EncodingKey,
    header: Header,
    kid: String,
    /// The public key as served in the JWKS.
    jwk: serde_json::Value,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    /// A signer from a PKCS#8 PEM (v1 or v2) of an Ed25519 private key;
    /// `None` when it is not one.
    pub fn from_pem(pem: &str) -> Option<Signer> {
        let signing = SigningKey::from_pkcs8_pem(pem).ok()?;
        // jsonwebtoken derives the public key from a v1 document: re-encode.
        let der = KeypairBytes {
            secret_key: signing.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_der()
        .ok()?;
        let key = EncodingKey::from_ed_der(der.as_bytes());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).ok()?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).ok()?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        header.typ = Some("JWT".into());
        Some(Signer {
            key,
            header,
            kid,
            jwk: serde_json::to_value(&jwk).ok()?,
        })
    }

    /// The signer `LICENSE_SIGNING_KEY` names; unset, on SQLite, the one
    /// beside the database file (made on first start, mode 0600), or a key
    /// of this process alone for an in-memory database. Its public key is
    /// filed in `signing_keys`.
    pub async fn load(
        db: &DatabaseConnection,
        database_url: &str,
        path: Option<&Path>,
        now: DateTime<Utc>,
    ) -> Result<Signer, SigningKeyError> {
        let signer = match path {
            Some(path) => Self::read(path)?,
            None if db.get_database_backend() != sea_orm::DatabaseBackend::Sqlite => {
                return Err(SigningKeyError::Missing);
            }
            None => match sqlite_dir(database_url) {
                Some(dir) => Self::read_or_create(&dir.join(DEFAULT_FILE))?,
                None => Self::from_pem(&generate_pem()?)
                    .ok_or_else(|| SigningKeyError::Other("a new key does not parse".into()))?,
            },
        };
        signer.file_public_key(db, now).await?;
        tracing::info!(kid = %signer.kid, "license signing key");
        Ok(signer)
    }

    fn read(path: &Path) -> Result<Signer, SigningKeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| SigningKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&pem).ok_or_else(|| SigningKeyError::Malformed {
            path: path.to_owned(),
        })
    }

    /// Read the key at `path`, or make it there (readable by its owner
    /// only). Two processes starting together on a fresh file: one
    /// creates it, the other reads it.
    fn read_or_create(path: &Path) -> Result<Signer, SigningKeyError> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                let pem = generate_pem()?;
                file.write_all(pem.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|source| SigningKeyError::Read {
                        path: path.to_owned(),
                        source,
                    })?;
                tracing::info!(path = %path.display(), "made a license signing key");
                Self::from_pem(&pem).ok_or_else(|| SigningKeyError::Malformed {
                    path: path.to_owned(),
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                // The other process may still be writing it.
                for _ in 0..50 {
                    if let Ok(signer) = Self::read(path) {
                        return Ok(signer);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Self::read(path)
            }
            Err(source) => Err(SigningKeyError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// File this key's public half, unless it is already there.
    async fn file_public_key(
        &self,
        db: &DatabaseConnection,
        now: DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        let known = signing_key::Entity::find()
            .filter(signing_key::Column::Kid.eq(&self.kid))
            .one(db)
            .await?;
        if known.is_some() {
            return Ok(());
        }
        let inserted = signing_key::ActiveModel {
            kid: Set(self.kid.clone()),
            public_jwk: Set(self.jwk.to_string()),
            first_used_at: Set(now),
            ..Default::default()
        }
        .insert(db)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            // Another instance with the same key filed it meanwhile.
            Err(error)
                if matches!(
                    error.sql_err(),
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// The key's id: its RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A compact JWS of `claims`.
    pub fn sign(&self, claims: &Claims<'_>) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&self.header, claims, &self.key)
    }
}

/// The folder of a SQLite database file (`sqlite://FILE?…`, `sqlite:FILE`);
/// `None` for an in-memory one.
fn sqlite_dir(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let file = rest.split('?').next().unwrap_or_default();
    if file.is_empty() || file == ":memory:" || rest.contains("mode=memory") {
        return None;
    }
    let parent = Path::new(file).parent().unwrap_or(Path::new(""));
    Some(if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.to_owned()
    })
}

/// The JWKS document: every public key ever filed, oldest first.
pub async fn jwks(conn: &impl ConnectionTrait) -> Result<serde_json::Value, sea_orm::DbErr> {
    let keys = signing_key::Entity::find()
        .order_by_asc(signing_key::Column::Id)
        .all(conn)
        .await?;
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .filter_map(|k| serde_json::from_str(&k.public_jwk).ok())
        .collect();
    Ok(serde_json::json!({ "keys": keys }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_signs_and_has_a_thumbprint_kid() {
        let pem = generate_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let signer = Signer::from_pem(&pem).unwrap();
        assert_eq!(signer.kid().len(), 43, "base64url of 32 bytes");
        assert_eq!(signer.jwk["kty"], "OKP");
        assert_eq!(signer.jwk["crv"], "Ed25519");
        assert_eq!(signer.jwk["kid"], signer.kid());
        // Same key, same kid; another key, another.
        assert_eq!(Signer::from_pem(&pem).unwrap().kid(), signer.kid());
        let other = Signer::from_pem(&generate_pem().unwrap()).unwrap();
        assert_ne!(other.kid(), signer.kid());
        assert!(Signer::from_pem("not a key").is_none());
    }

    #[test]
    fn rfc_8037_test_key_has_its_published_thumbprint() {
        // RFC 8037 appendix A.1/A.3: the private key d and its thumbprint.
        let secret: [u8; 32] = [
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ];
        let pem = KeypairBytes {
            secret_key: secret,
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
        let signer = Signer::from_pem(&pem).unwrap();
        assert_eq!(
            signer.jwk["x"],
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        assert_eq!(signer.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn the_key_file_goes_beside_the_sqlite_file() {
        assert_eq!(
            sqlite_dir("sqlite://keyledger.db?mode=rwc"),
            Some(PathBuf::from("."))
        );
        assert_eq!(
            sqlite_dir("sqlite:///var/lib/kl/kl.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/kl"))
        );
        assert_eq!(sqlite_dir("sqlite::memory:"), None);
        assert_eq!(sqlite_dir("postgres://x/y"), None);
    }
}
