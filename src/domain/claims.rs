//! Claiming a key by its string, and the owner's approval (product.md
//! "Claiming", "Claim settings").
//!
//! Notifications, decided where product.md leaves room:
//! - a claim linked at once emails the owner only if "email me when a key is
//!   claimed" is on;
//! - under manual approval the owner gets the live event and sees the claim in
//!   `claimRequests`, and no email (the setting's email is suppressed while
//!   manual approval applies);
//! - a claim that waits because the key has another assignee (manual approval
//!   off) emails the owner if "email me when a key is claimed" is on, since
//!   nothing else would tell them to act;
//! - the claimer is emailed the outcome of every claim the owner decides.
use chrono::{DateTime, Utc};
use entity::{account, by_position, claim, license, order};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, Select,
    sea_query::{Expr, ExprTrait, LockType, Query},
};
use serde_json::json;

use super::{
    Ctx, keys,
    licenses::{self, NewAssignee},
    rights,
};
use crate::{
    auth::Viewer,
    error::{ApiResult, AppError},
    events::{self, EventKind, NewEvent},
    mail::{self, Email},
};

pub use super::expiry::ApprovalStatus;
use super::expiry::{self, PENDING_TTL};

/// A claim's status as of `now` (the 7-day rule of [`expiry`]).
pub fn effective_status(claim: &claim::Model, now: DateTime<Utc>) -> ApprovalStatus {
    expiry::effective_status(claim.status, claim.created_at, now)
}

/// What a claim attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The key is now assigned to the claimer.
    Linked,
    /// The claim waits for the owner's approval.
    Pending,
    /// The key was already the claimer's: nothing changed.
    AlreadyYours,
}

pub struct ClaimResult {
    pub outcome: Outcome,
    pub claim: Option<claim::Model>,
    pub license: license::Model,
}

/// Whether claims on `order` wait for approval: the order's override, else
/// the owner's setting.
pub fn manual_approval_applies(order: &order::Model, owner: &account::Model) -> bool {
    order
        .require_manual_approval
        .unwrap_or(owner.require_manual_approval)
}

fn not_found() -> AppError {
    // Unknown key, key of another product, unpaid order: one answer, so keys cannot be probed.
    AppError::NotFound("key")
}

