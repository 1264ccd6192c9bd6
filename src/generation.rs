//! Invalidation of in-memory answers by *generation*, shared by the caches
//! of validations and of sessions. A change that must show at once starts a
//! new generation; an answer is used only within the generation it was read
//! in. The generation is taken *before* the database read, so an answer read
//! while a change lands is never kept after the change is known.
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

#[derive(Default)]
pub struct Generation(AtomicU64);

/// Taken just before a database read: the generation then, and the moment
/// the data's age counts from.
#[derive(Debug, Clone, Copy)]
pub struct BeforeRead {
    pub generation: u64,
    pub at: Instant,
}

impl Generation {
    /// Something changed: no answer read before now is used again.
    pub fn advance(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    pub fn before_read(&self) -> BeforeRead {
        BeforeRead {
            generation: self.0.load(Ordering::Acquire),
            at: Instant::now(),
        }
    }

    /// Whether an answer of `generation` may still be used (or kept).
    pub fn is_current(&self, generation: u64) -> bool {
        generation == self.0.load(Ordering::Acquire)
    }
}
