//! Transferring an order to another account (product.md "Transferring an
//! order"): started by the owner, confirmed by the addressee with a
//! single-use link valid 7 days while signed in with that verified address,
//! cancellable by the owner until then.
use chrono::{DateTime, Duration, Utc};
pub use entity::order_transfer::TransferStatus;
use entity::{account, order, order_transfer};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, sea_query::Query,
};
use serde_json::json;

use super::{Ctx, Direction, email, orders, rights};
use crate::{
    auth::{Viewer, token},
    error::{ApiResult, AppError},
    events::{self, EventKind, NewEvent},
    mail::{self, Email},
};

/// How long the confirmation link works.
pub const LINK_TTL: Duration = Duration::days(7);

/// A transfer's status as of `now`: a pending transfer past its link's expiry is expired.
pub fn effective_status(transfer: &order_transfer::Model, now: DateTime<Utc>) -> TransferStatus {
    if transfer.status == TransferStatus::Pending && transfer.expires_at <= now {
        TransferStatus::Expired
    } else {
        transfer.status
    }
}

/// Start transferring `order_id` to `new_owner_email`; emails both parties.
/// Only from a verified account: the emails name its address as the sender.
pub async fn start(
    ctx: &Ctx,
    viewer: &Viewer,
    order_id: i64,
    new_owner_email: &str,
) -> ApiResult<order_transfer::Model> {
    viewer.verified_email()?;
    let to_email = email::normalize(new_owner_email, "newOwnerEmail")?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let order = orders::lock(&txn, order_id).await?;
    rights::require_manage(&txn, viewer, &order).await?;
    orders::ensure_not_refunded(&order)?;
    if !rights::can_transfer(&txn, viewer, &order).await? {
        return Err(AppError::Forbidden(
            "only the organization's admins transfer its orders",
        ));
    }
    if to_email == viewer.email {
        return Err(AppError::validation(
            "newOwnerEmail",
            "this order is already yours",
        ));
    }
    let pending = order_transfer::Entity::find()
        .filter(order_transfer::Column::OrderId.eq(order.id))
        .filter(order_transfer::Column::Status.eq(TransferStatus::Pending))
        .filter(order_transfer::Column::ExpiresAt.gt(now))
        .one(&txn)
        .await?;
    if pending.is_some() {
        return Err(AppError::conflict(
            "a transfer of this order is already pending; cancel it first",
        ));
    }
    super::devices::ensure_none_active_on_order(&txn, order.id).await?;
    let raw = token::generate();
    let transfer = order_transfer::ActiveModel {
        order_id: Set(order.id),
        from_account_id: Set(viewer.account_id),
        to_email: Set(to_email.clone()),
        token_hash: Set(token::hash(&raw)),
        status: Set(TransferStatus::Pending),
        created_at: Set(now),
        expires_at: Set(now + LINK_TTL),
        decided_at: Set(None),
        to_account_id: Set(None),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    let mut event = NewEvent::new(EventKind::TransferStarted, Some(viewer.account_id));
    event.order_id = Some(order.id);
    event.transfer_id = Some(transfer.id);
    event.changes = json!({"after": {"status": TransferStatus::Pending, "toEmail": to_email}});
    event.recipients = rights::order_managers(&txn, &order).await?;
    event
        .recipients
        .extend(rights::verified_account_id(&txn, &to_email).await?);
    events::record(&txn, now, event).await?;
    let number = super::orders::number(order.id);
    let product = super::products::display_name(&txn, &order.product).await?;
    mail::enqueue(
        &txn,
        now,
        &viewer.email,
        Email::TransferStartedOwner {
            order_number: number.clone(),
            product: product.clone(),
            new_owner: to_email.clone(),
        },
    )
    .await?;
    mail::enqueue(
        &txn,
        now,
        &to_email,
        Email::TransferStartedNewOwner {
            order_number: number,
            product,
            old_owner: viewer.email.clone(),
            link: format!("{}/transfers/confirm?token={raw}", ctx.public_url),
            expires_at: transfer.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(transfer)
}

/// A transfer by its confirmation token, without changing anything (for the
/// confirmation page). `NOT_FOUND` for a forged token.
pub async fn find_by_token(
    conn: &impl ConnectionTrait,
    raw_token: &str,
) -> ApiResult<(order_transfer::Model, order::Model)> {
    let transfer = order_transfer::Entity::find()
        .filter(order_transfer::Column::TokenHash.eq(token::hash(raw_token)))
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("transfer"))?;
    let order = order::Entity::find_by_id(transfer.order_id)
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("transfer"))?;
    Ok((transfer, order))
}

fn ensure_pending(transfer: &order_transfer::Model, now: DateTime<Utc>) -> ApiResult<()> {
    match effective_status(transfer, now) {
        TransferStatus::Pending => Ok(()),
        TransferStatus::Expired => Err(AppError::Expired("this transfer link has expired")),
        TransferStatus::Accepted => Err(AppError::conflict("this transfer was already accepted")),
        _ => Err(AppError::conflict("this transfer was cancelled")),
    }
}

/// Accept the transfer behind `raw_token`: only the signed-in account whose
/// verified email is the addressee. The order and all its keys change owner.
pub async fn accept(
    ctx: &Ctx,
    viewer: &Viewer,
    raw_token: &str,
) -> ApiResult<order_transfer::Model> {
    let viewer_email = viewer.verified_email()?.to_owned();
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let (found, _) = find_by_token(&txn, raw_token).await?;
    // Lock the order first, then the transfer: the same order as `cancel`.
    let order = orders::lock(&txn, found.order_id).await?;
    let transfer = order_transfer::Entity::find_by_id(found.id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("transfer"))?;
    ensure_pending(&transfer, now)?;
    if transfer.to_email != viewer_email {
        return Err(AppError::Forbidden(
            "this transfer is addressed to another email address",
        ));
    }
    orders::ensure_not_refunded(&order)?;
    // The sender must still hold the right to transfer: the order may have
    // changed owner since, or the sender (an organization's admin) may have
    // left the organization or stopped being an admin.
    let old_managers = rights::order_managers(&txn, &order).await?;
    if !rights::order_transferers(&txn, &order)
        .await?
        .contains(&transfer.from_account_id)
    {
        return Err(AppError::conflict(
            "the sender no longer holds this order's rights: the transfer cannot be accepted",
        ));
    }
    super::devices::ensure_none_active_on_order(&txn, order.id).await?;
    let mut moved: order::ActiveModel = order.clone().into();
    moved.owner_id = Set(viewer.account_id);
    moved.organization_id = Set(None);
    moved.update(&txn).await?;
    let mut accepted: order_transfer::ActiveModel = transfer.clone().into();
    accepted.status = Set(TransferStatus::Accepted);
    accepted.decided_at = Set(Some(now));
    accepted.to_account_id = Set(Some(viewer.account_id));
    let accepted = accepted.update(&txn).await?;
    let mut event = NewEvent::new(EventKind::TransferAccepted, Some(viewer.account_id));
    event.order_id = Some(order.id);
    event.transfer_id = Some(transfer.id);
    event.changes =
        json!({"before": {"ownerId": order.owner_id}, "after": {"ownerId": viewer.account_id}});
    event.recipients = old_managers;
    event.recipients.push(viewer.account_id);
    events::record(&txn, now, event).await?;
    txn.commit().await?;
    Ok(accepted)
}

/// The owner cancels a pending transfer; an administrator may cancel any
/// on the owner's behalf, giving a `reason` (1 to 500 characters, required
/// then), recorded in the event's `changes.reason`.
pub async fn cancel(
    ctx: &Ctx,
    viewer: &Viewer,
    transfer_id: i64,
    reason: Option<&str>,
) -> ApiResult<order_transfer::Model> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let found = order_transfer::Entity::find_by_id(transfer_id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("transfer"))?;
    let order = orders::lock(&txn, found.order_id).await?;
    let owner_manages = rights::can_manage(&txn, viewer, &order).await?;
    let on_behalf = !owner_manages && viewer.is_admin;
    let reason = super::support::reason_on_behalf(reason, on_behalf)?;
    let manages = owner_manages || on_behalf;
    if !manages && found.from_account_id != viewer.account_id {
        return Err(AppError::NotFound("transfer"));
    }
    let transfer = order_transfer::Entity::find_by_id(found.id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("transfer"))?;
    ensure_pending(&transfer, now)?;
    if !manages {
        return Err(AppError::Forbidden("you no longer hold this order"));
    }
    let cancelled = mark_cancelled(&txn, &order, transfer, viewer.account_id, now, reason).await?;
    txn.commit().await?;
    Ok(cancelled)
}

