//! Devices a key is activated on (product.md "Companies and devices"). A key
//! with active devices cannot change hands until they are deactivated.
use chrono::{DateTime, Utc};
use entity::{activation, license, order};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, Statement, sea_query::Query,
};
use serde_json::json;

use super::{
    Ctx, heartbeats, keys, licenses, rights,
    validity_cache::{Lookup, Validation},
};
use crate::{
    auth::Viewer,
    error::{ActiveDevice, ApiResult, AppError},
    events::{self, EventKind, NewEvent},
};

fn refusal(active: Vec<activation::Model>) -> ApiResult<()> {
    if active.is_empty() {
        return Ok(());
    }
    Err(AppError::DeviceActive {
        devices: active
            .into_iter()
            .map(|a| ActiveDevice {
                fingerprint: a.fingerprint,
                name: a.name,
                activated_at: a.activated_at.to_rfc3339(),
            })
            .collect(),
    })
}

/// `DEVICE_ACTIVE`, naming the devices, when the key is active anywhere.
pub async fn ensure_none_active(conn: &impl ConnectionTrait, license_id: i64) -> ApiResult<()> {
    let active = activation::Entity::find()
        .filter(activation::Column::LicenseId.eq(license_id))
        .order_by_asc(activation::Column::Id)
        .all(conn)
        .await?;
    refusal(active)
}

/// `DEVICE_ACTIVE`, naming the devices, when any key of the order is active anywhere.
pub async fn ensure_none_active_on_order(
    conn: &impl ConnectionTrait,
    order_id: i64,
) -> ApiResult<()> {
    let active = activation::Entity::find()
        .filter(
            activation::Column::LicenseId.in_subquery(
                Query::select()
                    .column(license::Column::Id)
                    .from(license::Entity)
                    .and_where(license::Column::OrderId.eq(order_id))
                    .to_owned(),
            ),
        )
        .order_by_asc(activation::Column::Id)
        .all(conn)
        .await?;
    refusal(active)
}

/// Longest fingerprint or device name accepted.
const MAX_FIELD: usize = 200;

