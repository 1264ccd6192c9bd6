//! Counters exported on `GET /metrics` (Prometheus text format).
use std::sync::Arc;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    subscribers: Gauge,
    published: Counter,
    delivered: Counter,
    relay_lag_ms: Gauge,
    sql_statements: Counter,
    connections: Gauge,
    connections_shed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keyledger");
        let subscribers = Gauge::default();
        let published = Counter::default();
        let delivered = Counter::default();
        let relay_lag_ms = Gauge::default();
        let sql_statements = Counter::default();
        let connections = Gauge::default();
        let connections_shed = Counter::default();
        registry.register(
            "connections",
            "TCP connections open (HTTP and websockets)",
            connections.clone(),
        );
        registry.register(
            "connections_shed",
            "Connections closed at once because a connection cap was reached",
            connections_shed.clone(),
        );
        registry.register(
            "sql_statements",
            "SQL statements executed",
            sql_statements.clone(),
        );
        registry.register(
            "subscribers",
            "Live event subscriptions connected",
            subscribers.clone(),
        );
        registry.register(
            "events_published",
            "Events published by this instance's relay",
            published.clone(),
        );
        registry.register(
            "events_delivered",
            "Events handed to subscriptions of this instance",
            delivered.clone(),
        );
        registry.register(
            "relay_lag_milliseconds",
            "Age of the oldest event in the relay's last batch when it was published",
            relay_lag_ms.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                subscribers,
                published,
                delivered,
                relay_lag_ms,
                sql_statements,
                connections,
                connections_shed,
            }),
        }
    }
}

/// Counts a connected subscription until dropped.
pub struct ConnectedGuard(Gauge);

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn subscriber_connected(&self) -> ConnectedGuard {
        self.inner.subscribers.inc();
        ConnectedGuard(self.inner.subscribers.clone())
    }

    pub fn events_published(&self, count: u64, lag_ms: i64) {
        self.inner.published.inc_by(count);
        self.inner.relay_lag_ms.set(lag_ms);
    }

    pub fn events_delivered(&self, count: u64) {
        self.inner.delivered.inc_by(count);
    }

    /// Counts an open connection until dropped.
    pub fn connection_opened(&self) -> ConnectedGuard {
        self.inner.connections.inc();
        ConnectedGuard(self.inner.connections.clone())
    }

    pub fn connection_shed(&self) {
        self.inner.connections_shed.inc();
    }

    pub fn sql_statement(&self) {
        self.inner.sql_statements.inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }
}
