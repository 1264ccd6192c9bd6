//! The buckets every instance shares, in Redis: one GCRA step per attempt,
//! atomic in a Lua script, on Redis's own clock (instances' clocks may
//! differ). A bucket is one key holding its theoretical arrival time, and
//! expires once it is full again.
//!
//! The wrong-password limits ([`super::passwords`]) count failures after
//! the fact, so they use two other steps on the same buckets: one reads how
//! far a bucket is ahead, the other charges failures.
use std::time::Duration;

use redis::{FromRedisValue, Script, ScriptInvocation, aio::MultiplexedConnection};
use tokio::sync::Mutex;

use super::{Limit, LimitKey};

/// Redis may take this long per step; then this instance counts on its own.
const TIMEOUT: Duration = Duration::from_millis(500);

/// GCRA over several buckets at once: KEYS the buckets; ARGV, per bucket,
/// the interval between attempts and the tolerance (interval × (burst − 1)),
/// in microseconds. All or nothing: answers 0 when every bucket lets the
/// attempt through (and counts it in each), else the microseconds to wait,
/// counting nothing. Times are written with `%d`: Lua's default number
/// format would round them to 14 digits.
const GCRA: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  tats[i] = tat
  local allowed_at = tat - tolerance
  if allowed_at - now > wait then wait = allowed_at - now end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local next_tat = tats[i] + tonumber(ARGV[2 * i - 1])
  redis.call('SET', key, string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
end
return 0
";

/// How far ahead of now each bucket in KEYS is, in microseconds (0 when
/// full). Reads only.
const AHEAD: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local ahead = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  ahead[i] = tat - now
end
return ahead
";

/// Charge one failure to each bucket in KEYS, whatever its state; ARGV the
/// interval of each, in microseconds.
const CHARGE: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local next_tat = tat + tonumber(ARGV[i])
  redis.call('SET', key, string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
end
return 0
";

pub struct Shared {
    client: redis::Client,
    /// Keys start with the deployment's channel name, so deployments that
    /// share a Redis do not share buckets.
    prefix: String,
    conn: Mutex<Option<MultiplexedConnection>>,
    script: Script,
    ahead: Script,
    charge: Script,
}

/// Why Redis could not count an attempt (the instance then counts alone).
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer in time")]
    Timeout,
}

impl Shared {
    pub fn new(url: &str, deployment: &str) -> Result<Shared, SharedError> {
        Ok(Shared {
            client: redis::Client::open(url)?,
            prefix: format!("{deployment}:limits"),
            conn: Mutex::new(None),
            script: Script::new(GCRA),
            ahead: Script::new(AHEAD),
            charge: Script::new(CHARGE),
        })
    }

    /// One attempt against each `(limit, key)`: `None` if let through,
    /// else how long to wait.
    pub async fn take(
        &self,
        items: &[(&Limit, &LimitKey)],
    ) -> Result<Option<Duration>, SharedError> {
        if items.is_empty() {
            return Ok(None);
        }
        let mut invocation = self.script.prepare_invoke();
        for (limit, key) in items {
            let interval = limit.interval.as_micros() as u64;
            let tolerance = interval * u64::from(limit.burst.saturating_sub(1));
            invocation
                .key(format!("{}:{}:{}", self.prefix, limit.name, key_text(key)))
                .arg(interval)
                .arg(tolerance);
        }
        match self.run::<u64>(&invocation).await? {
            0 => Ok(None),
            wait => Ok(Some(Duration::from_micros(wait))),
        }
    }

    /// The Redis key of `bucket` (a limit's name and its key).
    pub fn key(&self, bucket: &str) -> String {
        format!("{}:{bucket}", self.prefix)
    }

    /// How far ahead of now each of `keys` is ([`Shared::key`]).
    pub async fn ahead(&self, keys: &[&str]) -> Result<Vec<Duration>, SharedError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.ahead.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        let ahead: Vec<u64> = self.run(&invocation).await?;
        Ok(ahead.into_iter().map(Duration::from_micros).collect())
    }

    /// Charge one failure to each `(key, interval)`.
    pub async fn charge(&self, buckets: &[(&str, Duration)]) -> Result<(), SharedError> {
        if buckets.is_empty() {
            return Ok(());
        }
        let mut invocation = self.charge.prepare_invoke();
        for (key, interval) in buckets {
            invocation.key(*key).arg(interval.as_micros() as u64);
        }
        self.run::<u64>(&invocation).await.map(drop)
    }

    /// Run a script within [`TIMEOUT`]; a failure drops the connection, so
    /// the next step opens a new one.
    async fn run<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, SharedError> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(TIMEOUT, invocation.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                self.forget_connection().await;
                Err(error.into())
            }
            Err(_) => {
                self.forget_connection().await;
                Err(SharedError::Timeout)
            }
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, SharedError> {
        let mut conn = self.conn.lock().await;
        if let Some(conn) = conn.as_ref() {
            return Ok(conn.clone());
        }
        let opened = tokio::time::timeout(TIMEOUT, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| SharedError::Timeout)??;
        *conn = Some(opened.clone());
        Ok(opened)
    }

    async fn forget_connection(&self) {
        *self.conn.lock().await = None;
    }
}

fn key_text(key: &LimitKey) -> String {
    match key {
        LimitKey::Account(id) => format!("account:{id}"),
        LimitKey::Client(ip) => format!("client:{ip}"),
        LimitKey::Recipient(email) => format!("recipient:{email}"),
    }
}
