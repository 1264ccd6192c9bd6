//! Outbound webhook endpoints, managed by administrators, and their delivery
//! log. Each change is an event of the audit log (never with a secret).
//! Sending is `crate::webhooks::worker`'s; the queue is filled by
//! `events::record`.
use entity::{
    webhook_delivery::{self, DeliveryStatus},
    webhook_endpoint,
};
use sea_orm::{
    ActiveEnum, ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait,
    FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, Statement,
};
use serde_json::json;

use super::Ctx;
use crate::{
    auth::Viewer,
    error::{ApiResult, AppError},
    events::{self, EventKind, NewEvent},
    webhooks::{guard, signature},
};

/// Longest endpoint URL, in bytes (what browsers and most servers accept).
pub const URL_MAX: usize = 2048;
/// Longest description, in characters.
pub const DESCRIPTION_MAX: usize = 500;
/// Endpoints at most: each event costs one delivery row per endpoint that
/// wants it, in the event's own transaction.
pub const ENDPOINTS_MAX: u64 = 100;
/// How long the secret before a rotation still signs deliveries.
pub const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);

/// A new endpoint as the administrator wrote it.
pub struct NewEndpoint {
    pub url: String,
    /// Empty: every kind.
    pub event_kinds: Vec<EventKind>,
    pub description: Option<String>,
}

/// A change to an endpoint; `None` keeps the current value.
#[derive(Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub event_kinds: Option<Vec<EventKind>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// `raw`, if it is an http(s) URL of at most [`URL_MAX`] bytes, without
/// credentials, whose host resolves to public addresses only (unless
/// `allow_private`). `VALIDATION` on `url` otherwise.
pub async fn check_url(raw: &str, allow_private: bool) -> ApiResult<String> {
    let invalid = |message: &str| AppError::validation("url", message.to_owned());
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > URL_MAX {
        return Err(invalid("a URL is 1 to 2048 characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| invalid("not a URL"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid("an endpoint URL is https:// or http://"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("an endpoint URL carries no credentials"));
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err(invalid("an endpoint URL names a host"));
    };
    guard::resolve(host, port, allow_private)
        .await
        .map_err(|refused| invalid(&refused.to_string()))?;
    Ok(url.to_string())
}

fn check_description(raw: Option<&str>) -> ApiResult<String> {
    let description = raw.unwrap_or_default().trim();
    if description.chars().count() > DESCRIPTION_MAX {
        return Err(AppError::validation(
            "description",
            format!("a description is at most {DESCRIPTION_MAX} characters"),
        ));
    }
    Ok(description.to_owned())
}

/// The stored form of `kinds`: `,A,B,` (sorted, once each), `""` for all.
fn kinds_column(kinds: &[EventKind]) -> String {
    let mut names: Vec<String> = kinds.iter().map(|k| k.to_value()).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        String::new()
    } else {
        format!(",{},", names.join(","))
    }
}

/// The kinds an endpoint receives (empty: all).
pub fn event_kinds(endpoint: &webhook_endpoint::Model) -> Vec<EventKind> {
    endpoint
        .event_kinds
        .split(',')
        .filter(|name| !name.is_empty())
        .filter_map(|name| EventKind::try_from_value(&name.to_owned()).ok())
        .collect()
}

/// The endpoint as recorded in the audit trail (no secret).
fn audit_json(endpoint: &webhook_endpoint::Model) -> serde_json::Value {
    json!({
        "url": endpoint.url,
        "description": endpoint.description,
        "eventKinds": event_kinds(endpoint).iter().map(|k| k.to_value()).collect::<Vec<_>>(),
        "enabled": endpoint.enabled,
    })
}

async fn audit(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    now: chrono::DateTime<chrono::Utc>,
    kind: EventKind,
    endpoint_id: i64,
    changes: serde_json::Value,
) -> ApiResult<()> {
    let mut event = NewEvent::new(kind, Some(viewer.account_id));
    let mut changes = changes;
    changes["endpointId"] = json!(endpoint_id.to_string());
    event.changes = changes;
    event.recipients = vec![viewer.account_id];
    events::record(conn, now, event).await?;
    Ok(())
}

/// Administrators: register an endpoint. Returns it with its secret, which
/// is shown this once.
pub async fn create(
    ctx: &Ctx,
    viewer: &Viewer,
    new: NewEndpoint,
    allow_private: bool,
) -> ApiResult<(webhook_endpoint::Model, String)> {
    viewer.require_admin()?;
    let description = check_description(new.description.as_deref())?;
    let url = check_url(&new.url, allow_private).await?;
    let secret = signature::new_secret();
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    if webhook_endpoint::Entity::find().count(&txn).await? >= ENDPOINTS_MAX {
        return Err(AppError::conflict(format!(
            "at most {ENDPOINTS_MAX} webhook endpoints: delete one first"
        )));
    }
    let created = webhook_endpoint::ActiveModel {
        url: Set(url),
        description: Set(description),
        event_kinds: Set(kinds_column(&new.event_kinds)),
        enabled: Set(true),
        secret: Set(secret.clone()),
        previous_secret: Set(None),
        previous_secret_until: Set(None),
        failing_since: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    audit(
        &txn,
        viewer,
        now,
        EventKind::WebhookEndpointCreated,
        created.id,
        json!({"after": audit_json(&created)}),
    )
    .await?;
    txn.commit().await?;
    Ok((created, secret))
}

async fn find_locked(conn: &impl ConnectionTrait, id: i64) -> ApiResult<webhook_endpoint::Model> {
    use sea_orm::QuerySelect;
    let mut query = webhook_endpoint::Entity::find_by_id(id);
    if conn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        query = query.lock_exclusive();
    }
    query
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("webhook endpoint"))
}

