//! What GraphQL over HTTP needs to know about a request: for `GET`, that
//! the operation is a query; afterwards, whether execution began (errors
//! raised before it are request errors, answered 400 in
//! `application/graphql-response+json`).
use std::{
    borrow::Cow,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use async_graphql::{
    Context, ContextSelectionSet, ObjectType, OutputType, Positioned, ServerError, ServerResult,
    Value, parser::types::Field, parser::types::OperationType, registry::Registry,
    resolver_utils::ContainerType,
};

use super::limits;

/// The `extensions.field` of the error refusing a non-query over `GET`; the
/// HTTP layer answers it 405.
pub const METHOD_FIELD: &str = "method";

/// A `GET` may only run a query (a mutation sent by a link, an `<img>` or
/// a prefetch must not change anything). `kind` is the type of the
/// operation the request selects; when it selects none, async-graphql
/// refuses the request itself.
pub fn check_get(kind: Option<OperationType>) -> Result<(), ServerError> {
    if kind.is_some_and(|kind| kind != OperationType::Query) {
        return Err(limits::coded_error(
            "only queries may be sent with GET; send mutations with POST".into(),
            METHOD_FIELD,
            None,
        ));
    }
    Ok(())
}

/// Request data: set once the request passed parsing, validation and
/// operation selection and its first root field began to resolve.
#[derive(Clone, Default)]
pub struct Executed(Arc<AtomicBool>);

impl Executed {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A root type (`Query`, `Mutation`) that sets the request's [`Executed`]
/// as each of its fields begins to resolve; otherwise `T` itself, under
/// `T`'s name. Recorded here rather than by a schema extension's `execute`
/// hook: an extension would put a hook around every field of the request.
#[derive(Default)]
pub struct Recorded<T>(T);

impl<T: ContainerType> ContainerType for Recorded<T> {
    async fn resolve_field(&self, ctx: &Context<'_>) -> ServerResult<Option<Value>> {
        if let Some(executed) = ctx.data_opt::<Executed>() {
            executed.0.store(true, Ordering::Relaxed);
        }
        self.0.resolve_field(ctx).await
    }

    async fn find_entity(&self, ctx: &Context<'_>, params: &Value) -> ServerResult<Option<Value>> {
        self.0.find_entity(ctx, params).await
    }
}

impl<T: ContainerType> OutputType for Recorded<T> {
    fn type_name() -> Cow<'static, str> {
        T::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        _field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        async_graphql::resolver_utils::resolve_container(ctx, self).await
    }
}

impl<T: ContainerType + ObjectType> ObjectType for Recorded<T> {}
