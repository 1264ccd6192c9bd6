//! The state every request handler and resolver shares.
use std::sync::Arc;

use crate::{
    auth::{Viewer, session_cache::SessionCache},
    config::Config,
    domain::Ctx,
    events::{
        bus::Bus,
        hub::{BusMessage, Hub},
    },
    metrics::Metrics,
    rate_limits::RateLimits,
};

/// Everything a request handler or resolver may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Database, clock and worker wake-ups, as the domain rules take them.
    pub ctx: Ctx,
    /// This instance's registry of live subscriptions.
    pub hub: Hub,
    /// Carries relay batches (and sign-outs) to every instance.
    pub bus: Bus,
    pub metrics: Metrics,
    pub config: Arc<Config>,
    /// Limits claim attempts, device changes, wrong passwords and emails sent.
    pub limits: Arc<RateLimits>,
    /// Recently resolved session tokens.
    pub sessions: Arc<SessionCache>,
    /// Signs offline license certificates (`checkOutLicense`).
    pub signer: Arc<crate::signing::Signer>,
    /// First attempts of requests with an `Idempotency-Key`, which record
    /// their answers after sending them: the server waits for them (within
    /// a bound) when it stops, so that no answer sent goes unrecorded.
    pub answers: tokio_util::task::TaskTracker,
    /// Writes the rows of `Idempotency-Key`s, gathered into rounds.
    pub idempotency: crate::domain::idempotency::KeyRows,
}

impl AppState {
    /// Tell every instance that `viewer`'s session ended, so that they
    /// forget the sessions they keep and its live subscriptions close now
    /// (best effort: they also end at expiry). Call it right after the
    /// revocation commits.
    pub async fn session_revoked(&self, viewer: &Viewer) {
        self.announce(BusMessage::SessionRevoked {
            account_id: viewer.account_id,
            session_id: viewer.session_id,
        })
        .await;
    }

    /// Like [`AppState::session_revoked`] for one session of an account by id.
    pub async fn one_session_revoked(&self, account_id: i64, session_id: i64) {
        self.announce(BusMessage::SessionRevoked {
            account_id,
            session_id,
        })
        .await;
    }

    /// Several sessions of `account_id` were revoked, or its email changed:
    /// every instance reads sessions again, and the account's live
    /// subscriptions check theirs.
    pub async fn account_sessions_revoked(&self, account_id: i64) {
        self.announce(BusMessage::AccountSessionsRevoked { account_id })
            .await;
    }

    async fn announce(&self, message: BusMessage) {
        // This instance at once (no await before it, so a dropped request
        // cannot skip it); the others when the message arrives.
        self.sessions.forget_all();
        // A task of its own: the announcement goes out even if the client
        // drops the request meanwhile.
        let bus = self.bus.clone();
        let announce = tokio::spawn(async move {
            if let Err(error) = bus.publish(message).await {
                tracing::warn!(%error, "could not announce a sign-out on the event bus");
            }
        });
        let _ = announce.await;
    }
}
