//! Rate limits on attempts that could guess secrets (claims, device
//! changes, wrong passwords) and on actions that send email, counted per
//! account, per client address and per recipient.
pub mod passwords;

mod shared;

use std::{num::NonZeroU32, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};

use crate::error::AppError;

/// What a rate limit is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Account(i64),
    Client(std::net::IpAddr),
    /// An email address mail is sent to (normalised).
    Recipient(String),
}

/// One limit: `burst` attempts at once, then one every `interval`.
struct Limit {
    /// Names the limit in its Redis keys.
    name: &'static str,
    interval: Duration,
    burst: u32,
    /// This instance's buckets: the limit without Redis, and the fallback
    /// while Redis does not answer.
    local: DefaultKeyedRateLimiter<LimitKey>,
}

impl Limit {
    fn new(name: &'static str, per: Duration, n: u32) -> Limit {
        let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        let interval = per / n.get();
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(n);
        Limit {
            name,
            interval,
            burst: n.get(),
            local: RateLimiter::keyed(quota),
        }
    }

    fn check_locally(&self, key: &LimitKey) -> Result<(), AppError> {
        self.local.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.local.clock().now());
            AppError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            }
        })
    }
}

/// Keyed GCRA buckets for attempts that could be used to guess secrets, and
/// for actions that send email. With Redis, every instance counts in the
/// same buckets (an atomic GCRA step in a Lua script), so N instances do
/// not give N times the limit; without Redis, or while it does not answer,
/// each instance counts in its own (governor).
pub struct RateLimits {
    claims: Limit,
    devices: Limit,
    /// Wrong passwords, per account and per client address.
    pub passwords: passwords::PasswordLimits,
    /// Emails caused per account and sent per recipient address.
    mail: Limit,
    /// Emails caused per client address: a budget of its own, since many
    /// people may share one address (an office, a carrier's NAT).
    mail_clients: Limit,
    shared: Option<std::sync::Arc<shared::Shared>>,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl RateLimits {
    pub fn new(config: &crate::config::Config) -> Self {
        let shared = config.redis_url.as_deref().and_then(|url| {
            shared::Shared::new(url, &config.redis_channel)
                .inspect_err(|error| {
                    tracing::warn!(%error, "rate limits: Redis unusable, counting per instance");
                })
                .ok()
                .map(std::sync::Arc::new)
        });
        RateLimits {
            claims: Limit::new("claims", MINUTE, config.claim_rate_per_minute),
            devices: Limit::new("devices", MINUTE, config.device_rate_per_minute),
            passwords: passwords::PasswordLimits::new(
                config.signin_failures_per_minute,
                config.signin_failures_per_minute_per_address,
            )
            .shared(shared.clone()),
            mail: Limit::new("mail", HOUR, config.mail_rate_per_hour),
            mail_clients: Limit::new("mail_clients", HOUR, config.mail_client_rate_per_hour),
            shared,
        }
    }

    /// Count one attempt against each `(limit, key)`; `RATE_LIMITED` when
    /// any is exhausted. With Redis the step is all or nothing, in one round
    /// trip: a refused attempt spends nothing.
    async fn take(&self, items: &[(&Limit, &LimitKey)]) -> Result<(), AppError> {
        if let Some(shared) = &self.shared {
            match shared.take(items).await {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => {
                    return Err(AppError::RateLimited {
                        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "rate limits: Redis failed, counting on this instance");
                }
            }
        }
        items
            .iter()
            .try_for_each(|(limit, key)| limit.check_locally(key))
    }

    /// A claim attempt (keys could otherwise be guessed).
    pub async fn claim(&self, keys: &[LimitKey]) -> Result<(), AppError> {
        let items: Vec<_> = keys.iter().map(|key| (&self.claims, key)).collect();
        self.take(&items).await
    }

    /// A device activation or deactivation by the licensed software.
    pub async fn devices(&self, keys: &[LimitKey]) -> Result<(), AppError> {
        let items: Vec<_> = keys.iter().map(|key| (&self.devices, key)).collect();
        self.take(&items).await
    }

    /// An action that sends email to an address its caller chooses, so that
    /// nobody can make keyledger flood a mailbox.
    pub async fn mail(&self, keys: &[LimitKey]) -> Result<(), AppError> {
        let items: Vec<_> = keys
            .iter()
            .map(|key| match key {
                LimitKey::Client(_) => (&self.mail_clients, key),
                _ => (&self.mail, key),
            })
            .collect();
        self.take(&items).await
    }

    /// Forget the buckets that are full again, so that the keys seen once
    /// (addresses, accounts) do not accumulate in memory.
    pub fn forget_idle(&self) {
        for limit in [&self.claims, &self.devices, &self.mail, &self.mail_clients] {
            limit.local.retain_recent();
            limit.local.shrink_to_fit();
        }
    }
}
