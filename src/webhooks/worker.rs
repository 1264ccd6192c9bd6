//! Sends queued webhook deliveries. Each round reads, for every enabled
//! endpoint, the head of its queue (up to [`RUN`] deliveries in event
//! order), leases the due ones with one conditional update (so several
//! instances never send an attempt twice), sends each endpoint's run in a
//! task of its own, one delivery after the other, and records every result
//! of the round in one transaction. An endpoint's next delivery waits until
//! the one before it succeeded or failed for good: a failure ends the run
//! and releases the rest, and the failed delivery stays at the head of the
//! queue until its next attempt.
//!
//! Delivery is at least once: a process killed after sending and before
//! recording sends again when the lease ends, with the same `webhook-id`
//! (the event's cursor), so receivers can recognise the repeat.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use entity::{account, webhook_endpoint};
use futures_util::future::join_all;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, Statement,
};
use serde_json::json;

use super::{EventData, RetrySchedule, body, guard, signature};
use crate::{
    domain::Ctx,
    events::{self, EventKind, NewEvent, cursor},
    mail::{self, Email},
};

/// Deliveries of one endpoint leased in one round, at most.
const RUN: usize = 100;
/// How long leased deliveries are reserved for the instance sending them.
const LEASE: chrono::Duration = chrono::Duration::minutes(2);
/// A run stops starting new deliveries after this long, well inside the lease.
const RUN_BUDGET: Duration = Duration::from_secs(50);
/// One attempt's limit, connection to last byte read.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of an answer (or error) kept in the delivery log.
pub const EXCERPT_MAX: usize = 1024;
/// An endpoint whose attempts all failed for this long is disabled.
pub const DISABLE_AFTER: chrono::Duration = chrono::Duration::days(5);
/// How long a woken worker waits before reading the queue, gathering the
/// commits of a burst into one round.
const WAKE_COALESCE: Duration = Duration::from_millis(5);
/// Result rows per `UPDATE` statement.
const RESULT_CHUNK: usize = 500;

pub struct WebhookWorker {
    /// Database, clock; its `Write`s disable failing endpoints.
    pub ctx: Ctx,
    pub schedule: RetrySchedule,
    pub allow_private: bool,
    /// The longest sleep between two looks at the queue.
    pub interval: Duration,
}

/// Why the worker cannot start.
#[derive(Debug, thiserror::Error)]
#[error("webhook client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