/// Claim the key `raw_key` for `viewer` (signed in, verified). `product`, when
/// given, must be the key's product.
pub async fn claim(
    ctx: &Ctx,
    viewer: &Viewer,
    raw_key: &str,
    product: Option<&str>,
) -> ApiResult<ClaimResult> {
    let claimer_email = viewer.verified_email()?.to_owned();
    let Some(key) = keys::normalize(raw_key) else {
        return Err(not_found());
    };
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    // A claim is on the hot path: the key is found and locked, with its
    // order and the order's owner (whose settings decide), in one statement.
    // Only the key's row is locked: claims of other keys of the order go on.
    let mut find = license::Entity::find()
        .filter(license::Column::Key.eq(key))
        .find_also_related(order::Entity)
        .and_also_related(account::Entity);
    QueryTrait::query(&mut find).lock_with_tables(LockType::Update, [license::Entity]);
    let (license, order, owner) = find.one(&txn).await?.ok_or_else(not_found)?;
    let order = order.ok_or_else(not_found)?;
    if product.is_some_and(|p| p.trim() != order.product) {
        return Err(not_found());
    }
    super::orders::ensure_not_refunded(&order)?;
    let owner = owner.ok_or_else(|| AppError::internal("order without owner"))?;

    if license.assignee_email.as_deref() == Some(claimer_email.as_str()) {
        let claim = claim::Entity::find()
            .filter(claim::Column::LicenseId.eq(license.id))
            .filter(claim::Column::ClaimerId.eq(viewer.account_id))
            .filter(claim::Column::Status.eq(ApprovalStatus::Approved))
            .order_by_desc(claim::Column::Id)
            .one(&txn)
            .await?;
        return Ok(ClaimResult {
            outcome: Outcome::AlreadyYours,
            claim,
            license,
        });
    }
    let manual = manual_approval_applies(&order, &owner);
    let held_by_other = license.assignee_email.is_some();
    let link_now = !manual && (!held_by_other || owner.allow_override_assignee);
    let status = if link_now {
        ApprovalStatus::Approved
    } else {
        ApprovalStatus::Pending
    };
    let decided_at = link_now.then_some(now);
    // The claimer's own pending claim on this key is the answer, if there is
    // one. It can expire (the sweeper does not take the key's lock) between
    // the insert's check and the read of it: then the insert goes again.
    let mut attempts = 0;
    let claim = loop {
        attempts += 1;
        let inserted =
            insert_unless_pending(&txn, license.id, viewer.account_id, status, decided_at, now)
                .await?;
        if let Some(claim) = inserted {
            break claim;
        }
        if let Some(pending) = mine_pending(license.id, viewer.account_id, now)
            .one(&txn)
            .await?
        {
            return Ok(ClaimResult {
                outcome: Outcome::Pending,
                claim: Some(pending),
                license,
            });
        }
        if attempts == 2 {
            return Err(AppError::internal(
                "a pending claim kept appearing and vanishing under the key's lock",
            ));
        }
    };
    let managers = rights::order_managers(&txn, &order).await?;
    let mut created = NewEvent::new(EventKind::ClaimCreated, Some(viewer.account_id));
    created.order_id = Some(order.id);
    created.license_id = Some(license.id);
    created.claim_id = Some(claim.id);
    created.changes = json!({"after": {"status": claim.status, "claimer": claimer_email}});
    created.recipients = managers.clone();
    created.recipients.push(viewer.account_id);
    events::record(&txn, now, created).await?;

    let license = if link_now {
        // The claimer verified `claimer_email`: no need to look the account up.
        let claimer = NewAssignee {
            email: &claimer_email,
            organization: None,
            account_id: Some(viewer.account_id),
        };
        link(&txn, &order, license, claimer, viewer.account_id, now).await?
    } else {
        license
    };
    // The owner hears of a linked claim, or of one waiting because the key is
    // held, if they asked to; under manual approval the email is suppressed.
    // The email names the key: a buyer who has left the organization the
    // order belongs to gets none.
    if owner.notify_on_claim && !manual && rights::owner_holds_rights(&txn, &order, &owner).await? {
        mail::enqueue(
            &txn,
            now,
            &owner.email,
            Email::ClaimReceived {
                product: super::products::display_name(&txn, &order.product).await?,
                key: license.key.clone(),
                claimer: claimer_email.clone(),
                pending: !link_now,
                link: format!("{}/graphql", ctx.public_url),
            },
        )
        .await?;
    }
    let outcome = if link_now {
        Outcome::Linked
    } else {
        Outcome::Pending
    };
    txn.commit().await?;
    Ok(ClaimResult {
        outcome,
        claim: Some(claim),
        license,
    })
}

/// The claimer's pending (not yet expired) claim on a key.
fn mine_pending(license_id: i64, claimer_id: i64, now: DateTime<Utc>) -> Select<claim::Entity> {
    claim::Entity::find()
        .filter(claim::Column::LicenseId.eq(license_id))
        .filter(claim::Column::ClaimerId.eq(claimer_id))
        .filter(claim::Column::Status.eq(ApprovalStatus::Pending))
        .filter(claim::Column::CreatedAt.gt(now - PENDING_TTL))
}

