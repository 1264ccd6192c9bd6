//! The outbox relay. Event ids are allocated when a row is inserted, before
//! its transaction commits, so ids can become visible out of order; a cursor
//! over ids could skip an event that commits late. The relay therefore gives
//! each *committed* event a `position` (in one locked statement, so positions
//! only grow in the order events become visible), commits that, and only then
//! publishes, in position order, everything after `relay_state.published_through`.
//! Any instance may position: a row lock on `relay_state` (PostgreSQL) or the
//! write lock (SQLite) serializes them, so positions form one dense chain.
//! Publishing is a separate loop that holds no write lock while it reaches
//! the bus, and only moves `published_through` once the bus took the batch:
//! while Redis is down, mutations go on and the backlog waits in the table.
use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use chrono::Utc;
use entity::{event, event_recipient};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};

use tokio::sync::{Notify, watch};

use super::{LiveEvent, bus::Bus, hub::BusMessage};
use crate::{db::begin_write, domain::Wake, metrics::Metrics};

/// How long the relay lets commits gather before a step when the previous
/// step found work: it bounds the relay's share of the database under load,
/// at the cost of this much delivery latency.
const COALESCE: Duration = Duration::from_millis(5);

/// Most events positioned or published in one step.
const BATCH: i64 = 1000;

/// Lets a reader wait until every event committed before it asked has been
/// positioned (read-your-writes for `events` and `history`, across
/// instances: a position step positions what any instance committed). Writes
/// only wake the relay. Many waiting readers share one relay step.
#[derive(Default)]
pub struct RelaySignal {
    requested: AtomicU64,
    completed: watch::Sender<u64>,
    wake: Notify,
}

/// A reader never waits longer than this for positions (with the database
/// down, it then reads what is positioned).
const POSITION_WAIT: Duration = Duration::from_secs(2);

impl RelaySignal {
    /// Wake the relay and wait until it has run a position step that began
    /// after this call.
    pub async fn positioned(&self) {
        let target = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut completed = self.completed.subscribe();
        self.wake.notify_one();
        let _ =
            tokio::time::timeout(POSITION_WAIT, completed.wait_for(|done| *done >= target)).await;
    }

    /// Wake the relay without waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

pub struct Relay {
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub wake: Wake,
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
/// Key of the PostgreSQL advisory lock that makes instances position one at
/// a time, so positions form one dense chain in commit order.
const POSITION_LOCK: i64 = 0x6b6c_706f_7369_7400; // "klposit\0"

impl Relay {
    /// Two loops: positioning (which mutations wait for) never waits behind
    /// publishing, so a slow or absent bus costs requests nothing.
    pub async fn run(self) {
        let published = Notify::new();
        tokio::join!(
            self.position_loop(&published),
            self.publish_loop(&published)
        );
    }

    async fn position_loop(&self, publish: &Notify) {
        let signal = &self.wake.relay;
        loop {
            let mut busy = false;
            match self.position_step().await {
                Ok(positioned) => {
                    if positioned > 0 {
                        publish.notify_one();
                        busy = true;
                    }
                    if positioned == BATCH as u64 {
                        continue;
                    }
                }
                Err(error) => tracing::warn!(%error, "event relay: positioning failed, will retry"),
            }
            tokio::select! {
                _ = signal.wake.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
            if busy {
                // Under a stream of writes, let a few more commits join the
                // next step: one step's statements then serve many events.
                tokio::time::sleep(COALESCE).await;
            }
        }
    }

    /// Position what is pending (one batch at most), and serve the readers
    /// waiting since before the step began, unless the batch was full: older
    /// events may then still wait, so they are served by a step that empties
    /// the backlog. Returns how many events it positioned.
    async fn position_step(&self) -> Result<u64, DbErr> {
        let signal = &self.wake.relay;
        let target = signal.requested.load(Ordering::SeqCst);
        let positioned = self.assign_positions().await?;
        if positioned < BATCH as u64 {
            signal
                .completed
                .send_modify(|done| *done = (*done).max(target));
        }
        Ok(positioned)
    }

    async fn publish_loop(&self, wake: &Notify) {
        let mut retry = PUBLISH_RETRY_MIN;
        loop {
            match self.publish_pending().await {
                Ok(count) => {
                    retry = PUBLISH_RETRY_MIN;
                    if count == BATCH as usize {
                        continue;
                    }
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(self.interval) => {}
                    }
                }
                Err(error) => {
                    // Nothing is lost: `published_through` stays, and the
                    // same events are published again once the bus is back.
                    tracing::warn!(%error, retry_ms = retry.as_millis() as u64, "event relay: publishing failed, will retry");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(PUBLISH_RETRY_MAX);
                }
            }
        }
    }

    /// Position and publish what is pending, once. True when there may be more.
    pub async fn step(&self) -> Result<bool, String> {
        let positioned = self.position_step().await.map_err(|e| e.to_string())?;
        let published = self.publish_pending().await?;
        Ok(positioned == BATCH as u64 || published == BATCH as usize)
    }