/// Administrators: change an endpoint's URL, kinds, description or state.
/// Enabling it again forgets its failures.
pub async fn update(
    ctx: &Ctx,
    viewer: &Viewer,
    id: i64,
    change: EndpointChange,
    allow_private: bool,
) -> ApiResult<webhook_endpoint::Model> {
    viewer.require_admin()?;
    let description = change
        .description
        .as_deref()
        .map(|d| check_description(Some(d)))
        .transpose()?;
    let url = match change.url.as_deref() {
        Some(url) => Some(check_url(url, allow_private).await?),
        None => None,
    };
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let before = find_locked(&txn, id).await?;
    let mut changed: webhook_endpoint::ActiveModel = before.clone().into();
    if let Some(url) = url {
        changed.url = Set(url);
    }
    if let Some(description) = description {
        changed.description = Set(description);
    }
    if let Some(kinds) = &change.event_kinds {
        changed.event_kinds = Set(kinds_column(kinds));
    }
    if let Some(enabled) = change.enabled {
        changed.enabled = Set(enabled);
        if enabled && !before.enabled {
            changed.failing_since = Set(None);
        }
    }
    changed.updated_at = Set(now);
    let after = changed.update(&txn).await?;
    if audit_json(&before) != audit_json(&after) {
        audit(
            &txn,
            viewer,
            now,
            EventKind::WebhookEndpointUpdated,
            id,
            json!({"before": audit_json(&before), "after": audit_json(&after)}),
        )
        .await?;
    }
    txn.commit().await?;
    Ok(after)
}

