//! Answers of `validateLicense`, kept in memory so the licensed software's
//! checks (the busiest call there is) need no database read while nothing
//! changes.
//!
//! Invalidation is deliberately coarse and safe: every change committed on
//! this instance ([`super::Ctx::committed`]) and every event arriving from the
//! bus (changes committed on other instances) starts a new *generation*; an
//! answer is used only within the generation it was read in, and for at most
//! [`MAX_AGE`]. An answer read while a change commits carries the generation
//! from *before* its read, so it is never used after that change is known.
//! So: this instance reads its own writes at once; a change made through
//! another instance shows once its event arrives (milliseconds), and within
//! [`MAX_AGE`] (5 s) even if the bus is down.
//!
//! A key asked about often is read again *ahead* of its expiry: past its
//! refresh point (40–60% of [`MAX_AGE`], at random, so answers read together
//! are not refreshed together) the answer is still served, and the first
//! caller to see that starts one read in the background. Such a key never
//! waits for the database; a key asked about rarely reads it on the request.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use quick_cache::sync::Cache;
use tokio::sync::Semaphore;

use super::devices::Validity;
use crate::generation::{BeforeRead, Generation};

/// Longest an answer is used, whatever the bus does (while Redis is down,
/// the bound on how late another instance's change shows).
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// Most answers kept (≈ 100 bytes each); the least used go first.
const CAPACITY: usize = 50_000;

/// A validation answer: the validity and the key's license, if it exists.
pub type Validation = (Validity, Option<i64>);

#[derive(Clone)]
struct Answer {
    validation: Validation,
    generation: u64,
    /// From then on a lookup asks for a read in the background (once: the
    /// lookup that asks moves it to `expires_at`).
    refresh_at: Instant,
    /// [`MAX_AGE`] after the read: never used from then on.
    expires_at: Instant,
}

/// What the cache holds for a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Nothing usable: read the database now.
    Miss,
    /// A usable answer.
    Hit(Validation),
    /// A usable answer, and the caller should read it again in the
    /// background (no other lookup is asked to until the answer expires).
    HitRefresh(Validation),
}

/// Most background refreshes under way at once: they share the database
/// pool with requests (8 connections by default on 2 cores), and must not
/// take it over, nor queue up when it is slow.
const MAX_REFRESHING: usize = 4;

pub struct ValidityCache {
    generation: Generation,
    answers: Cache<String, Answer>,
    refreshing: Arc<Semaphore>,
    /// What `checkOutLicense` signs besides the validity, by license id:
    /// kept and forgotten like the answers (same generation, [`MAX_AGE`]).
    facts: Cache<i64, (LicenseFacts, u64, Instant)>,
}

/// The order facts an offline certificate states, of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseFacts {
    pub order_id: i64,
    pub product: String,
    pub heartbeat_seconds: Option<i32>,
}

impl Default for ValidityCache {
    fn default() -> Self {
        ValidityCache {
            generation: Generation::default(),
            answers: Cache::new(CAPACITY),
            refreshing: Arc::new(Semaphore::new(MAX_REFRESHING)),
            facts: Cache::new(CAPACITY),
        }
    }
}

/// Where an answer is filed: the normalised key and the fingerprint asked
/// about (none is not the same question as an empty one).
fn slot(key: &str, fingerprint: Option<&str>) -> String {
    match fingerprint {
        Some(fingerprint) => format!("{key}\u{0}{fingerprint}"),
        None => format!("{key}\u{1}"),
    }
}

impl ValidityCache {
    /// Something changed: no answer read before now is used again.
    pub fn invalidate(&self) {
        self.generation.advance();
    }

    /// What [`ValidityCache::put`] needs, taken just before a read.
    pub fn before_read(&self) -> BeforeRead {
        self.generation.before_read()
    }

    pub fn get(&self, key: &str, fingerprint: Option<&str>) -> Lookup {
        self.lookup(&slot(key, fingerprint), Instant::now())
    }

    fn lookup(&self, slot: &str, now: Instant) -> Lookup {
        let Some(mut answer) = self.answers.get(slot) else {
            return Lookup::Miss;
        };
        if !self.generation.is_current(answer.generation) || now >= answer.expires_at {
            return Lookup::Miss;
        }
        if now < answer.refresh_at {
            return Lookup::Hit(answer.validation);
        }
        // Ask this caller alone (lookups racing here may each be asked: a
        // few reads of one key, harmless). Re-inserting may overwrite an
        // answer `put` meanwhile: with one of an older generation, which is
        // then never used, or with this older one, still within its own
        // `MAX_AGE`; either way the caller's refresh replaces it.
        let validation = answer.validation;
        answer.refresh_at = answer.expires_at;
        self.answers.insert(slot.to_owned(), answer);
        Lookup::HitRefresh(validation)
    }

