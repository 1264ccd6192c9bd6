//! The GraphQL schema. Resolvers are thin: take the viewer, call `domain`,
//! map the result to a GraphQL type. One module per area; the roots merge them.
//!
//! Fields of the types a page lists (keys, accounts, claims, requests,
//! events, orders) await their database reads boxed (`.boxed().await`):
//! async-graphql allocates and copies every field's future at the size of
//! its type's largest resolver, so one field awaiting a query inline would
//! make every `id` and `email` of a page of 100 cost kilobytes.
mod accounts;
mod api_tokens;
pub use accounts::UserAgent;
mod admin;
mod claims;
mod context;
mod devices;
mod endpoint;
mod events;
pub mod limits;
mod loaders;
mod offline;
pub mod operation;
mod orders;
mod organizations;
mod pagination;
mod parse_cache;
mod payments;
use parse_cache::ParseCache;
mod products;
mod requests;
mod scopes;
pub mod transport;
mod webhooks;

use async_graphql::{MergedObject, MergedSubscription, Schema};

pub use context::Auth;
pub(crate) use context::ContextExt;
pub use endpoint::{Admitted, Endpoint};
pub use loaders::Loaders;

use crate::state::AppState;
use transport::Recorded;

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
    api_tokens::ApiTokenMutation,
    orders::OrderMutation,
    products::ProductMutation,
    claims::ClaimMutation,
    requests::RequestMutation,
    organizations::OrganizationMutation,
    devices::DeviceMutation,
    payments::PaymentMutation,
    admin::AdminMutation,
    offline::LicensingMutation,
    webhooks::WebhookMutation,
);

#[derive(MergedSubscription, Default)]
#[graphql(name = "Subscription")]
pub struct SubscriptionRoot(events::EventSubscription);

type AppSchema = Schema<Recorded<QueryRoot>, Recorded<MutationRoot>, SubscriptionRoot>;

/// Build the schema; `state` is absent only when printing the SDL.
/// Requests reach it through [`Endpoint`], which checks them first: it has
/// no extension, since any extension puts a hook around every field.
fn schema(state: Option<AppState>) -> AppSchema {
    let mut builder = Schema::build(
        Recorded::default(),
        Recorded::default(),
        SubscriptionRoot::default(),
    )
    // A backstop: `limits::check_document` counts depth first, with the
    // introspection allowance.
    .limit_depth(limits::MAX_INTROSPECTION_DEPTH)
    .limit_complexity(limits::MAX_COMPLEXITY)
    .limit_recursive_depth(limits::MAX_LITERAL_NESTING);
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// The schema in SDL; `schema.graphql` is this text.
pub fn sdl() -> String {
    schema(None).sdl()
}