/// The HTTP client of deliveries: rustls (ring), 10 s per attempt, no
/// redirects (a 3xx is a failed attempt: following one would leave the
/// checked address), and the [`guard::GuardedResolver`].
pub fn client(allow_private: bool) -> Result<reqwest::Client, ClientError> {
    // reqwest is built without a crypto provider: use ring, which lettre
    // already brings. Another part of the process may have installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(guard::GuardedResolver { allow_private }))
        .user_agent(concat!("keyledger-webhooks/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(4)
        .build()?)
}

/// An enabled endpoint as a round sends to it.
struct Endpoint {
    id: i64,
    url: String,
    /// The current secret's key, then the previous one while it is valid.
    keys: Vec<Vec<u8>>,
    failing_since: Option<DateTime<Utc>>,
}

#[derive(Debug, FromQueryResult)]
struct QueuedRow {
    id: i64,
    tx: i64,
    endpoint_id: i64,
    attempt: i32,
    next_attempt_at: DateTime<Utc>,
    leased_until: Option<DateTime<Utc>>,
    event_tx: i64,
    event_id: i64,
    kind: EventKind,
    occurred_at: DateTime<Utc>,
    actor_id: Option<i64>,
    order_id: Option<i64>,
    license_id: Option<i64>,
    claim_id: Option<i64>,
    request_id: Option<i64>,
    transfer_id: Option<i64>,
    changes: String,
}

impl QueuedRow {
    fn due(&self, now: DateTime<Utc>) -> bool {
        self.next_attempt_at <= now && self.leased_until.is_none_or(|until| until <= now)
    }

    fn event(&self) -> EventData {
        EventData {
            kind: self.kind,
            occurred_at: self.occurred_at,
            actor_id: self.actor_id,
            order_id: self.order_id,
            license_id: self.license_id,
            claim_id: self.claim_id,
            request_id: self.request_id,
            transfer_id: self.transfer_id,
            changes: self.changes.clone(),
        }
    }
}

/// What happened to one leased delivery in a round.
#[derive(Debug)]
enum Outcome {
    /// Attempted: `ok` for a 2xx answer.
    Attempted {
        id: i64,
        endpoint_id: i64,
        attempt: i32,
        ok: bool,
        status: Option<i32>,
        excerpt: String,
    },
    /// Not attempted this round (an earlier one of its endpoint failed).
    Released { id: i64 },
}

enum Round {
    /// Something was sent: look again at once.
    Busy,
    /// Nothing due: sleep at most this long.
    Idle(Duration),
    /// No enabled endpoint.
    NoEndpoints,
}

impl WebhookWorker {
    pub async fn run(self, client: reqwest::Client) {
        loop {
            let wait = match self.round(&client).await {
                Ok(Round::Busy) => continue,
                // No endpoint, so no delivery can be queued: commits need
                // not wake the worker (a new endpoint is seen within the
                // interval), and most deployments pay one read per interval.
                Ok(Round::NoEndpoints) => {
                    tokio::time::sleep(self.interval).await;
                    continue;
                }
                Ok(Round::Idle(wait)) => wait.min(self.interval),
                Err(error) => {
                    tracing::warn!(%error, "webhooks: could not read or record deliveries");
                    self.interval
                }
            };
            tokio::select! {
                _ = self.ctx.wake.webhooks.notified() => tokio::time::sleep(WAKE_COALESCE).await,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round: lease what is due, send it, record the results.
    async fn round(&self, client: &reqwest::Client) -> Result<Round, DbErr> {
        let db = &self.ctx.db;
        let now = self.ctx.clock.now();
        let endpoints = self.endpoints(now).await?;
        if endpoints.is_empty() {
            return Ok(Round::NoEndpoints);
        }
        let horizon = cursor::horizon(db).await?;
        let queued = self.queued(&endpoints, horizon).await?;
        let mut wait = self.interval;
        let mut runs: HashMap<i64, Vec<QueuedRow>> = HashMap::new();
        let mut closed = HashSet::new();
        // Each endpoint's run is the due prefix of its queue: nothing when
        // the head waits for its next attempt or is leased elsewhere.
        for row in queued {
            if closed.contains(&row.endpoint_id) {
                continue;
            }
            if row.due(now) {
                runs.entry(row.endpoint_id).or_default().push(row);
                continue;
            }
            if !runs.contains_key(&row.endpoint_id) {
                let at = row
                    .leased_until
                    .map_or(row.next_attempt_at, |until| until.max(row.next_attempt_at));
                let until = (at - now).to_std().unwrap_or_default();
                wait = wait.min(until.max(Duration::from_millis(10)));
            }
            closed.insert(row.endpoint_id);
        }
        if runs.is_empty() {
            return Ok(Round::Idle(wait));
        }
        let ids: Vec<i64> = runs.values().flatten().map(|row| row.id).collect();
        let leased = self.lease(&ids, now).await?;
        let mut tasks = Vec::new();
        let mut released = Vec::new();
        for (endpoint_id, run) in runs {
            let Some(endpoint) = endpoints.get(&endpoint_id) else {
                continue;
            };
            // Only the leased prefix goes out: another instance took the rest.
            let mut mine = Vec::new();
            let mut gap = false;
            for row in run {
                if !leased.contains(&row.id) {
                    gap = true;
                } else if gap {
                    released.push(Outcome::Released { id: row.id });
                } else {
                    mine.push(row);
                }
            }
            if mine.is_empty() {
                continue;
            }
            let sender = Sender {
                client: client.clone(),
                url: endpoint.url.clone(),
                keys: endpoint.keys.clone(),
                allow_private: self.allow_private,
                clock: self.ctx.clock.clone(),
            };
            tasks.push(tokio::spawn(sender.send_run(endpoint_id, mine)));
        }
        let mut outcomes = released;
        for result in join_all(tasks).await {
            match result {
                Ok(run) => outcomes.extend(run),
                Err(error) => tracing::error!(%error, "webhooks: a delivery task failed"),
            }
        }
        let failing = self.record(&outcomes, self.ctx.clock.now()).await?;
        let long_failing: Vec<i64> = failing
            .into_iter()
            .filter(|id| {
                endpoints
                    .get(id)
                    .and_then(|e| e.failing_since)
                    .is_some_and(|since| since + DISABLE_AFTER <= now)
            })
            .collect();
        if !long_failing.is_empty()
            && let Err(error) = self.disable(&long_failing).await
        {
            tracing::warn!(error = %error.detail(), "webhooks: could not disable failing endpoints");
        }
        Ok(Round::Busy)
    }

    /// The enabled endpoints, with the keys that sign for them now.
    async fn endpoints(&self, now: DateTime<Utc>) -> Result<HashMap<i64, Endpoint>, DbErr> {
        let rows = webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::Enabled.eq(true))
            .all(&self.ctx.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut keys: Vec<Vec<u8>> = signature::key(&row.secret).into_iter().collect();
                if row.previous_secret_until.is_some_and(|until| until > now)
                    && let Some(key) = row.previous_secret.as_deref().and_then(signature::key)
                {
                    keys.push(key);
                }
                let endpoint = Endpoint {
                    id: row.id,
                    url: row.url,
                    keys,
                    failing_since: row.failing_since,
                };
                (endpoint.id, endpoint)
            })
            .collect())
    }

    /// The first [`RUN`] pending deliveries of each endpoint, in order (on
    /// PostgreSQL only those below the horizon: every delivery that could
    /// come before them has committed). One statement: a `UNION ALL` of one
    /// index range per endpoint.
    async fn queued(
        &self,
        endpoints: &HashMap<i64, Endpoint>,
        horizon: Option<i64>,
    ) -> Result<Vec<QueuedRow>, DbErr> {
        let below = horizon
            .map(|h| format!(" AND d.tx < {h}"))
            .unwrap_or_default();
        // Ids and the horizon are integers from the database: written inline.
        let branches: Vec<String> = endpoints
            .keys()
            .map(|id| {
                format!(
                    "SELECT * FROM (SELECT d.id, d.tx, d.endpoint_id, d.attempt, d.next_attempt_at, \
                     d.leased_until, e.tx AS event_tx, e.id AS event_id, e.kind, e.occurred_at, \
                     e.actor_id, e.order_id, e.license_id, e.claim_id, e.request_id, \
                     e.transfer_id, e.changes \
                     FROM webhook_deliveries d JOIN events e ON e.id = d.event_id \
                     WHERE d.endpoint_id = {id} AND d.status = 'PENDING'{below} \
                     ORDER BY d.tx, d.id LIMIT {RUN}) AS q{id}"
                )
            })
            .collect();
        let db = &self.ctx.db;
        let mut rows = QueuedRow::find_by_statement(Statement::from_string(
            db.get_database_backend(),
            branches.join(" UNION ALL "),
        ))
        .all(db)
        .await?;
        rows.sort_unstable_by_key(|row| (row.endpoint_id, row.tx, row.id));
        Ok(rows)
    }

    /// Lease `ids` for this instance; the ids it got (others may have been
    /// leased by another instance since they were read).
    async fn lease(&self, ids: &[i64], now: DateTime<Utc>) -> Result<Vec<i64>, DbErr> {
        let db = &self.ctx.db;
        let backend = db.get_database_backend();
        let list = id_list(ids);
        let (until, at) = placeholders(backend);
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "UPDATE webhook_deliveries SET leased_until = {until} \
                     WHERE id IN ({list}) AND status = 'PENDING' \
                     AND (leased_until IS NULL OR leased_until <= {at}) RETURNING id"
                ),
                [(now + LEASE).into(), now.into()],
            ))
            .await?;
        rows.iter()
            .map(|row| row.try_get::<i64>("", "id"))
            .collect()
    }

    /// Write a round's results in one transaction; the endpoints that had
    /// a failed attempt.
    async fn record(&self, outcomes: &[Outcome], now: DateTime<Utc>) -> Result<Vec<i64>, DbErr> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let db = &self.ctx.db;
        let backend = db.get_database_backend();
        let mut released = Vec::new();
        let mut rows = Vec::new();
        // Per endpoint, whether its last attempt of the round succeeded.
        let mut last: HashMap<i64, bool> = HashMap::new();
        for outcome in outcomes {
            match outcome {
                Outcome::Released { id } => released.push(*id),
                Outcome::Attempted {
                    id,
                    endpoint_id,
                    attempt,
                    ok,
                    status,
                    excerpt,
                } => {
                    let (state, next) = if *ok {
                        ("SUCCEEDED", now)
                    } else {
                        match self.schedule.delay_after(*attempt) {
                            Some(delay) => (
                                "PENDING",
                                now + chrono::Duration::from_std(delay).unwrap_or_default(),
                            ),
                            None => ("FAILED", now),
                        }
                    };
                    rows.push((*id, state, *attempt, next, *status, excerpt.as_str()));
                    let entry = last.entry(*endpoint_id).or_insert(*ok);
                    *entry = *ok;
                }
            }
        }
        let txn = crate::db::begin_write(db).await?;
        for chunk in rows.chunks(RESULT_CHUNK) {
            let mut values = Vec::with_capacity(chunk.len() * 6);
            let mut tuples = Vec::with_capacity(chunk.len());
            for (id, state, attempt, next, status, excerpt) in chunk {
                let n = values.len();
                tuples.push(match backend {
                    DatabaseBackend::Postgres => format!(
                        "(${}::bigint, ${}::text, ${}::int, ${}::timestamptz, ${}::int, ${}::text)",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5,
                        n + 6
                    ),
                    _ => "(?, ?, ?, ?, ?, ?)".to_owned(),
                });
                values.extend([
                    sea_orm::Value::from(*id),
                    (*state).into(),
                    (*attempt).into(),
                    (*next).into(),
                    (*status).into(),
                    (*excerpt).into(),
                ]);
            }
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "WITH v(id, status, attempt, next_at, response_status, excerpt) AS \
                     (VALUES {}) \
                     UPDATE webhook_deliveries SET status = v.status, attempt = v.attempt, \
                     next_attempt_at = v.next_at, response_status = v.response_status, \
                     response_excerpt = v.excerpt, leased_until = NULL \
                     FROM v WHERE webhook_deliveries.id = v.id",
                    tuples.join(", ")
                ),
                values,
            ))
            .await?;
        }
        if !released.is_empty() {
            txn.execute_unprepared(&format!(
                "UPDATE webhook_deliveries SET leased_until = NULL WHERE id IN ({})",
                id_list(&released)
            ))
            .await?;
        }
        let (ok, failing): (Vec<_>, Vec<_>) = last.into_iter().partition(|(_, ok)| *ok);
        let ok: Vec<i64> = ok.into_iter().map(|(id, _)| id).collect();
        let failing: Vec<i64> = failing.into_iter().map(|(id, _)| id).collect();
        if !ok.is_empty() {
            txn.execute_unprepared(&format!(
                "UPDATE webhook_endpoints SET failing_since = NULL \
                 WHERE id IN ({}) AND failing_since IS NOT NULL",
                id_list(&ok)
            ))
            .await?;
        }
        if !failing.is_empty() {
            let (since, _) = placeholders(backend);
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "UPDATE webhook_endpoints SET failing_since = {since} \
                     WHERE id IN ({}) AND failing_since IS NULL",
                    id_list(&failing)
                ),
                [now.into()],
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(failing)
    }

    /// Disable endpoints that failed for [`DISABLE_AFTER`], each with an
    /// event for the audit log and an email to every administrator.
    async fn disable(&self, ids: &[i64]) -> crate::error::ApiResult<()> {
        let now = self.ctx.clock.now();
        let txn = self.ctx.begin_write().await?;
        let endpoints = webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::Id.is_in(ids.iter().copied()))
            .filter(webhook_endpoint::Column::Enabled.eq(true))
            .filter(webhook_endpoint::Column::FailingSince.lte(now - DISABLE_AFTER))
            .all(&txn)
            .await?;
        if endpoints.is_empty() {
            return Ok(());
        }
        let admins = account::Entity::find()
            .filter(account::Column::Role.eq(account::AccountRole::Admin))
            .filter(account::Column::EmailVerifiedAt.is_not_null())
            .all(&txn)
            .await?;
        for endpoint in endpoints {
            webhook_endpoint::Entity::update_many()
                .col_expr(webhook_endpoint::Column::Enabled, false.into())
                .col_expr(webhook_endpoint::Column::UpdatedAt, now.into())
                .filter(webhook_endpoint::Column::Id.eq(endpoint.id))
                .exec(&txn)
                .await?;
            let since = endpoint
                .failing_since
                .unwrap_or(now)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string();
            let mut event = NewEvent::new(EventKind::WebhookEndpointUpdated, None);
            event.changes = json!({
                "endpointId": endpoint.id.to_string(),
                "reason": "failing",
                "before": {"enabled": true},
                "after": {"enabled": false},
            });
            event.recipients = admins.iter().map(|a| a.id).collect();
            events::record(&txn, now, event).await?;
            for admin in &admins {
                mail::enqueue(
                    &txn,
                    now,
                    &admin.email,
                    Email::WebhookEndpointDisabled {
                        url: endpoint.url.clone(),
                        failing_since: since.clone(),
                    },
                )
                .await?;
            }
            tracing::warn!(
                endpoint_id = endpoint.id,
                "webhooks: endpoint disabled after 5 days of failures"
            );
        }
        txn.commit().await?;
        Ok(())
    }
}

