//! Per-process registry of live subscriptions, keyed by account: a published
//! batch of events wakes only the subscriptions of its recipients, and every
//! one of them reads the same batch, read once per instance.
//!
//! Batches come two ways. This process's own relay hands its batches over
//! directly ([`Hub::deliver`]): they are rows it just read from the
//! database. What arrives from other instances through Redis
//! ([`Hub::receive`]) is only an announcement: the hub's reader
//! ([`Hub::run_reader`]) reads the announced range from the database once,
//! whatever the number of local subscribers, so a message forged on the bus
//! cannot put words in a subscription's mouth, nor make it skip real events.
//!
//! The hub also knows the session of every local subscription: while events
//! flow to them, it asks the database every [`SESSION_RECHECK`] whether
//! those sessions still hold, in one statement for all of them
//! ([`Hub::run_session_checks`]), so that a sign-out whose announcement was
//! lost still ends its streams.
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use entity::session;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect,
};
use tokio::sync::{Notify, broadcast};

use super::{LiveEvent, cursor::Cursor};
use crate::{clock::Clock, metrics::Metrics};

/// Something this instance keeps that may go stale; the hub calls it and
/// knows nothing of what it forgets.
pub type Hook = Arc<dyn Fn() + Send + Sync>;

/// What the hub calls when other instances may have changed things.
#[derive(Clone)]
pub struct Hooks {
    /// Events arrived: they may be changes committed by another instance.
    pub changes: Hook,
    /// A session was revoked on some instance, or a revocation may have been
    /// lost while the bus was away.
    pub sign_outs: Hook,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            changes: Arc::new(|| {}),
            sign_outs: Arc::new(|| {}),
        }
    }
}

/// How many undelivered signals one account's subscriptions may fall behind
/// before they are told they lagged (and catch up from the database). Kept
/// small: the buffer is allocated per connected account (a few bytes a
/// slot), and a subscription that lags loses nothing, it re-reads.
const PER_ACCOUNT_BUFFER: usize = 16;

/// Most events the reader reads in one statement; a longer announced range
/// is read in several batches.
const READ_LIMIT: u64 = 1000;

/// Wait before the reader tries a failed read again (the announcement is
/// kept, so nothing is lost).
const READ_RETRY: Duration = Duration::from_millis(200);

/// While events flow to an account's subscriptions here, how often the hub
/// asks the database whether their sessions still hold. A sign-out is also
/// announced on the bus (ending its streams at once), but an announcement
/// lost while the bus was down must not let a signed-out session read on
/// for long.
pub const SESSION_RECHECK: Duration = Duration::from_secs(2);

/// Most sessions asked about in one statement (an `IN` list).
const SESSIONS_PER_CHECK: usize = 1000;

/// Every event committed in `(from, to]`, in delivery order, each with its
/// recipients (sorted). A subscription whose events are complete up to
/// `from` takes its own from `events` and is then complete up to `to`.
#[derive(Debug)]
pub struct Batch {
    pub from: Cursor,
    pub to: Cursor,
    pub events: Vec<LiveEvent>,
}

impl Batch {
    /// The events of `batch` that `account_id` receives.
    pub fn for_account(&self, account_id: i64) -> impl Iterator<Item = &LiveEvent> {
        self.events
            .iter()
            .filter(move |e| e.recipients.binary_search(&account_id).is_ok())
    }
}

/// What a subscription is told.
#[derive(Debug, Clone)]
pub enum Signal {
    /// Events for this account were committed: here they are, as read from
    /// the database, with the range they cover.
    Events(Arc<Batch>),
    /// Events may have been missed (the bus reconnected): read the database
    /// after your cursor.
    Resync,
    /// This session (`None`: maybe any of the account's sessions) was
    /// revoked: check it, and end the stream if so.
    SessionRevoked { session_id: Option<i64> },
}

/// A batch published by the relay. `prev` is the cursor published just
/// before it: the batch holds every event after `prev` up to its last.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BusMessage {
    Events {
        prev: Cursor,
        events: Vec<LiveEvent>,
    },
    SessionRevoked {
        account_id: i64,
        session_id: i64,
    },
    /// Several sessions of the account were revoked (a password reset or
    /// change), or its email changed: kept sessions are read again.
    AccountSessionsRevoked {
        account_id: i64,
    },
}

#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<HubState>>,
    /// Wakes the reader when an announcement waits.
    announced: Arc<Notify>,
    metrics: Metrics,
    hooks: Hooks,
}