/// Insert a claim unless the claimer already has one pending on the key
/// (then `None`), in one statement: the check rides in the insert, as the
/// hot path of a claim pays for every round trip. Run under the key's lock,
/// so the check sees every claim committed before it.
async fn insert_unless_pending(
    txn: &impl ConnectionTrait,
    license_id: i64,
    claimer_id: i64,
    status: ApprovalStatus,
    decided_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ApiResult<Option<claim::Model>> {
    let pending = mine_pending(license_id, claimer_id, now)
        .select_only()
        .expr(Expr::val(1))
        .into_query();
    let row = Query::select()
        .exprs([
            Expr::val(license_id),
            Expr::val(claimer_id),
            Expr::val(status),
            Expr::val(now),
            Expr::val(decided_at),
            Expr::val(None::<i64>),
        ])
        .and_where(Expr::exists(pending).not())
        .to_owned();
    let insert = Query::insert()
        .into_table(claim::Entity)
        .columns([
            claim::Column::LicenseId,
            claim::Column::ClaimerId,
            claim::Column::Status,
            claim::Column::CreatedAt,
            claim::Column::DecidedAt,
            claim::Column::DecidedBy,
        ])
        .select_from(row)
        .map_err(AppError::internal)?
        .returning_all()
        .to_owned();
    let statement = txn.get_database_backend().build(&insert);
    Ok(claim::Model::find_by_statement(statement).one(txn).await?)
}

/// Give `license` to the claimer `email` in the caller's transaction; a
/// replaced assignee is told by email (and by the assignment event).
async fn link(
    txn: &impl ConnectionTrait,
    order: &order::Model,
    license: license::Model,
    claimer: NewAssignee<'_>,
    actor_id: i64,
    now: DateTime<Utc>,
) -> ApiResult<license::Model> {
    let previous = license.assignee_email.clone();
    let old_key = license.key.clone();
    let email = claimer.email;
    let updated =
        licenses::set_assignment(txn, actor_id, order, license, Some(claimer), now).await?;
    if let Some(previous) = previous.filter(|p| p != email) {
        // The key has a new string now, which the replaced assignee must not see.
        mail::enqueue(
            txn,
            now,
            &previous,
            Email::AssigneeReplaced {
                product: super::products::display_name(txn, &order.product).await?,
                key: old_key,
            },
        )
        .await?;
    }
    Ok(updated)
}

/// A pending claim on one of `viewer`'s orders, with its key and order locked
/// (the key first, so competing decisions on one key queue behind each other).
async fn lock_pending_for_manager(
    txn: &impl ConnectionTrait,
    viewer: &Viewer,
    claim_id: i64,
    now: DateTime<Utc>,
) -> ApiResult<(claim::Model, license::Model, order::Model)> {
    let found = claim::Entity::find_by_id(claim_id)
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("claim"))?;
    let (license, order) = licenses::lock_for_manager(txn, viewer, found.license_id)
        .await
        .map_err(|_| AppError::NotFound("claim"))?;
    let claim = claim::Entity::find_by_id(claim_id)
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("claim"))?;
    match effective_status(&claim, now) {
        ApprovalStatus::Pending => Ok((claim, license, order)),
        ApprovalStatus::Expired => Err(AppError::conflict("this claim has expired")),
        status => Err(AppError::conflict(format!(
            "this claim is already {}",
            sea_orm::ActiveEnum::to_value(&status).to_lowercase()
        ))),
    }
}

