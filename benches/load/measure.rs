//! Driving load: closed-loop (N workers, each sends its next request when the
//! previous one answered) and open-loop (requests at a fixed rate, latency
//! measured from the time each was due, so a stall is not hidden by the
//! generator waiting for it). A closed loop counts what completes inside the
//! measurement window, an open loop every request due inside it; the warm-up
//! before it is discarded. A request that panics or takes over
//! [`REQUEST_TIMEOUT`] counts as an error.
use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::env::MachineCpu;

/// Latencies are recorded in microseconds, up to a minute.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// How long to warm up and then measure.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Requests completed successfully inside the window.
    pub ok: u64,
    /// Requests that failed (any error answer) inside the window.
    pub errors: u64,
    /// Operations per second inside the window (successes only).
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Share of the whole machine's CPU time busy during the window, in
    /// percent (the generator, the server, PostgreSQL and anything else).
    pub machine_busy_percent: f64,
    /// First error seen, to explain `errors`.
    pub first_error: Option<String>,
}

impl Stats {
    fn from(
        hist: &Histogram<u64>,
        ok: u64,
        errors: u64,
        seconds: f64,
        machine_busy_percent: f64,
        first_error: Option<String>,
    ) -> Self {
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        Stats {
            ok,
            errors,
            throughput: ok as f64 / seconds,
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            max_ms: hist.max() as f64 / 1000.0,
            machine_busy_percent,
            first_error,
        }
    }
}

#[derive(Default)]
struct Tally {
    hist: Option<Histogram<u64>>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, micros: u64, result: &Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.hist
                    .get_or_insert_with(histogram)
                    .saturating_record(micros.max(1));
            }
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| error.clone());
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        if let Some(h) = other.hist {
            self.hist
                .get_or_insert_with(histogram)
                .add(h)
                .expect("same histogram bounds");
        }
    }

    fn stats(self, seconds: f64, machine_busy_percent: f64) -> Stats {
        let hist = self.hist.unwrap_or_else(histogram);
        Stats::from(
            &hist,
            self.ok,
            self.errors,
            seconds,
            machine_busy_percent,
            self.first_error,
        )
    }
}

/// Longest a request may take: past it, it counts as an error, so a server
/// that stops answering ends the run instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `request`, with a panic or a time-out counted as an error like any other.
async fn bounded(request: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, AssertUnwindSafe(request).catch_unwind()).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the request panicked".into()),
        Err(_) => Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
    }
}

/// The machine's busy share (percent) between `from` and `until`, read by a
/// task that sleeps through the rest.
fn machine_busy(from: Instant, until: Instant) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let start = MachineCpu::now();
        tokio::time::sleep_until(until.into()).await;
        start.busy_since()
    })
}

/// `concurrency` workers call `op(worker, seq)` back to back for
/// `window.warmup + window.measure`; `seq` numbers every call of the run.
pub async fn closed_loop<F, Fut>(concurrency: usize, window: Window, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let start = Instant::now();
    let from = start + window.warmup;
    let until = from + window.measure;
    let busy = machine_busy(from, until);
    let seq = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let op = op.clone();
        let seq = seq.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let result = bounded(op(worker, seq.fetch_add(1, Ordering::Relaxed))).await;
                let done = Instant::now();
                if done >= from && done <= until {
                    tally.record((done - sent).as_micros() as u64, &result);
                }
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for worker in workers {
        total.merge(worker.await.expect("load worker"));
    }
    total.stats(
        window.measure.as_secs_f64(),
        busy.await.expect("machine busy"),
    )
}

/// Start `op(seq)` every `1 / rate` seconds for `window.warmup + window.measure`,
/// whatever the previous calls are doing (at most `max_in_flight` at once; a
/// request that has to wait for a slot is late, and its latency says so).
///
/// The requests are started by a thread of their own that sleeps until each
/// one is due (to within ≈ 0.1 ms): tokio's timer ticks by the millisecond,
/// and pacing with it made every request up to 2 ms late before it was sent,
/// which counted as latency (`GET /healthz` at 10,000/s: p50 1.4 ms with
/// tokio's timer, 0.12 ms with this thread).
pub async fn open_loop<F, Fut>(rate: f64, max_in_flight: usize, window: Window, op: F) -> Stats
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let start = Instant::now();
    let from = start + window.warmup;
    let until = from + window.measure;
    let busy = machine_busy(from, until);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let runtime = tokio::runtime::Handle::current();
    let pacer = {
        let slots = slots.clone();
        let tally = tally.clone();
        tokio::task::spawn_blocking(move || {
            for seq in 0u64.. {
                let due = start + interval.mul_f64(seq as f64);
                if due >= until {
                    break;
                }
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let permit = runtime
                    .block_on(slots.clone().acquire_owned())
                    .expect("semaphore open");
                let op = op.clone();
                let tally = tally.clone();
                runtime.spawn(async move {
                    let result = bounded(op(seq)).await;
                    // Every request due inside the window counts, however
                    // late it ends (the wait below lets the last ones end).
                    if due >= from {
                        let micros = (Instant::now() - due).as_micros() as u64;
                        tally.lock().expect("tally").record(micros, &result);
                    }
                    // Released once recorded: all slots free means all recorded.
                    drop(permit);
                });
            }
        })
    };
    pacer.await.expect("open-loop pacer");
    let _all_done = slots
        .acquire_many(max_in_flight as u32)
        .await
        .expect("semaphore open");
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    tally.stats(
        window.measure.as_secs_f64(),
        busy.await.expect("machine busy"),
    )
}
