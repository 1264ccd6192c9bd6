//! Floating licenses (product.md "Licensed software"): on an order with
//! `heartbeat_seconds`, each device reports at least that often
//! (`heartbeatLicense`); one that stops is deactivated (`DEVICE_EXPIRED`)
//! and its seat freed for another device.
//!
//! Each activation of such an order carries `alive_until`. A heartbeat
//! moves it to `now + 5/4 × interval`, but only when less than one interval
//! is left (so a device that reports every few seconds writes at most once
//! per quarter interval, and a device that reports once an interval writes
//! once each time). So a device is never dropped sooner than one interval
//! after its last heartbeat, and at most a quarter interval later. Past
//! `alive_until` the device no longer counts as activated: validation and
//! heartbeats say `NOT_ACTIVATED` at once, an activation on the same key
//! takes the seat (expiring it), and the sweeper deletes the rest.
use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use entity::{activation, license, order};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, QuerySelect, Statement,
    sea_query::{Expr, Query},
};

use super::{
    Ctx, devices, devices::Validity, keys, orders, rights, rounds::Rounds,
    validity_cache::Validation,
};
use crate::{
    auth::Viewer,
    db::RELAXED_COMMIT,
    error::{ApiResult, AppError},
    events::EventKind,
};

/// Shortest heartbeat interval an order may ask for.
pub const MIN_SECONDS: i32 = 60;
/// Longest (90 days, the longest offline certificate).
pub const MAX_SECONDS: i32 = 7_776_000;

/// `VALIDATION` on `field` unless `seconds` is a valid interval.
pub fn check_seconds(seconds: Option<i32>, field: &'static str) -> ApiResult<Option<i32>> {
    match seconds {
        Some(s) if !(MIN_SECONDS..=MAX_SECONDS).contains(&s) => Err(AppError::validation(
            field,
            format!("{field} must be null or {MIN_SECONDS} to {MAX_SECONDS}"),
        )),
        other => Ok(other),
    }
}

/// How far a heartbeat moves its device's deadline, in milliseconds per
/// second of the order's interval: 5/4 of the interval.
const DEADLINE_MS_PER_INTERVAL_SECOND: i64 = 1250;

/// The deadline a heartbeat at `now` gives a device: 5/4 of the interval.
pub fn alive_until(now: DateTime<Utc>, seconds: i32) -> DateTime<Utc> {
    now + Duration::milliseconds(i64::from(seconds) * DEADLINE_MS_PER_INTERVAL_SECOND)
}

/// A device whose deadline has passed: it holds no seat any more.
pub fn is_dead(activation: &activation::Model, now: DateTime<Utc>) -> bool {
    activation.alive_until.is_some_and(|until| until <= now)
}

/// Delete a dead device (of `license`, locked by the caller) and record
/// `DEVICE_EXPIRED`; false when it was gone or alive again meanwhile.
pub async fn expire(
    txn: &impl ConnectionTrait,
    license: &license::Model,
    order: &order::Model,
    dead: &activation::Model,
    now: DateTime<Utc>,
) -> ApiResult<bool> {
    let deleted = activation::Entity::delete_many()
        .filter(activation::Column::Id.eq(dead.id))
        .filter(activation::Column::AliveUntil.lte(now))
        .exec(txn)
        .await?;
    if deleted.rows_affected != 1 {
        return Ok(false);
    }
    devices::record_device_event(
        txn,
        EventKind::DeviceExpired,
        None,
        license,
        order,
        dead,
        now,
    )
    .await?;
    Ok(true)
}

/// Devices expired per sweep.
const BATCH: u64 = 200;

/// The sweeper's part: deactivate devices past their deadline, each in its
/// own transaction under its key's lock (safe with many instances: the
/// delete is conditional, and only the instance whose delete took effect
/// records the event). Returns how many expired.
pub async fn expire_due(ctx: &Ctx) -> ApiResult<usize> {
    let now = ctx.clock.now();
    let due = activation::Entity::find()
        .filter(activation::Column::AliveUntil.lte(now))
        .limit(BATCH)
        .all(&ctx.db)
        .await?;
    let mut expired = 0;
    for dead in due {
        let txn = ctx.begin_write().await?;
        let Some(license) = license::Entity::find_by_id(dead.license_id)
            .lock_exclusive()
            .one(&txn)
            .await?
        else {
            continue;
        };
        let Some(order) = order::Entity::find_by_id(license.order_id)
            .one(&txn)
            .await?
        else {
            continue;
        };
        if expire(&txn, &license, &order, &dead, now).await? {
            expired += 1;
            txn.commit().await?;
        }
    }
    Ok(expired)
}

#[derive(Clone, FromQueryResult)]
struct HeartbeatRow {
    license_id: i64,
    assigned: bool,
    paid: bool,
    refunded: bool,
    suspended: bool,
    heartbeat_seconds: Option<i32>,
    activation_id: Option<i64>,
    alive_until: Option<DateTime<Utc>>,
    /// Whether the statement that read the row also moved the device's
    /// deadline (PostgreSQL); `None` where that is a statement of its own.
    moved: Option<bool>,
}

