//! Limits on wrong passwords (`signIn` and the transfer confirmation form),
//! per account and per client address, so that passwords cannot be guessed
//! online faster than a person mistypes them.
//!
//! What counts: failed attempts only, on both keys. A right password never
//! uses up anything, so people signing in from one address (an office behind
//! one NAT, a test suite) are never refused for signing in often.
//!
//! Attempts still being checked are counted as if they would fail: a key
//! lets no more attempts run at once than it has failures left, and the
//! others wait for those to end (then go ahead, or are refused if they
//! failed). Otherwise a thousand guesses sent at once would all pass the
//! check before the first one failed.
//!
//! While a key is exhausted, every attempt on it is refused, the right
//! password included: otherwise the limit would not stop guessing (the right
//! guess would still get through). The price is that someone failing on
//! purpose can keep an account, or an address, waiting; the wait ends a few
//! seconds after they stop.
//!
//! With Redis, the failures are counted in buckets every instance shares
//! (see [`super::shared`]): an attempt reads how far its buckets are ahead,
//! and a failure is charged to them before the attempts waiting on this
//! instance are woken. Attempts in flight are counted per instance, so at
//! one moment N instances may each run as many attempts as a key has
//! failures left; those failures are all charged, so the key then waits
//! longer and the rate over time stays the limit. While Redis does not
//! answer, each instance counts on its own, as without Redis.
//!
//! Per account means per email address as sign-in normalises it, whether or
//! not an account has it: an unknown address is limited exactly like a known
//! one, so the answers (and their timing) do not tell them apart.
use std::{
    collections::HashMap,
    fmt::Display,
    future::Future,
    hash::Hash,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::shared::Shared;
use crate::{
    domain::email,
    error::{ApiResult, AppError},
};

/// The longest (in bytes) an address that is not a valid email is kept as a
/// key: no account can have it, and a megabyte string should not be stored.
const MAX_KEY_LEN: usize = 254;

/// A keyed GCRA (the algorithm of the `governor` crate the other limits
/// use) that counts failures only, written out here because `governor`
/// cannot count an attempt after the fact. Each key holds its theoretical
/// arrival time: a burst of `n` failures, then one every `60 s / n`.
struct FailureLimiter<K> {
    /// Names its buckets in Redis.
    name: &'static str,
    /// Time one failure takes to be forgotten.
    interval: Duration,
    /// How far ahead of now the arrival time may be with one more attempt
    /// still allowed: `interval × (n − 1)`.
    tolerance: Duration,
    keys: Mutex<Keys<K>>,
}

struct Keys<K> {
    entries: HashMap<K, Entry>,
    /// Forgotten keys are swept once the map holds this many entries.
    sweep_at: usize,
}

struct Entry {
    arrival: Instant,
    /// Attempts started and not finished.
    in_flight: u32,
    /// Bumped whenever an attempt finishes, for the attempts waiting.
    finished: watch::Sender<()>,
}

/// Entries kept before the first sweep of forgotten keys.
const MIN_SWEEP: usize = 1024;

/// Why an attempt cannot start now.
enum NotYet {
    /// The key is exhausted for this long.
    Exhausted(Duration),
    /// Attempts in flight could exhaust it: wait until one finishes.
    Wait(watch::Receiver<()>),
}

impl<K: Hash + Eq + Clone + Display> FailureLimiter<K> {
    fn per_minute(name: &'static str, n: u32) -> Self {
        let n = n.max(1);
        let interval = Duration::from_secs(60) / n;
        FailureLimiter {
            name,
            interval,
            tolerance: interval * (n - 1),
            keys: Mutex::new(Keys {
                entries: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys<K>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared bucket of `key`.
    fn bucket(&self, shared: &Shared, key: &K) -> String {
        shared.key(&format!("{}:{key}", self.name))
    }

    /// Start an attempt on `key` if even its failure would stay within the
    /// limit, counting the attempts in flight as failures. `shared_ahead`:
    /// how far ahead the shared bucket is, when Redis answered.
    fn try_start(
        &self,
        key: &K,
        now: Instant,
        shared_ahead: Option<Duration>,
    ) -> Result<(), NotYet> {
        let mut keys = self.lock();
        if keys.entries.len() >= keys.sweep_at {
            keys.entries
                .retain(|_, entry| entry.arrival > now || entry.in_flight > 0);
            keys.sweep_at = (keys.entries.len() * 2).max(MIN_SWEEP);
        }
        let entry = keys.entries.entry(key.clone()).or_insert_with(|| Entry {
            arrival: now,
            in_flight: 0,
            finished: watch::Sender::new(()),
        });
        // This instance's count is kept as well (the fallback while Redis
        // does not answer); the larger of the two is the safer.
        let ahead = (entry.arrival.max(now) - now).max(shared_ahead.unwrap_or_default());
        if ahead > self.tolerance {
            return Err(NotYet::Exhausted(ahead - self.tolerance));
        }
        if ahead + self.interval * entry.in_flight > self.tolerance {
            return Err(NotYet::Wait(entry.finished.subscribe()));
        }
        entry.in_flight += 1;
        Ok(())
    }

    /// Start an attempt on `key`, waiting for attempts in flight when they
    /// could exhaust it; how long to wait when it is exhausted.
    async fn start(
        &self,
        key: K,
        shared: Option<&Arc<Shared>>,
    ) -> Result<Attempt<'_, K>, Duration> {
        loop {
            let shared_ahead = match shared {
                Some(shared) => match shared.ahead(&[&self.bucket(shared, &key)]).await {
                    Ok(ahead) => ahead.first().copied(),
                    Err(error) => {
                        tracing::warn!(%error, "password limits: Redis failed, counting on this instance");
                        None
                    }
                },
                None => None,
            };
            match self.try_start(&key, Instant::now(), shared_ahead) {
                Ok(()) => {
                    return Ok(Attempt {
                        limiter: self,
                        key: Some(key),
                        shared: shared.cloned(),
                    });
                }
                Err(NotYet::Exhausted(wait)) => return Err(wait),
                // The receiver has seen the value of when it was made, so a
                // finish after that wakes it; a closed channel (the entry was
                // swept) means trying again at once.
                Err(NotYet::Wait(mut finished)) => {
                    let _ = finished.changed().await;
                }
            }
        }
    }

    /// End an attempt on `key`; a failure counts.
    fn finish(&self, key: &K, failed: bool, now: Instant) {
        let mut keys = self.lock();
        if let Some(entry) = keys.entries.get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if failed {
                entry.arrival = entry.arrival.max(now) + self.interval;
            }
            entry.finished.send_replace(());
        }
    }
}

/// An attempt in flight. Dropped without [`Attempt::finish`] (the request
/// went away meanwhile), it counts as a failure: its outcome is unknown.
struct Attempt<'a, K: Hash + Eq + Clone + Display> {
    limiter: &'a FailureLimiter<K>,
    key: Option<K>,
    shared: Option<Arc<Shared>>,
}

impl<K: Hash + Eq + Clone + Display> Attempt<'_, K> {
    /// The shared bucket this attempt charges when it fails.
    fn bucket(&self) -> Option<(String, Duration)> {
        let (shared, key) = (self.shared.as_ref()?, self.key.as_ref()?);
        Some((self.limiter.bucket(shared, key), self.limiter.interval))
    }

    /// End the attempt on this instance (charge a failure to the shared
    /// bucket first: see [`charge_shared`]).
    fn finish(mut self, failed: bool) {
        if let Some(key) = self.key.take() {
            self.limiter.finish(&key, failed, Instant::now());
        }
    }
}

impl<K: Hash + Eq + Clone + Display> Drop for Attempt<'_, K> {
    fn drop(&mut self) {
        if let (Some((bucket, interval)), Some(shared)) = (self.bucket(), self.shared.take()) {
            // Drop cannot wait: the charge is made in the background.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { charge_shared(&shared, &[(bucket, interval)]).await });
            }
        }
        if let Some(key) = self.key.take() {
            self.limiter.finish(&key, true, Instant::now());
        }
    }
}

