//! The outbox relay: publishes committed events on the bus, in [`cursor`]
//! order, after the last published cursor (`relay_state`). It writes nothing
//! but that cursor: on PostgreSQL it takes only the events below the horizon
//! (see [`cursor`]), so an event that commits late still comes after every
//! event published before it. An advisory lock makes instances publish one
//! at a time; no write lock is held while the bus is reached (on SQLite that
//! would stop every writer while Redis is slow), and the cursor only moves
//! once the bus took the batch: while Redis is down, mutations go on and the
//! backlog waits in the table.
use std::{sync::Arc, time::Duration};

use chrono::Utc;
use entity::event;
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, QuerySelect, Statement,
    TransactionTrait,
};
use tokio::{sync::Notify, time::Instant};

use super::{
    bus::{Bus, BusError},
    cursor::{self, Cursor},
    hub::BusMessage,
};
use crate::metrics::Metrics;

/// Why a step of the relay failed; it is retried, and nothing is lost.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("the relay_state row is missing")]
    MissingState,
    #[error("event bus: {0}")]
    Bus(#[from] BusError),
}

/// How long the relay lets commits gather before a step when the previous
/// step found work: it bounds the relay's share of the database under load,
/// at the cost of this much delivery latency.
const COALESCE: Duration = Duration::from_millis(5);

/// How soon to look again when committed events wait for an older
/// transaction to end: that one may write no event, and so never wake us.
/// Doubles, up to [`HELD_RECHECK_MAX`], while nothing gets through.
const HELD_RECHECK: Duration = Duration::from_millis(10);
const HELD_RECHECK_MAX: Duration = Duration::from_millis(500);

/// Events held back this long are logged, with the transaction holding them.
const HELD_WARNING: Duration = Duration::from_secs(10);

/// Most events published in one step.
const BATCH: usize = 1000;

pub struct Relay {
    pub db: DatabaseConnection,
    pub bus: Bus,
    /// Notified after commits ([`crate::domain::Ctx::committed`]).
    pub wake: Arc<Notify>,
    pub metrics: Metrics,
    /// Poll interval: catches events whose wake-up was lost (crash, other instance).
    pub interval: Duration,
}

/// First wait before publishing again after the bus failed; doubles up to
/// [`PUBLISH_RETRY_MAX`].
const PUBLISH_RETRY_MIN: Duration = Duration::from_millis(100);
const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(2);

/// Key of the PostgreSQL advisory lock that makes instances publish one at a
/// time (so a batch is published once, not once per instance).
const PUBLISH_LOCK: i64 = 0x6b6c_7265_6c61_7900; // "klrelay\0"

/// What one step did.
struct Step {
    published: usize,
    /// Committed events wait above the horizon.
    held: bool,
}

impl Relay {
    pub async fn run(self) {
        let mut retry = PUBLISH_RETRY_MIN;
        let mut held = Held::default();
        loop {
            match self.publish_pending().await {
                Ok(step) => {
                    retry = PUBLISH_RETRY_MIN;
                    if step.published == BATCH {
                        continue;
                    }
                    let idle = if step.held {
                        let (recheck, stalled_for) = held.still(step.published, Instant::now());
                        if let Some(stalled_for) = stalled_for {
                            let holder = oldest_open_transaction(&self.db).await;
                            tracing::warn!(
                                held_for_s = stalled_for.as_secs(),
                                holder = holder.as_deref().unwrap_or("unknown"),
                                "event relay: events wait for an older transaction to end"
                            );
                        }
                        recheck
                    } else {
                        held = Held::default();
                        self.interval
                    };
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(idle) => {}
                    }
                    if step.published > 0 {
                        // Under a stream of writes, let a few more commits
                        // join the next step: one step's statements then
                        // serve many events.
                        tokio::time::sleep(COALESCE).await;
                    }
                }
                Err(error) => {
                    // Nothing is lost: the published cursor stays, and the
                    // same events are published again once the bus is back.
                    tracing::warn!(%error, retry_ms = retry.as_millis() as u64, "event relay: publishing failed, will retry");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(PUBLISH_RETRY_MAX);
                }
            }
        }
    }

    /// Publish what is pending, once. True when there may be more, or when
    /// committed events wait for an older transaction to end.
    pub async fn step(&self) -> Result<bool, RelayError> {
        let step = self.publish_pending().await?;
        Ok(step.published == BATCH || step.held)
    }

    /// Publish the next batch. A batch that is published twice anyway (a
    /// crash between publish and update, two SQLite processes) is harmless:
    /// subscribers drop what is not after their cursor.
    async fn publish_pending(&self) -> Result<Step, RelayError> {
        match self.db.get_database_backend() {
            DatabaseBackend::Postgres => {
                let txn = self.db.begin().await?;
                // The only write here is the published cursor; losing it in
                // a crash only publishes a batch again (harmless, see
                // above), so its commit need not wait for the disk.
                txn.execute_raw(Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock($1)",
                    [PUBLISH_LOCK.into()],
                ))
                .await
                ?;
                let step = self.publish_next(&txn).await?;
                txn.commit().await?;
                Ok(step)
            }
            _ => self.publish_next(&self.db).await,
        }
    }

    async fn publish_next(&self, conn: &impl ConnectionTrait) -> Result<Step, RelayError> {
        let backend = conn.get_database_backend();
        let state = conn
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT published_tx, published_id FROM relay_state WHERE id = 1",
            ))
            .await?
            .ok_or(RelayError::MissingState)?;
        let prev = Cursor {
            tx: state.try_get("", "published_tx")?,
            id: state.try_get("", "published_id")?,
        };
        // Read before the events, in an older snapshot: every transaction
        // below it has ended, so its events are all in the next read.
        let horizon = cursor::horizon(conn).await?;
        let mut rows = cursor::in_order_after(event::Entity::find(), prev)
            .limit(BATCH as u64)
            .all(conn)
            .await?;
        let settled = rows
            .iter()
            .take_while(|row| horizon.is_none_or(|horizon| row.tx < horizon))
            .count();
        let held = settled < rows.len();
        rows.truncate(settled);
        let Some(last) = rows.last().map(|r| Cursor { tx: r.tx, id: r.id }) else {
            return Ok(Step { published: 0, held });
        };
        let count = rows.len();
        let lag = rows
            .first()
            .map(|r| (Utc::now() - r.occurred_at).num_milliseconds())
            .unwrap_or(0);
        let events = super::with_recipients(conn, rows).await?;
        self.bus
            .publish(BusMessage::Events { prev, events })
            .await?;
        let sql = match backend {
            DatabaseBackend::Postgres => {
                "UPDATE relay_state SET published_tx = $1, published_id = $2 \
                 WHERE id = 1 AND (published_tx, published_id) < ($1, $2)"
            }
            _ => {
                "UPDATE relay_state SET published_tx = ?1, published_id = ?2 \
                 WHERE id = 1 AND (published_tx, published_id) < (?1, ?2)"
            }
        };
        conn.execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [last.tx.into(), last.id.into()],
        ))
        .await?;
        self.metrics.events_published(count as u64, lag);
        Ok(Step {
            published: count,
            held,
        })
    }
}