/// Cancel a pending transfer (its order locked by the caller), with its event
/// to the order's managers and the addressee.
async fn mark_cancelled(
    txn: &impl ConnectionTrait,
    order: &order::Model,
    transfer: order_transfer::Model,
    actor_id: i64,
    now: DateTime<Utc>,
    reason: Option<String>,
) -> ApiResult<order_transfer::Model> {
    let mut cancelled: order_transfer::ActiveModel = transfer.clone().into();
    cancelled.status = Set(TransferStatus::Cancelled);
    cancelled.decided_at = Set(Some(now));
    let cancelled = cancelled.update(txn).await?;
    let mut event = NewEvent::new(EventKind::TransferCancelled, Some(actor_id));
    event.order_id = Some(order.id);
    event.transfer_id = Some(transfer.id);
    event.changes = json!({"before": {"status": TransferStatus::Pending}, "after": {"status": TransferStatus::Cancelled}});
    if let Some(reason) = reason {
        event.changes["reason"] = json!(reason);
    }
    event.recipients = rights::order_managers(txn, order).await?;
    event
        .recipients
        .extend(rights::verified_account_id(txn, &transfer.to_email).await?);
    events::record(txn, now, event).await?;
    Ok(cancelled)
}

/// After a change of an organization's members: cancel the pending transfers
/// of its orders whose sender may no longer transfer them (they left, or
/// stopped being an admin). Such a transfer could never be accepted, and
/// would block a new one; nor does it come back if the sender rejoins.
pub async fn cancel_orphaned(
    txn: &impl ConnectionTrait,
    organization_id: i64,
    actor_id: i64,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let organization_orders = Query::select()
        .column(order::Column::Id)
        .from(order::Entity)
        .and_where(order::Column::OrganizationId.eq(organization_id))
        .to_owned();
    let pending = order_transfer::Entity::find()
        .filter(order_transfer::Column::OrderId.in_subquery(organization_orders))
        .filter(order_transfer::Column::Status.eq(TransferStatus::Pending))
        .filter(order_transfer::Column::ExpiresAt.gt(now))
        .all(txn)
        .await?;
    for found in pending {
        // Lock the order, then the transfer, as `accept` and `cancel` do,
        // and look again: it may have been decided meanwhile.
        let order = orders::lock(txn, found.order_id).await?;
        if rights::order_transferers(txn, &order)
            .await?
            .contains(&found.from_account_id)
        {
            continue;
        }
        let transfer = order_transfer::Entity::find_by_id(found.id)
            .lock_exclusive()
            .one(txn)
            .await?;
        if let Some(transfer) =
            transfer.filter(|t| effective_status(t, now) == TransferStatus::Pending)
        {
            mark_cancelled(txn, &order, transfer, actor_id, now, None).await?;
        }
    }
    Ok(())
}