    async fn assign_positions(&self) -> Result<u64, DbErr> {
        let txn = begin_write(&self.db).await?;
        let backend = txn.get_database_backend();
        if backend == DatabaseBackend::Postgres {
            // An advisory lock rather than a row lock: a step that finds
            // nothing to position then writes nothing (no WAL flush).
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                "SELECT pg_advisory_xact_lock($1)",
                [POSITION_LOCK.into()],
            ))
            .await?;
        }
        let sql = format!(
            "UPDATE events SET position = base.max_position + ranked.rn \
             FROM (SELECT COALESCE(MAX(position), 0) AS max_position FROM events) AS base, \
                  (SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS rn FROM events \
                   WHERE position IS NULL ORDER BY id LIMIT {BATCH}) AS ranked \
             WHERE events.id = ranked.id"
        );
        let result = txn
            .execute_raw(Statement::from_string(backend, sql))
            .await?;
        txn.commit().await?;
        Ok(result.rows_affected())
    }

    /// Publish the next batch after `published_through`, then move it on.
    /// No write lock is held while the bus is reached (on SQLite that would
    /// stop every writer while Redis is slow); on PostgreSQL an advisory lock
    /// keeps instances from publishing the same batch at once. A batch that
    /// is published twice anyway (a crash between publish and update, two
    /// SQLite processes) is harmless: subscribers drop positions they have.
    async fn publish_pending(&self) -> Result<usize, String> {
        let count = match self.db.get_database_backend() {
            DatabaseBackend::Postgres => {
                let txn = self.db.begin().await.map_err(|e| e.to_string())?;
                // The only write here is `published_through`; losing it in a
                // crash only publishes a batch again (harmless, see above), so
                // its commit need not wait for the disk.
                txn.execute_raw(Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock($1)",
                    [PUBLISH_LOCK.into()],
                ))
                .await
                .map_err(|e| e.to_string())?;
                let count = self.publish_next(&txn).await?;
                txn.commit().await.map_err(|e| e.to_string())?;
                count
            }
            _ => self.publish_next(&self.db).await?,
        };
        Ok(count)
    }

    async fn publish_next(&self, conn: &impl ConnectionTrait) -> Result<usize, String> {
        let backend = conn.get_database_backend();
        let prev: i64 = conn
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT published_through FROM relay_state WHERE id = 1",
            ))
            .await
            .map_err(|e| e.to_string())?
            .ok_or("relay_state row missing")?
            .try_get("", "published_through")
            .map_err(|e| e.to_string())?;
        let rows = event::Entity::find()
            .filter(event::Column::Position.gt(prev))
            .order_by_asc(event::Column::Position)
            .limit(BATCH as u64)
            .all(conn)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = rows.last().and_then(|r| r.position) else {
            return Ok(0);
        };
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut recipients: HashMap<i64, Vec<i64>> = HashMap::new();
        for r in event_recipient::Entity::find()
            .filter(event_recipient::Column::EventId.is_in(ids))
            .all(conn)
            .await
            .map_err(|e| e.to_string())?
        {
            recipients.entry(r.event_id).or_default().push(r.account_id);
        }
        let count = rows.len();
        let lag = rows
            .first()
            .map(|r| (Utc::now() - r.occurred_at).num_milliseconds())
            .unwrap_or(0);
        let events: Vec<LiveEvent> = rows
            .into_iter()
            .filter_map(|row| {
                let to = recipients.remove(&row.id).unwrap_or_default();
                LiveEvent::from_row(row, to)
            })
            .collect();
        self.bus
            .publish(BusMessage::Events { prev, events })
            .await?;
        let sql = match backend {
            DatabaseBackend::Postgres => {
                "UPDATE relay_state SET published_through = $1 WHERE id = 1 AND published_through < $1"
            }
            _ => {
                "UPDATE relay_state SET published_through = ?1 WHERE id = 1 AND published_through < ?1"
            }
        };
        conn.execute_raw(Statement::from_sql_and_values(backend, sql, [last.into()]))
            .await
            .map_err(|e| e.to_string())?;
        self.metrics.events_published(count as u64, lag);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use entity::event;
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, TransactionTrait};

    use super::*;
    use crate::{
        events::{EventKind, NewEvent, hub::Hub, record},
        metrics::Metrics,
    };

    /// A reader is served only once the backlog is positioned, however many
    /// batches that takes (more than one here).
    #[tokio::test]
    async fn a_reader_waits_for_the_whole_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = crate::db::connect(&url).await.unwrap();
        let txn = db.begin().await.unwrap();
        for _ in 0..BATCH + 5 {
            record(
                &txn,
                Utc::now(),
                NewEvent::new(EventKind::LicenseAssigned, None),
            )
            .await
            .unwrap();
        }
        txn.commit().await.unwrap();

        let wake = Wake::default();
        let signal: Arc<RelaySignal> = wake.relay.clone();
        let waiting = tokio::spawn(async move { signal.positioned().await });
        tokio::task::yield_now().await;
        let metrics = Metrics::default();
        let relay = tokio::spawn(
            Relay {
                db: db.clone(),
                bus: Bus::Local(Hub::new(
                    metrics.clone(),
                    Default::default(),
                    Default::default(),
                )),
                wake,
                metrics,
                interval: Duration::from_secs(60),
            }
            .run(),
        );
        waiting.await.unwrap();
        let unpositioned = event::Entity::find()
            .filter(event::Column::Position.is_null())
            .count(&db)
            .await
            .unwrap();
        relay.abort();
        assert_eq!(unpositioned, 0, "the reader was served mid-backlog");
    }
}
