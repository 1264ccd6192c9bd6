//! The integration suite: one test binary (one link) with a module per area.
//! Run on SQLite by default; on PostgreSQL and Redis with `TEST_DATABASE_URL`
//! and `TEST_REDIS_URL` (see `.ci/run`).
mod harness;

mod accounts;
mod catalog;
mod claims;
mod devices;
mod events;
mod mail;
mod orders;
mod organizations;
mod requests;
mod schema;
mod transfers;