/// Transfers from `viewer` (outgoing) or to their verified email (incoming), newest first.
pub async fn list(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    direction: Direction,
    status: Option<TransferStatus>,
    now: DateTime<Utc>,
) -> ApiResult<Vec<order_transfer::Model>> {
    let query = order_transfer::Entity::find()
        .order_by_desc(order_transfer::Column::Id)
        .limit(100);
    let query = match direction {
        Direction::Outgoing => {
            query.filter(order_transfer::Column::FromAccountId.eq(viewer.account_id))
        }
        Direction::Incoming => {
            query.filter(order_transfer::Column::ToEmail.eq(viewer.verified_email()?))
        }
    };
    let all = query.all(conn).await?;
    Ok(all
        .into_iter()
        .filter(|t| status.is_none_or(|s| effective_status(t, now) == s))
        .collect())
}

/// The sender's email, for display.
pub async fn from_email(
    conn: &impl ConnectionTrait,
    transfer: &order_transfer::Model,
) -> ApiResult<String> {
    Ok(account::Entity::find_by_id(transfer.from_account_id)
        .one(conn)
        .await?
        .map(|a| a.email)
        .unwrap_or_default())
}

/// The transfer `transfer_id` if `viewer` started it or it is addressed to their verified email.
pub async fn readable(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    transfer_id: i64,
) -> ApiResult<Option<order_transfer::Model>> {
    Ok(order_transfer::Entity::find_by_id(transfer_id)
        .one(conn)
        .await?
        .filter(|t| {
            t.from_account_id == viewer.account_id
                || (viewer.email_verified && t.to_email == viewer.email)
                || viewer.is_admin
        }))
}
