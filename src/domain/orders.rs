//! Orders: created waiting for payment, marked paid by an admin or a
//! payment provider's webhook ([`super::payments`]), which generates all
//! their keys in one batch (product.md "Orders and keys").
use entity::order;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait,
    QueryFilter, QuerySelect, SqlErr, Statement, TransactionSession, TransactionTrait,
};
use serde_json::json;

use super::{Ctx, Write, keys, rights};
use crate::{
    auth::Viewer,
    error::{ApiResult, AppError},
    events::{self, EventKind, NewEvent},
};

pub use entity::order::OrderStatus;

/// Largest order; its 100,000 keys are generated in one statement (see
/// `just bench-keys` for the time it takes).
pub const MAX_QUANTITY: i32 = 100_000;

pub struct NewOrder {
    /// A catalog product's code.
    pub product: String,
    pub quantity: i32,
    pub device_limit: Option<i32>,
    /// Devices must report this often (seconds, at least 60); `None`: never.
    pub heartbeat_seconds: Option<i32>,
    /// Buy for this organization (the caller must be a member).
    pub organization_id: Option<i64>,
}

/// Create an order waiting for payment. Only a verified account buys: an
/// order leads to emails (assignments, transfers), and an unproven address
/// must not be able to make keyledger send them.
pub async fn create(ctx: &Ctx, viewer: &Viewer, new: NewOrder) -> ApiResult<order::Model> {
    viewer.verified_email()?;
    let product = super::products::for_order(&ctx.db, &new.product).await?;
    if !(1..=MAX_QUANTITY).contains(&new.quantity) {
        return Err(AppError::validation(
            "quantity",
            format!("quantity must be between 1 and {MAX_QUANTITY}"),
        ));
    }
    let device_limit = new.device_limit.unwrap_or(1);
    if !(1..=1000).contains(&device_limit) {
        return Err(AppError::validation(
            "deviceLimit",
            "device limit must be between 1 and 1000",
        ));
    }
    let heartbeat_seconds =
        super::heartbeats::check_seconds(new.heartbeat_seconds, "heartbeatSeconds")?;
    if let Some(organization_id) = new.organization_id
        && super::organizations::membership(&ctx.db, viewer, organization_id)
            .await?
            .is_none()
    {
        return Err(AppError::NotFound("organization"));
    }
    let order = order::ActiveModel {
        owner_id: Set(viewer.account_id),
        organization_id: Set(new.organization_id),
        product: Set(product.code),
        quantity: Set(new.quantity),
        status: Set(OrderStatus::PendingPayment),
        require_manual_approval: Set(None),
        device_limit: Set(device_limit),
        created_at: Set(ctx.clock.now()),
        paid_at: Set(None),
        heartbeat_seconds: Set(heartbeat_seconds),
        ..Default::default()
    };
    let txn = ctx.begin_write().await?;
    let order = order.insert(&txn).await?;
    txn.commit().await?;
    Ok(order)
}

/// Lock an order row for the rest of the transaction (`FOR UPDATE` on
/// PostgreSQL; SQLite's write transaction already excludes other writers).
pub async fn lock(conn: &impl ConnectionTrait, order_id: i64) -> ApiResult<order::Model> {
    order::Entity::find_by_id(order_id)
        .lock_exclusive()
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("order"))
}

/// Hold an order as it is for the rest of the transaction (`FOR SHARE` on
/// PostgreSQL): a change of one of its keys needs the order not to be
/// refunded, transferred or re-set meanwhile ([`lock`] waits for it), while
/// changes of its other keys, each under its key's own lock, run beside it.
/// An organization's order whose keys change many times a second would
/// otherwise queue every change on the one order row.
pub async fn lock_shared(conn: &impl ConnectionTrait, order_id: i64) -> ApiResult<order::Model> {
    order::Entity::find_by_id(order_id)
        .lock_shared()
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("order"))
}