/// How one endpoint's run is sent.
struct Sender {
    client: reqwest::Client,
    url: String,
    keys: Vec<Vec<u8>>,
    allow_private: bool,
    clock: crate::clock::Clock,
}

impl Sender {
    /// Send `run` in order until one fails; the rest is released.
    async fn send_run(self, endpoint_id: i64, run: Vec<QueuedRow>) -> Vec<Outcome> {
        let started = tokio::time::Instant::now();
        let mut outcomes = Vec::with_capacity(run.len());
        let mut stopped = false;
        for row in run {
            if stopped || started.elapsed() > RUN_BUDGET {
                outcomes.push(Outcome::Released { id: row.id });
                continue;
            }
            let webhook_id = cursor::Cursor {
                tx: row.event_tx,
                id: row.event_id,
            }
            .to_string();
            let (ok, status, excerpt) = self.send(&webhook_id, &body(&row.event())).await;
            stopped = !ok;
            outcomes.push(Outcome::Attempted {
                id: row.id,
                endpoint_id,
                attempt: row.attempt + 1,
                ok,
                status,
                excerpt,
            });
        }
        outcomes
    }

    /// One attempt: whether it succeeded, the HTTP status and an excerpt of
    /// the answer (or of the error).
    async fn send(&self, webhook_id: &str, body: &[u8]) -> (bool, Option<i32>, String) {
        // Names are checked by the client's resolver; literals here.
        if !self.allow_private
            && let Some(ip) = literal_host(&self.url)
            && !guard::is_public(ip)
        {
            return (false, None, guard::Refused::Private(ip).to_string());
        }
        let timestamp = self.clock.now().timestamp();
        let signatures: Vec<String> = self
            .keys
            .iter()
            .map(|key| signature::sign(key, webhook_id, timestamp, body))
            .collect();
        let sent = self
            .client
            .post(&self.url)
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.join(" "))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(mut response) => {
                let status = response.status();
                let mut excerpt = Vec::new();
                while excerpt.len() < EXCERPT_MAX {
                    match response.chunk().await {
                        Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                        Ok(None) => break,
                        Err(error) => {
                            if !status.is_success() {
                                break;
                            }
                            // A 2xx whose body could not be read is still
                            // an answer: the receiver took the event.
                            tracing::debug!(%error, "webhooks: answer body unread");
                            break;
                        }
                    }
                }
                (
                    status.is_success(),
                    Some(i32::from(status.as_u16())),
                    excerpt_of(&excerpt),
                )
            }
            Err(error) => (false, None, excerpt_of(error_chain(&error).as_bytes())),
        }
    }
}

/// The host of `url` when it is an IP address literal.
fn literal_host(url: &str) -> Option<std::net::IpAddr> {
    match url::Url::parse(url).ok()?.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

/// At most [`EXCERPT_MAX`] bytes of `bytes` as text, cut at a character.
pub fn excerpt_of(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_MAX)]);
    let mut end = text.len().min(EXCERPT_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn id_list(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    ids.join(", ")
}

/// Two bind markers, in order, for `backend`.
fn placeholders(backend: DatabaseBackend) -> (&'static str, &'static str) {
    match backend {
        DatabaseBackend::Postgres => ("$1", "$2"),
        _ => ("?", "?"),
    }
}
