//! Shape limits that depth and complexity do not cover: how many root fields
//! and aliases one request may carry (aliases let a single request repeat an
//! expensive field, e.g. a hundred `signIn`s to guess passwords). Also gives
//! async-graphql's own errors (syntax, unknown field, depth, complexity) the
//! `VALIDATION` code, so every error a client sees has an `extensions.code`.
use std::sync::Arc;

use async_graphql::{
    ServerError, ServerResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest},
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};

/// Most fields at the root of an operation.
pub const MAX_ROOT_FIELDS: usize = 20;
/// Most aliased fields in a whole request.
pub const MAX_ALIASES: usize = 30;

pub struct QueryShape;

impl ExtensionFactory for QueryShape {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryShapeExtension)
    }
}

struct QueryShapeExtension;

fn count_aliases(set: &SelectionSet, doc: &ExecutableDocument, depth: usize) -> usize {
    if depth > 64 {
        return 0;
    }
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                usize::from(field.node.alias.is_some())
                    + count_aliases(&field.node.selection_set.node, doc, depth + 1)
            }
            Selection::InlineFragment(fragment) => {
                count_aliases(&fragment.node.selection_set.node, doc, depth + 1)
            }
            Selection::FragmentSpread(spread) => doc
                .fragments
                .get(&spread.node.fragment_name.node)
                .map(|f| count_aliases(&f.node.selection_set.node, doc, depth + 1))
                .unwrap_or(0),
        })
        .sum()
}

#[async_trait::async_trait]
impl Extension for QueryShapeExtension {
    async fn request(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextRequest<'_>,
    ) -> async_graphql::Response {
        let mut response = next.run(ctx).await;
        for error in &mut response.errors {
            let extensions = error.extensions.get_or_insert_with(Default::default);
            if extensions.get("code").is_none() {
                extensions.set("code", "VALIDATION");
                extensions.set("field", "query");
            }
        }
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        for (_, operation) in doc.operations.iter() {
            let root = &operation.node.selection_set.node;
            if root.items.len() > MAX_ROOT_FIELDS {
                return Err(limit_error(format!(
                    "an operation may select at most {MAX_ROOT_FIELDS} root fields"
                )));
            }
            if count_aliases(root, &doc, 0) > MAX_ALIASES {
                return Err(limit_error(format!(
                    "a request may use at most {MAX_ALIASES} aliases"
                )));
            }
        }
        Ok(doc)
    }
}

fn limit_error(message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", "VALIDATION");
    extensions.set("field", "query");
    error.extensions = Some(extensions);
    error
}