/// Set a claim's decision and record it (event to owner and claimer, email to claimer).
async fn decide(
    txn: &impl ConnectionTrait,
    claim: claim::Model,
    license: &license::Model,
    order: &order::Model,
    approved: bool,
    decided_by: Option<i64>,
    now: DateTime<Utc>,
) -> ApiResult<claim::Model> {
    let claimer = account::Entity::find_by_id(claim.claimer_id)
        .one(txn)
        .await?
        .ok_or_else(|| AppError::internal("claim without claimer"))?;
    let status = if approved {
        ApprovalStatus::Approved
    } else {
        ApprovalStatus::Declined
    };
    // An approved claimer holds the key and sees its string; a declined one
    // is shown the string they claimed, never one given out since.
    let shown_key = if approved {
        license.key.clone()
    } else {
        keys::string_at(txn, license, claim.created_at).await?
    };
    let mut changed: claim::ActiveModel = claim.clone().into();
    changed.status = Set(status);
    changed.decided_at = Set(Some(now));
    changed.decided_by = Set(decided_by);
    let decided = changed.update(txn).await?;
    let kind = if approved {
        EventKind::ClaimApproved
    } else {
        EventKind::ClaimDeclined
    };
    let mut event = NewEvent::new(kind, decided_by);
    event.order_id = Some(order.id);
    event.license_id = Some(license.id);
    event.claim_id = Some(claim.id);
    event.changes = json!({"before": {"status": claim.status}, "after": {"status": status}});
    event.recipients = rights::order_managers(txn, order).await?;
    event.recipients.push(claim.claimer_id);
    events::record(txn, now, event).await?;
    mail::enqueue(
        txn,
        now,
        &claimer.email,
        Email::ClaimDecided {
            product: super::products::display_name(txn, &order.product).await?,
            key: shown_key,
            approved,
        },
    )
    .await?;
    Ok(decided)
}

/// Approve a pending claim: the key goes to the claimer and every other
/// pending claim on the key is declined.
pub async fn approve(ctx: &Ctx, viewer: &Viewer, claim_id: i64) -> ApiResult<claim::Model> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let (claim, license, order) = lock_pending_for_manager(&txn, viewer, claim_id, now).await?;
    let claimer = account::Entity::find_by_id(claim.claimer_id)
        .one(&txn)
        .await?
        .ok_or_else(|| AppError::internal("claim without claimer"))?;
    let license = if license.assignee_email.as_deref() == Some(claimer.email.as_str()) {
        license
    } else {
        let assignee = NewAssignee::email(&claimer.email);
        link(&txn, &order, license, assignee, viewer.account_id, now).await?
    };
    let approved = decide(
        &txn,
        claim,
        &license,
        &order,
        true,
        Some(viewer.account_id),
        now,
    )
    .await?;
    let others = claim::Entity::find()
        .filter(claim::Column::LicenseId.eq(license.id))
        .filter(claim::Column::Status.eq(ApprovalStatus::Pending))
        .filter(claim::Column::Id.ne(approved.id))
        .all(&txn)
        .await?;
    for other in others {
        if effective_status(&other, now) == ApprovalStatus::Pending {
            decide(
                &txn,
                other,
                &license,
                &order,
                false,
                Some(viewer.account_id),
                now,
            )
            .await?;
        }
    }
    txn.commit().await?;
    Ok(approved)
}

pub async fn decline(ctx: &Ctx, viewer: &Viewer, claim_id: i64) -> ApiResult<claim::Model> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let (claim, license, order) = lock_pending_for_manager(&txn, viewer, claim_id, now).await?;
    let declined = decide(
        &txn,
        claim,
        &license,
        &order,
        false,
        Some(viewer.account_id),
        now,
    )
    .await?;
    txn.commit().await?;
    Ok(declined)
}

/// Decline every pending claim on the keys of `order` (locked by the
/// caller), each with its event and the claimer's email, as an owner's
/// decline would: the order was refunded, its keys go to nobody.
pub async fn decline_pending_on_order(
    txn: &impl ConnectionTrait,
    order: &order::Model,
    decided_by: Option<i64>,
    now: DateTime<Utc>,
) -> ApiResult<usize> {
    let keys = Query::select()
        .column(license::Column::Id)
        .from(license::Entity)
        .and_where(license::Column::OrderId.eq(order.id))
        .to_owned();
    let pending = claim::Entity::find()
        .filter(claim::Column::LicenseId.in_subquery(keys))
        .filter(claim::Column::Status.eq(ApprovalStatus::Pending))
        .order_by_asc(claim::Column::Id)
        .all(txn)
        .await?;
    let mut declined = 0;
    for claim in pending {
        if effective_status(&claim, now) != ApprovalStatus::Pending {
            continue; // expired: the sweeper records it
        }
        let license = license::Entity::find_by_id(claim.license_id)
            .one(txn)
            .await?
            .ok_or_else(|| AppError::internal("claim without key"))?;
        decide(txn, claim, &license, order, false, decided_by, now).await?;
        declined += 1;
    }
    Ok(declined)
}

