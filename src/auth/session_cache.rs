//! Signed-in callers, kept in memory for a moment. Every authenticated
//! request starts by resolving its token, and a client's requests come in
//! bursts: without this, each would read the same session row again (on the
//! claim path that read was one statement in six).
//!
//! What keeps the shortcut safe:
//! - A sign-out forgets every kept session: on its own instance before
//!   `signOut` answers, on the others when its bus message arrives
//!   (milliseconds), and in any case within [`MAX_AGE`] (while the bus is
//!   down; when it reconnects, they forget them all too, as a sign-out may
//!   have been among the lost messages).
//! - A session read while a sign-out was under way is not kept: the
//!   generation is taken before the read, as for the validity answers.
//! - Expiry is checked on every use, against the session's own expiry.
//! - Only verified accounts are kept, so an unverified caller always reads
//!   the database and is let in at once after verifying. An email change
//!   (the other change to a [`Viewer`] the API makes) and a password change
//!   or reset are announced like a sign-out, so every instance forgets its
//!   kept sessions. `keyledger grant-admin`, an operator's command run in
//!   another process, shows on running instances within [`MAX_AGE`].
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use quick_cache::sync::Cache;

use super::Viewer;
use crate::generation::{BeforeRead, Generation};

/// Longest a session is used without reading it again.
pub const MAX_AGE: Duration = Duration::from_secs(2);
/// Most sessions kept (≈ 200 bytes each); the least used go first.
const CAPACITY: usize = 50_000;

#[derive(Clone)]
struct Kept {
    viewer: Viewer,
    generation: u64,
    read_at: Instant,
}

/// Viewers by the hash of their session token (the secret itself is not kept).
pub struct SessionCache {
    generation: Generation,
    sessions: Cache<String, Kept>,
}

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache {
            generation: Generation::default(),
            sessions: Cache::new(CAPACITY),
        }
    }
}

impl SessionCache {
    /// A session was revoked somewhere: no session read before now is used again.
    pub fn forget_all(&self) {
        self.generation.advance();
    }

    /// What [`SessionCache::put`] needs, taken just before the database read.
    pub fn before_read(&self) -> BeforeRead {
        self.generation.before_read()
    }

    /// The viewer of `token_hash`, if it was read recently and nothing since
    /// says otherwise; `now` is the application clock, for the session's expiry.
    pub fn get(&self, token_hash: &str, now: DateTime<Utc>) -> Option<Viewer> {
        self.lookup(token_hash, now, Instant::now())
    }

    fn lookup(&self, token_hash: &str, now: DateTime<Utc>, at: Instant) -> Option<Viewer> {
        let kept = self.sessions.get(token_hash)?;
        let current = self.generation.is_current(kept.generation)
            && at < kept.read_at + MAX_AGE
            && now < kept.viewer.session_expires_at;
        current.then_some(kept.viewer)
    }

    /// Keep `viewer`, read from the database after `read`.
    pub fn put(&self, token_hash: String, read: BeforeRead, viewer: &Viewer) {
        if !viewer.email_verified || !self.generation.is_current(read.generation) {
            return;
        }
        self.sessions.insert(
            token_hash,
            Kept {
                viewer: viewer.clone(),
                generation: read.generation,
                read_at: read.at,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(verified: bool, expires_at: DateTime<Utc>) -> Viewer {
        Viewer {
            account_id: 1,
            email: "a@example.com".into(),
            email_verified: verified,
            is_admin: false,
            session_id: 7,
            session_expires_at: expires_at,
            scopes: None,
        }
    }

    /// Offer `cache` the session "h" of a caller (verified or not) whose
    /// session ends `lifetime` from now, as read after `read`; returns now.
    fn keep(
        cache: &SessionCache,
        read: BeforeRead,
        verified: bool,
        lifetime: chrono::Duration,
    ) -> DateTime<Utc> {
        let now = Utc::now();
        cache.put("h".into(), read, &viewer(verified, now + lifetime));
        now
    }

    #[test]
    fn a_session_is_used_until_a_sign_out_anywhere() {
        let cache = SessionCache::default();
        let now = keep(
            &cache,
            cache.before_read(),
            true,
            chrono::Duration::hours(1),
        );
        assert_eq!(cache.get("h", now).map(|v| v.session_id), Some(7));
        assert!(cache.get("other", now).is_none());
        cache.forget_all();
        assert!(cache.get("h", now).is_none());
    }

    #[test]
    fn a_session_read_across_a_sign_out_is_not_kept() {
        let cache = SessionCache::default();
        let read = cache.before_read();
        cache.forget_all(); // the sign-out lands while the read is in flight
        let now = keep(&cache, read, true, chrono::Duration::hours(1));
        assert!(cache.get("h", now).is_none());
    }

    #[test]
    fn unverified_callers_are_not_kept() {
        let cache = SessionCache::default();
        let now = keep(
            &cache,
            cache.before_read(),
            false,
            chrono::Duration::hours(1),
        );
        assert!(cache.get("h", now).is_none());
    }

    #[test]
    fn an_expired_or_old_session_is_not_used() {
        let cache = SessionCache::default();
        let read = cache.before_read();
        let now = keep(&cache, read, true, chrono::Duration::seconds(1));
        assert!(cache.lookup("h", now, read.at).is_some());
        let later = now + chrono::Duration::seconds(1);
        assert!(cache.lookup("h", later, read.at).is_none(), "expired");
        assert!(
            cache.lookup("h", now, read.at + MAX_AGE).is_none(),
            "too old"
        );
    }
}
