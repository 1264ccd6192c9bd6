//! Rate limits on attempts that could guess secrets (claims, device
//! changes, wrong passwords) and on actions that send email, counted per
//! account, per client address and per recipient.
pub mod passwords;

use std::num::NonZeroU32;

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

/// Keyed token buckets (governor's GCRA) for attempts that could be used to
/// guess secrets, and for actions that send email.
pub struct RateLimits {
    claims: DefaultKeyedRateLimiter<LimitKey>,
    devices: DefaultKeyedRateLimiter<LimitKey>,
    /// Wrong passwords, per account and per client address.
    pub passwords: passwords::PasswordLimits,
    /// Emails caused per account and sent per recipient address.
    mail: DefaultKeyedRateLimiter<LimitKey>,
    /// Emails caused per client address: a budget of its own, since many
    /// people may share one address (an office, a carrier's NAT).
    mail_clients: DefaultKeyedRateLimiter<LimitKey>,
}

fn per_minute(n: u32) -> DefaultKeyedRateLimiter<LimitKey> {
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(n))
}

fn per_hour(n: u32) -> DefaultKeyedRateLimiter<LimitKey> {
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_hour(n))
}

/// Count one attempt against every key; `RATE_LIMITED` when any is exhausted.
fn check(limiter: &DefaultKeyedRateLimiter<LimitKey>, keys: &[LimitKey]) -> Result<(), AppError> {
    for key in keys {
        check_one(limiter, key)?;
    }
    Ok(())
}

fn check_one(limiter: &DefaultKeyedRateLimiter<LimitKey>, key: &LimitKey) -> Result<(), AppError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(limiter.clock().now());
        AppError::RateLimited {
            retry_after_secs: wait.as_secs().max(1),
        }
    })
}

impl RateLimits {
    pub fn new(config: &crate::config::Config) -> Self {
        RateLimits {
            claims: per_minute(config.claim_rate_per_minute),
            devices: per_minute(config.device_rate_per_minute),
            passwords: passwords::PasswordLimits::new(
                config.signin_failures_per_minute,
                config.signin_failures_per_minute_per_address,
            ),
            mail: per_hour(config.mail_rate_per_hour),
            mail_clients: per_hour(config.mail_client_rate_per_hour),
        }
    }

    /// A claim attempt (keys could otherwise be guessed).
    pub fn claim(&self, keys: &[LimitKey]) -> Result<(), AppError> {
        check(&self.claims, keys)
    }

    /// A device activation or deactivation by the licensed software.
    pub fn devices(&self, keys: &[LimitKey]) -> Result<(), AppError> {
        check(&self.devices, keys)
    }

    /// An action that sends email to an address its caller chooses, so that
    /// nobody can make keyledger flood a mailbox.
    pub fn mail(&self, keys: &[LimitKey]) -> Result<(), AppError> {
        for key in keys {
            match key {
                LimitKey::Client(_) => check_one(&self.mail_clients, key)?,
                _ => check_one(&self.mail, key)?,
            }
        }
        Ok(())
    }

    /// Forget the buckets that are full again, so that the keys seen once
    /// (addresses, accounts) do not accumulate in memory.
    pub fn forget_idle(&self) {
        for limiter in [&self.claims, &self.devices, &self.mail, &self.mail_clients] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
