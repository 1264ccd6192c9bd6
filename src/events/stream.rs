//! One subscriber's stream: replay from the database after its cursor, then
//! take its events from the batches the hub hands every subscription of the
//! instance (read once from the database for all of them), with no gap and
//! no duplicate. The hub registration happens *before* the first read, and
//! every event carries its cursor (cursors only grow; anything at or below
//! the cursor is dropped). A batch covers a range of the event order; the
//! stream takes it only when it starts where the stream is known complete
//! (`through`), and otherwise reads the database itself. The session is read
//! at the start, and again when it may have ended: on an announced
//! sign-out, after a resync or a lag, and when the hub's check (one for all
//! of the instance's subscriptions, every [`SESSION_RECHECK`] while events
//! flow) finds it signed out or expired, so a sign-out whose announcement
//! was lost (the bus down) ends the stream a few seconds late at worst.
//!
//! [`SESSION_RECHECK`]: super::hub::SESSION_RECHECK
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
    hub::{Batch, Hub, Registration, Signal},
};
use crate::{clock::Clock, error::AppError, metrics::Metrics};

/// Events received by `account_id` after `after`, below the horizon, in
/// delivery order.
/// The events matching `condition` after `after`, in delivery order, once
/// every event committed before the call can be read in order (so a client
/// reads its own writes): an order's history, the administrators' views.
pub async fn matching(
    db: &impl ConnectionTrait,
    condition: sea_orm::Condition,
    after: Cursor,
    limit: u64,
) -> Result<Vec<LiveEvent>, AppError> {
    cursor::settle(db).await?;
    let rows = cursor::deliverable_after(event::Entity::find(), after, db.get_database_backend())
        .filter(condition)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| LiveEvent::from_row(row, Vec::new()))
        .collect())
}

