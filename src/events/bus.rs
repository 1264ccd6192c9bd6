//! Carries relay batches to every instance's hub: directly in-process without
//! `REDIS_URL`, through one Redis pub/sub channel with it.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use redis::AsyncCommands;

use super::hub::{BusMessage, Hub};

#[derive(Clone)]
pub enum Bus {
    Local(Hub),
    Redis(RedisBus),
}

#[derive(Clone)]
pub struct RedisBus {
    client: redis::Client,
    /// The channel every instance of this deployment publishes to and subscribes from.
    channel: String,
    /// Lazily (re)opened publishing connection.
    conn: Arc<tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>>,
    /// This instance's hub: what Redis could not carry still reaches the
    /// subscriptions of this instance.
    local: Hub,
    /// What this instance's clones of the bus share besides connections.
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// True while this instance's subscriber is subscribed: set by its run
    /// loop once subscribed, cleared as soon as the subscription is lost.
    /// Messages published meanwhile do not reach this instance's live
    /// subscriptions (until the resync that follows the reconnection).
    subscribed: AtomicBool,
}

/// Connecting to Redis and each command give up after this long, so a hung
/// Redis delays the relay's retry loop (and readiness) by no more.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the subscriber connection is checked with a PING (a connection
/// that died without closing would otherwise wait forever).
const SUBSCRIBER_PING: Duration = Duration::from_secs(5);
/// Reconnect back-off of the subscriber: from the first to the last.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Why the bus could not carry a message.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer in time")]
    Timeout,
    #[error("encoding a bus message: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Bus {
    /// Publish a message; an error means it may not have reached other instances.
    pub async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        match self {
            Bus::Local(hub) => {
                hub.deliver(message);
                Ok(())
            }
            Bus::Redis(redis) => {
                if let BusMessage::Events { .. } = &message {
                    // This instance's subscriptions get the relay's rows at
                    // once; the copy Redis brings back is then known here
                    // and not read again. Published again after a failure,
                    // the batch is not handed over twice.
                    redis.local.deliver(message.clone());
                }
                match redis.publish(&message).await {
                    Ok(()) => Ok(()),
                    Err(error) => {
                        redis.revoke_locally(message);
                        Err(error)
                    }
                }
            }
        }
    }

    /// True when the bus can carry messages now (readiness).
    pub async fn ping(&self) -> Result<(), BusError> {
        match self {
            Bus::Local(_) => Ok(()),
            Bus::Redis(redis) => redis.ping().await,
        }
    }

    /// Whether this instance receives what the bus carries: always in
    /// process; with Redis, while its subscriber is subscribed.
    pub fn subscribed(&self) -> bool {
        match self {
            Bus::Local(_) => true,
            Bus::Redis(redis) => redis.shared.subscribed.load(Ordering::Relaxed),
        }
    }
}

impl RedisBus {
    pub fn new(url: &str, channel: &str, local: Hub) -> Result<Self, BusError> {
        let client = redis::Client::open(url)?;
        Ok(RedisBus {
            client,
            channel: channel.to_owned(),
            conn: Default::default(),
            local,
            shared: Default::default(),
        })
    }

    /// Redis did not take `message`: a sign-out still reaches this
    /// instance's own subscriptions now (the others get it through their
    /// resync, which re-checks the session).
    fn revoke_locally(&self, message: BusMessage) {
        if !matches!(message, BusMessage::Events { .. }) {
            self.local.deliver(message);
        }
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, BusError> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn forget_connection(&self) {
        *self.conn.lock().await = None;
    }

    async fn publish(&self, message: &BusMessage) -> Result<(), BusError> {
        let payload = serde_json::to_string(message)?;
        let mut conn = self.connection().await?;
        let result: redis::RedisResult<i64> = conn.publish(&self.channel, payload).await;
        if let Err(error) = result {
            self.forget_connection().await;
            return Err(error.into());
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        let mut conn = self.connection().await?;
        let result: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        if let Err(error) = result {
            self.forget_connection().await;
            return Err(error.into());
        }
        Ok(())
    }

    /// The process's one Redis subscriber: forwards every message to `hub`,
    /// reconnecting with capped exponential back-off. After each (re)connect
    /// the hub's subscribers resync from the database, since messages
    /// published while we were away are lost to pub/sub.
    pub async fn run_subscriber(self, hub: Hub) {
        let mut backoff = RECONNECT_MIN;
        loop {
            match self.subscribe().await {
                Ok((sink, messages)) => {
                    tracing::info!("event bus: subscribed to Redis");
                    backoff = RECONNECT_MIN;
                    self.shared.subscribed.store(true, Ordering::Relaxed);
                    hub.resync_all();
                    let why = Self::forward(sink, messages, &hub).await;
                    self.shared.subscribed.store(false, Ordering::Relaxed);
                    tracing::warn!(why, "event bus: Redis subscription lost, reconnecting");
                }
                Err(error) => tracing::warn!(%error, "event bus: cannot subscribe to Redis"),
            }
            // Up to 50% jitter, so instances do not reconnect in lockstep.
            let jitter = backoff.mul_f64(rand::random::<f64>() / 2.0);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    async fn subscribe(
        &self,
    ) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), BusError> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub.split())
        };
        match tokio::time::timeout(REDIS_TIMEOUT * 2, connect).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(BusError::Timeout),
        }
    }

    /// Hand messages to `hub` until the connection fails; says why it stopped.
    async fn forward(
        mut sink: redis::aio::PubSubSink,
        mut messages: redis::aio::PubSubStream,
        hub: &Hub,
    ) -> &'static str {
        let mut ping = tokio::time::interval(SUBSCRIBER_PING);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return "connection closed" };
                    let payload: String = match message.get_payload() {
                        Ok(payload) => payload,
                        Err(error) => {
                            tracing::warn!(%error, "event bus: unreadable message");
                            continue;
                        }
                    };
                    match serde_json::from_str::<BusMessage>(&payload) {
                        Ok(message) => hub.receive(message),
                        Err(error) => tracing::warn!(%error, "event bus: bad message"),
                    }
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        return "no answer to PING";
                    }
                }
            }
        }
    }
}
