//! What GraphQL over HTTP needs to know from the schema's run of a request:
//! whether execution began (errors raised before it are request errors,
//! answered 400 in `application/graphql-response+json`), and, for `GET`,
//! that the operation is a query.
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_graphql::{
    ServerResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery},
    parser::types::{DocumentOperations, ExecutableDocument, OperationType},
};

use super::limits;

/// Request data: set once the request passed parsing, validation and
/// operation selection and began to execute.
#[derive(Clone, Default)]
pub struct Executed(Arc<AtomicBool>);

impl Executed {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Request data of a `GET` request: only a query may run (a mutation sent
/// by a link, an `<img>` or a prefetch must not change anything).
pub struct QueriesOnly {
    pub operation_name: Option<String>,
}

/// The `extensions.field` of the error refusing a non-query over `GET`; the
/// HTTP layer answers it 405.
pub const METHOD_FIELD: &str = "method";

/// The extension behind [`Executed`] and [`QueriesOnly`]. Registered outside
/// the parse cache, so that cached documents are checked too.
pub struct Transport;

impl ExtensionFactory for Transport {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Transport)
    }
}

#[async_trait::async_trait]
impl Extension for Transport {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        if let Some(get) = ctx.data_opt::<QueriesOnly>() {
            let kind = match &doc.operations {
                DocumentOperations::Single(operation) => Some(operation.node.ty),
                DocumentOperations::Multiple(operations) => match &get.operation_name {
                    Some(name) => operations.get(name.as_str()).map(|o| o.node.ty),
                    None if operations.len() == 1 => operations.values().next().map(|o| o.node.ty),
                    // async-graphql refuses the ambiguity itself.
                    None => None,
                },
            };
            if kind.is_some_and(|kind| kind != OperationType::Query) {
                return Err(limits::coded_error(
                    "only queries may be sent with GET; send mutations with POST".into(),
                    METHOD_FIELD,
                    None,
                ));
            }
        }
        Ok(doc)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        if let Some(executed) = ctx.data_opt::<Executed>() {
            executed.0.store(true, Ordering::Relaxed);
        }
        next.run(ctx, operation_name).await
    }
}
