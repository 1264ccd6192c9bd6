//! The 7-day rule for claims and requests, and its sweeper.
//!
//! A pending claim or request older than [`PENDING_TTL`] is expired: reads
//! compute that from the clock ([`effective_status`], [`status_condition`]),
//! so it disappears from pending lists at once, before any sweep. The
//! sweeper then marks such rows `EXPIRED`, each with a `REQUEST_EXPIRED`
//! event: it makes the change durable and tells people. Safe with many
//! instances: each row changes with a conditional update, and only the
//! instance whose update took effect writes the event.
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{claim, license, license_request, order};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, IntoColumnRef},
};
use serde_json::json;

use super::{Ctx, rights};
use crate::{
    error::ApiResult,
    events::{self, EventKind, NewEvent},
};

pub use entity::claim::ApprovalStatus;

/// Pending claims and requests stop being pending after this long.
pub const PENDING_TTL: chrono::Duration = chrono::Duration::days(7);

/// The status of a claim or request as of `now`: pending for at most [`PENDING_TTL`].
pub fn effective_status(
    status: ApprovalStatus,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ApprovalStatus {
    if status == ApprovalStatus::Pending && created_at <= now - PENDING_TTL {
        ApprovalStatus::Expired
    } else {
        status
    }
}

/// A filter on the effective status (`wanted`) of claims or requests.
pub fn status_condition<C: ColumnTrait + IntoColumnRef + Copy>(
    status: C,
    created_at: C,
    wanted: ApprovalStatus,
    now: DateTime<Utc>,
) -> Condition {
    let cutoff = now - PENDING_TTL;
    match wanted {
        ApprovalStatus::Pending => Condition::all()
            .add(status.eq(ApprovalStatus::Pending))
            .add(created_at.gt(cutoff)),
        ApprovalStatus::Expired => Condition::any()
            .add(status.eq(ApprovalStatus::Expired))
            .add(
                Condition::all()
                    .add(status.eq(ApprovalStatus::Pending))
                    .add(created_at.lte(cutoff)),
            ),
        other => Condition::all().add(status.eq(other)),
    }
}

/// Rows expired per statement batch.
const BATCH: u64 = 200;

/// Run [`sweep`] every `interval` forever.
pub async fn run(ctx: Ctx, interval: Duration) {
    loop {
        if let Err(error) = sweep(&ctx).await {
            tracing::warn!(error = %error.detail(), "expiry sweeper failed, will retry");
        }
        if let Err(error) = super::heartbeats::expire_due(&ctx).await {
            tracing::warn!(error = %error.detail(), "device expiry failed, will retry");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Expire what is due now; returns how many claims and requests expired.
pub async fn sweep(ctx: &Ctx) -> ApiResult<usize> {
    let mut expired = 0;
    let cutoff = ctx.clock.now() - PENDING_TTL;
    let claims = claim::Entity::find()
        .filter(claim::Column::Status.eq(ApprovalStatus::Pending))
        .filter(claim::Column::CreatedAt.lte(cutoff))
        .limit(BATCH)
        .all(&ctx.db)
        .await?;
    for claim in claims {
        let txn = ctx.begin_write().await?;
        if mark_expired_claim(&txn, &claim, ctx.clock.now()).await? {
            let license = license::Entity::find_by_id(claim.license_id)
                .one(&txn)
                .await?;
            let order = match &license {
                Some(l) => order::Entity::find_by_id(l.order_id).one(&txn).await?,
                None => None,
            };
            let mut event = NewEvent::new(EventKind::RequestExpired, None);
            event.claim_id = Some(claim.id);
            event.license_id = Some(claim.license_id);
            event.order_id = order.as_ref().map(|o| o.id);
            event.changes = json!({"before": {"status": ApprovalStatus::Pending}, "after": {"status": ApprovalStatus::Expired}});
            event.recipients = vec![claim.claimer_id];
            if let Some(order) = &order {
                event
                    .recipients
                    .extend(rights::order_managers(&txn, order).await?);
            }
            events::record(&txn, ctx.clock.now(), event).await?;
            expired += 1;
        }
        txn.commit().await?;
    }
    let requests = license_request::Entity::find()
        .filter(license_request::Column::Status.eq(ApprovalStatus::Pending))
        .filter(license_request::Column::CreatedAt.lte(cutoff))
        .limit(BATCH)
        .all(&ctx.db)
        .await?;
    for request in requests {
        let txn = ctx.begin_write().await?;
        let changed = license_request::Entity::update_many()
            .col_expr(
                license_request::Column::Status,
                Expr::value(ApprovalStatus::Expired),
            )
            .col_expr(license_request::Column::DecidedAt, ctx.clock.now().into())
            .filter(license_request::Column::Id.eq(request.id))
            .filter(license_request::Column::Status.eq(ApprovalStatus::Pending))
            .exec(&txn)
            .await?;
        if changed.rows_affected == 1 {
            let mut event = NewEvent::new(EventKind::RequestExpired, None);
            event.request_id = Some(request.id);
            event.changes = json!({"before": {"status": ApprovalStatus::Pending}, "after": {"status": ApprovalStatus::Expired}});
            event.recipients = vec![request.requester_id];
            event
                .recipients
                .extend(rights::verified_account_id(&txn, &request.buyer_email).await?);
            events::record(&txn, ctx.clock.now(), event).await?;
            expired += 1;
        }
        txn.commit().await?;
    }
    // Idempotency keys past their 24 hours.
    super::idempotency::sweep(&ctx.db, ctx.clock.now()).await?;
    Ok(expired)
}

/// Conditionally mark one claim expired; true when this call did it.
async fn mark_expired_claim(
    conn: &impl ConnectionTrait,
    claim: &claim::Model,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<bool> {
    let changed = claim::Entity::update_many()
        .col_expr(claim::Column::Status, Expr::value(ApprovalStatus::Expired))
        .col_expr(claim::Column::DecidedAt, now.into())
        .filter(claim::Column::Id.eq(claim.id))
        .filter(claim::Column::Status.eq(ApprovalStatus::Pending))
        .exec(conn)
        .await?;
    Ok(changed.rows_affected == 1)
}