/// Charge one failure to each shared bucket; when Redis fails, the failure
/// is counted on this instance only.
async fn charge_shared(shared: &Shared, buckets: &[(String, Duration)]) {
    let buckets: Vec<_> = buckets.iter().map(|(key, i)| (key.as_str(), *i)).collect();
    if let Err(error) = shared.charge(&buckets).await {
        tracing::warn!(%error, "password limits: Redis failed, counting on this instance");
    }
}

/// The wrong-password limits of one instance.
pub struct PasswordLimits {
    per_account: FailureLimiter<String>,
    per_address: FailureLimiter<IpAddr>,
    /// The buckets every instance shares, with Redis.
    shared: Option<Arc<Shared>>,
}

/// The refusal for a wait of `wait`, in whole seconds (at least one).
fn refused(wait: Duration) -> AppError {
    AppError::RateLimited {
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

/// The key of `raw` (an email as typed): normalised as accounts store them.
fn account_key(raw: &str) -> String {
    email::normalize(raw, "email").unwrap_or_else(|_| {
        let mut key = raw.trim().to_lowercase();
        if key.len() > MAX_KEY_LEN {
            let mut end = MAX_KEY_LEN;
            while !key.is_char_boundary(end) {
                end -= 1;
            }
            key.truncate(end);
        }
        key
    })
}

impl PasswordLimits {
    pub fn new(failures_per_account: u32, failures_per_address: u32) -> Self {
        PasswordLimits {
            per_account: FailureLimiter::per_minute("passwords:account", failures_per_account),
            per_address: FailureLimiter::per_minute("passwords:client", failures_per_address),
            shared: None,
        }
    }

    /// Count in the buckets every instance shares.
    pub(super) fn shared(mut self, shared: Option<Arc<Shared>>) -> Self {
        self.shared = shared;
        self
    }

    /// Run `check`, a password check for `email` from `client`, within the
    /// limits: `RATE_LIMITED` (with the wait) without running it when either
    /// key is exhausted. A failed check (`UNAUTHENTICATED`) counts; any other
    /// outcome does not.
    pub async fn check<T>(
        &self,
        email: &str,
        client: Option<IpAddr>,
        check: impl Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        // Always the account first, then the address: an attempt waiting
        // for one while holding the other never waits on a waiter.
        let shared = self.shared.as_ref();
        let account = self
            .per_account
            .start(account_key(email), shared)
            .await
            .map_err(refused)?;
        let address = match client {
            Some(client) => match self.per_address.start(client, shared).await {
                Ok(address) => Some(address),
                Err(wait) => {
                    account.finish(false);
                    return Err(refused(wait));
                }
            },
            None => None,
        };
        let outcome = check.await;
        let failed = matches!(outcome, Err(AppError::Unauthenticated));
        if failed && let Some(shared) = shared {
            // Charged before the attempts waiting here are woken, so that
            // they read the bucket with this failure in it.
            let buckets: Vec<_> = [account.bucket(), address.as_ref().and_then(Attempt::bucket)]
                .into_iter()
                .flatten()
                .collect();
            charge_shared(shared, &buckets).await;
        }
        account.finish(failed);
        if let Some(address) = address {
            address.finish(failed);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(limiter: &FailureLimiter<&'static str>, key: &'static str, now: Instant) -> bool {
        let started = limiter.try_start(&key, now, None).is_ok();
        if started {
            limiter.finish(&key, true, now);
        }
        started
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let limiter = FailureLimiter::per_minute("test", 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(fail(&limiter, "a", t0));
        }
        let Err(NotYet::Exhausted(wait)) = limiter.try_start(&"a", t0, None) else {
            panic!("exhausted");
        };
        assert_eq!(wait, Duration::from_secs(20));
        assert!(fail(&limiter, "b", t0), "keys are independent");
        assert!(!fail(&limiter, "a", t0 + Duration::from_secs(19)));
        assert!(fail(&limiter, "a", t0 + Duration::from_secs(20)));
        assert!(!fail(&limiter, "a", t0 + Duration::from_secs(20)));
    }

    #[test]
    fn successes_do_not_count() {
        let limiter = FailureLimiter::per_minute("test", 2);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limiter.try_start(&"a", t0, None).is_ok());
            limiter.finish(&"a", false, t0);
        }
        assert!(fail(&limiter, "a", t0));
        assert!(fail(&limiter, "a", t0));
        assert!(!fail(&limiter, "a", t0));
    }

    #[test]
    fn attempts_in_flight_count_until_they_end() {
        let limiter = FailureLimiter::per_minute("test", 2);
        let t0 = Instant::now();
        assert!(limiter.try_start(&"a", t0, None).is_ok());
        assert!(fail(&limiter, "a", t0));
        // One failure left, and one attempt in flight that may take it.
        assert!(matches!(
            limiter.try_start(&"a", t0, None),
            Err(NotYet::Wait(_))
        ));
        limiter.finish(&"a", false, t0);
        assert!(limiter.try_start(&"a", t0, None).is_ok());
    }

    #[test]
    fn the_shared_count_is_used_when_it_is_ahead() {
        let limiter = FailureLimiter::per_minute("test", 3);
        let t0 = Instant::now();
        // Other instances charged two failures: one left, and it may run.
        let two = Some(Duration::from_secs(40));
        assert!(limiter.try_start(&"a", t0, two).is_ok());
        assert!(matches!(
            limiter.try_start(&"a", t0, two),
            Err(NotYet::Wait(_))
        ));
        limiter.finish(&"a", true, t0);
        // Three failures shared: exhausted until one is forgotten.
        let Err(NotYet::Exhausted(wait)) =
            limiter.try_start(&"b", t0, Some(Duration::from_secs(60)))
        else {
            panic!("exhausted");
        };
        assert_eq!(wait, Duration::from_secs(20));
        // This instance's own failures count even when Redis knows fewer
        // (failures it counted while Redis did not answer).
        for _ in 0..2 {
            assert!(fail(&limiter, "c", t0));
        }
        assert!(limiter.try_start(&"c", t0, Some(Duration::ZERO)).is_ok());
        assert!(matches!(
            limiter.try_start(&"c", t0, Some(Duration::ZERO)),
            Err(NotYet::Wait(_))
        ));
    }

    #[test]
    fn forgotten_keys_are_swept() {
        let limiter = FailureLimiter::per_minute("test", 10);
        let t0 = Instant::now();
        for i in 0..MIN_SWEEP {
            assert!(limiter.try_start(&i, t0, None).is_ok());
            limiter.finish(&i, true, t0);
        }
        let later = t0 + Duration::from_secs(61);
        assert!(limiter.try_start(&usize::MAX, later, None).is_ok());
        assert_eq!(limiter.lock().entries.len(), 1);
    }

    #[test]
    fn accounts_are_keyed_by_their_normalised_email() {
        assert_eq!(account_key("  Ada@Example.COM "), "ada@example.com");
        assert_eq!(account_key(" Not An Email "), "not an email");
        assert_eq!(account_key(&"é".repeat(1000)).len(), MAX_KEY_LEN);
    }

    #[tokio::test]
    async fn right_passwords_at_once_wait_rather_than_fail() {
        let limits = std::sync::Arc::new(PasswordLimits::new(100, 2));
        let client = Some(IpAddr::from([127, 0, 0, 1]));
        let attempts = (0..10).map(|i| {
            let limits = limits.clone();
            tokio::spawn(async move {
                let check = async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(())
                };
                limits
                    .check(&format!("u{i}@example.com"), client, check)
                    .await
            })
        });
        for attempt in futures_util::future::join_all(attempts).await {
            assert!(attempt.unwrap().is_ok());
        }
    }

    #[tokio::test]
    async fn past_the_limit_even_the_right_password_waits() {
        let limits = PasswordLimits::new(1, 100);
        let client = Some(IpAddr::from([127, 0, 0, 1]));
        let wrong = limits.check("ada@example.com", client, async {
            Err::<(), _>(AppError::Unauthenticated)
        });
        assert!(matches!(wrong.await, Err(AppError::Unauthenticated)));
        let right = limits.check("ADA@example.com", client, async { Ok(()) });
        assert!(matches!(
            right.await,
            Err(AppError::RateLimited {
                retry_after_secs: 60
            })
        ));
        let other = limits.check("bob@example.com", client, async { Ok(()) });
        assert!(other.await.is_ok());
    }

    #[tokio::test]
    async fn an_abandoned_attempt_counts_as_a_failure() {
        let limits = PasswordLimits::new(1, 100);
        let pending = limits.check(
            "ada@example.com",
            None,
            std::future::pending::<ApiResult<()>>(),
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(10), pending)
                .await
                .is_err()
        );
        let right = limits.check("ada@example.com", None, async { Ok(()) });
        assert!(matches!(right.await, Err(AppError::RateLimited { .. })));
    }
}
