//! One subscriber's stream: replay from the database after its cursor, then
//! live events from the hub, with no gap and no duplicate at the seam. The hub
//! registration happens *before* the replay query, and every event carries its
//! cursor, so an event that is both replayed and received live is delivered
//! once (cursors only grow; anything at or below the cursor is dropped).
use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use entity::{event, event_recipient, session};
use futures_util::Stream;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect,
    sea_query::Query,
};
use tokio::sync::{broadcast::error::RecvError, watch};

use super::{
    LiveEvent,
    cursor::{self, Cursor},
    hub::{Hub, Registration, Signal},
};
use crate::{clock::Clock, error::AppError, metrics::Metrics};

/// Events received by `account_id` after `after`, below the horizon, in
/// delivery order.
pub async fn for_account(
    db: &impl ConnectionTrait,
    account_id: i64,
    after: Cursor,
    limit: u64,
) -> Result<Vec<LiveEvent>, AppError> {
    let backend = db.get_database_backend();
    let rows = cursor::deliverable_after(event::Entity::find(), after, backend)
        .filter(
            event::Column::Id.in_subquery(
                Query::select()
                    .column(event_recipient::Column::EventId)
                    .from(event_recipient::Entity)
                    .and_where(event_recipient::Column::AccountId.eq(account_id))
                    .to_owned(),
            ),
        )
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| LiveEvent::from_row(row, vec![account_id]))
        .collect())
}

/// Who is subscribing, and until when.
pub struct Subscriber {
    pub account_id: i64,
    pub session_id: i64,
    pub session_expires_at: DateTime<Utc>,
}

/// The live stream of `subscriber`'s events after `after`. It ends
/// with `UNAUTHENTICATED` when the session expires or is signed out.
pub fn subscribe(
    db: DatabaseConnection,
    hub: &Hub,
    clock: Clock,
    metrics: Metrics,
    subscriber: Subscriber,
    after: Cursor,
) -> impl Stream<Item = Result<LiveEvent, AppError>> + Send + 'static {
    let state = State {
        rx: hub.subscribe(subscriber.account_id),
        db,
        clock_moves: Some(clock.moves()),
        clock,
        subscriber,
        cursor: after,
        pending: VecDeque::new(),
        needs_replay: true,
        // The connection may have been authenticated long before this
        // subscription started: a sign-out since then is only in the database.
        check_session: true,
        ended: false,
        _connected: metrics.subscriber_connected(),
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    })
}

struct State {
    rx: Registration,
    db: DatabaseConnection,
    clock: Clock,
    /// Changes when a test moves the clock: the expiry wait is recomputed.
    clock_moves: Option<watch::Receiver<()>>,
    subscriber: Subscriber,
    /// The last event delivered.
    cursor: Cursor,
    pending: VecDeque<LiveEvent>,
    needs_replay: bool,
    /// Messages may have been lost (a sign-out among them): ask the database
    /// whether the session still holds before reading on.
    check_session: bool,
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
            if self.clock.now() >= self.subscriber.session_expires_at {
                return self.end(AppError::Unauthenticated);
            }
            if self.check_session {
                // Database futures are boxed: an idle stream (most of them)
                // then keeps only its wait, not room for a query, in memory.
                let check = session_holds(&self.db, self.subscriber.session_id, self.clock.now());
                match Box::pin(check).await {
                    Ok(true) => self.check_session = false,
                    Ok(false) => return self.end(AppError::Unauthenticated),
                    Err(error) => return self.end(error),
                }
            }
            if let Some(event) = self.pending.pop_front() {
                if event.cursor() > self.cursor {
                    self.cursor = event.cursor();
                    return Some(Ok(event));
                }
                continue;
            }
            if self.needs_replay {
                let replay = for_account(
                    &self.db,
                    self.subscriber.account_id,
                    self.cursor,
                    REPLAY_PAGE,
                );
                match Box::pin(replay).await {
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
                    Ok(Signal::Resync) | Err(RecvError::Lagged(_)) => {
                        self.needs_replay = true;
                        self.check_session = true;
                    }
                    Ok(Signal::SessionRevoked { session_id }) => {
                        if session_id == self.subscriber.session_id {
                            return self.end(AppError::Unauthenticated);
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(remaining) => {}
                _ = clock_moved(&mut self.clock_moves) => {}
            }
        }
    }

    fn end(&mut self, error: AppError) -> Option<Result<LiveEvent, AppError>> {
        self.ended = true;
        Some(Err(error))
    }
}

/// Resolves when the clock was moved; never once its sender is gone.
async fn clock_moved(moves: &mut Option<watch::Receiver<()>>) {
    match moves {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *moves = None;
            }
        }
        None => std::future::pending().await,
    }
}

