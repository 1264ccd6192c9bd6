//! Database migrations, run at start-up by `keyledger` (and by `keyledger migrate`).
//!
//! Each migration declares its own `Iden` enums and never imports the `entity`
//! crate, so an old migration keeps meaning what it meant when it was written.
pub use sea_orm_migration::prelude::*;

mod m20261127_000001_create_accounts;
mod m20261127_000002_create_mail_queue;
mod m20261127_000003_create_orders_and_licenses;
mod m20261127_000004_create_claims_and_requests;
mod m20261127_000005_create_events;
mod m20261127_000006_create_organizations_and_devices;
mod m20261127_000007_indexes_for_load;
mod m20261127_000008_order_events_by_transaction;
mod m20261202_000001_create_products;
mod m20261203_000001_account_recovery;
mod m20261203_000002_key_reissue;
mod m20261203_000010_payments;
mod m20261203_000020_admin_support;
mod m20261204_000021_create_webhooks;
mod m20261204_000041_licensed_software;
mod m20261204_000101_api_tokens;
mod m20261204_000102_idempotency_keys;
mod m20261204_000110_recipients_without_event_fk;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_accounts::Migration),
            Box::new(m20261127_000002_create_mail_queue::Migration),
            Box::new(m20261127_000003_create_orders_and_licenses::Migration),
            Box::new(m20261127_000004_create_claims_and_requests::Migration),
            Box::new(m20261127_000005_create_events::Migration),
            Box::new(m20261127_000006_create_organizations_and_devices::Migration),
            Box::new(m20261127_000007_indexes_for_load::Migration),
            Box::new(m20261127_000008_order_events_by_transaction::Migration),
            Box::new(m20261202_000001_create_products::Migration),
            Box::new(m20261203_000001_account_recovery::Migration),
            Box::new(m20261203_000002_key_reissue::Migration),
            Box::new(m20261203_000010_payments::Migration),
            Box::new(m20261204_000101_api_tokens::Migration),
            Box::new(m20261204_000102_idempotency_keys::Migration),
            Box::new(m20261203_000020_admin_support::Migration),
            Box::new(m20261204_000041_licensed_software::Migration),
            Box::new(m20261204_000021_create_webhooks::Migration),
            Box::new(m20261204_000110_recipients_without_event_fk::Migration),
        ]
    }
}
