//! The product rules of product.md, one module per area. Functions here take a
//! database connection (or transaction) and plain values; they know nothing of
//! GraphQL or HTTP, so they are the one place each rule is written.
pub mod accounts;
pub mod admin;
pub mod api_tokens;
pub mod claims;
pub mod devices;
pub mod email;
pub mod expiry;
pub mod heartbeats;
pub mod idempotency;
pub mod keys;
pub mod licenses;
pub mod offline;
pub mod orders;
pub mod organizations;
pub mod payments;
pub mod products;
pub mod recovery;
pub mod requests;
pub mod rights;
pub mod rounds;
pub mod settings;
pub mod siret;
pub mod support;
pub mod transfers;
pub mod validity_cache;
pub mod webhooks;

use std::sync::Arc;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement,
};
use tokio::sync::Notify;

use crate::{clock::Clock, error::ApiResult};

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
    /// Writes heartbeats in rounds (PostgreSQL).
    pub heartbeats: heartbeats::Writer,
}

/// Wakes the workers that act on committed rows (mail queue, event relay).
/// Waking is a hint: both also poll, so a lost wake-up only adds latency.
#[derive(Clone, Default)]
pub struct Wake {
    pub mail: Arc<Notify>,
    pub relay: Arc<Notify>,
    /// The webhook worker (a commit may have queued deliveries).
    pub webhooks: Arc<Notify>,
}

impl Ctx {
    /// Start a change: a write transaction ([`crate::db::begin_write`])
    /// whose [`Write::commit`] also calls [`Ctx::committed`], so that no
    /// change can forget to. Dropped without a commit, it rolls back.
    ///
    /// Every change of a mutation starts here: in a mutation sent with an
    /// `Idempotency-Key`, the first change takes the key, in its own
    /// transaction ([`idempotency::take_with`]) or by waiting for the
    /// key's round before it begins ([`idempotency::before_write`]), and
    /// fails without writing anything when another attempt holds it.
    pub async fn begin_write(&self) -> ApiResult<Write<'_>> {
        idempotency::before_write(&self.db, false).await?;
        let txn = crate::db::begin_write(&self.db).await?;
        let key = idempotency::take_with(&txn).await?;
        Ok(Write {
            txn,
            ctx: self,
            key,
        })
    }

    /// Call after a commit that queued email or wrote events: it forgets the
    /// cached `validateLicense` answers and wakes the workers. It does not
    /// wait for the relay: the reads of events wait until what was committed
    /// before them can be read in order ([`crate::events::cursor::settle`]),
    /// so a write pays nothing for read-your-writes and a read sees every
    /// event committed before it, on any instance.
    fn committed(&self) {
        self.validities.invalidate();
        self.wake.mail.notify_one();
        self.wake.relay.notify_one();
        self.wake.webhooks.notify_one();
    }
}

/// A change in progress; see [`Ctx::begin_write`]. It is a connection, so
/// the rules take it as `&impl ConnectionTrait` like any other.
pub struct Write<'a> {
    txn: DatabaseTransaction,
    ctx: &'a Ctx,
    /// The `Idempotency-Key` this change took, held once it commits.
    key: Option<idempotency::KeyHold>,
}

impl Write<'_> {
    /// The transaction itself, for savepoints.
    pub fn transaction(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Commit, then forget the cached answers and wake the workers.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await?;
        if let Some(key) = self.key {
            key.committed();
        }
        idempotency::note_commit();
        self.ctx.committed();
        Ok(())
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Write<'_> {
    fn get_database_backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.txn.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.txn.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.txn.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.txn.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.txn.support_returning()
    }
}