pub(super) fn check_field(value: &str, field: &'static str) -> ApiResult<String> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > MAX_FIELD {
        return Err(AppError::validation(
            field,
            format!("{field} must be 1 to {MAX_FIELD} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// A key, locked for a device change, and its order, locked for share: an
/// order transfer (which locks the order for update, then checks that no key
/// is active) and an activation then never overlap. `NOT_FOUND` for any key
/// that does not exist (unknown and foreign keys answer alike), and for a
/// retired string past its grace.
async fn lock_by_key(
    conn: &impl ConnectionTrait,
    raw_key: &str,
    now: DateTime<Utc>,
) -> ApiResult<(license::Model, order::Model)> {
    let key = keys::normalize(raw_key).ok_or(AppError::NotFound("key"))?;
    let current = license::Entity::find()
        .filter(license::Column::Key.eq(&key))
        .lock_exclusive()
        .one(conn)
        .await?;
    let license = match current {
        Some(license) => license,
        None => {
            let id = keys::in_grace(conn, &key, now)
                .await?
                .ok_or(AppError::NotFound("key"))?;
            let license = license::Entity::find_by_id(id)
                .lock_exclusive()
                .one(conn)
                .await?
                .ok_or(AppError::NotFound("key"))?;
            // A reissue that ended the grace may have committed while we
            // waited for the lock: ask again, under it.
            if keys::in_grace(conn, &key, now).await? != Some(id) {
                return Err(AppError::NotFound("key"));
            }
            license
        }
    };
    let order = order::Entity::find_by_id(license.order_id)
        .lock_shared()
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("key"))?;
    Ok((license, order))
}

pub(super) async fn record_device_event(
    conn: &impl ConnectionTrait,
    kind: EventKind,
    actor_id: Option<i64>,
    license: &license::Model,
    order: &order::Model,
    activation: &activation::Model,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let mut event = NewEvent::new(kind, actor_id);
    event.order_id = Some(order.id);
    event.license_id = Some(license.id);
    let device = json!({"fingerprint": activation.fingerprint, "name": activation.name});
    event.changes = if kind == EventKind::DeviceActivated {
        json!({"after": device})
    } else {
        json!({"before": device})
    };
    event.recipients = rights::order_managers(conn, order).await?;
    if let Some(email) = &license.assignee_email {
        event
            .recipients
            .extend(rights::verified_account_id(conn, email).await?);
    }
    events::record(conn, now, event).await?;
    Ok(())
}

/// Activate an assigned key on a device, up to its order's per-key device
/// limit. Activating a fingerprint that is already active changes nothing.
pub async fn activate(
    ctx: &Ctx,
    raw_key: &str,
    fingerprint: &str,
    name: &str,
) -> ApiResult<activation::Model> {
    let fingerprint = check_field(fingerprint, "fingerprint")?;
    let name = check_field(name, "name")?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let (license, order) = lock_by_key(&txn, raw_key, now).await?;
    super::orders::ensure_not_refunded(&order)?;
    if license.assignee_email.is_none() {
        return Err(AppError::conflict("this key is not assigned to anyone yet"));
    }
    if license.suspended {
        return Err(AppError::conflict("this key is suspended by its owner"));
    }
    let mut active = activation::Entity::find()
        .filter(activation::Column::LicenseId.eq(license.id))
        .all(&txn)
        .await?;
    // Devices that stopped reporting lose their seat now, not at the
    // sweeper's next turn (the key's row is locked: no one else expires
    // them meanwhile).
    let mut expired = false;
    for dead in active.iter().filter(|a| heartbeats::is_dead(a, now)) {
        heartbeats::expire(&txn, &license, &order, dead, now).await?;
        expired = true;
    }
    active.retain(|a| !heartbeats::is_dead(a, now));
    if let Some(existing) = active.iter().find(|a| a.fingerprint == fingerprint) {
        if expired {
            txn.commit().await?;
        }
        return Ok(existing.clone());
    }
    if active.len() >= order.device_limit as usize {
        if expired {
            txn.commit().await?;
        }
        return Err(AppError::conflict(format!(
            "this key is already active on {} device(s), its limit is {}: deactivate one first",
            active.len(),
            order.device_limit
        )));
    }
    let activation = activation::ActiveModel {
        license_id: Set(license.id),
        fingerprint: Set(fingerprint),
        name: Set(name),
        activated_at: Set(now),
        alive_until: Set(order
            .heartbeat_seconds
            .map(|s| heartbeats::alive_until(now, s))),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    record_device_event(
        &txn,
        EventKind::DeviceActivated,
        None,
        &license,
        &order,
        &activation,
        now,
    )
    .await?;
    txn.commit().await?;
    Ok(activation)
}

/// Remove a device activation: by the licensed software (knowing the key), or
/// by one of the order's managers (`manager` set; the key is then found by id).
pub async fn deactivate(
    ctx: &Ctx,
    target: DeviceOf<'_>,
    fingerprint: &str,
) -> ApiResult<activation::Model> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let (license, order, actor) = match target {
        DeviceOf::Key(raw_key) => {
            let (license, order) = lock_by_key(&txn, raw_key, now).await?;
            (license, order, None)
        }
        DeviceOf::ManagedLicense(viewer, license_id) => {
            let (license, order) = licenses::lock_for_manager(&txn, viewer, license_id).await?;
            (license, order, Some(viewer.account_id))
        }
    };
    let activation = activation::Entity::find()
        .filter(activation::Column::LicenseId.eq(license.id))
        .filter(activation::Column::Fingerprint.eq(fingerprint.trim()))
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("activation"))?;
    activation::Entity::delete_by_id(activation.id)
        .exec(&txn)
        .await?;
    record_device_event(
        &txn,
        EventKind::DeviceDeactivated,
        actor,
        &license,
        &order,
        &activation,
        now,
    )
    .await?;
    txn.commit().await?;
    Ok(activation)
}

/// Which key a deactivation is about, and who asks.
pub enum DeviceOf<'a> {
    /// The licensed software, by key string (no sign-in).
    Key(&'a str),
    /// A manager of the key's order, by license id.
    ManagedLicense(&'a Viewer, i64),
}

/// Why a key is (not) valid for the licensed software.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    NotFound,
    NotAssigned,
    NotActivated,
    OrderUnpaid,
    /// The key's order was refunded.
    OrderRefunded,
    /// The owner suspended the key (`suspendLicense`).
    Suspended,
}

#[derive(FromQueryResult)]
struct ValidationRow {
    license_id: i64,
    assigned: bool,
    paid: bool,
    refunded: bool,
    activated: bool,
    suspended: bool,
    /// Found by a retired string still in its grace.
    retired: bool,
}

/// Validate `raw_key`, optionally on a device `fingerprint`: from the
/// [`ValidityCache`](super::validity_cache) when nothing changed since the
/// answer was read (a hot key's answer is read again in the background before
/// it expires), else in one indexed read. Unknown and malformed keys
/// answer `NotFound` alike.
pub async fn validate(
    ctx: &Ctx,
    raw_key: &str,
    fingerprint: Option<&str>,
) -> ApiResult<Validation> {
    let Some(key) = keys::normalize(raw_key) else {
        return Ok((Validity::NotFound, None));
    };
    let fingerprint = fingerprint.map(str::trim);
    match ctx.validities.get(&key, fingerprint) {
        Lookup::Hit(answer) => Ok(answer),
        Lookup::HitRefresh(answer) => {
            if let Some(permit) = ctx.validities.refresh_permit() {
                let ctx = ctx.clone();
                let fingerprint = fingerprint.map(str::to_owned);
                tokio::spawn(async move {
                    // A failed read only lets the answer expire; the next
                    // question then reads on its own request.
                    if let Err(error) = read_and_keep(&ctx, &key, fingerprint.as_deref()).await {
                        tracing::debug!(error = %error.detail(), "validity refresh failed");
                    }
                    drop(permit);
                });
            }
            Ok(answer)
        }
        Lookup::Miss => read_and_keep(ctx, &key, fingerprint).await,
    }
}

/// Read a normalised key's validity and keep the answer, unless something
/// changed while it was read.
///
/// An answer found by a retired string is not kept: its grace ends with no
/// change to announce it, and such strings are few and short-lived.
async fn read_and_keep(ctx: &Ctx, key: &str, fingerprint: Option<&str>) -> ApiResult<Validation> {
    let before = ctx.validities.before_read();
    let (answer, retired) = read_validity(&ctx.db, key, fingerprint, ctx.clock.now()).await?;
    if !retired {
        ctx.validities.put(key, fingerprint, before, answer);
    }
    Ok(answer)
}

/// [`validate`]'s database read, of a normalised key: the key whose current
/// string it is, else the key whose retired string it is within its grace
/// (two index probes, one statement); with whether it was a retired one.
async fn read_validity(
    conn: &impl ConnectionTrait,
    key: &str,
    fingerprint: Option<&str>,
    now: DateTime<Utc>,
) -> ApiResult<(Validation, bool)> {
    let backend = conn.get_database_backend();
    let (key_param, fp_param, now_param) = match backend {
        sea_orm::DatabaseBackend::Postgres => ("$1", "$2", "$3"),
        _ => ("?1", "?2", "?3"),
    };
    let columns = format!(
        "l.id AS license_id, l.assignee_email IS NOT NULL AS assigned, o.status = 'PAID' AS paid, \
         o.status = 'REFUNDED' AS refunded, l.suspended AS suspended, \
         EXISTS (SELECT 1 FROM activations a WHERE a.license_id = l.id AND a.fingerprint = {fp_param} \
         AND (a.alive_until IS NULL OR a.alive_until > {now_param})) AS activated"
    );
    let sql = format!(
        "SELECT {columns}, FALSE AS retired \
         FROM licenses l JOIN orders o ON o.id = l.order_id WHERE l.key = {key_param} \
         UNION ALL \
         SELECT {columns}, TRUE AS retired \
         FROM retired_keys r JOIN licenses l ON l.id = r.license_id JOIN orders o ON o.id = l.order_id \
         WHERE r.key = {key_param} AND r.valid_until > {now_param}"
    );
    let row = ValidationRow::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [
            key.into(),
            fingerprint.unwrap_or("").to_owned().into(),
            now.into(),
        ],
    ))
    .one(conn)
    .await?;
    let Some(row) = row else {
        return Ok(((Validity::NotFound, None), false));
    };
    let validity = if row.refunded {
        Validity::OrderRefunded
    } else if !row.paid {
        Validity::OrderUnpaid
    } else if row.suspended {
        Validity::Suspended
    } else if !row.assigned {
        Validity::NotAssigned
    } else if fingerprint.is_some() && !row.activated {
        Validity::NotActivated
    } else {
        Validity::Valid
    };
    Ok(((validity, Some(row.license_id)), row.retired))
}
