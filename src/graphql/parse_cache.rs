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
use quick_cache::sync::Cache;

/// Documents kept; the least used go first.
const CAPACITY: usize = 1000;
/// Longer query texts are parsed each time (and not kept).
const MAX_QUERY_LEN: usize = 8 * 1024;

#[derive(Clone)]
pub struct ParseCache(Arc<Cache<String, ExecutableDocument>>);

impl Default for ParseCache {
    fn default() -> Self {
        ParseCache(Arc::new(Cache::new(CAPACITY)))
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