/// How long committed events have been held back, continuously.
#[derive(Default)]
struct Held {
    since: Option<Instant>,
    recheck: Option<Duration>,
    warned: bool,
}

impl Held {
    /// Events are still held at `now`, after a step that published
    /// `published`. Returns how long to wait before the next look (unless a
    /// commit wakes the relay), and, once per stall that reaches
    /// [`HELD_WARNING`], how long it has lasted, to be logged.
    fn still(&mut self, published: usize, now: Instant) -> (Duration, Option<Duration>) {
        let since = *self.since.get_or_insert(now);
        let recheck = match (self.recheck, published) {
            (Some(previous), 0) => (previous * 2).min(HELD_RECHECK_MAX),
            _ => HELD_RECHECK,
        };
        self.recheck = Some(recheck);
        if published > 0 {
            // The horizon moved: a new stall, if any, starts now.
            self.since = Some(now);
            self.warned = false;
            return (recheck, None);
        }
        let stalled_for = now - since;
        if self.warned || stalled_for < HELD_WARNING {
            return (recheck, None);
        }
        self.warned = true;
        (recheck, Some(stalled_for))
    }
}

/// The PostgreSQL transaction that is the oldest still open, for a log line:
/// a session's, or a prepared (two-phase) one, which belongs to no session.
async fn oldest_open_transaction(db: &DatabaseConnection) -> Option<String> {
    let row = db
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT holder FROM ( \
               SELECT age(backend_xid) AS age, \
                 format('pid %s, database %s, application %L, open since %s, state %s', \
                        pid, datname, application_name, xact_start, state) AS holder \
               FROM pg_stat_activity WHERE backend_xid IS NOT NULL \
               UNION ALL \
               SELECT age(transaction), \
                 format('prepared transaction %L, database %s, prepared at %s', \
                        gid, database, prepared) \
               FROM pg_prepared_xacts \
             ) AS open ORDER BY age DESC LIMIT 1",
        ))
        .await
        .ok()??;
    row.try_get("", "holder").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While nothing gets through, the relay looks again less and less
    /// often and reports the stall once; progress starts everything afresh.
    #[test]
    fn a_stall_backs_off_and_is_reported_once() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut held = Held::default();
        let waits: Vec<u64> = (0..8)
            .map(|i| held.still(0, at(i)).0.as_millis() as u64)
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 500, 500]);

        assert_eq!(held.still(0, at(9_999)).1, None);
        assert_eq!(held.still(0, at(10_000)).1, Some(HELD_WARNING));
        assert_eq!(held.still(0, at(20_000)).1, None, "once per stall");

        // Something got through: the wait and the stall start again.
        assert_eq!(held.still(3, at(20_001)), (HELD_RECHECK, None));
        assert_eq!(held.still(0, at(29_000)), (HELD_RECHECK * 2, None));
        assert_eq!(
            held.still(0, at(30_001)).1,
            Some(Duration::from_millis(10_000)),
            "a new stall is reported again"
        );
    }
}
