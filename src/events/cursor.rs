//! The order events are delivered in, and a subscriber's place in it.
//!
//! Events go out in the order (`tx`, `id`). Ids alone would not do on
//! PostgreSQL: they are taken at insert time, before commit, so an event with
//! a small id can commit after a reader has already moved its cursor past a
//! larger one, and the reader would skip it. So every event row also holds
//! the id of the transaction that wrote it (`tx`, `pg_current_xact_id()`),
//! and readers take only the events below the *horizon*: transactions older
//! than their snapshot's `xmin`, which have all ended. The horizon only moves
//! forward, and any transaction still running is at or above it, so an event
//! that shows up later always sorts after every cursor handed out before it.
//! On SQLite one writer commits at a time, so ids follow commit order: `tx`
//! is 0 and every committed event is below the horizon.
//!
//! Nothing is written after commit: the relay and the readers only read.
//! What this costs:
//! - an open write transaction anywhere in the PostgreSQL cluster (even in
//!   another database) holds back later events until it ends;
//! - events of concurrent changes are in the order their transactions began
//!   writing (or locking rows), which can differ from the order they
//!   committed in: a change that had already locked or written a row and
//!   then waited for another's lock comes first (one whose first lock is a
//!   `SELECT … FOR UPDATE` that waits gets its id after the wait, so it
//!   comes after);
//! - transaction ids restart in another cluster (a restored dump):
//!   [`keep_ahead`] then shifts new ids past the stored ones.
use std::{fmt, str::FromStr, time::Duration};

use entity::event;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, QueryFilter, QueryOrder, Select,
    Statement, TransactionTrait,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};

/// A place in the event order. Clients see it as the event's `id`, written
/// `tx:id` (for example `0:17` on SQLite).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Cursor {
    /// Compared first: the writing transaction (0 on SQLite).
    pub tx: i64,
    pub id: i64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tx, self.id)
    }
}

impl FromStr for Cursor {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (tx, id) = s.split_once(':').ok_or(())?;
        let number = |n: &str| n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or(());
        Ok(Cursor {
            tx: number(tx)?,
            id: number(id)?,
        })
    }
}

/// The horizon of the statement that evaluates it (PostgreSQL), on the scale
/// of `tx` (see [`keep_ahead`]).
const HORIZON: &str =
    "pg_snapshot_xmin(pg_current_snapshot())::text::bigint + keyledger_tx_offset()";

/// The id the next transaction will get, as of the statement that evaluates
/// it (PostgreSQL), on the scale of `tx`. Within one statement it reads the
/// same snapshot as [`HORIZON`].
const NEXT_TX: &str =
    "pg_snapshot_xmax(pg_current_snapshot())::text::bigint + keyledger_tx_offset()";

/// `query` narrowed to the events after `cursor`, in delivery order. The
/// relay reads this way: it also sees the events still above the horizon,
/// to know that some wait.
/// From the start, there is no bound at all (every event's `id` is
/// positive): PostgreSQL would start its walk of the index at `(0, 0)`, even
/// past a narrower bound on `tx` that the caller adds (an admin's time range).
pub fn in_order_after(query: Select<event::Entity>, cursor: Cursor) -> Select<event::Entity> {
    let query = if cursor == Cursor::default() {
        query
    } else {
        query.filter(
            Expr::tuple([Expr::col(event::Column::Tx), Expr::col(event::Column::Id)])
                .gt(Expr::tuple([cursor.tx.into(), cursor.id.into()])),
        )
    };
    query
        .order_by_asc(event::Column::Tx)
        .order_by_asc(event::Column::Id)
}

/// `query` narrowed to what a reader may deliver after `cursor`, in delivery
/// order: the events after it below the horizon of the statement (on
/// PostgreSQL; on SQLite every committed event is below it).
pub fn deliverable_after(
    query: Select<event::Entity>,
    cursor: Cursor,
    backend: DatabaseBackend,
) -> Select<event::Entity> {
    let query = in_order_after(query, cursor);
    match backend {
        DatabaseBackend::Postgres => {
            query.filter(Expr::col(event::Column::Tx).lt(Expr::cust(HORIZON)))
        }
        _ => query,
    }
}

/// The horizon now: events with a smaller `tx` may be delivered (PostgreSQL;
/// `None` on SQLite).
pub async fn horizon(db: &impl ConnectionTrait) -> Result<Option<i64>, DbErr> {
    let backend = db.get_database_backend();
    if backend != DatabaseBackend::Postgres {
        return Ok(None);
    }
    let sql = format!("SELECT {HORIZON} AS horizon");
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("horizon".into()))?;
    Ok(Some(row.try_get("", "horizon")?))
}

