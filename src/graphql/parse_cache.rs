//! Parsed GraphQL documents by query text. Clients send the same few queries
//! over and over (the licensed software's `validateLicense` above all), and
//! parsing was the largest single cost of such a request. Only successful
//! parses are kept; validation and every limit still run on each request.
use std::sync::Arc;

use async_graphql::{
    ServerResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery},
    parser::types::ExecutableDocument,
};
use quick_cache::{Weighter, sync::Cache};

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
    /// The document of `query` for a look before execution (the
    /// `Idempotency-Key` gate): the kept one, else parsed here within the
    /// text limits (and not kept: the schema's run keeps it once its own
    /// checks passed). `None` when it does not parse; the schema then
    /// refuses the request itself.
    pub fn document(&self, query: &str) -> Option<ExecutableDocument> {
        if let Some(doc) = self.0.get(query) {
            return Some(doc);
        }
        super::limits::check_text(query).ok()?;
        async_graphql::parser::parse_query(query).ok()
    }
}

impl ExtensionFactory for ParseCache {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Extension for ParseCache {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(doc) = self.0.get(query) {
            return Ok(doc);
        }
        let doc = next.run(ctx, query, variables).await?;
        if query.len() <= MAX_QUERY_LEN {
            self.0.insert(query.to_owned(), doc.clone());
        }
        Ok(doc)
    }
}
