//! Carries relay batches to every instance's hub: directly in-process without
//! `REDIS_URL`, through one Redis pub/sub channel with it.
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio::sync::Mutex;

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
    conn: std::sync::Arc<Mutex<Option<redis::aio::MultiplexedConnection>>>,
}

impl Bus {
    /// Publish a message; an error means it may not have reached other instances.
    pub async fn publish(&self, message: BusMessage) -> Result<(), String> {
        match self {
            Bus::Local(hub) => {
                hub.dispatch(message);
                Ok(())
            }
            Bus::Redis(redis) => redis.publish(&message).await,
        }
    }

    /// True when the bus can carry messages now (readiness).
    pub async fn ping(&self) -> Result<(), String> {
        match self {
            Bus::Local(_) => Ok(()),
            Bus::Redis(redis) => redis.ping().await,
        }
    }
}

impl RedisBus {
    pub fn new(url: &str, channel: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("REDIS_URL: {e}"))?;
        Ok(RedisBus {
            client,
            channel: channel.to_owned(),
            conn: Default::default(),
        })
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let mut guard = self.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            return Ok(conn.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        *guard = Some(conn.clone());
        Ok(conn)
    }

    async fn forget_connection(&self) {
        *self.conn.lock().await = None;
    }

    async fn publish(&self, message: &BusMessage) -> Result<(), String> {
        let payload = serde_json::to_string(message).map_err(|e| e.to_string())?;
        let mut conn = self.connection().await?;
        let result: redis::RedisResult<i64> = conn.publish(&self.channel, payload).await;
        if let Err(error) = result {
            self.forget_connection().await;
            return Err(error.to_string());
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), String> {
        let mut conn = self.connection().await?;
        let result: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        if let Err(error) = result {
            self.forget_connection().await;
            return Err(error.to_string());
        }
        Ok(())
    }

    /// The process's one Redis subscriber: forwards every message to `hub`,
    /// reconnecting with capped exponential back-off. After each (re)connect
    /// the hub's subscribers resync from the database, since messages
    /// published while we were away are lost to pub/sub.
    pub async fn run_subscriber(self, hub: Hub) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(&self.channel).await {
                    Ok(()) => {
                        tracing::info!("event bus: subscribed to Redis");
                        backoff = Duration::from_millis(100);
                        hub.resync_all();
                        let mut messages = pubsub.on_message();
                        while let Some(message) = messages.next().await {
                            let payload: String = match message.get_payload() {
                                Ok(payload) => payload,
                                Err(error) => {
                                    tracing::warn!(%error, "event bus: unreadable message");
                                    continue;
                                }
                            };
                            match serde_json::from_str::<BusMessage>(&payload) {
                                Ok(message) => hub.dispatch(message),
                                Err(error) => tracing::warn!(%error, "event bus: bad message"),
                            }
                        }
                        tracing::warn!("event bus: Redis subscription ended, reconnecting");
                    }
                    Err(error) => tracing::warn!(%error, "event bus: subscribe failed"),
                },
                Err(error) => tracing::warn!(%error, "event bus: cannot reach Redis"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
