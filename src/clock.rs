use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use chrono::{DateTime, Duration, Utc};
use tokio::sync::watch;

/// The time every rule reads. Production uses the system clock; tests move it
/// forward with [`Clock::advance`] to cross a 7-day expiry without sleeping.
#[derive(Clone)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
    /// Bumped by every [`Clock::advance`], so waits computed from [`Clock::now`]
    /// (tokio timers know nothing of the offset) can be recomputed.
    moved: Arc<watch::Sender<()>>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            offset_ms: Arc::default(),
            moved: Arc::new(watch::Sender::new(())),
        }
    }
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Shift this clock (and every copy of it) forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
        self.moved.send_replace(());
    }

    /// A receiver that changes whenever the clock is moved by [`Clock::advance`]
    /// (never in production, where the clock only runs).
    pub fn moves(&self) -> watch::Receiver<()> {
        self.moved.subscribe()
    }
}
