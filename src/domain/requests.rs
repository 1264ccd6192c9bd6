//! Asking a buyer for a license (product.md "Requesting"). A request is
//! addressed to an email: the buyer sees it once an account has verified that
//! address, and approves it by choosing one of their free keys.
use chrono::{DateTime, Utc};
use entity::{account, by_position, license_request};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::json;

use super::{
    Ctx, Direction, email,
    expiry::{self, ApprovalStatus},
    licenses, rights,
};
use crate::{
    auth::Viewer,
    error::{ApiResult, AppError},
    events::{self, EventKind, NewEvent},
    mail::{self, Email},
};

/// Longest message a requester may write.
pub const MAX_MESSAGE: usize = 1000;

/// A request's status as of `now` (the 7-day rule of [`expiry`]).
pub fn effective_status(request: &license_request::Model, now: DateTime<Utc>) -> ApprovalStatus {
    expiry::effective_status(request.status, request.created_at, now)
}

/// Ask the buyer at `buyer_email` for a license.
pub async fn create(
    ctx: &Ctx,
    viewer: &Viewer,
    buyer_email: &str,
    message: Option<&str>,
) -> ApiResult<license_request::Model> {
    let requester_email = viewer.verified_email()?.to_owned();
    let buyer_email = email::normalize(buyer_email, "buyerEmail")?;
    if buyer_email == requester_email {
        return Err(AppError::validation(
            "buyerEmail",
            "you cannot ask yourself for a license",
        ));
    }
    let message = message.unwrap_or_default().trim().to_owned();
    if message.chars().count() > MAX_MESSAGE {
        return Err(AppError::validation(
            "message",
            format!("message must be at most {MAX_MESSAGE} characters"),
        ));
    }
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let request = license_request::ActiveModel {
        requester_id: Set(viewer.account_id),
        buyer_email: Set(buyer_email.clone()),
        message: Set(message.clone()),
        status: Set(ApprovalStatus::Pending),
        license_id: Set(None),
        created_at: Set(now),
        decided_at: Set(None),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    let mut event = NewEvent::new(EventKind::RequestCreated, Some(viewer.account_id));
    event.request_id = Some(request.id);
    event.changes =
        json!({"after": {"status": ApprovalStatus::Pending, "buyerEmail": buyer_email}});
    event.recipients = vec![viewer.account_id];
    event
        .recipients
        .extend(rights::verified_account_id(&txn, &buyer_email).await?);
    events::record(&txn, now, event).await?;
    mail::enqueue(
        &txn,
        now,
        &buyer_email,
        Email::RequestReceived {
            requester: requester_email,
            message,
            link: format!("{}/graphql", ctx.public_url),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(request)
}

/// A pending request addressed to `viewer`'s verified email, locked.
async fn lock_pending_for_buyer(
    txn: &impl ConnectionTrait,
    viewer: &Viewer,
    request_id: i64,
    now: DateTime<Utc>,
) -> ApiResult<license_request::Model> {
    let buyer_email = viewer.verified_email()?;
    let request = license_request::Entity::find_by_id(request_id)
        .lock_exclusive()
        .one(txn)
        .await?
        .filter(|r| r.buyer_email == buyer_email)
        .ok_or(AppError::NotFound("request"))?;
    ensure_pending(request, now)
}

/// `request` if it is still pending, else `CONFLICT`.
fn ensure_pending(
    request: license_request::Model,
    now: DateTime<Utc>,
) -> ApiResult<license_request::Model> {
    match effective_status(&request, now) {
        ApprovalStatus::Pending => Ok(request),
        ApprovalStatus::Expired => Err(AppError::conflict("this request has expired")),
        status => Err(AppError::conflict(format!(
            "this request is already {}",
            sea_orm::ActiveEnum::to_value(&status).to_lowercase()
        ))),
    }
}

/// Record the decision on a request: status, event to both, email to the requester.
async fn decide(
    txn: &impl ConnectionTrait,
    viewer: &Viewer,
    request: license_request::Model,
    license: Option<(i64, String, i64)>,
    now: DateTime<Utc>,
    reason: Option<String>,
) -> ApiResult<license_request::Model> {
    let approved = license.is_some();
    let status = if approved {
        ApprovalStatus::Approved
    } else {
        ApprovalStatus::Declined
    };
    let requester = account::Entity::find_by_id(request.requester_id)
        .one(txn)
        .await?
        .ok_or_else(|| AppError::internal("request without requester"))?;
    let mut changed: license_request::ActiveModel = request.clone().into();
    changed.status = Set(status);
    changed.decided_at = Set(Some(now));
    changed.license_id = Set(license.as_ref().map(|(id, _, _)| *id));
    let decided = changed.update(txn).await?;
    let kind = if approved {
        EventKind::RequestApproved
    } else {
        EventKind::RequestDeclined
    };
    let mut event = NewEvent::new(kind, Some(viewer.account_id));
    event.request_id = Some(request.id);
    event.license_id = license.as_ref().map(|(id, _, _)| *id);
    event.order_id = license.as_ref().map(|(_, _, order)| *order);
    event.changes = json!({"before": {"status": request.status}, "after": {"status": status}});
    event.recipients = vec![viewer.account_id, request.requester_id];
    if let Some(reason) = reason {
        // An administrator decided for the buyer, who hears of it too.
        event.changes["reason"] = json!(reason);
        event
            .recipients
            .extend(rights::verified_account_id(txn, &request.buyer_email).await?);
    }
    events::record(txn, now, event).await?;
    mail::enqueue(
        txn,
        now,
        &requester.email,
        Email::RequestDecided {
            buyer: request.buyer_email.clone(),
            approved,
            key: license.map(|(_, key, _)| key),
        },
    )
    .await?;
    Ok(decided)
}

/// Approve a request by giving the requester one of the buyer's free keys.
pub async fn approve(
    ctx: &Ctx,
    viewer: &Viewer,
    request_id: i64,
    license_id: i64,
) -> ApiResult<license_request::Model> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let request = lock_pending_for_buyer(&txn, viewer, request_id, now).await?;
    let (license, order) = licenses::lock_for_manager(&txn, viewer, license_id)
        .await
        .map_err(|_| AppError::conflict("this key is not one of yours"))?;
    if license.assignee_email.is_some() {
        return Err(AppError::conflict(
            "this key is already assigned; choose a free key",
        ));
    }
    let requester = account::Entity::find_by_id(request.requester_id)
        .one(&txn)
        .await?
        .ok_or_else(|| AppError::internal("request without requester"))?;
    let license = licenses::set_assignment(
        &txn,
        viewer.account_id,
        &order,
        license,
        Some(licenses::NewAssignee::email(&requester.email)),
        now,
    )
    .await?;
    let decided = decide(
        &txn,
        viewer,
        request,
        Some((license.id, license.key.clone(), order.id)),
        now,
        None,
    )
    .await?;
    txn.commit().await?;
    Ok(decided)
}

/// The buyer declines a request; an administrator may decline any on the
/// buyer's behalf, giving a `reason` (1 to 500 characters, required then),
/// recorded in the event's `changes.reason`. The requester's email names
/// the buyer either way.
pub async fn decline(
    ctx: &Ctx,
    viewer: &Viewer,
    request_id: i64,
    reason: Option<&str>,
) -> ApiResult<license_request::Model> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let (request, reason) = if viewer.is_admin {
        let request = license_request::Entity::find_by_id(request_id)
            .lock_exclusive()
            .one(&txn)
            .await?
            .ok_or(AppError::NotFound("request"))?;
        let on_behalf = !(viewer.email_verified && request.buyer_email == viewer.email);
        let reason = super::support::reason_on_behalf(reason, on_behalf)?;
        (ensure_pending(request, now)?, reason)
    } else {
        let reason = super::support::reason_on_behalf(reason, false)?;
        let request = lock_pending_for_buyer(&txn, viewer, request_id, now).await?;
        (request, reason)
    };
    let decided = decide(&txn, viewer, request, None, now, reason).await?;
    txn.commit().await?;
    Ok(decided)
}

/// Requests to or from `viewer`, oldest first, filtered on effective status.
///
/// With `with_requesters`, each request comes with its requester's account,
/// read in the same statement (a join): what a page of incoming requests
/// shows beside each. Without, the account is `None`.
#[allow(clippy::too_many_arguments)]
pub async fn list(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    direction: Direction,
    status: Option<ApprovalStatus>,
    now: DateTime<Utc>,
    after: Option<i64>,
    limit: u64,
    with_requesters: bool,
) -> ApiResult<Vec<(license_request::Model, Option<account::Model>)>> {
    let mut query = license_request::Entity::find()
        .order_by_asc(license_request::Column::Id)
        .limit(limit);
    query = match direction {
        Direction::Incoming => {
            query.filter(license_request::Column::BuyerEmail.eq(viewer.verified_email()?))
        }
        Direction::Outgoing => {
            query.filter(license_request::Column::RequesterId.eq(viewer.account_id))
        }
    };
    if let Some(wanted) = status {
        query = query.filter(expiry::status_condition(
            license_request::Column::Status,
            license_request::Column::CreatedAt,
            wanted,
            now,
        ));
    }
    if let Some(after) = after {
        query = query.filter(license_request::Column::Id.gt(after));
    }
    if with_requesters {
        // Read by position: a hundred rows of two models each.
        return Ok(by_position::pairs(
            conn,
            query.find_also_linked(account::Via(license_request::Column::RequesterId)),
        )
        .await?);
    }
    let rows: Vec<license_request::Model> = by_position::all(conn, query).await?;
    Ok(rows.into_iter().map(|request| (request, None)).collect())
}

/// The request `request_id` if `viewer` made it or it is addressed to their verified email.
pub async fn readable(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    request_id: i64,
) -> ApiResult<Option<license_request::Model>> {
    Ok(license_request::Entity::find_by_id(request_id)
        .one(conn)
        .await?
        .filter(|r| {
            r.requester_id == viewer.account_id
                || (viewer.email_verified && r.buyer_email == viewer.email)
                || viewer.is_admin
        }))
}
