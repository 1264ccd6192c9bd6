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
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use quick_cache::sync::Cache;

use super::devices::Validity;

/// Longest an answer is used, whatever the bus does (while Redis is down,
/// the bound on how late another instance's change shows).
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// Most answers kept (≈ 100 bytes each); the least used go first.
const CAPACITY: usize = 50_000;

#[derive(Clone)]
struct Answer {
    validity: Validity,
    license_id: Option<i64>,
    generation: u64,
    /// Between half [`MAX_AGE`] and [`MAX_AGE`] after the read, at random:
    /// answers read together do not all go to the database again together
    /// (that burst was the worst latency of `just bench`'s validations).
    expires_at: Instant,
}

pub struct ValidityCache {
    generation: AtomicU64,
    answers: Cache<String, Answer>,
}

impl Default for ValidityCache {
    fn default() -> Self {
        ValidityCache {
            generation: AtomicU64::new(0),
            answers: Cache::new(CAPACITY),
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
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The current generation; read it *before* the database, and pass it to
    /// [`ValidityCache::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &str, fingerprint: Option<&str>) -> Option<(Validity, Option<i64>)> {
        let answer = self.answers.get(&slot(key, fingerprint))?;
        (answer.generation == self.generation() && Instant::now() < answer.expires_at)
            .then_some((answer.validity, answer.license_id))
    }

    pub fn put(
        &self,
        key: &str,
        fingerprint: Option<&str>,
        generation: u64,
        (validity, license_id): (Validity, Option<i64>),
    ) {
        if generation != self.generation() {
            return; // read across a change: do not keep it
        }
        self.answers.insert(
            slot(key, fingerprint),
            Answer {
                validity,
                license_id,
                generation,
                expires_at: Instant::now() + MAX_AGE.mul_f64(rand::random_range(0.5..1.0)),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_used_until_something_changes() {
        let cache = ValidityCache::default();
        let read = cache.generation();
        cache.put("K", Some("fp"), read, (Validity::Valid, Some(7)));
        assert_eq!(cache.get("K", Some("fp")), Some((Validity::Valid, Some(7))));
        assert_eq!(cache.get("K", None), None, "another question");
        assert_eq!(cache.get("K", Some("other")), None);
        cache.invalidate();
        assert_eq!(cache.get("K", Some("fp")), None);
    }

    #[test]
    fn an_answer_read_across_a_change_is_not_kept() {
        let cache = ValidityCache::default();
        let read = cache.generation();
        cache.invalidate(); // a change commits while the read is in flight
        cache.put("K", Some("fp"), read, (Validity::Valid, Some(7)));
        assert_eq!(cache.get("K", Some("fp")), None);
    }
}