/// What a heartbeat reads of its key, order and device.
const COLUMNS: &str = "l.id AS license_id, l.assignee_email IS NOT NULL AS assigned, \
     o.status = 'PAID' AS paid, o.status = 'REFUNDED' AS refunded, \
     l.suspended AS suspended, o.heartbeat_seconds AS heartbeat_seconds, \
     a.id AS activation_id, a.alive_until AS alive_until";

/// The key (current, or retired and still in its grace) and the device
/// with `fingerprint`, as of `now`: SQL expressions.
fn found(key: &str, fingerprint: &str, now: &str) -> String {
    let device =
        format!("LEFT JOIN activations a ON a.license_id = l.id AND a.fingerprint = {fingerprint}");
    format!(
        "SELECT {COLUMNS} FROM licenses l JOIN orders o ON o.id = l.order_id {device} \
         WHERE l.key = {key} \
         UNION ALL \
         SELECT {COLUMNS} FROM retired_keys r JOIN licenses l ON l.id = r.license_id \
         JOIN orders o ON o.id = l.order_id {device} \
         WHERE r.key = {key} AND r.valid_until > {now}"
    )
}

/// A heartbeat waiting for its round (PostgreSQL).
#[derive(Clone)]
struct Beat {
    key: String,
    fingerprint: String,
    now: DateTime<Utc>,
}

/// How long a round of heartbeats waits for others to join once its first
/// arrives. A device reports once an interval (a minute at least), so a
/// few milliseconds more are nothing to it, and at the rates where
/// heartbeats cost anything (thousands of devices) a round then gathers
/// several: one statement, one backend's wake-up for them all.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Writes heartbeats on PostgreSQL in [`Rounds`]: one statement reads the
/// round's keys and devices and moves the deadlines that need it. On
/// SQLite each heartbeat reads, and writes when needed, on its own.
#[derive(Clone)]
pub struct Writer(Option<Rounds<Beat, Option<HeartbeatRow>>>);

impl Writer {
    /// On PostgreSQL, starts the task that writes the rounds.
    pub fn new(db: &DatabaseConnection) -> Self {
        Writer(
            (db.get_database_backend() == DbBackend::Postgres)
                .then(|| Rounds::start(db.clone(), Some(LINGER), beat_round)),
        )
    }
}

/// One round of heartbeats: each one's row, and on it whether its device's
/// deadline moved ([`alive_until`]), under the same conditions as
/// [`heartbeat`] checks (a live device of a valid key whose deadline is
/// less than an interval away). The move's own condition on the row as it
/// is now keeps a device the sweeper has just expired from coming back.
/// Its commit does not wait for its WAL flush ([`RELAXED_COMMIT`]): a
/// heartbeat is the most frequent write there is, and one lost with
/// PostgreSQL itself leaves its device the deadline its previous heartbeat
/// gave it.
async fn beat_round(
    db: DatabaseConnection,
    round: Vec<Beat>,
) -> ApiResult<Vec<Option<HeartbeatRow>>> {
    // The round goes as one JSON parameter, not as arrays: PostgreSQL
    // knows an array's length when it plans a statement for its values,
    // finds that plan cheaper than its generic one, and so plans the
    // statement again on every execution, which cost twice what running it
    // does. A JSON document's row count it does not look into, so after its
    // first executions it keeps one plan.
    let found = found("i.key", "i.fingerprint", "i.at");
    let sql = format!(
        "WITH found AS (\
           SELECT i.n, i.at, f.* \
           FROM jsonb_to_recordset($1::jsonb) \
             AS i(n bigint, key text, fingerprint text, at timestamptz) \
           CROSS JOIN LATERAL ({found} LIMIT 1) f), \
         moved AS (UPDATE activations a \
           SET alive_until = \
             f.at + f.heartbeat_seconds * interval '{DEADLINE_MS_PER_INTERVAL_SECOND} milliseconds' \
           FROM found f, {RELAXED_COMMIT} \
           WHERE a.id = f.activation_id AND f.paid AND NOT f.refunded \
             AND NOT f.suspended AND f.assigned AND f.heartbeat_seconds IS NOT NULL \
             AND (f.alive_until IS NULL OR f.alive_until > f.at) \
             AND (f.alive_until IS NULL \
                  OR f.alive_until < f.at + f.heartbeat_seconds * interval '1 second') \
             AND (a.alive_until IS NULL OR a.alive_until > f.at) \
           RETURNING a.id) \
         SELECT found.*, \
           COALESCE(found.activation_id IN (SELECT id FROM moved), false) AS moved \
         FROM found"
    );
    let count = round.len();
    let beats: Vec<serde_json::Value> = round
        .into_iter()
        .enumerate()
        .map(|(n, beat)| {
            serde_json::json!({"n": n, "key": beat.key, "fingerprint": beat.fingerprint, "at": beat.now})
        })
        .collect();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [serde_json::Value::Array(beats).into()],
        ))
        .await?;
    let mut found = vec![None; count];
    for row in rows {
        let n: i64 = row.try_get("", "n")?;
        let slot = usize::try_from(n)
            .ok()
            .and_then(|n| found.get_mut(n))
            .ok_or_else(|| AppError::internal("a heartbeat round answered out of range"))?;
        *slot = Some(HeartbeatRow::from_query_result(&row, "")?);
    }
    Ok(found)
}

