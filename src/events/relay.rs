//! The outbox relay. Event ids are allocated when a row is inserted, before
//! its transaction commits, so ids can become visible out of order; a cursor
//! over ids could skip an event that commits late. The relay therefore gives
//! each *committed* event a `position` (in one locked statement, so positions
//! only grow in the order events become visible), commits that, and only then
//! publishes, in position order, everything after `relay_state.published_through`.
//! Any instance may run a step: a row lock on `relay_state` (PostgreSQL) or the
//! write lock (SQLite) serializes them, so the published sequence is one chain.
use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use chrono::Utc;
use entity::{event, event_recipient};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement,
};

use tokio::sync::{Notify, watch};

use super::{LiveEvent, bus::Bus, hub::BusMessage};
use crate::{db::begin_write, domain::Wake, metrics::Metrics};

/// Most events positioned or published in one step.
const BATCH: i64 = 1000;

/// Lets a request wait until events it committed have been positioned. Many
/// waiting requests share one relay step (their requests coalesce).
#[derive(Default)]
pub struct RelaySignal {
    requested: AtomicU64,
    completed: watch::Sender<u64>,
    wake: Notify,
}

/// A request never waits longer than this for its events' positions: the
/// change is committed either way, the relay only makes it visible sooner.
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

impl Relay {
    pub async fn run(self) {
        loop {
            loop {
                match self.step().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(error) => {
                        tracing::warn!(%error, "event relay: step failed, will retry");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = self.wake.relay.wake.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Position and publish what is pending. True when there may be more.
    pub async fn step(&self) -> Result<bool, String> {
        let signal = &self.wake.relay;
        let target = signal.requested.load(Ordering::SeqCst);
        let positioned = self.assign_positions().await.map_err(|e| e.to_string())?;
        signal
            .completed
            .send_modify(|done| *done = (*done).max(target));
        let published = self.publish_pending().await?;
        Ok(positioned == BATCH as u64 || published == BATCH as usize)
    }

    async fn lock_state(&self, txn: &impl ConnectionTrait) -> Result<i64, DbErr> {
        let backend = txn.get_database_backend();
        let sql = match backend {
            DatabaseBackend::Postgres => {
                "SELECT published_through FROM relay_state WHERE id = 1 FOR UPDATE"
            }
            _ => "SELECT published_through FROM relay_state WHERE id = 1",
        };
        let row = txn
            .query_one_raw(Statement::from_string(backend, sql))
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("relay_state".into()))?;
        row.try_get("", "published_through")
    }

    async fn assign_positions(&self) -> Result<u64, DbErr> {
        let txn = begin_write(&self.db).await?;
        self.lock_state(&txn).await?;
        let backend = txn.get_database_backend();
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

    async fn publish_pending(&self) -> Result<usize, String> {
        let txn = begin_write(&self.db).await.map_err(|e| e.to_string())?;
        let prev = self.lock_state(&txn).await.map_err(|e| e.to_string())?;
        let rows = event::Entity::find()
            .filter(event::Column::Position.gt(prev))
            .order_by_asc(event::Column::Position)
            .limit(BATCH as u64)
            .all(&txn)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = rows.last().and_then(|r| r.position) else {
            return Ok(0);
        };
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut recipients: HashMap<i64, Vec<i64>> = HashMap::new();
        for r in event_recipient::Entity::find()
            .filter(event_recipient::Column::EventId.is_in(ids))
            .all(&txn)
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
        let backend = txn.get_database_backend();
        let sql = match backend {
            DatabaseBackend::Postgres => {
                "UPDATE relay_state SET published_through = $1 WHERE id = 1"
            }
            _ => "UPDATE relay_state SET published_through = ? WHERE id = 1",
        };
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, [last.into()]))
            .await
            .map_err(|e| e.to_string())?;
        txn.commit().await.map_err(|e| e.to_string())?;
        self.metrics.events_published(count as u64, lag);
        Ok(count)
    }
}