#[derive(Default)]
struct HubState {
    accounts: HashMap<i64, Local>,
    /// Accounts handed a batch since the last session check: their
    /// sessions are asked about at the next one.
    touched: HashSet<i64>,
    /// Every event up to here was handed to this process's subscriptions,
    /// in batches each starting where the one before ended. `None` when that
    /// chain is broken (at start, or after events were let pass unread):
    /// subscriptions then catch up from the database on the next batch.
    position: Option<Cursor>,
    /// An announced range still to read.
    unread: Option<Unread>,
    /// The reader is reading; announcements meanwhile extend `unread`.
    reading: bool,
}

/// One account's subscriptions here.
struct Local {
    sender: broadcast::Sender<Signal>,
    /// The sessions they were opened with, each with how many of them (an
    /// account has few sessions).
    sessions: Vec<(i64, usize)>,
}

/// Announced events not read yet: up to `newest`, from the hub's position
/// or, when it has none, from `start`.
#[derive(Clone, Copy)]
struct Unread {
    start: Cursor,
    newest: Cursor,
}

impl Hub {
    pub fn new(metrics: Metrics, hooks: Hooks) -> Self {
        Hub {
            inner: Default::default(),
            announced: Default::default(),
            metrics,
            hooks,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a subscription of `account_id` opened with `session_id`;
    /// signals published from now on reach it. Dropping the registration
    /// unregisters it.
    pub fn subscribe(&self, account_id: i64, session_id: i64) -> Registration {
        let mut state = self.state();
        let local = state.accounts.entry(account_id).or_insert_with(|| Local {
            sender: broadcast::channel(PER_ACCOUNT_BUFFER).0,
            sessions: Vec::new(),
        });
        match local.sessions.iter_mut().find(|(id, _)| *id == session_id) {
            Some((_, count)) => *count += 1,
            None => local.sessions.push((session_id, 1)),
        }
        Registration {
            rx: local.sender.subscribe(),
            hub: self.clone(),
            account_id,
            session_id,
        }
    }

    /// Where the chain of batches stands: a subscription that reads the
    /// database *after* asking is complete up to here, and takes the
    /// batches that start here.
    pub fn position(&self) -> Option<Cursor> {
        self.state().position
    }

    /// A message of this process's own relay (or of this process): its
    /// events are rows just read from the database, handed on as they are.
    pub fn deliver(&self, message: BusMessage) {
        let BusMessage::Events { prev, mut events } = message else {
            return self.revoked(message);
        };
        (self.hooks.changes)();
        let Some(last) = events.last().map(LiveEvent::cursor) else {
            return;
        };
        let mut state = self.state();
        if state.position.is_some_and(|position| last <= position) {
            return; // Handed over already (a batch the relay published again).
        }
        for event in &mut events {
            event.recipients.sort_unstable();
        }
        state.position = Some(last);
        let batch = Batch {
            from: prev,
            to: last,
            events,
        };
        self.hand_over(&mut state, batch);
    }

    /// A message from the bus (another instance, or this one through
    /// Redis). Events are only announced: the reader reads them from the
    /// database, unless none of their recipients is subscribed here.
    pub fn receive(&self, message: BusMessage) {
        let BusMessage::Events { prev, events } = message else {
            return self.revoked(message);
        };
        (self.hooks.changes)();
        let Some(newest) = events.iter().map(LiveEvent::cursor).max() else {
            return;
        };
        let mut state = self.state();
        if state.position.is_some_and(|position| newest <= position) {
            return;
        }
        let wanted = state.reading
            || state.unread.is_some()
            || events
                .iter()
                .flat_map(|e| &e.recipients)
                .any(|account_id| state.accounts.contains_key(account_id));
        if !wanted {
            // Nobody here receives these: skip the read, and with it the
            // chain. The next batch's recipients catch up from the database.
            state.position = None;
            return;
        }
        let unread = state.unread.get_or_insert(Unread {
            start: prev,
            newest,
        });
        unread.newest = unread.newest.max(newest);
        drop(state);
        self.announced.notify_one();
    }

    fn revoked(&self, message: BusMessage) {
        // Before the streams hear of it: once a stream has ended, no request
        // on this instance is let in with that session.
        (self.hooks.sign_outs)();
        let (account_id, session_id) = match message {
            BusMessage::SessionRevoked {
                account_id,
                session_id,
            } => (account_id, Some(session_id)),
            BusMessage::AccountSessionsRevoked { account_id } => (account_id, None),
            BusMessage::Events { .. } => return,
        };
        if let Some(local) = self.state().accounts.get(&account_id) {
            let _ = local.sender.send(Signal::SessionRevoked { session_id });
        }
    }

    /// Read what [`Hub::receive`] announced, once per wake, and hand it to
    /// the subscriptions. Runs as long as the process.
    pub async fn run_reader(self, db: DatabaseConnection) {
        loop {
            self.announced.notified().await;
            while let Some((from, newest, position)) = self.take_unread() {
                let read = super::read_range(&db, from, newest, READ_LIMIT).await;
                if let Err(error) = self.hand_over_read(from, newest, position, read) {
                    tracing::warn!(%error, "event hub: reading announced events failed, will retry");
                    tokio::time::sleep(READ_RETRY).await;
                }
            }
        }
    }

    /// Hand over what the reader read of `(from, newest]`, which it began
    /// at `position`; a failed read is announced again.
    fn hand_over_read(
        &self,
        from: Cursor,
        newest: Cursor,
        position: Option<Cursor>,
        read: Result<Vec<LiveEvent>, sea_orm::DbErr>,
    ) -> Result<(), sea_orm::DbErr> {
        let mut state = self.state();
        state.reading = false;
        let again = |state: &mut HubState, start: Cursor| {
            let unread = state.unread.get_or_insert(Unread { start, newest });
            unread.newest = unread.newest.max(newest);
        };
        let events = match read {
            Ok(events) => events,
            Err(error) => {
                again(&mut state, from);
                return Err(error);
            }
        };
        let Some(last) = events.last().map(LiveEvent::cursor) else {
            return Ok(());
        };
        if events.len() as u64 == READ_LIMIT {
            // More in the range: read on from here.
            again(&mut state, last);
        }
        // The chain goes on from `last` only if nothing else moved it while
        // this read was under way.
        state.position = (state.position == position).then_some(last);
        let batch = Batch {
            from,
            to: last,
            events,
        };
        self.hand_over(&mut state, batch);
        Ok(())
    }

    /// The next range to read, and the position it starts from.
    fn take_unread(&self) -> Option<(Cursor, Cursor, Option<Cursor>)> {
        let mut state = self.state();
        let unread = state.unread.take()?;
        let from = state.position.unwrap_or(unread.start);
        state.reading = true;
        Some((from, unread.newest, state.position))
    }

    /// Signal `batch` to the subscriptions of its recipients.
    fn hand_over(&self, state: &mut HubState, batch: Batch) {
        let mut per_account: HashMap<i64, u64> = HashMap::new();
        for event in &batch.events {
            for account_id in &event.recipients {
                *per_account.entry(*account_id).or_default() += 1;
            }
        }
        let batch = Arc::new(batch);
        let mut gone = HashSet::new();
        for (account_id, count) in per_account {
            if let Some(local) = state.accounts.get(&account_id) {
                let delivered = local
                    .sender
                    .send(Signal::Events(batch.clone()))
                    .unwrap_or(0);
                if delivered == 0 {
                    gone.insert(account_id);
                } else {
                    self.metrics.events_delivered(delivered as u64 * count);
                    state.touched.insert(account_id);
                }
            }
        }
        state.accounts.retain(|id, _| !gone.contains(id));
    }

    /// The sessions, with their accounts, of the subscriptions handed events
    /// since the last call.
    fn sessions_to_check(&self) -> Vec<(i64, i64)> {
        let mut state = self.state();
        let touched = std::mem::take(&mut state.touched);
        touched
            .into_iter()
            .filter_map(|account_id| Some((account_id, state.accounts.get(&account_id)?)))
            .flat_map(|(account_id, local)| {
                local.sessions.iter().map(move |(id, _)| (*id, account_id))
            })
            .collect()
    }

    /// Every `every`, [`Hub::check_sessions`]. Runs as long as the process.
    pub async fn run_session_checks(self, db: DatabaseConnection, clock: Clock, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = self.check_sessions(&db, clock.now()).await {
                tracing::warn!(%error, "event hub: checking sessions failed, will retry");
            }
        }
    }

    /// Ask the database whether the sessions of the subscriptions handed
    /// events since the last check still hold at `now`, in one statement per
    /// [`SESSIONS_PER_CHECK`] sessions (none while no events flow), and tell
    /// the subscriptions of those that do not. They confirm it in the
    /// database before they end, like after an announced sign-out.
    pub async fn check_sessions(
        &self,
        db: &impl ConnectionTrait,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        let sessions = self.sessions_to_check();
        for (i, chunk) in sessions.chunks(SESSIONS_PER_CHECK).enumerate() {
            let holding = match holding_sessions(db, chunk.iter().map(|(id, _)| *id), now).await {
                Ok(holding) => holding,
                Err(error) => {
                    // Asked about again at the next check.
                    let mut state = self.state();
                    let unasked = &sessions[i * SESSIONS_PER_CHECK..];
                    state
                        .touched
                        .extend(unasked.iter().map(|(_, account)| *account));
                    return Err(error);
                }
            };
            let state = self.state();
            for (session_id, account_id) in chunk {
                if holding.contains(session_id) {
                    continue;
                }
                if let Some(local) = state.accounts.get(account_id) {
                    let _ = local.sender.send(Signal::SessionRevoked {
                        session_id: Some(*session_id),
                    });
                }
            }
        }
        Ok(())
    }

    /// Tell every subscription to catch up from the database, and forget
    /// the kept sessions (after the bus reconnected, when messages may have
    /// been lost).
    pub fn resync_all(&self) {
        // A sign-out may have been among the lost messages.
        (self.hooks.sign_outs)();
        let mut state = self.state();
        // Everything up to now is re-read by the subscriptions themselves.
        state.position = None;
        state
            .accounts
            .retain(|_, local| local.sender.send(Signal::Resync).is_ok());
    }
}

/// Which of `ids` are sessions neither signed out nor expired at `now` (a
/// session no longer in the database does not hold either).
async fn holding_sessions(
    db: &impl ConnectionTrait,
    ids: impl Iterator<Item = i64>,
    now: DateTime<Utc>,
) -> Result<HashSet<i64>, DbErr> {
    let holding: Vec<i64> = session::Entity::find()
        .select_only()
        .column(session::Column::Id)
        .filter(session::Column::Id.is_in(ids))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now))
        .into_tuple()
        .all(db)
        .await?;
    Ok(holding.into_iter().collect())
}

