//! Live events. A change writes its event rows in its own transaction
//! ([`record`], the outbox); the [`relay`] publishes committed events in
//! [`cursor`] order on the [`bus`] (in-process, or Redis for many instances);
//! each instance's [`hub`] hands them to the accounts' subscriptions.
pub mod bus;
pub mod cursor;
pub mod hub;
pub mod relay;
pub mod stream;

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use entity::{event, event_recipient};
use sea_orm::{
    ActiveEnum, ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, QuerySelect, Statement,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};

use crate::error::ApiResult;

pub use entity::event::EventKind;

/// An event to write with the change it describes.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    /// Who caused it; `None` for the system.
    pub actor_id: Option<i64>,
    pub order_id: Option<i64>,
    pub license_id: Option<i64>,
    pub claim_id: Option<i64>,
    pub request_id: Option<i64>,
    pub transfer_id: Option<i64>,
    /// `{"before": …, "after": …}` of what changed.
    pub changes: serde_json::Value,
    /// Accounts that receive it live (duplicates are ignored).
    pub recipients: Vec<i64>,
}

impl NewEvent {
    pub fn new(kind: EventKind, actor_id: Option<i64>) -> Self {
        NewEvent {
            kind,
            actor_id,
            order_id: None,
            license_id: None,
            claim_id: None,
            request_id: None,
            transfer_id: None,
            changes: serde_json::Value::Null,
            recipients: Vec::new(),
        }
    }
}

/// Write `new` (and its recipients) in the caller's transaction: it exists,
/// and will be delivered, exactly when that transaction commits. On
/// PostgreSQL the event and its recipients are one statement (every mutation
/// records at least one event, so this is on every write path).
pub async fn record(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    mut new: NewEvent,
) -> ApiResult<event::Model> {
    let mut recipients = std::mem::take(&mut new.recipients);
    recipients.sort_unstable();
    recipients.dedup();
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        return record_postgres(conn, now, new, &recipients).await;
    }
    // `tx` keeps its default, 0: SQLite orders events by id alone.
    let row = event::ActiveModel {
        kind: Set(new.kind),
        actor_id: Set(new.actor_id),
        order_id: Set(new.order_id),
        license_id: Set(new.license_id),
        claim_id: Set(new.claim_id),
        request_id: Set(new.request_id),
        transfer_id: Set(new.transfer_id),
        changes: Set(new.changes.to_string()),
        occurred_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    queue_webhooks_sqlite(conn, &row).await?;
    if !recipients.is_empty() {
        event_recipient::Entity::insert_many(recipients.into_iter().map(|account_id| {
            event_recipient::ActiveModel {
                account_id: Set(account_id),
                event_id: Set(row.id),
            }
        }))
        .exec(conn)
        .await?;
    }
    Ok(row)
}

/// [`record`] on PostgreSQL: the recipients' INSERT rides in a data-modifying
/// `WITH` on the event's, which returns the event row. `tx` is the column's
/// default, the writing transaction's id.
async fn record_postgres(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    new: NewEvent,
    recipients: &[i64],
) -> ApiResult<event::Model> {
    let mut values: Vec<sea_orm::Value> = vec![
        new.kind.to_value().into(),
        new.actor_id.into(),
        new.order_id.into(),
        new.license_id.into(),
        new.claim_id.into(),
        new.request_id.into(),
        new.transfer_id.into(),
        new.changes.to_string().into(),
        now.into(),
    ];
    let mut sql = String::from(
        "WITH e AS (INSERT INTO events (kind, actor_id, order_id, license_id, \
         claim_id, request_id, transfer_id, changes, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *)",
    );
    if !recipients.is_empty() {
        // One parameter, the ids as text: the statement's text is the same
        // for any number of recipients (a list of parameters made a new
        // statement to parse and plan for each count, 1,000 parameters
        // for an organization's 1,000 admins).
        let ids: Vec<String> = recipients.iter().map(i64::to_string).collect();
        values.push(ids.join(",").into());
        sql.push_str(&format!(
            ", r AS (INSERT INTO event_recipients (account_id, event_id) \
             SELECT t.account_id, e.id FROM e, \
             unnest(string_to_array(${}, ',')::bigint[]) AS t(account_id))",
            values.len()
        ));
    }
    // The webhook outbox (see [`queue_webhooks_sqlite`]).
    sql.push_str(
        ", w AS (INSERT INTO webhook_deliveries (tx, endpoint_id, event_id, status, attempt, \
         next_attempt_at, created_at) \
         SELECT e.tx, p.id, e.id, 'PENDING', 0, $9, $9 FROM e, webhook_endpoints p \
         WHERE p.enabled AND (p.event_kinds = '' OR strpos(p.event_kinds, ',' || e.kind || ',') > 0))",
    );
    sql.push_str(" SELECT * FROM e");
    event::Model::find_by_statement(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        sql,
        values,
    ))
    .one(conn)
    .await?
    .ok_or_else(|| crate::error::AppError::internal("INSERT … RETURNING gave no event row"))
}

