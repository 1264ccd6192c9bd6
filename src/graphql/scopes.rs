//! The one place API tokens' scopes are enforced: a schema extension that
//! looks at the root fields of the operation about to run (over HTTP and
//! websockets alike, before validation and execution) and refuses the
//! request with `FORBIDDEN` (`extensions.scope`) when the caller's token
//! lacks what `auth::scopes::OPERATIONS` asks for. Callers without a token
//! pay one lookup; sessions are not concerned.
use std::sync::{Arc, Mutex};

use async_graphql::{
    Pos, Request, ServerResult, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest,
    },
    parser::types::ExecutableDocument,
};

use super::{Auth, operation};
use crate::{
    auth::scopes::{self, Refusal},
    error::AppError,
};

/// Registered outside the parse cache, so cached documents are checked too.
pub struct ScopeCheck;

impl ExtensionFactory for ScopeCheck {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ScopeCheckRun::default())
    }
}

/// One request's run: the operation name it asked for.
#[derive(Default)]
struct ScopeCheckRun {
    operation_name: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Extension for ScopeCheckRun {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Some(name) = &request.operation_name {
            *self
                .operation_name
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(name.clone());
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let scopes = match ctx.data_opt::<Auth>() {
            Some(Auth::Viewer(viewer)) => viewer.scopes,
            _ => None,
        };
        let Some(scopes) = scopes else {
            return Ok(doc);
        };
        let name = self
            .operation_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((ty, selection_set)) = operation::selected(&doc, name.as_deref()) {
            let root = operation::root_name(ty);
            for field in operation::root_fields(&doc, selection_set) {
                if let Err(refusal) = scopes::check(scopes, root, field) {
                    let error = AppError::OutOfScope {
                        operation: field.to_owned(),
                        scope: match refusal {
                            Refusal::Missing(scope) => Some(scope.as_str()),
                            Refusal::NotForTokens => None,
                        },
                    };
                    let mut error =
                        async_graphql::Error::from(error).into_server_error(Pos::default());
                    error.locations.clear();
                    return Err(error);
                }
            }
        }
        Ok(doc)
    }
}
