//! The GraphQL schema. Resolvers are thin: take the viewer, call `domain`,
//! map the result to a GraphQL type. One module per area; the roots merge them.
mod accounts;
mod admin;
mod claims;
mod context;
mod devices;
mod events;
mod limits;
mod loaders;
mod orders;
mod organizations;
mod pagination;
mod parse_cache;
mod products;
mod requests;

use async_graphql::{MergedObject, MergedSubscription, Schema};

pub use context::{Auth, ContextExt};
pub use loaders::Loaders;

use crate::app::AppState;

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    accounts::AccountQuery,
    orders::OrderQuery,
    products::ProductQuery,
    claims::ClaimQuery,
    requests::RequestQuery,
    devices::DeviceQuery,
    events::EventQuery,
    admin::AdminQuery,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    accounts::AccountMutation,
    orders::OrderMutation,
    products::ProductMutation,
    claims::ClaimMutation,
    requests::RequestMutation,
    organizations::OrganizationMutation,
    devices::DeviceMutation,
);

#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(events::EventSubscription);

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Deepest selection accepted (introspection needs about 10 levels).
pub const MAX_DEPTH: usize = 12;
/// Cost budget per request. A field costs 1; a list of `first: n` costs n
/// times its selection, so 20 orders × 100 keys × 4 fields fits, 100 × 100 × 4 does not.
pub const MAX_COMPLEXITY: usize = 10_000;

/// Build the schema; `state` is absent only when printing the SDL.
pub fn schema(state: Option<AppState>) -> AppSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
    .limit_recursive_depth(32)
    .extension(limits::QueryShape)
    // Inside QueryShape, so its checks run on cached documents too.
    .extension(parse_cache::ParseCache::default());
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// The schema in SDL; `schema.graphql` is this text.
pub fn sdl() -> String {
    schema(None).sdl()
}