/// Administrators: remove an endpoint and its delivery log.
pub async fn delete(ctx: &Ctx, viewer: &Viewer, id: i64) -> ApiResult<()> {
    viewer.require_admin()?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let before = find_locked(&txn, id).await?;
    // Explicitly: SQLite enforces the cascade only with foreign keys on.
    webhook_delivery::Entity::delete_many()
        .filter(webhook_delivery::Column::EndpointId.eq(id))
        .exec(&txn)
        .await?;
    webhook_endpoint::Entity::delete_by_id(id)
        .exec(&txn)
        .await?;
    audit(
        &txn,
        viewer,
        now,
        EventKind::WebhookEndpointDeleted,
        id,
        json!({"before": audit_json(&before)}),
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// Administrators: give an endpoint a new secret (shown this once). The
/// current one keeps signing, as a second signature, for 24 hours (an
/// earlier previous secret stops at once).
pub async fn rotate_secret(ctx: &Ctx, viewer: &Viewer, id: i64) -> ApiResult<String> {
    viewer.require_admin()?;
    let now = ctx.clock.now();
    let secret = signature::new_secret();
    let txn = ctx.begin_write().await?;
    let before = find_locked(&txn, id).await?;
    let mut changed: webhook_endpoint::ActiveModel = before.clone().into();
    changed.previous_secret = Set(Some(before.secret));
    changed.previous_secret_until = Set(Some(now + ROTATION_OVERLAP));
    changed.secret = Set(secret.clone());
    changed.updated_at = Set(now);
    changed.update(&txn).await?;
    audit(
        &txn,
        viewer,
        now,
        EventKind::WebhookSecretRotated,
        id,
        json!({"previousValidUntil": now + ROTATION_OVERLAP}),
    )
    .await?;
    txn.commit().await?;
    Ok(secret)
}

/// A delivery with its event's cursor (its `webhook-id`).
#[derive(Debug, Clone, FromQueryResult)]
pub struct Delivery {
    pub id: i64,
    pub endpoint_id: i64,
    pub event_tx: i64,
    pub event_id: i64,
    pub status: DeliveryStatus,
    pub attempt: i32,
    pub next_attempt_at: chrono::DateTime<chrono::Utc>,
    pub response_status: Option<i32>,
    pub response_excerpt: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, e.tx AS event_tx, d.event_id, d.status, \
     d.attempt, d.next_attempt_at, d.response_status, d.response_excerpt, d.created_at";

/// Administrators: send an event to an endpoint again, as a new delivery
/// with the same `webhook-id`, after the deliveries already queued.
pub async fn redeliver(ctx: &Ctx, viewer: &Viewer, delivery_id: i64) -> ApiResult<Delivery> {
    viewer.require_admin()?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let original = webhook_delivery::Entity::find_by_id(delivery_id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("webhook delivery"))?;
    // `tx` keeps its default: on PostgreSQL this transaction, which puts the
    // delivery after every one queued before.
    let created = webhook_delivery::ActiveModel {
        endpoint_id: Set(original.endpoint_id),
        event_id: Set(original.event_id),
        status: Set(DeliveryStatus::Pending),
        attempt: Set(0),
        next_attempt_at: Set(now),
        leased_until: Set(None),
        response_status: Set(None),
        response_excerpt: Set(None),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    let delivery = deliveries_where(&txn, &format!("d.id = {}", created.id), 1)
        .await?
        .pop()
        .ok_or_else(|| AppError::internal("the new delivery is not there"))?;
    txn.commit().await?;
    Ok(delivery)
}

async fn deliveries_where(
    conn: &impl ConnectionTrait,
    condition: &str,
    limit: u64,
) -> ApiResult<Vec<Delivery>> {
    Ok(Delivery::find_by_statement(Statement::from_string(
        conn.get_database_backend(),
        format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             JOIN events e ON e.id = d.event_id WHERE {condition} \
             ORDER BY d.id DESC LIMIT {limit}"
        ),
    ))
    .all(conn)
    .await?)
}

/// Every endpoint, oldest first (at most [`ENDPOINTS_MAX`]).
pub async fn list(conn: &impl ConnectionTrait) -> ApiResult<Vec<webhook_endpoint::Model>> {
    Ok(webhook_endpoint::Entity::find()
        .order_by_asc(webhook_endpoint::Column::Id)
        .all(conn)
        .await?)
}

/// Up to `limit` deliveries of `endpoint_id`, newest first, before the
/// delivery id `after`.
pub async fn deliveries(
    conn: &impl ConnectionTrait,
    endpoint_id: i64,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<Delivery>> {
    // Integers only: written inline.
    let mut condition = format!("d.endpoint_id = {endpoint_id}");
    if let Some(after) = after {
        condition.push_str(&format!(" AND d.id < {after}"));
    }
    deliveries_where(conn, &condition, limit).await
}