/// `heartbeatLicense`: the key's validity on the device, like
/// `validateLicense`, and on a heartbeat order the device kept alive. One
/// read, and a write only when the deadline needs moving (see the module
/// comment); on PostgreSQL both are one statement, shared with the other
/// heartbeats of its round ([`Writer`]). A suspended key is `CONFLICT`.
pub async fn heartbeat(ctx: &Ctx, raw_key: &str, fingerprint: &str) -> ApiResult<Validation> {
    let fingerprint = devices::check_field(fingerprint, "fingerprint")?;
    let Some(key) = keys::normalize(raw_key) else {
        return Ok((Validity::NotFound, None));
    };
    // To the microsecond the database keeps, so that its conditions and
    // the ones below read the same instant.
    let now = ctx.clock.now().trunc_subsecs(6);
    // Written outside `Ctx::begin_write`, so gated here.
    super::idempotency::before_write(&ctx.db, true).await?;
    let row = match &ctx.heartbeats.0 {
        Some(rounds) => {
            let beat = Beat {
                key,
                fingerprint: fingerprint.to_owned(),
                now,
            };
            rounds.write(beat).await?
        }
        None => {
            let sql = format!(
                "SELECT *, NULL AS moved FROM ({}) LIMIT 1",
                found("?1", "?2", "?3")
            );
            HeartbeatRow::find_by_statement(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                sql,
                [key.into(), fingerprint.into(), now.into()],
            ))
            .one(&ctx.db)
            .await?
        }
    };
    let Some(row) = row else {
        return Ok((Validity::NotFound, None));
    };
    let license = Some(row.license_id);
    if row.refunded {
        return Ok((Validity::OrderRefunded, license));
    }
    if !row.paid {
        return Ok((Validity::OrderUnpaid, license));
    }
    if row.suspended {
        return Err(AppError::conflict("this key is suspended by its owner"));
    }
    if !row.assigned {
        return Ok((Validity::NotAssigned, license));
    }
    let Some(activation_id) = row.activation_id else {
        return Ok((Validity::NotActivated, license));
    };
    if row.alive_until.is_some_and(|until| until <= now) {
        return Ok((Validity::NotActivated, license));
    }
    if let Some(seconds) = row.heartbeat_seconds
        && row
            .alive_until
            .is_none_or(|until| until < now + Duration::seconds(seconds.into()))
    {
        // Not a change anyone reads a cached answer of: no write
        // transaction, no cache to forget. Conditional, so that a device
        // the sweeper has just expired is not brought back.
        let moved = match row.moved {
            Some(moved) => moved,
            None => move_deadline(ctx, activation_id, alive_until(now, seconds), now).await?,
        };
        if !moved {
            return Ok((Validity::NotActivated, license));
        }
    }
    Ok((Validity::Valid, license))
}

/// Move a live device's deadline to `until`; false when it had already
/// passed. SQLite only: on PostgreSQL the statement that reads the device
/// moves it.
async fn move_deadline(
    ctx: &Ctx,
    activation_id: i64,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ApiResult<bool> {
    let moved = activation::Entity::update_many()
        .col_expr(activation::Column::AliveUntil, Expr::value(until))
        .filter(activation::Column::Id.eq(activation_id))
        .filter(
            sea_orm::Condition::any()
                .add(activation::Column::AliveUntil.is_null())
                .add(activation::Column::AliveUntil.gt(now)),
        )
        .exec(&ctx.db)
        .await?
        .rows_affected;
    Ok(moved == 1)
}

/// `setOrderHeartbeat`: the order's managers require heartbeats every
/// `seconds` (60 s to 90 days) or none (`None`). Devices active now get a
/// full interval from now to report.
pub async fn set_order_heartbeat(
    ctx: &Ctx,
    viewer: &Viewer,
    order_id: i64,
    seconds: Option<i32>,
) -> ApiResult<order::Model> {
    let seconds = check_seconds(seconds, "seconds")?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let order = orders::lock(&txn, order_id).await?;
    rights::require_manage(&txn, viewer, &order).await?;
    if order.heartbeat_seconds == seconds {
        return Ok(order);
    }
    let updated = order::Entity::update(order::ActiveModel {
        id: sea_orm::ActiveValue::Unchanged(order.id),
        heartbeat_seconds: sea_orm::ActiveValue::Set(seconds),
        ..Default::default()
    })
    .exec(&txn)
    .await?;
    activation::Entity::update_many()
        .col_expr(
            activation::Column::AliveUntil,
            Expr::value(seconds.map(|s| alive_until(now, s))),
        )
        .filter(
            activation::Column::LicenseId.in_subquery(
                Query::select()
                    .column(license::Column::Id)
                    .from(license::Entity)
                    .and_where(license::Column::OrderId.eq(order.id))
                    .to_owned(),
            ),
        )
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(updated)
}
