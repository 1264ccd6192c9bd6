//! One subscriber's stream: replay from the database after its cursor, then
//! live events from the hub, with no gap and no duplicate at the seam. The hub
//! registration happens *before* the replay query, and every event carries its
//! position, so an event that is both replayed and received live is delivered
//! once (positions only grow; anything at or below the cursor is dropped).
use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use entity::{event, event_recipient};
use futures_util::Stream;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Query,
};
use tokio::sync::broadcast::{Receiver, error::RecvError};

use super::{
    LiveEvent,
    hub::{Hub, Signal},
};
use crate::{clock::Clock, error::AppError, metrics::Metrics};

/// Events received by `account_id` with a position after `after`, oldest first.
pub async fn for_account(
    db: &impl ConnectionTrait,
    account_id: i64,
    after: i64,
    limit: u64,
) -> Result<Vec<LiveEvent>, AppError> {
    let rows = event::Entity::find()
        .filter(event::Column::Position.gt(after))
        .filter(
            event::Column::Id.in_subquery(
                Query::select()
                    .column(event_recipient::Column::EventId)
                    .from(event_recipient::Entity)
                    .and_where(event_recipient::Column::AccountId.eq(account_id))
                    .to_owned(),
            ),
        )
        .order_by_asc(event::Column::Position)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| LiveEvent::from_row(row, vec![account_id]))
        .collect())
}

/// Who is subscribing, and until when.
pub struct Subscriber {
    pub account_id: i64,
    pub session_id: i64,
    pub session_expires_at: DateTime<Utc>,
}

/// The live stream of `subscriber`'s events after position `after`. It ends
/// with `UNAUTHENTICATED` when the session expires or is signed out.
pub fn subscribe(
    db: DatabaseConnection,
    hub: &Hub,
    clock: Clock,
    metrics: Metrics,
    subscriber: Subscriber,
    after: i64,
) -> impl Stream<Item = Result<LiveEvent, AppError>> + Send + 'static {
    let state = State {
        rx: hub.subscribe(subscriber.account_id),
        db,
        clock,
        subscriber,
        cursor: after,
        pending: VecDeque::new(),
        needs_replay: true,
        ended: false,
        _connected: metrics.subscriber_connected(),
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    })
}

struct State {
    rx: Receiver<Signal>,
    db: DatabaseConnection,
    clock: Clock,
    subscriber: Subscriber,
    /// Position of the last event delivered.
    cursor: i64,
    pending: VecDeque<LiveEvent>,
    needs_replay: bool,
    ended: bool,
    _connected: crate::metrics::ConnectedGuard,
}

/// Events read from the database per query while catching up.
const REPLAY_PAGE: u64 = 500;

impl State {
    async fn next(&mut self) -> Option<Result<LiveEvent, AppError>> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.position > self.cursor {
                    self.cursor = event.position;
                    return Some(Ok(event));
                }
                continue;
            }
            if self.needs_replay {
                match for_account(
                    &self.db,
                    self.subscriber.account_id,
                    self.cursor,
                    REPLAY_PAGE,
                )
                .await
                {
                    Ok(events) => {
                        self.needs_replay = events.len() as u64 == REPLAY_PAGE;
                        self.pending.extend(events);
                        continue;
                    }
                    Err(error) => return self.end(error),
                }
            }
            let remaining = (self.subscriber.session_expires_at - self.clock.now())
                .to_std()
                .unwrap_or_default();
            tokio::select! {
                signal = self.rx.recv() => match signal {
                    Ok(Signal::Event(event)) => self.pending.push_back((*event).clone()),
                    Ok(Signal::Resync) | Err(RecvError::Lagged(_)) => self.needs_replay = true,
                    Ok(Signal::SessionRevoked { session_id }) => {
                        if session_id == self.subscriber.session_id {
                            return self.end(AppError::Unauthenticated);
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(remaining) => return self.end(AppError::Unauthenticated),
            }
        }
    }

    fn end(&mut self, error: AppError) -> Option<Result<LiveEvent, AppError>> {
        self.ended = true;
        Some(Err(error))
    }
}
