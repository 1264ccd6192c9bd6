//! sea-orm entities, one module per table. Columns are documented in the
//! migrations (`migration/src`), which are the source of truth for the schema.
pub mod account;
pub mod activation;
pub mod by_position;
pub mod claim;
pub mod email_verification;
pub mod event;
pub mod event_recipient;
pub mod idempotency_key;
pub mod license;
pub mod license_request;
pub mod mail_queue;
pub mod order;
pub mod order_transfer;
pub mod organization;
pub mod organization_member;
pub mod password_reset;
pub mod payment_event;
pub mod product;
pub mod retired_key;
pub mod session;
pub mod signing_key;
pub mod webhook_delivery;
pub mod webhook_endpoint;
