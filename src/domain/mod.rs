//! The product rules of product.md, one module per area. Functions here take a
//! database connection (or transaction) and plain values; they know nothing of
//! GraphQL or HTTP, so they are the one place each rule is written.
pub mod accounts;
pub mod admin;
pub mod claims;
pub mod devices;
pub mod email;
pub mod expiry;
pub mod keys;
pub mod licenses;
pub mod orders;
pub mod organizations;
pub mod products;
pub mod recovery;
pub mod requests;
pub mod rights;
pub mod settings;
pub mod siret;
pub mod transfers;
pub mod validity_cache;

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

use crate::clock::Clock;

/// Which side of a request or transfer the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Addressed to the caller's verified email.
    Incoming,
    /// Started by the caller.
    Outgoing,
}

/// What the rules need besides their arguments: the database, the time, and
/// how to wake the background workers once a change has committed.
#[derive(Clone)]
pub struct Ctx {
    pub db: DatabaseConnection,
    pub clock: Clock,
    /// Base of links in emails, without a trailing slash.
    pub public_url: Arc<str>,
    pub wake: Wake,
    /// `validateLicense` answers; forgotten on every change.
    pub validities: Arc<validity_cache::ValidityCache>,
}

/// Wakes the workers that act on committed rows (mail queue, event relay).
/// Waking is a hint: both also poll, so a lost wake-up only adds latency.
#[derive(Clone, Default)]
pub struct Wake {
    pub mail: Arc<Notify>,
    pub relay: Arc<Notify>,
}

impl Ctx {
    /// Call after a commit that queued email or wrote events: it forgets the
    /// cached `validateLicense` answers and wakes the workers. It does not
    /// wait for the relay: the reads of events wait until what was committed
    /// before them can be read in order ([`crate::events::cursor::settle`]),
    /// so a write pays nothing for read-your-writes and a read sees every
    /// event committed before it, on any instance.
    pub fn committed(&self) {
        self.validities.invalidate();
        self.wake.mail.notify_one();
        self.wake.relay.notify_one();
    }
}
