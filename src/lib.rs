//! keyledger: the GraphQL backend of a license-key store's customer area.
//!
//! Where to look:
//! - [`domain`]: the product rules (product.md), plain functions over a database connection.
//! - [`graphql`]: thin resolvers that authenticate, call the domain and map types.
//! - [`events`]: outbox relay and fan-out of live events (in-process or Redis).
//! - [`mail`]: email templates, the persisted send queue and its transports.
//! - [`webhooks`]: signed outbound webhooks, their delivery worker and SSRF guard.

/// Server wiring: shared state, router, start-up and graceful shutdown.
pub mod app;
/// Session tokens, passwords and the `Viewer` every resolver starts from.
pub mod auth;
/// Command-line subcommands other than `serve`.
pub mod cli;
/// Who the client is, behind trusted proxies or not.
pub mod client_ip;
/// Wall clock behind a handle so tests can move time forward instead of sleeping.
pub mod clock;
/// Typed configuration from flags, environment and `.env`.
pub mod config;
/// Connecting to SQLite or PostgreSQL and running migrations.
pub mod db;
/// The product rules.
pub mod domain;
/// The one error type and its mapping to `extensions.code`.
pub mod error;
/// Live events: relay, bus, per-account subscriber hub.
pub mod events;
/// Invalidation of in-memory answers (validations, sessions) by generation.
pub mod generation;
/// The GraphQL schema: types and resolvers.
pub mod graphql;
/// HTTP: GraphQL over HTTP and websockets, GraphiQL, health, readiness, metrics.
pub mod http;
/// Email: templates, queue, transports.
pub mod mail;
/// Counters exported on `/metrics`.
pub mod metrics;
/// Browser origins allowed to call the API (CORS and websockets).
pub mod origins;
/// HTML pages opened by links in emails (confirm, never by a plain GET).
pub mod pages;
/// Rate limits on guessing and on email, per account, client and recipient.
pub mod rate_limits;
/// The key offline license certificates are signed with, and the JWKS.
pub mod signing;
/// The state every request handler and resolver shares.
pub mod state;
/// Logging setup.
pub mod telemetry;
/// Outbound webhooks (Standard Webhooks): signing, delivery, SSRF guard.
pub mod webhooks;