/// Which events [`matching`] reads: those about one order.
pub fn about_order(order_id: i64) -> sea_orm::Condition {
    sea_orm::Condition::all().add(event::Column::OrderId.eq(order_id))
}

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
        rx: hub.subscribe(subscriber.account_id, subscriber.session_id),
        db,
        clock_moves: Some(clock.moves()),
        clock,
        subscriber,
        cursor: after,
        through: None,
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
    /// Every event of the subscriber up to here is delivered or pending:
    /// the hub's position when the stream last read the database, moved on
    /// by each batch taken since. `None`: unknown (read the database).
    through: Option<Cursor>,
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
                // Asked before reading: the batches handed over since start
                // here, and the read covers every one handed over before.
                self.through = self.rx.position();
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
                    Ok(Signal::Events(batch)) => self.take(&batch),
                    Ok(Signal::Resync) | Err(RecvError::Lagged(_)) => {
                        self.needs_replay = true;
                        self.check_session = true;
                    }
                    // Announced on the bus, or found by the hub's check.
                    // Confirmed in the database before the stream ends: a
                    // message forged on the bus cannot end it.
                    Ok(Signal::SessionRevoked { session_id }) => {
                        if session_id.is_none_or(|id| id == self.subscriber.session_id) {
                            self.check_session = true;
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(remaining) => {}
                _ = clock_moved(&mut self.clock_moves) => {}
            }
        }
    }

    /// The subscriber's events of `batch`, if it continues where the
    /// stream is complete; else read the database.
    fn take(&mut self, batch: &Batch) {
        if self.through.is_some_and(|through| batch.to <= through) {
            return; // Covered by the last read of the database.
        }
        if self.through != Some(batch.from) {
            self.needs_replay = true;
            return;
        }
        let account_id = self.subscriber.account_id;
        let cursor = self.cursor;
        self.pending.extend(
            batch
                .for_account(account_id)
                .filter(|event| event.cursor() > cursor)
                .map(LiveEvent::without_recipients),
        );
        self.through = Some(batch.to);
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
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use entity::account;
    use futures_util::StreamExt;
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, TransactionTrait};

    use super::*;
    use crate::events::{EventKind, NewEvent, bus::Bus, record, relay::Relay};

    /// A database with one account and its session, a hub, a relay, and a
    /// subscription of that account from the start.
    struct Fixture {
        _dir: tempfile::TempDir,
        db: DatabaseConnection,
        clock: Clock,
        hub: Hub,
        relay: Relay,
        account_id: i64,
        session_id: i64,
        /// SQL statements run through `db` and its clones.
        statements: Arc<AtomicUsize>,
        /// Those of them on the `sessions` table.
        session_statements: Arc<AtomicUsize>,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
            let mut db = crate::db::connect(&url).await.unwrap();
            let statements = Arc::new(AtomicUsize::new(0));
            let session_statements = Arc::new(AtomicUsize::new(0));
            let (counter, session_counter) = (statements.clone(), session_statements.clone());
            db.set_metric_callback(move |info| {
                counter.fetch_add(1, Ordering::SeqCst);
                if info.statement.sql.contains("\"sessions\"") {
                    session_counter.fetch_add(1, Ordering::SeqCst);
                }
            });
            let clock = Clock::default();
            let account = account::ActiveModel {
                email: Set("lag@example.com".into()),
                password_hash: Set(String::new()),
                role: Set(entity::account::AccountRole::User),
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
            let session = session::ActiveModel {
                account_id: Set(account.id),
                token_hash: Set("lag".into()),
                created_at: Set(clock.now()),
                expires_at: Set(clock.now() + chrono::Duration::days(1)),
                revoked_at: Set(None),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap();
            let metrics = Metrics::default();
            let hub = Hub::new(metrics.clone(), Default::default());
            let relay = Relay {
                db: db.clone(),
                bus: Bus::Local(hub.clone()),
                wake: Default::default(),
                metrics,
                interval: Duration::from_secs(60),
            };
            Fixture {
                _dir: dir,
                db,
                clock,
                hub,
                relay,
                account_id: account.id,
                session_id: session.id,
                statements,
                session_statements,
            }
        }

        fn subscribe(&self) -> impl Stream<Item = Result<LiveEvent, AppError>> + '_ {
            self.subscribe_with(self.session_id)
        }

        /// A subscription of the account opened with `session_id`.
        fn subscribe_with(
            &self,
            session_id: i64,
        ) -> impl Stream<Item = Result<LiveEvent, AppError>> + '_ {
            subscribe(
                self.db.clone(),
                &self.hub,
                self.clock.clone(),
                Metrics::default(),
                Subscriber {
                    account_id: self.account_id,
                    session_id,
                    session_expires_at: self.clock.now() + chrono::Duration::days(1),
                },
                Cursor::default(),
            )
        }

        /// `count` more sessions of the account, valid for a day.
        async fn sessions(&self, count: usize) -> Vec<i64> {
            let rows = (0..count).map(|i| session::ActiveModel {
                account_id: Set(self.account_id),
                token_hash: Set(format!("more-{i}")),
                created_at: Set(self.clock.now()),
                expires_at: Set(self.clock.now() + chrono::Duration::days(1)),
                revoked_at: Set(None),
                ..Default::default()
            });
            session::Entity::insert_many(rows)
                .exec(&self.db)
                .await
                .unwrap();
            session::Entity::find()
                .select_only()
                .column(session::Column::Id)
                .filter(session::Column::TokenHash.starts_with("more-"))
                .into_tuple()
                .all(&self.db)
                .await
                .unwrap()
        }

        /// Sign `session_id` out in the database only, as when the
        /// announcement was lost.
        async fn sign_out_unannounced(&self, session_id: i64) {
            self.set_session(session_id, session::Column::RevokedAt, self.clock.now())
                .await;
        }

        async fn set_session(&self, session_id: i64, column: session::Column, at: DateTime<Utc>) {
            session::Entity::update_many()
                .col_expr(column, sea_orm::sea_query::Expr::value(at))
                .filter(session::Column::Id.eq(session_id))
                .exec(&self.db)
                .await
                .unwrap();
        }

        /// Commit `count` events for the account and relay them.
        async fn write(&self, count: usize) {
            let txn = self.db.begin().await.unwrap();
            for _ in 0..count {
                let mut event = NewEvent::new(EventKind::LicenseAssigned, None);
                event.recipients = vec![self.account_id];
                record(&txn, self.clock.now(), event).await.unwrap();
            }
            txn.commit().await.unwrap();
            self.relay.step().await.unwrap();
        }
    }

    async fn next_within(
        stream: &mut (impl Stream<Item = Result<LiveEvent, AppError>> + Unpin),
    ) -> Option<Result<LiveEvent, AppError>> {
        tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream answers")
    }

    /// A subscription that falls behind by more than its hub buffer (here one
    /// relay batch of 100 events for its account) re-reads the database and
    /// still delivers every event, in order, once.
    #[tokio::test]
    async fn a_lagging_subscription_catches_up_from_the_database() {
        let fixture = Fixture::new().await;
        let mut stream = Box::pin(fixture.subscribe());
        fixture.write(1).await;
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.cursor(), Cursor { tx: 0, id: 1 });

        // 100 events while the stream is not polled.
        fixture.write(100).await;
        for expected in 2..=101 {
            let event = next_within(&mut stream).await.unwrap().unwrap();
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

    /// What the bus carries is a hint: a message forged on it (a made-up
    /// event far ahead) is neither delivered nor moves the cursor past the
    /// real events, and a forged sign-out does not end the stream.
    #[tokio::test]
    async fn forged_bus_messages_deliver_nothing_and_skip_nothing() {
        let fixture = Fixture::new().await;
        tokio::spawn(fixture.hub.clone().run_reader(fixture.db.clone()));
        let mut stream = Box::pin(fixture.subscribe());
        fixture.write(1).await;
        assert_eq!(
            next_within(&mut stream).await.unwrap().unwrap().cursor(),
            Cursor { tx: 0, id: 1 }
        );
        let mut forged = next_within(&mut Box::pin(fixture.subscribe()))
            .await
            .unwrap()
            .unwrap();
        forged.tx = i64::MAX / 2;
        forged.id = i64::MAX / 2;
        forged.kind = EventKind::OrderPaid;
        forged.recipients = vec![fixture.account_id];
        fixture.hub.receive(crate::events::hub::BusMessage::Events {
            prev: Cursor { tx: 0, id: 1 },
            events: vec![forged],
        });
        fixture
            .hub
            .receive(crate::events::hub::BusMessage::SessionRevoked {
                account_id: fixture.account_id,
                session_id: fixture.session_id,
            });
        fixture.write(1).await;
        let real = next_within(&mut stream).await.unwrap().unwrap();
        assert_eq!(real.cursor(), Cursor { tx: 0, id: 2 });
        assert_eq!(real.kind, EventKind::LicenseAssigned);
    }

    /// Events announced by another instance are read from the database
    /// once, by the hub's reader, for every subscription of the instance:
    /// the subscriptions themselves read nothing.
    #[tokio::test]
    async fn announced_events_are_read_once_for_every_subscription() {
        let fixture = Fixture::new().await;
        tokio::spawn(fixture.hub.clone().run_reader(fixture.db.clone()));
        let mut streams: Vec<_> = (0..5).map(|_| Box::pin(fixture.subscribe())).collect();
        fixture.write(1).await;
        for stream in &mut streams {
            assert_eq!(
                next_within(stream).await.unwrap().unwrap().cursor(),
                Cursor { tx: 0, id: 1 }
            );
        }

        // Three events committed by "another instance": written without
        // this instance's relay, announced as the bus would.
        let txn = fixture.db.begin().await.unwrap();
        for _ in 0..3 {
            let mut event = NewEvent::new(EventKind::LicenseAssigned, None);
            event.recipients = vec![fixture.account_id];
            record(&txn, fixture.clock.now(), event).await.unwrap();
        }
        txn.commit().await.unwrap();
        let announced = crate::events::read_range(
            &fixture.db,
            Cursor { tx: 0, id: 1 },
            Cursor { tx: 0, id: 4 },
            10,
        )
        .await
        .unwrap();
        fixture.statements.store(0, Ordering::SeqCst);
        fixture.hub.receive(crate::events::hub::BusMessage::Events {
            prev: Cursor { tx: 0, id: 1 },
            events: announced,
        });
        for stream in &mut streams {
            for id in 2..=4 {
                assert_eq!(
                    next_within(stream).await.unwrap().unwrap().cursor(),
                    Cursor { tx: 0, id }
                );
            }
        }
        assert_eq!(
            fixture.statements.load(Ordering::SeqCst),
            2,
            "the events and their recipients, once for the five subscriptions"
        );
    }

    /// The stream ends with `UNAUTHENTICATED`, after at most `events` more
    /// events.
    async fn ends_unauthenticated(
        stream: &mut (impl Stream<Item = Result<LiveEvent, AppError>> + Unpin),
        events: usize,
    ) {
        for _ in 0..=events {
            match next_within(stream).await {
                Some(Ok(_)) => continue,
                Some(Err(AppError::Unauthenticated)) => return,
                other => panic!("expected the stream to end, got {other:?}"),
            }
        }
        panic!("more than {events} event(s) before the end");
    }

    /// A sign-out whose announcement never arrived (the bus was down), or
    /// an expiry moved earlier in the database, ends the stream within about
    /// one interval of the hub's session check once events flow; the
    /// account's other sessions keep theirs.
    #[tokio::test]
    async fn an_unannounced_sign_out_ends_the_stream_within_the_recheck() {
        let fixture = Fixture::new().await;
        tokio::spawn(fixture.hub.clone().run_session_checks(
            fixture.db.clone(),
            fixture.clock.clone(),
            Duration::from_millis(100),
        ));
        let [expiring, staying] = fixture.sessions(2).await[..] else {
            panic!("two sessions")
        };
        let mut signed_out = Box::pin(fixture.subscribe_with(fixture.session_id));
        let mut expired = Box::pin(fixture.subscribe_with(expiring));
        let mut kept = Box::pin(fixture.subscribe_with(staying));
        fixture.write(1).await;
        for stream in [&mut signed_out, &mut expired, &mut kept] {
            assert!(next_within(stream).await.unwrap().is_ok());
        }

        fixture.sign_out_unannounced(fixture.session_id).await;
        let in_an_hour = fixture.clock.now() + chrono::Duration::hours(1);
        fixture
            .set_session(expiring, session::Column::ExpiresAt, in_an_hour)
            .await;
        // The app's clock, not the database's, says when a session expires.
        fixture.clock.advance(chrono::Duration::hours(2));
        fixture.write(1).await;
        for stream in [&mut signed_out, &mut expired] {
            // The event may come first: the check after it finds the end.
            ends_unauthenticated(stream, 1).await;
        }
        fixture.write(1).await;
        assert_eq!(
            next_within(&mut kept).await.unwrap().unwrap().cursor(),
            Cursor { tx: 0, id: 2 }
        );
        assert_eq!(
            next_within(&mut kept).await.unwrap().unwrap().cursor(),
            Cursor { tx: 0, id: 3 }
        );
    }

    /// However many subscriptions events flow to, their sessions cost the
    /// instance one statement per check, and nothing while no events flow;
    /// the streams themselves read their session at the start, and again
    /// only when the check found it ended.
    #[tokio::test]
    async fn the_session_check_is_one_statement_for_every_subscription() {
        let fixture = Fixture::new().await;
        let mut sessions = fixture.sessions(4).await;
        sessions.push(fixture.session_id);
        fixture.session_statements.store(0, Ordering::SeqCst);
        let mut streams: Vec<_> = sessions
            .iter()
            .map(|id| Box::pin(fixture.subscribe_with(*id)))
            .collect();
        fixture.write(1).await;
        for stream in &mut streams {
            assert!(next_within(stream).await.unwrap().is_ok());
        }
        let session_statements = || fixture.session_statements.load(Ordering::SeqCst);
        assert_eq!(session_statements(), 5, "each stream's check at its start");

        // Events flow long past the interval: the streams read no session.
        fixture.session_statements.store(0, Ordering::SeqCst);
        fixture.clock.advance(chrono::Duration::seconds(60));
        fixture.write(3).await;
        for stream in &mut streams {
            for _ in 0..3 {
                assert!(next_within(stream).await.unwrap().is_ok());
            }
        }
        assert_eq!(session_statements(), 0);

        let check = || fixture.hub.check_sessions(&fixture.db, fixture.clock.now());
        check().await.unwrap();
        assert_eq!(session_statements(), 1, "one statement for five sessions");
        check().await.unwrap();
        assert_eq!(session_statements(), 1, "no events since, nothing to ask");

        let gone = sessions[0];
        fixture.sign_out_unannounced(gone).await;
        fixture.write(1).await;
        fixture.session_statements.store(0, Ordering::SeqCst);
        check().await.unwrap();
        assert_eq!(session_statements(), 1);
        for stream in &mut streams {
            assert!(next_within(stream).await.unwrap().is_ok());
        }
        assert!(matches!(
            next_within(&mut streams[0]).await,
            Some(Err(AppError::Unauthenticated))
        ));
        assert_eq!(
            session_statements(),
            2,
            "the check, then the one stream it concerns confirming"
        );
        fixture.write(1).await;
        for stream in &mut streams[1..] {
            assert!(next_within(stream).await.unwrap().is_ok());
        }
        assert_eq!(session_statements(), 2);
    }

    /// Many sessions are asked about a thousand at a time.
    #[tokio::test]
    async fn many_sessions_are_checked_a_thousand_at_a_time() {
        let fixture = Fixture::new().await;
        let sessions = fixture.sessions(1500).await;
        assert_eq!(sessions.len(), 1500);
        let mut registrations: Vec<_> = sessions
            .iter()
            .map(|id| fixture.hub.subscribe(fixture.account_id, *id))
            .collect();
        let last = sessions[sessions.len() - 1];
        fixture.sign_out_unannounced(last).await;
        fixture.write(1).await;
        fixture.session_statements.store(0, Ordering::SeqCst);
        fixture
            .hub
            .check_sessions(&fixture.db, fixture.clock.now())
            .await
            .unwrap();
        assert_eq!(fixture.session_statements.load(Ordering::SeqCst), 2);
        let registration = &mut registrations[0];
        let mut signal = async || {
            tokio::time::timeout(Duration::from_secs(5), registration.recv())
                .await
                .expect("a signal")
        };
        assert!(matches!(signal().await, Ok(Signal::Events(_))));
        assert!(matches!(
            signal().await,
            Ok(Signal::SessionRevoked { session_id: Some(id) }) if id == last
        ));
    }
}
