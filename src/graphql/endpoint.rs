//! The schema behind the checks every request passes first, over HTTP and
//! websockets alike: the request's document (parsed, or kept from an
//! earlier request, within the limits of [`limits`]), its string arguments,
//! `GET`'s queries-only rule and API tokens' scopes ([`scopes`]).
//!
//! They run here, once per request, and not as schema extensions: once
//! any extension is registered, async-graphql resolves every field through
//! the extensions' `resolve` chain (a boxed future per extension and field,
//! after two registry lookups by name), which was the largest share of
//! the CPU of a page of 100 keys (some 600 fields). The schema is only
//! reached through [`Endpoint`], whose [`Admitted`] requests passed them.
use std::{any::TypeId, sync::Arc};

use async_graphql::{
    Data, Executor, Request, Response, ServerError,
    futures_util::{StreamExt, stream::BoxStream},
    parser::types::ExecutableDocument,
};

use super::{AppSchema, Auth, ParseCache, limits, operation, scopes, transport};
use crate::state::AppState;

/// The schema and the parsed documents of the queries clients send.
#[derive(Clone)]
pub struct Endpoint {
    schema: AppSchema,
    documents: ParseCache,
}

/// A request that passed the checks, with its parsed document.
pub struct Admitted(Request);

impl Admitted {
    /// The document the request runs.
    pub fn document(&mut self) -> Option<&ExecutableDocument> {
        self.0.parsed_query().ok()
    }

    /// Attach `data` for the resolvers.
    pub fn data(self, data: impl std::any::Any + Send + Sync) -> Self {
        Admitted(self.0.data(data))
    }

    /// The operation the request names, if any.
    pub fn operation_name(&self) -> Option<&str> {
        self.0.operation_name.as_deref()
    }
}

impl Endpoint {
    pub fn new(state: AppState) -> Self {
        Endpoint {
            schema: super::schema(Some(state)),
            documents: ParseCache::default(),
        }
    }

    /// Check `request` for `auth` before anything executes; a `GET`
    /// (`queries_only`) may run a query only. The refusal is a request
    /// error, with its `extensions.code`.
    pub fn admit(
        &self,
        mut request: Request,
        auth: &Auth,
        queries_only: bool,
    ) -> Result<Admitted, ServerError> {
        let doc = self.documents.parse(&request.query)?;
        limits::check_strings(&doc, &request.variables)?;
        let operation = operation::selected(&doc, request.operation_name.as_deref());
        if queries_only {
            transport::check_get(operation.map(|(kind, _)| kind))?;
        }
        scopes::check(&doc, operation, auth)?;
        request.set_parsed_query(doc);
        Ok(Admitted(request))
    }

    /// Run an admitted request; every error of the answer has a code.
    pub async fn run(&self, request: Admitted) -> Response {
        let mut response = self.schema.execute(request.0).await;
        limits::give_codes(&mut response);
        response
    }

    /// The answer to a request refused by [`Endpoint::admit`].
    pub fn refused(error: ServerError) -> Response {
        let mut response = Response::from_errors(vec![error]);
        limits::give_codes(&mut response);
        response
    }
}

/// The caller in `data`, if it holds one.
fn auth_in(data: &Data) -> Option<&Auth> {
    data.get(&TypeId::of::<Auth>())
        .and_then(|auth| auth.downcast_ref::<Auth>())
}

/// How the websocket protocol runs operations: the caller is in the
/// connection's data (`session_data`), resolved at `connection_init`.
impl Executor for Endpoint {
    async fn execute(&self, request: Request) -> Response {
        let auth = auth_in(&request.data).cloned().unwrap_or(Auth::Anonymous);
        match self.admit(request, &auth, false) {
            Ok(admitted) => self.run(admitted).await,
            Err(error) => Endpoint::refused(error),
        }
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let auth = auth_in(&request.data)
            .or_else(|| session_data.as_deref().and_then(auth_in))
            .cloned()
            .unwrap_or(Auth::Anonymous);
        match self.admit(request, &auth, false) {
            Ok(Admitted(request)) => self
                .schema
                .execute_stream_with_session_data(request, session_data.unwrap_or_default())
                .map(|mut response| {
                    limits::give_codes(&mut response);
                    response
                })
                .boxed(),
            Err(error) => async_graphql::futures_util::stream::once(std::future::ready(
                Endpoint::refused(error),
            ))
            .boxed(),
        }
    }
}