/// A reader never waits longer than this for the horizon (it then reads
/// what is below it).
const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// Wait until every event committed before this call is below the horizon,
/// so that a client reads its own writes, whichever instance made them. On
/// PostgreSQL that is when every transaction that had begun writing before
/// the call has ended: usually at once, else within a transaction's length.
pub async fn settle(db: &impl ConnectionTrait) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    if backend != DatabaseBackend::Postgres {
        return Ok(());
    }
    let sql = format!("SELECT {HORIZON} AS xmin, {NEXT_TX} AS xmax");
    let row = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("snapshot".into()))?;
    let (mut xmin, target): (i64, i64) = (row.try_get("", "xmin")?, row.try_get("", "xmax")?);
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    while xmin < target && started.elapsed() < SETTLE_WAIT {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(16));
        xmin = horizon(db).await?.unwrap_or(target);
    }
    Ok(())
}

/// How far past the newest stored `tx` [`keep_ahead`] moves new ids.
const TX_MARGIN: i64 = 1 << 32;

/// Key of the PostgreSQL advisory lock that makes starting instances check
/// [`keep_ahead`] one at a time.
const KEEP_AHEAD_LOCK: i64 = 0x6b6c_6168_6561_6400; // "klahead\0"

/// Make sure new events sort after every event already stored and every
/// cursor handed out (PostgreSQL; run at start-up). Transaction ids only grow
/// within one cluster, but a database restored from a dump, or copied by
/// logical replication, into another cluster starts again from that
/// cluster's counter: new events would then sort before old ones, and
/// clients' cursors would pass over them. When that happened, the offset
/// added to transaction ids is raised past the newest stored `tx`, with a
/// margin. Start instances once the data is in place: an instance that was
/// already running keeps the old offset in transactions it had open.
/// Returns by how much it was raised (0 almost always).
pub async fn keep_ahead(db: &DatabaseConnection) -> Result<i64, DbErr> {
    let backend = db.get_database_backend();
    if backend != DatabaseBackend::Postgres {
        return Ok(0);
    }
    let txn = db.begin().await?;
    txn.execute_raw(Statement::from_sql_and_values(
        backend,
        "SELECT pg_advisory_xact_lock($1)",
        [KEEP_AHEAD_LOCK.into()],
    ))
    .await?;
    // This statement reads tables, so it sees an offset raised by an instance
    // that held the lock before us (a statement that touches no table may
    // keep the function's old body within a transaction).
    let sql = format!(
        "SELECT keyledger_tx_offset() AS offset_now, {NEXT_TX} AS next_tx, \
         GREATEST((SELECT COALESCE(MAX(tx), 0) FROM events), \
                  (SELECT published_tx FROM relay_state WHERE id = 1)) AS newest"
    );
    let row = txn
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("transaction ids".into()))?;
    let offset: i64 = row.try_get("", "offset_now")?;
    let next_tx: i64 = row.try_get("", "next_tx")?;
    let newest: i64 = row.try_get("", "newest")?;
    if next_tx > newest {
        return Ok(0);
    }
    // With a margin: clients restored from an older backup may hold cursors
    // past the newest stored event. A 32-bit epoch of transaction ids is more
    // than a cluster uses between a backup and its restore, and `tx` has room
    // for 2^31 of them.
    let raise = newest - next_tx + 1 + TX_MARGIN;
    // A function body cannot take parameters here: the value is a number
    // this code computed, not input.
    txn.execute_unprepared(&format!(
        "CREATE OR REPLACE FUNCTION keyledger_tx_offset() RETURNS bigint \
         LANGUAGE sql STABLE AS 'SELECT {}::bigint'",
        offset + raise
    ))
    .await?;
    txn.commit().await?;
    Ok(raise)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_order_by_transaction_then_id_and_read_back() {
        let a = Cursor { tx: 7, id: 90 };
        let b = Cursor { tx: 8, id: 3 };
        assert!(a < b, "a later transaction comes later, whatever its ids");
        assert!(Cursor { tx: 7, id: 91 } > a);
        assert_eq!("7:90".parse::<Cursor>(), Ok(a));
        assert_eq!(b.to_string().parse::<Cursor>(), Ok(b));
        for bad in ["", "7", "7:", ":9", "x:1", "1:-2", "1:2:3", "1.5:2"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }
}