/// One subscription's place in the hub.
pub struct Registration {
    rx: broadcast::Receiver<Signal>,
    hub: Hub,
    account_id: i64,
    session_id: i64,
}

impl Registration {
    /// The next signal; `Lagged` when signals were dropped because this
    /// subscription fell too far behind (it must re-read the database).
    pub async fn recv(&mut self) -> Result<Signal, broadcast::error::RecvError> {
        self.rx.recv().await
    }

    /// [`Hub::position`].
    pub fn position(&self) -> Option<Cursor> {
        self.hub.position()
    }
}

impl Drop for Registration {
    /// Forget the session with its last subscription here, and the
    /// account's channel (and its buffer) with the account's last one.
    fn drop(&mut self) {
        let mut state = self.hub.state();
        let Some(local) = state.accounts.get_mut(&self.account_id) else {
            return;
        };
        if let Some(at) = local
            .sessions
            .iter()
            .position(|(id, _)| *id == self.session_id)
        {
            local.sessions[at].1 = local.sessions[at].1.saturating_sub(1);
            if local.sessions[at].1 == 0 {
                local.sessions.swap_remove(at);
            }
        }
        // `self.rx` is still alive here: one receiver left means only us.
        if local.sender.receiver_count() <= 1 {
            state.accounts.remove(&self.account_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting() -> (Hook, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let hook: Hook = Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        (hook, count)
    }

    /// A sign-out announced by any instance, or possibly lost while the bus
    /// was away, makes this instance read sessions again; events make it
    /// forget what changes may have made stale.
    #[test]
    fn hooks_run_on_sign_outs_resyncs_and_events() {
        let (sign_outs, forgotten_sessions) = counting();
        let (changes, forgotten_changes) = counting();
        let hub = Hub::new(Metrics::default(), Hooks { changes, sign_outs });

        hub.receive(BusMessage::SessionRevoked {
            account_id: 99,
            session_id: 99,
        });
        assert_eq!(
            forgotten_sessions.load(Ordering::SeqCst),
            1,
            "after a sign-out"
        );
        hub.resync_all();
        assert_eq!(
            forgotten_sessions.load(Ordering::SeqCst),
            2,
            "after a resync"
        );
        assert_eq!(forgotten_changes.load(Ordering::SeqCst), 0);
        hub.receive(BusMessage::Events {
            prev: Cursor::default(),
            events: Vec::new(),
        });
        assert_eq!(forgotten_changes.load(Ordering::SeqCst), 1, "after events");
        hub.deliver(BusMessage::Events {
            prev: Cursor::default(),
            events: Vec::new(),
        });
        assert_eq!(forgotten_changes.load(Ordering::SeqCst), 2, "after events");
    }

    fn event(id: i64, recipients: &[i64]) -> LiveEvent {
        LiveEvent {
            tx: 0,
            id,
            kind: super::super::EventKind::LicenseAssigned,
            actor_id: None,
            order_id: None,
            license_id: None,
            claim_id: None,
            request_id: None,
            transfer_id: None,
            changes: String::new(),
            occurred_at: chrono::Utc::now(),
            recipients: recipients.to_vec(),
        }
    }

    fn at(id: i64) -> Cursor {
        Cursor { tx: 0, id }
    }

    /// The relay's own batches chain: each is handed once, with the range
    /// it covers, to the recipients' subscriptions only, and one published
    /// again changes nothing.
    #[tokio::test]
    async fn delivered_batches_chain_and_reach_only_recipients() {
        let hub = Hub::new(Metrics::default(), Hooks::default());
        let mut seven = hub.subscribe(7, 70);
        let mut eight = hub.subscribe(8, 80);
        assert_eq!(hub.position(), None);

        let first = BusMessage::Events {
            prev: at(0),
            events: vec![event(1, &[9, 7]), event(2, &[9])],
        };
        hub.deliver(first.clone());
        hub.deliver(first);
        hub.deliver(BusMessage::Events {
            prev: at(2),
            events: vec![event(3, &[7, 8])],
        });
        assert_eq!(hub.position(), Some(at(3)));

        let Ok(Signal::Events(batch)) = seven.recv().await else {
            panic!("seven hears of the first batch")
        };
        assert_eq!((batch.from, batch.to), (at(0), at(2)));
        let mine: Vec<i64> = batch.for_account(7).map(|e| e.id).collect();
        assert_eq!(mine, [1]);
        let Ok(Signal::Events(batch)) = seven.recv().await else {
            panic!("seven hears of the second batch")
        };
        assert_eq!((batch.from, batch.to), (at(2), at(3)));
        assert!(seven.rx.is_empty(), "the batch published twice came once");

        let Ok(Signal::Events(batch)) = eight.recv().await else {
            panic!("eight hears of the second batch")
        };
        assert_eq!(batch.for_account(8).count(), 1);
        assert!(eight.rx.is_empty(), "eight was no recipient of the first");
    }

    /// The sessions asked about are those of the subscriptions handed
    /// events since the last check, each once, and only while one of its
    /// subscriptions is here.
    #[test]
    fn sessions_are_checked_while_events_reach_them() {
        let hub = Hub::new(Metrics::default(), Hooks::default());
        let first = hub.subscribe(7, 70);
        let _second = hub.subscribe(7, 70);
        let other = hub.subscribe(7, 71);
        let _eight = hub.subscribe(8, 80);
        let sorted = |mut sessions: Vec<(i64, i64)>| {
            sessions.sort_unstable();
            sessions
        };
        assert_eq!(hub.sessions_to_check(), [], "no events, no check");

        hub.deliver(BusMessage::Events {
            prev: at(0),
            events: vec![event(1, &[7, 9])],
        });
        assert_eq!(sorted(hub.sessions_to_check()), [(70, 7), (71, 7)]);
        assert_eq!(hub.sessions_to_check(), [], "nothing new since");

        drop(first);
        drop(other);
        hub.deliver(BusMessage::Events {
            prev: at(1),
            events: vec![event(2, &[7]), event(3, &[8])],
        });
        assert_eq!(
            sorted(hub.sessions_to_check()),
            [(70, 7), (80, 8)],
            "session 70 has a subscription left, 71 none"
        );
    }

    /// An announcement from the bus whose recipients are not subscribed
    /// here is not read, and breaks the chain (so subscriptions catch up
    /// from the database rather than trust a range nobody read); one for a
    /// subscriber here waits for the reader, from the hub's position.
    #[test]
    fn announcements_for_nobody_here_break_the_chain() {
        let hub = Hub::new(Metrics::default(), Hooks::default());
        let _seven = hub.subscribe(7, 70);
        hub.deliver(BusMessage::Events {
            prev: at(0),
            events: vec![event(1, &[7])],
        });
        assert_eq!(hub.position(), Some(at(1)));

        hub.receive(BusMessage::Events {
            prev: at(0),
            events: vec![event(1, &[7])],
        });
        assert!(hub.take_unread().is_none(), "already handed over");

        hub.receive(BusMessage::Events {
            prev: at(1),
            events: vec![event(2, &[5])],
        });
        assert_eq!(hub.position(), None, "nobody here receives event 2");

        hub.receive(BusMessage::Events {
            prev: at(2),
            events: vec![event(3, &[7])],
        });
        hub.receive(BusMessage::Events {
            prev: at(3),
            events: vec![event(4, &[5])],
        });
        assert_eq!(
            hub.take_unread(),
            Some((at(2), at(4), None)),
            "one read, from the first unread announcement to the newest"
        );
    }
}