/// True while the session is neither signed out nor expired.
async fn session_holds(
    db: &impl ConnectionTrait,
    session_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, AppError> {
    let session = session::Entity::find_by_id(session_id).one(db).await?;
    Ok(session.is_some_and(|s| s.revoked_at.is_none() && s.expires_at > now))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use entity::account;
    use futures_util::StreamExt;
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, TransactionTrait};

    use super::*;
    use crate::events::{EventKind, NewEvent, bus::Bus, record, relay::Relay};

    /// A subscription that falls behind by more than its hub buffer (here one
    /// relay batch of 100 events for its account) re-reads the database and
    /// still delivers every event, in order, once.
    #[tokio::test]
    async fn a_lagging_subscription_catches_up_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = crate::db::connect(&url).await.unwrap();
        let clock = Clock::default();
        let account = account::ActiveModel {
            email: Set("lag@example.com".into()),
            password_hash: Set(String::new()),
            role: Set("USER".into()),
            require_manual_approval: Set(false),
            allow_override_assignee: Set(false),
            notify_on_claim: Set(false),
            allow_assignee_organization: Set(false),
            created_at: Set(clock.now()),
            ..Default::default()
        }
        .insert(&db)
        .await
        .unwrap();
        let expires_at = clock.now() + chrono::Duration::days(1);
        let session = session::ActiveModel {
            account_id: Set(account.id),
            token_hash: Set("lag".into()),
            created_at: Set(clock.now()),
            expires_at: Set(expires_at),
            revoked_at: Set(None),
            ..Default::default()
        }
        .insert(&db)
        .await
        .unwrap();
        let metrics = Metrics::default();
        let hub = Hub::new(metrics.clone(), Default::default(), Default::default());
        let relay = Relay {
            db: db.clone(),
            bus: Bus::Local(hub.clone()),
            wake: Default::default(),
            metrics: metrics.clone(),
            interval: Duration::from_secs(60),
        };
        let write = |count: usize| {
            let db = db.clone();
            let now = clock.now();
            async move {
                let txn = db.begin().await.unwrap();
                for _ in 0..count {
                    let mut event = NewEvent::new(EventKind::LicenseAssigned, None);
                    event.recipients = vec![account.id];
                    record(&txn, now, event).await.unwrap();
                }
                txn.commit().await.unwrap();
            }
        };
        let subscriber = Subscriber {
            account_id: account.id,
            session_id: session.id,
            session_expires_at: expires_at,
        };
        let mut stream = Box::pin(subscribe(
            db.clone(),
            &hub,
            clock.clone(),
            metrics,
            subscriber,
            Cursor::default(),
        ));

        write(1).await;
        relay.step().await.unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.cursor(), Cursor { tx: 0, id: 1 });

        // 100 signals into a buffer of 16 while the stream is not polled.
        write(100).await;
        relay.step().await.unwrap();
        for expected in 2..=101 {
            let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("caught up")
                .unwrap()
                .unwrap();
            assert_eq!(
                event.cursor(),
                Cursor {
                    tx: 0,
                    id: expected
                }
            );
        }
        let more = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        assert!(more.is_err(), "nothing after the last event");
    }
}