/// Filter on a claim's effective status.
fn status_filter<S: QueryFilter>(
    query: S,
    status: Option<ApprovalStatus>,
    now: DateTime<Utc>,
) -> S {
    match status {
        None => query,
        Some(wanted) => query.filter(expiry::status_condition(
            claim::Column::Status,
            claim::Column::CreatedAt,
            wanted,
            now,
        )),
    }
}

/// One page of `query`, oldest first, filtered on effective status.
async fn page(
    conn: &impl ConnectionTrait,
    query: sea_orm::Select<claim::Entity>,
    status: Option<ApprovalStatus>,
    now: DateTime<Utc>,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<claim::Model>> {
    Ok(by_position::all(conn, paged(query, status, now, after, limit)).await?)
}

/// `query` filtered by `status`, after `after`, oldest first, at most `limit`.
fn paged(
    query: sea_orm::Select<claim::Entity>,
    status: Option<ApprovalStatus>,
    now: DateTime<Utc>,
    after: Option<i64>,
    limit: u64,
) -> sea_orm::Select<claim::Entity> {
    let mut query = status_filter(query, status, now)
        .order_by_asc(claim::Column::Id)
        .limit(limit);
    if let Some(after) = after {
        query = query.filter(claim::Column::Id.gt(after));
    }
    query
}

/// Claims on keys of orders `viewer` manages, oldest first. With
/// `with_claimers`, each comes with its claimer's account, read in the same
/// statement (a join): claims come from many people, and a page of them
/// shows each one's claimer. Without, the account is `None`.
pub async fn incoming(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    status: Option<ApprovalStatus>,
    now: DateTime<Utc>,
    after: Option<i64>,
    limit: u64,
    with_claimers: bool,
) -> ApiResult<Vec<(claim::Model, Option<account::Model>)>> {
    let managed_orders = rights::managed_orders_query(viewer);
    let query = claim::Entity::find().filter(
        claim::Column::LicenseId.in_subquery(
            Query::select()
                .column(license::Column::Id)
                .from(license::Entity)
                .and_where(license::Column::OrderId.in_subquery(managed_orders))
                .to_owned(),
        ),
    );
    let query = paged(query, status, now, after, limit);
    if with_claimers {
        // Read by position: a hundred rows of two models each.
        return Ok(by_position::pairs(
            conn,
            query.find_also_linked(account::Via(claim::Column::ClaimerId)),
        )
        .await?);
    }
    let rows: Vec<claim::Model> = by_position::all(conn, query).await?;
    Ok(rows.into_iter().map(|claim| (claim, None)).collect())
}

/// `viewer`'s own claims, oldest first.
pub async fn mine(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    status: Option<ApprovalStatus>,
    now: DateTime<Utc>,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<claim::Model>> {
    let query = claim::Entity::find().filter(claim::Column::ClaimerId.eq(viewer.account_id));
    page(conn, query, status, now, after, limit).await
}

/// The claim `claim_id` if `viewer` is its claimer or manages its key's order.
pub async fn readable(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    claim_id: i64,
) -> ApiResult<Option<claim::Model>> {
    let Some(claim) = claim::Entity::find_by_id(claim_id).one(conn).await? else {
        return Ok(None);
    };
    if claim.claimer_id == viewer.account_id {
        return Ok(Some(claim));
    }
    match licenses::readable(conn, viewer, claim.license_id).await {
        Ok((_, _, licenses::Access::Manager | licenses::Access::Admin)) => Ok(Some(claim)),
        Ok(_) | Err(AppError::NotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}
