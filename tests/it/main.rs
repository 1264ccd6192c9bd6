//! The integration suite: one test binary (one link) with a module per area.
//! Run on SQLite by default; on PostgreSQL and Redis with `TEST_DATABASE_URL`
//! and `TEST_REDIS_URL` and `-- --include-ignored`, which also runs the tests
//! marked `#[ignore = "needs …"]` (see `.ci/run`).
mod harness;

mod account_recovery;
mod accounts;
mod admin;
mod api_tokens;
mod authorization;
mod browser;
mod browsers;
mod catalog;
mod claims;
mod connections;
mod dashboard;
mod devices;
mod events;
mod faults;
mod fuzz;
mod heartbeats;
mod hostile;
mod http_conformance;
mod idempotency;
mod introspect;
mod mail;
mod offline;
mod orders;
mod organizations;
mod passwords;
mod payments;
mod pg_cluster;
mod proxies;
mod readiness;
mod reissue;
mod requests;
mod rights;
mod rules;
mod schema;
mod smtp;
mod startup;
mod transfers;
mod webhooks;