    /// Keep an answer read from the database: `read` taken *before* the
    /// read, so `MAX_AGE` counts from the data's age.
    pub fn put(
        &self,
        key: &str,
        fingerprint: Option<&str>,
        read: BeforeRead,
        validation: Validation,
    ) {
        self.insert(slot(key, fingerprint), read, validation);
    }

    /// Take a place for a background refresh; `None` when
    /// [`MAX_REFRESHING`] are already under way (the answer is then left to
    /// expire, and the next question reads on its own request).
    pub fn refresh_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.refreshing.clone().try_acquire_owned().ok()
    }

    /// The facts of license `id`, when read in the current generation
    /// less than [`MAX_AGE`] ago.
    pub fn facts(&self, id: i64) -> Option<LicenseFacts> {
        let (facts, generation, expires_at) = self.facts.get(&id)?;
        (self.generation.is_current(generation) && Instant::now() < expires_at).then_some(facts)
    }

    /// Keep the facts of license `id`, read after `read` was taken.
    pub fn put_facts(&self, id: i64, read: BeforeRead, facts: LicenseFacts) {
        if self.generation.is_current(read.generation) {
            self.facts
                .insert(id, (facts, read.generation, read.at + MAX_AGE));
        }
    }

    fn insert(&self, slot: String, read: BeforeRead, validation: Validation) {
        if !self.generation.is_current(read.generation) {
            return; // read across a change: do not keep it
        }
        self.answers.insert(
            slot,
            Answer {
                validation,
                generation: read.generation,
                refresh_at: read.at + MAX_AGE.mul_f64(rand::random_range(0.4..0.6)),
                expires_at: read.at + MAX_AGE,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: Validation = (Validity::Valid, Some(7));

    #[test]
    fn an_answer_is_used_until_something_changes() {
        let cache = ValidityCache::default();
        let read = cache.before_read();
        cache.put("K", Some("fp"), read, VALID);
        assert_eq!(cache.get("K", Some("fp")), Lookup::Hit(VALID));
        assert_eq!(cache.get("K", None), Lookup::Miss, "another question");
        assert_eq!(cache.get("K", Some("other")), Lookup::Miss);
        cache.invalidate();
        assert_eq!(cache.get("K", Some("fp")), Lookup::Miss);
    }

    #[test]
    fn an_answer_read_across_a_change_is_not_kept() {
        let cache = ValidityCache::default();
        let read = cache.before_read();
        cache.invalidate(); // a change commits while the read is in flight
        cache.put("K", Some("fp"), read, VALID);
        assert_eq!(cache.get("K", Some("fp")), Lookup::Miss);
    }

    #[test]
    fn one_caller_is_asked_to_refresh_and_none_after_max_age() {
        let cache = ValidityCache::default();
        let read = cache.before_read();
        let read_at = read.at;
        let slot = slot("K", Some("fp"));
        cache.insert(slot.clone(), read, VALID);
        assert_eq!(cache.lookup(&slot, read_at), Lookup::Hit(VALID));
        let refresh_due = read_at + MAX_AGE.mul_f64(0.6);
        assert_eq!(cache.lookup(&slot, refresh_due), Lookup::HitRefresh(VALID));
        assert_eq!(
            cache.lookup(&slot, refresh_due),
            Lookup::Hit(VALID),
            "only the first caller refreshes"
        );
        assert_eq!(cache.lookup(&slot, read_at + MAX_AGE), Lookup::Miss);
        // The refresh's answer starts a new span.
        let reread = BeforeRead {
            at: refresh_due,
            ..cache.before_read()
        };
        cache.insert(slot.clone(), reread, VALID);
        assert_eq!(cache.lookup(&slot, read_at + MAX_AGE), Lookup::Hit(VALID));
    }

    #[test]
    fn facts_are_forgotten_on_a_change() {
        let cache = ValidityCache::default();
        let facts = LicenseFacts {
            order_id: 1,
            product: "p".into(),
            heartbeat_seconds: None,
        };
        cache.put_facts(7, cache.before_read(), facts.clone());
        assert_eq!(cache.facts(7), Some(facts.clone()));
        cache.invalidate();
        assert_eq!(cache.facts(7), None);
        let read = cache.before_read();
        cache.invalidate();
        cache.put_facts(7, read, facts);
        assert_eq!(cache.facts(7), None, "read across a change");
    }

    #[test]
    fn background_refreshes_are_bounded() {
        let cache = ValidityCache::default();
        let permits: Vec<_> = (0..MAX_REFRESHING)
            .map(|_| cache.refresh_permit().expect("a free place"))
            .collect();
        assert!(cache.refresh_permit().is_none());
        drop(permits);
        assert!(cache.refresh_permit().is_some());
    }
}
