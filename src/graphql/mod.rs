//! The GraphQL schema. Resolvers are thin: take the viewer, call `domain`,
//! map the result to a GraphQL type. One module per area; the roots merge them.
mod accounts;
pub use accounts::UserAgent;
mod admin;
mod claims;
mod context;
mod devices;
mod events;
pub mod limits;
mod loaders;
mod orders;
mod organizations;
mod pagination;
mod parse_cache;
mod products;
mod requests;
pub mod transport;
mod webhooks;

use async_graphql::{MergedObject, MergedSubscription, Schema};

pub use context::Auth;
pub(crate) use context::ContextExt;
pub use loaders::Loaders;

use crate::state::AppState;

/// Root types carry the names every public schema and codegen tool expects.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
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
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    accounts::AccountMutation,
    orders::OrderMutation,
    products::ProductMutation,
    claims::ClaimMutation,
    requests::RequestMutation,
    organizations::OrganizationMutation,
    devices::DeviceMutation,
    webhooks::WebhookMutation,
);

#[derive(MergedSubscription, Default)]
#[graphql(name = "Subscription")]
pub struct SubscriptionRoot(events::EventSubscription);

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Build the schema; `state` is absent only when printing the SDL.
pub fn schema(state: Option<AppState>) -> AppSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .limit_depth(limits::MAX_DEPTH)
    .limit_complexity(limits::MAX_COMPLEXITY)
    .limit_recursive_depth(limits::MAX_LITERAL_NESTING)
    // Outermost: string arguments are checked on cached documents too.
    .extension(limits::RequestChecks)
    .extension(transport::Transport)
    .extension(parse_cache::ParseCache::default())
    // Innermost: only texts the cache does not hold are checked and parsed.
    .extension(limits::CheckedParse);
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// The schema in SDL; `schema.graphql` is this text.
pub fn sdl() -> String {
    schema(None).sdl()
}
