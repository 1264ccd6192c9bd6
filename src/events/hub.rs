//! Per-process registry of live subscriptions, keyed by account: a published
//! event wakes only the subscriptions of its recipients.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;

use super::{LiveEvent, cursor::Cursor};
use crate::metrics::Metrics;

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
/// small: the buffer is allocated per connected account (about 35 bytes a
/// slot), and a subscription that lags loses nothing, it re-reads.
const PER_ACCOUNT_BUFFER: usize = 16;

/// What a subscription is told.
#[derive(Debug, Clone)]
pub enum Signal {
    /// Events for this account were committed. A hint only: what a
    /// subscription delivers, and how far its cursor moves, it reads from
    /// the database, so a message forged on the bus cannot put words in
    /// its mouth or skip real events.
    Events,
    /// Events may have been missed (bus reconnected, gap in the relay's
    /// sequence): read the database after your cursor.
    Resync,
    /// This session (`None`: maybe any of the account's sessions) was
    /// revoked: check it, and end the stream if so.
    SessionRevoked { session_id: Option<i64> },
}

/// A batch published by the relay. `prev` is the cursor published just
/// before it, so a hub that did not see `prev` knows it missed something.
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
    metrics: Metrics,
    hooks: Hooks,
}

#[derive(Default)]
struct HubState {
    accounts: HashMap<i64, broadcast::Sender<Signal>>,
    /// Last cursor this process received, to detect a gap.
    last: Option<Cursor>,
}

impl Hub {
    pub fn new(metrics: Metrics, hooks: Hooks) -> Self {
        Hub {
            inner: Default::default(),
            metrics,
            hooks,
        }
    }

    /// Register a subscription of `account_id`; signals published from now on
    /// reach it. Dropping the registration unregisters it.
    pub fn subscribe(&self, account_id: i64) -> Registration {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let rx = state
            .accounts
            .entry(account_id)
            .or_insert_with(|| broadcast::channel(PER_ACCOUNT_BUFFER).0)
            .subscribe();
        Registration {
            rx,
            hub: self.clone(),
            account_id,
        }
    }

    /// Hand a bus message to the subscriptions it concerns.
    pub fn dispatch(&self, message: BusMessage) {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match message {
            BusMessage::Events { prev, events } => {
                (self.hooks.changes)();
                let gap = state.last.is_some_and(|last| prev > last);
                if let Some(newest) = events.last() {
                    state.last = Some(state.last.unwrap_or_default().max(newest.cursor()));
                }
                if gap {
                    tracing::info!(
                        %prev,
                        "event hub: gap in the relay sequence, subscribers resync"
                    );
                    Self::broadcast(&mut state, Signal::Resync);
                }
                let mut per_account: HashMap<i64, u64> = HashMap::new();
                for event in &events {
                    for account_id in &event.recipients {
                        *per_account.entry(*account_id).or_default() += 1;
                    }
                }
                for (account_id, count) in per_account {
                    if let Some(sender) = state.accounts.get(&account_id) {
                        let delivered = sender.send(Signal::Events).unwrap_or(0);
                        if delivered == 0 {
                            state.accounts.remove(&account_id);
                        } else {
                            self.metrics.events_delivered(delivered as u64 * count);
                        }
                    }
                }
            }
            BusMessage::SessionRevoked {
                account_id,
                session_id,
            } => {
                // Before the streams hear of it: once a stream has ended,
                // no request on this instance is let in with that session.
                (self.hooks.sign_outs)();
                if let Some(sender) = state.accounts.get(&account_id) {
                    let _ = sender.send(Signal::SessionRevoked {
                        session_id: Some(session_id),
                    });
                }
            }
            BusMessage::AccountSessionsRevoked { account_id } => {
                (self.hooks.sign_outs)();
                if let Some(sender) = state.accounts.get(&account_id) {
                    let _ = sender.send(Signal::SessionRevoked { session_id: None });
                }
            }
        }
    }

    /// Tell every subscription to catch up from the database, and forget
    /// the kept sessions (after the bus reconnected, when messages may have
    /// been lost).
    pub fn resync_all(&self) {
        // A sign-out may have been among the lost messages.
        (self.hooks.sign_outs)();
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Everything up to now is re-read from the database: the next batch
        // starts a new chain rather than reporting the outage as a gap.
        state.last = None;
        Self::broadcast(&mut state, Signal::Resync);
    }

    fn broadcast(state: &mut HubState, signal: Signal) {
        state
            .accounts
            .retain(|_, sender| sender.send(signal.clone()).is_ok());
    }
}

/// One subscription's place in the hub.
pub struct Registration {
    rx: broadcast::Receiver<Signal>,
    hub: Hub,
    account_id: i64,
}

impl Registration {
    /// The next signal; `Lagged` when signals were dropped because this
    /// subscription fell too far behind (it must re-read the database).
    pub async fn recv(&mut self) -> Result<Signal, broadcast::error::RecvError> {
        self.rx.recv().await
    }
}

impl Drop for Registration {
    /// Forget the account's channel (and its buffer) with its last subscription.
    fn drop(&mut self) {
        let mut state = self.hub.inner.lock().unwrap_or_else(|p| p.into_inner());
        // `self.rx` is still alive here: one receiver left means only us.
        if state
            .accounts
            .get(&self.account_id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
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

        hub.dispatch(BusMessage::SessionRevoked {
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
        hub.dispatch(BusMessage::Events {
            prev: Cursor::default(),
            events: Vec::new(),
        });
        assert_eq!(forgotten_changes.load(Ordering::SeqCst), 1, "after events");
    }
}