/// The webhook outbox: one `webhook_deliveries` row per enabled endpoint
/// that asked for `event`'s kind, in the event's transaction, so a delivery
/// exists exactly when its event does. One `INSERT … SELECT` over the
/// endpoints (at most 100): no cache to keep in step between instances,
/// and on PostgreSQL it rides in the event's own statement.
async fn queue_webhooks_sqlite(conn: &impl ConnectionTrait, event: &event::Model) -> ApiResult<()> {
    conn.execute_raw(Statement::from_sql_and_values(
        conn.get_database_backend(),
        "INSERT INTO webhook_deliveries (tx, endpoint_id, event_id, status, attempt, \
         next_attempt_at, created_at) \
         SELECT ?, p.id, ?, 'PENDING', 0, ?, ? FROM webhook_endpoints p \
         WHERE p.enabled AND (p.event_kinds = '' OR instr(p.event_kinds, ?) > 0)",
        [
            event.tx.into(),
            event.id.into(),
            event.occurred_at.into(),
            event.occurred_at.into(),
            format!(",{},", event.kind.to_value()).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// An event as published on the bus and delivered to subscribers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveEvent {
    /// The writing transaction: with `id`, the delivery order ([`cursor`]).
    pub tx: i64,
    pub id: i64,
    pub kind: EventKind,
    pub actor_id: Option<i64>,
    pub order_id: Option<i64>,
    pub license_id: Option<i64>,
    pub claim_id: Option<i64>,
    pub request_id: Option<i64>,
    pub transfer_id: Option<i64>,
    pub changes: String,
    pub occurred_at: DateTime<Utc>,
    pub recipients: Vec<i64>,
}

impl LiveEvent {
    pub fn from_row(row: event::Model, recipients: Vec<i64>) -> Self {
        LiveEvent {
            tx: row.tx,
            id: row.id,
            kind: row.kind,
            actor_id: row.actor_id,
            order_id: row.order_id,
            license_id: row.license_id,
            claim_id: row.claim_id,
            request_id: row.request_id,
            transfer_id: row.transfer_id,
            changes: row.changes,
            occurred_at: row.occurred_at,
            recipients,
        }
    }

    /// A copy for one subscriber, who needs not know who else received it.
    pub fn without_recipients(&self) -> Self {
        LiveEvent {
            changes: self.changes.clone(),
            recipients: Vec::new(),
            ..*self
        }
    }

    /// Its place in the delivery order, and a subscriber's cursor.
    pub fn cursor(&self) -> cursor::Cursor {
        cursor::Cursor {
            tx: self.tx,
            id: self.id,
        }
    }
}

/// `rows` as live events, each with its recipients (sorted): one statement
/// for all of them.
pub async fn with_recipients(
    conn: &impl ConnectionTrait,
    rows: Vec<event::Model>,
) -> Result<Vec<LiveEvent>, DbErr> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut recipients: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in event_recipient::Entity::find()
        .filter(event_recipient::Column::EventId.is_in(ids))
        .all(conn)
        .await?
    {
        recipients.entry(r.event_id).or_default().push(r.account_id);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut to = recipients.remove(&row.id).unwrap_or_default();
            to.sort_unstable();
            LiveEvent::from_row(row, to)
        })
        .collect())
}

/// Every deliverable event in `(from, to]`, in delivery order, with its
/// recipients: at most `limit`, the first ones.
pub async fn read_range(
    conn: &impl ConnectionTrait,
    from: cursor::Cursor,
    to: cursor::Cursor,
    limit: u64,
) -> Result<Vec<LiveEvent>, DbErr> {
    let rows = cursor::deliverable_after(event::Entity::find(), from, conn.get_database_backend())
        .filter(
            Expr::tuple([Expr::col(event::Column::Tx), Expr::col(event::Column::Id)])
                .lte(Expr::tuple([to.tx.into(), to.id.into()])),
        )
        .limit(limit)
        .all(conn)
        .await?;
    with_recipients(conn, rows).await
}