/// Who confirmed a payment, and what they reported.
#[derive(Debug, Clone, Default)]
pub struct Payment {
    /// `stripe` or `manual` (an administrator).
    pub provider: &'static str,
    /// The provider's event that confirmed it.
    pub event_id: Option<String>,
    /// Amount paid, in minor units of `currency`.
    pub amount: Option<i64>,
    /// ISO 4217, upper case.
    pub currency: Option<String>,
    /// Stripe's PaymentIntent id.
    pub payment_intent: Option<String>,
}

impl Payment {
    /// An administrator's `markOrderPaid`.
    pub fn manual() -> Self {
        Payment {
            provider: "manual",
            ..Payment::default()
        }
    }
}

/// Administrators: mark an order paid and generate its keys, in one
/// transaction: paying twice is a `CONFLICT`, never a second batch.
pub async fn mark_paid(ctx: &Ctx, viewer: &Viewer, order_id: i64) -> ApiResult<order::Model> {
    viewer.require_admin()?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let order = lock(&txn, order_id).await?;
    let paid = pay(&txn, order, Payment::manual(), Some(viewer.account_id), now).await?;
    txn.commit().await?;
    Ok(paid)
}

/// Mark `order` (locked by the caller, see [`lock`]) paid by `payment` and
/// generate its keys, in the caller's transaction, with its `ORDER_PAID`
/// event. An order already paid or refunded is a `CONFLICT`. Whoever pays
/// (an administrator, a payment provider's webhook) goes through here.
pub async fn pay(
    txn: &Write<'_>,
    order: order::Model,
    payment: Payment,
    actor_id: Option<i64>,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<order::Model> {
    match order.status {
        OrderStatus::PendingPayment => {}
        OrderStatus::Paid => return Err(AppError::conflict("this order is already paid")),
        OrderStatus::Refunded => return Err(AppError::conflict("this order was refunded")),
    }
    generate_keys(txn.transaction(), order.id, order.quantity as usize, now).await?;
    let mut paid: order::ActiveModel = order.clone().into();
    paid.status = Set(OrderStatus::Paid);
    paid.paid_at = Set(Some(now));
    paid.payment_provider = Set(Some(payment.provider.to_owned()));
    paid.payment_event_id = Set(payment.event_id.clone());
    paid.payment_amount = Set(payment.amount);
    paid.payment_currency = Set(payment.currency.clone());
    paid.payment_intent = Set(payment.payment_intent.clone());
    paid.payment_problem = Set(None);
    let paid = paid.update(txn).await?;
    let mut event = NewEvent::new(EventKind::OrderPaid, actor_id);
    event.order_id = Some(order.id);
    event.changes = json!({
        "before": {"status": order.status},
        "after": {"status": OrderStatus::Paid, "keys": order.quantity},
        "payment": {"provider": payment.provider, "eventId": payment.event_id},
    });
    event.recipients = rights::order_managers(txn, &order).await?;
    events::record(txn, now, event).await?;
    Ok(paid)
}

/// `CONFLICT` when `order` was refunded: its keys no longer change hands,
/// activate or move.
pub fn ensure_not_refunded(order: &order::Model) -> ApiResult<()> {
    if order.status == OrderStatus::Refunded {
        return Err(AppError::conflict(
            "this order was refunded: its keys no longer work",
        ));
    }
    Ok(())
}

/// Insert `count` fresh keys for `order_id`: one statement for any order up
/// to [`MAX_QUANTITY`] keys, the keys passed as a single parameter and
/// unpacked by the database (a 10,000-row `VALUES` list with 30,000
/// parameters costs far more to build, send and plan).
async fn generate_keys(
    conn: &impl TransactionTrait,
    order_id: i64,
    count: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<()> {
    insert_fresh_keys(conn, order_id, count, now, keys::generate).await
}

/// [`generate_keys`] with the key source given (a test forces a collision).
/// Keys are 80 random bits, so a collision with an existing key is all but
/// impossible; it is still handled, never surfaced: the batch is inserted
/// under a savepoint and, on a unique violation, rolled back and drawn again.
/// (A plain INSERT rather than `ON CONFLICT DO NOTHING`: the speculative
/// insertion that needs costs about a third of the time of 100,000 keys.)
/// Strings retired by a reissue are skipped by the insert itself, which
/// then inserts fewer rows than drawn: that batch is drawn again too.
async fn insert_fresh_keys(
    conn: &impl TransactionTrait,
    order_id: i64,
    count: usize,
    now: chrono::DateTime<chrono::Utc>,
    mut source: impl FnMut() -> String,
) -> ApiResult<()> {
    const ATTEMPTS: usize = 5;
    for _ in 0..ATTEMPTS {
        let mut fresh: Vec<String> = (0..count).map(|_| source()).collect();
        // In key order, the unique index takes them leaf after leaf instead
        // of all over the tree (`just bench-keys`). An order's keys list in
        // key order.
        fresh.sort_unstable();
        fresh.dedup();
        if fresh.len() < count {
            continue; // a repeat within the batch: draw again
        }
        let savepoint = conn.begin().await?;
        match savepoint
            .execute_raw(insert_keys(
                savepoint.get_database_backend(),
                order_id,
                now,
                &fresh,
            )?)
            .await
        {
            Ok(done) if done.rows_affected() == fresh.len() as u64 => {
                savepoint.commit().await?;
                return Ok(());
            }
            Ok(_) => {
                // The insert skipped a string some key had before a reissue.
                savepoint.rollback().await?;
                tracing::warn!(
                    order_id,
                    "key generation: a retired key was drawn, drawing the batch again"
                );
            }
            Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                savepoint.rollback().await?;
                tracing::warn!(
                    order_id,
                    "key generation: a key collided, drawing the batch again"
                );
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(AppError::internal("key generation kept colliding"))
}

fn insert_keys(
    backend: DatabaseBackend,
    order_id: i64,
    now: chrono::DateTime<chrono::Utc>,
    fresh: &[String],
) -> ApiResult<Statement> {
    Ok(match backend {
        // Keys are Crockford base32 and dashes: never a comma.
        DatabaseBackend::Postgres => Statement::from_sql_and_values(
            backend,
            r#"INSERT INTO licenses (order_id, "key", created_at)
               SELECT $1, k, $2 FROM unnest(string_to_array($3::text, ',')) AS k
               WHERE NOT EXISTS (SELECT 1 FROM retired_keys r WHERE r."key" = k)"#,
            [order_id.into(), now.into(), fresh.join(",").into()],
        ),
        _ => Statement::from_sql_and_values(
            backend,
            r#"INSERT INTO licenses (order_id, "key", created_at)
               SELECT ?, value, ? FROM json_each(?)
               WHERE NOT EXISTS (SELECT 1 FROM retired_keys r WHERE r."key" = value)"#,
            [
                order_id.into(),
                now.into(),
                serde_json::to_string(fresh)
                    .map_err(AppError::internal)?
                    .into(),
            ],
        ),
    })
}

/// The human-readable order number.
pub fn number(order_id: i64) -> String {
    format!("KL-{order_id:06}")
}

/// The order `order_id` if `viewer` may read it (manager or admin), else `NOT_FOUND`.
pub async fn readable(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    order_id: i64,
) -> ApiResult<order::Model> {
    let order = order::Entity::find_by_id(order_id)
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("order"))?;
    if viewer.is_admin || rights::can_manage(conn, viewer, &order).await? {
        Ok(order)
    } else {
        Err(AppError::NotFound("order"))
    }
}

/// Orders `viewer` manages, newest last, after the id `after`.
pub async fn list_managed(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<order::Model>> {
    use sea_orm::QueryOrder;
    let mut query = order::Entity::find()
        .filter(order::Column::Id.in_subquery(rights::managed_orders_query(viewer)))
        .order_by_asc(order::Column::Id)
        .limit(limit);
    if let Some(after) = after {
        query = query.filter(order::Column::Id.gt(after));
    }
    Ok(query.all(conn).await?)
}

#[cfg(test)]
mod tests {
    use entity::{account, license};
    use sea_orm::{ActiveValue::NotSet, ConnectionTrait, DatabaseConnection, PaginatorTrait};

    use super::*;

    /// A migrated SQLite file, and a fresh PostgreSQL database when
    /// `TEST_DATABASE_URL` is set (dropped again by the caller).
    async fn databases(dir: &std::path::Path) -> Vec<(DatabaseConnection, Option<String>)> {
        let sqlite = format!("sqlite://{}?mode=rwc", dir.join("keys.db").display());
        let mut all = vec![(crate::db::connect(&sqlite).await.unwrap(), None)];
        if let Ok(admin_url) = std::env::var("TEST_DATABASE_URL") {
            let name = format!("kl_unit_keys_{}", std::process::id());
            let admin = sea_orm::Database::connect(&admin_url).await.unwrap();
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
                .await
                .unwrap();
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            let mut url = url::Url::parse(&admin_url).unwrap();
            url.set_path(&format!("/{name}"));
            all.push((crate::db::connect(url.as_str()).await.unwrap(), Some(name)));
        }
        all
    }

    #[tokio::test]
    async fn a_key_that_collides_is_drawn_again_never_surfaced() {
        let dir = tempfile::tempdir().unwrap();
        for (db, pg_name) in databases(dir.path()).await {
            let now = chrono::Utc::now();
            let owner = account::ActiveModel {
                id: NotSet,
                email: Set("buyer@example.com".into()),
                password_hash: Set("-".into()),
                created_at: Set(now),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap();
            entity::product::ActiveModel {
                code: Set("P".into()),
                name: Set("P".into()),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap();
            let order = order::ActiveModel {
                owner_id: Set(owner.id),
                organization_id: Set(None),
                product: Set("P".into()),
                quantity: Set(4),
                status: Set(OrderStatus::Paid),
                require_manual_approval: Set(None),
                device_limit: Set(1),
                created_at: Set(now),
                paid_at: Set(Some(now)),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap();
            let taken = "AAAA-AAAA-AAAA-AAAA";
            let existing = license::ActiveModel {
                order_id: Set(order.id),
                key: Set(taken.into()),
                created_at: Set(now),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap();
            let retired = "BBBB-BBBB-BBBB-BBBB";
            entity::retired_key::ActiveModel {
                license_id: Set(existing.id),
                key: Set(retired.into()),
                retired_at: Set(now),
                valid_until: Set(now),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap();

            // The first key drawn is one that exists, the first of the next
            // batch one retired by a reissue: both batches are drawn again.
            let mut drawn = 0;
            let source = || {
                drawn += 1;
                match drawn {
                    1 => taken.to_owned(),
                    4 => retired.to_owned(),
                    _ => keys::generate(),
                }
            };
            let txn = db.begin().await.unwrap();
            insert_fresh_keys(&txn, order.id, 3, now, source)
                .await
                .unwrap();
            txn.commit().await.unwrap();

            assert!(drawn >= 9, "a third batch was drawn ({drawn} keys)");
            let keys = license::Entity::find()
                .filter(license::Column::OrderId.eq(order.id))
                .count(&db)
                .await
                .unwrap();
            assert_eq!(keys, 4, "the existing key and 3 fresh ones");
            let copies = license::Entity::find()
                .filter(license::Column::Key.eq(taken))
                .count(&db)
                .await
                .unwrap();
            assert_eq!(copies, 1);
            let reused = license::Entity::find()
                .filter(license::Column::Key.eq(retired))
                .count(&db)
                .await
                .unwrap();
            assert_eq!(reused, 0, "a retired string is never handed out again");

            db.close().await.ok();
            if let (Some(name), Ok(admin_url)) = (pg_name, std::env::var("TEST_DATABASE_URL")) {
                let admin = sea_orm::Database::connect(&admin_url).await.unwrap();
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .unwrap();
            }
        }
    }
}
