//! Automatic persisted queries (Apollo's convention): a client sends
//! `extensions.persistedQuery { version: 1, sha256Hash }` with no query;
//! keyledger runs the query of that hash if it holds it, else answers
//! `PERSISTED_QUERY_NOT_FOUND` and the client sends hash and query once.
//! Hashes make `GET` URLs short and cacheable.
//!
//! async-graphql's `ApolloPersistedQueries` extension is not used: its
//! errors carry no `extensions.code`, and it parses the query itself, past
//! the text limits of `graphql::limits`. Here a hash is turned back into
//! query text before anything else, so every limit and the parse cache apply
//! as to any query.
use std::sync::Arc;

use async_graphql::ServerError;
use quick_cache::{Weighter, sync::Cache};
use sha2::{Digest, Sha256};

use crate::graphql::limits::{self, MAX_QUERY_CHARS};

/// Bytes of query text kept, the least used going first: a dashboard has a
/// few dozen operations of a few hundred bytes; 4 MiB holds thousands, and
/// bounds what clients registering queries can make this process hold.
const CAPACITY_BYTES: u64 = 4 * 1024 * 1024;
/// The most entries estimated, for the cache's sizing.
const ESTIMATED_ITEMS: usize = 4096;

#[derive(Clone)]
struct TextLength;

impl Weighter<String, Arc<str>> for TextLength {
    fn weight(&self, hash: &String, query: &Arc<str>) -> u64 {
        (hash.len() + query.len()) as u64
    }
}

/// Query texts by the hex SHA-256 of their text.
#[derive(Clone)]
pub struct PersistedQueries(Arc<Cache<String, Arc<str>, TextLength>>);

impl Default for PersistedQueries {
    fn default() -> Self {
        PersistedQueries(Arc::new(Cache::with_weighter(
            ESTIMATED_ITEMS,
            CAPACITY_BYTES,
            TextLength,
        )))
    }
}

/// The code and message Apollo clients look for before resending the query.
pub const NOT_FOUND_CODE: &str = "PERSISTED_QUERY_NOT_FOUND";
const NOT_FOUND_MESSAGE: &str = "PersistedQueryNotFound";

fn invalid(message: &str) -> ServerError {
    limits::coded_error(message.to_owned(), "extensions", None)
}

impl PersistedQueries {
    /// Put the query text of `request`'s `persistedQuery` extension in place
    /// (and keep a new one). Without the extension, nothing changes.
    pub fn resolve(&self, request: &mut async_graphql::Request) -> Result<(), ServerError> {
        let Some(extension) = request.extensions.remove("persistedQuery") else {
            return Ok(());
        };
        let serde_json::Value::Object(fields) = extension.into_json().unwrap_or_default() else {
            return Err(invalid("persistedQuery must be an object"));
        };
        if fields.get("version").and_then(serde_json::Value::as_i64) != Some(1) {
            return Err(invalid("persistedQuery version 1 is the one supported"));
        }
        let hash = fields
            .get("sha256Hash")
            .and_then(serde_json::Value::as_str)
            .filter(|hash| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| invalid("persistedQuery.sha256Hash must be 64 hexadecimal digits"))?
            .to_ascii_lowercase();
        if request.query.is_empty() {
            let query = self.0.get(&hash).ok_or_else(not_found)?;
            request.query = query.to_string();
            return Ok(());
        }
        if hex::encode(Sha256::digest(request.query.as_bytes())) != hash {
            return Err(invalid(
                "persistedQuery.sha256Hash is not the SHA-256 of the query",
            ));
        }
        // A text over the limits would be refused at every use: not kept.
        if request.query.len() <= MAX_QUERY_CHARS * 4 && limits::check_text(&request.query).is_ok()
        {
            self.0.insert(hash, request.query.as_str().into());
        }
        Ok(())
    }
}

fn not_found() -> ServerError {
    let mut error = ServerError::new(NOT_FOUND_MESSAGE, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", NOT_FOUND_CODE);
    error.extensions = Some(extensions);
    error
}

/// Whether `error` is [`NOT_FOUND_CODE`] (answered 200, as Apollo clients
/// expect, whatever the media type).
pub fn is_not_found(error: &ServerError) -> bool {
    error
        .extensions
        .as_ref()
        .and_then(|extensions| extensions.get("code"))
        .is_some_and(|code| *code == async_graphql::Value::from(NOT_FOUND_CODE))
}
