//! Parsed GraphQL documents by query text. Clients send the same few queries
//! over and over (the licensed software's `validateLicense` above all), and
//! parsing was the largest single cost of such a request. Only successful
//! parses are kept (their text and shape limits checked once); validation
//! and the string arguments' check still run on each request.
use std::sync::Arc;

use async_graphql::{ServerResult, parser::types::ExecutableDocument};
use quick_cache::{Weighter, sync::Cache};

use super::limits::{self, Limit};

/// Bytes of query text kept (the least used go first). A parsed document is
/// some ten times its text, so this bounds the cache to a few megabytes
/// whatever distinct queries clients send.
const CAPACITY_BYTES: u64 = 256 * 1024;
/// Longer query texts are parsed each time (and not kept).
const MAX_QUERY_LEN: usize = 8 * 1024;

/// Weighs a cached document by the length of its query text.
#[derive(Clone)]
struct TextLength;

impl Weighter<String, ExecutableDocument> for TextLength {
    fn weight(&self, query: &String, _: &ExecutableDocument) -> u64 {
        query.len() as u64
    }
}

#[derive(Clone)]
pub struct ParseCache(Arc<Cache<String, ExecutableDocument, TextLength>>);

impl Default for ParseCache {
    fn default() -> Self {
        ParseCache(Arc::new(Cache::with_weighter(
            1000,
            CAPACITY_BYTES,
            TextLength,
        )))
    }
}

impl ParseCache {
    /// The document of `query`: the kept one, else the text checked
    /// ([`limits::check_text`]), parsed, and the document checked
    /// ([`limits::check_document`]) before it is kept. async-graphql's own
    /// parse step is not used: its recursion-depth check follows every
    /// fragment spread without memory (exponential before any limit could
    /// refuse); `check_document` bounds the same nesting, and refuses
    /// fragment cycles, so that the check async-graphql still runs on the
    /// document handed to it walks at most a bounded tree.
    pub fn parse(&self, query: &str) -> ServerResult<ExecutableDocument> {
        if let Some(doc) = self.0.get(query) {
            return Ok(doc);
        }
        limits::check_text(query).map_err(Limit::error)?;
        let doc = async_graphql::parser::parse_query(query)?;
        limits::check_document(&doc).map_err(Limit::error)?;
        if query.len() <= MAX_QUERY_LEN {
            self.0.insert(query.to_owned(), doc.clone());
        }
        Ok(doc)
    }
}
