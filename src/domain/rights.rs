//! Who may do what on an order. One place, so every rule asks the same question.
//!
//! An order without an organization is managed by its owner. An order bought
//! for an organization is managed by the organization's admins, and by the
//! buying member while they are still a member. Memberships count only for a
//! verified email.
use entity::{account, license, order, organization_member};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Query, SelectStatement},
};

use serde_json::Value;

use super::organizations::{self, OrganizationRole};
use crate::{
    auth::Viewer,
    error::{ApiResult, AppError},
    events::EventKind,
};

/// True when `viewer` holds the owner's rights on `order` (assign, approve
/// claims, settings, transfer).
pub async fn can_manage(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    order: &order::Model,
) -> ApiResult<bool> {
    let Some(organization_id) = order.organization_id else {
        return Ok(manages(viewer, order, None));
    };
    let role = organizations::membership(conn, viewer, organization_id)
        .await?
        .map(|member| member.role);
    Ok(manages(viewer, order, role))
}

/// [`can_manage`] once `viewer`'s role in the order's organization is known
/// (`None` for no membership, or an order of no organization), for a check
/// of many orders that reads each membership once.
pub fn manages(viewer: &Viewer, order: &order::Model, role: Option<OrganizationRole>) -> bool {
    match (order.organization_id, role) {
        (None, _) => order.owner_id == viewer.account_id,
        (Some(_), Some(role)) => {
            role == OrganizationRole::Admin || order.owner_id == viewer.account_id
        }
        (Some(_), None) => false,
    }
}

/// True when `viewer` may transfer `order` to another owner: the owner of
/// their own order; for an organization's order only the organization's
/// admins, not the member who bought it, who could otherwise take it out of
/// the organization (product.md "Companies and devices").
pub async fn can_transfer(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    order: &order::Model,
) -> ApiResult<bool> {
    let Some(organization_id) = order.organization_id else {
        return Ok(order.owner_id == viewer.account_id);
    };
    Ok(organizations::membership(conn, viewer, organization_id)
        .await?
        .is_some_and(|member| member.role == OrganizationRole::Admin))
}

/// True while an order's owner holds its rights: always for their own order,
/// and while they are a member for an organization's order (the same rule as
/// [`can_manage`], for an owner known by their account rather than signed in).
/// The owner's claim settings keep deciding for the order after they leave
/// (an organization has no settings of its own; its admins can override
/// manual approval per order); what stops is anything sent to them.
pub async fn owner_holds_rights(
    conn: &impl ConnectionTrait,
    order: &order::Model,
    owner: &account::Model,
) -> ApiResult<bool> {
    let Some(organization_id) = order.organization_id else {
        return Ok(true);
    };
    let verified = owner.email_verified_at.is_some();
    Ok(
        organizations::membership_of(conn, organization_id, &owner.email, verified)
            .await?
            .is_some(),
    )
}

/// True when `viewer` may read `license`'s full key string: its order's
/// managers (`manages_order`, from [`can_manage`]) and its current assignee,
/// and no one else, administrators included. The one rule for every path
/// that reaches a key: whoever holds the string can activate it.
pub fn may_see_key(viewer: &Viewer, license: &license::Model, manages_order: bool) -> bool {
    manages_order || super::licenses::is_assignee(viewer, license)
}

/// `can_manage`, or `NOT_FOUND` for a stranger: whether an order exists is
/// not revealed to people with no rights on it.
pub async fn require_manage(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    order: &order::Model,
) -> ApiResult<()> {
    if can_manage(conn, viewer, order).await? {
        Ok(())
    } else {
        Err(AppError::NotFound("order"))
    }
}

/// Ids of the orders `viewer` manages, as a subquery (the same rule as [`can_manage`]).
pub fn managed_orders_query(viewer: &Viewer) -> SelectStatement {
    let mine = order::Column::OwnerId.eq(viewer.account_id);
    let condition = if viewer.email_verified {
        let my_organizations = |admin_only: bool| {
            let mut q = Query::select();
            q.column(organization_member::Column::OrganizationId)
                .from(organization_member::Entity)
                .and_where(organization_member::Column::Email.eq(&viewer.email));
            if admin_only {
                q.and_where(organization_member::Column::Role.eq(OrganizationRole::Admin));
            }
            q.to_owned()
        };
        Condition::any()
            .add(
                Condition::all().add(mine).add(
                    Condition::any()
                        .add(order::Column::OrganizationId.is_null())
                        .add(order::Column::OrganizationId.in_subquery(my_organizations(false))),
                ),
            )
            .add(order::Column::OrganizationId.in_subquery(my_organizations(true)))
    } else {
        Condition::all()
            .add(mine)
            .add(order::Column::OrganizationId.is_null())
    };
    Query::select()
        .column(order::Column::Id)
        .from(order::Entity)
        .cond_where(condition)
        .to_owned()
}

/// The account that verified `email`, if any: only a verified address links
/// an account to what was addressed to that email.
pub async fn verified_account_id(
    conn: &impl ConnectionTrait,
    email: &str,
) -> ApiResult<Option<i64>> {
    Ok(account::Entity::find()
        .select_only()
        .column(account::Column::Id)
        .filter(account::Column::Email.eq(email))
        .filter(account::Column::EmailVerifiedAt.is_not_null())
        .into_tuple::<i64>()
        .one(conn)
        .await?)
}

/// Accounts that receive an order's events as its managers: the owner (while
/// a member, for an organization's order) and the organization's admins.
pub async fn order_managers(
    conn: &impl ConnectionTrait,
    order: &order::Model,
) -> ApiResult<Vec<i64>> {
    managers_among(conn, order, true).await
}

/// Accounts that may transfer `order` (the same rule as [`can_transfer`]):
/// its owner, or the organization's admins for an organization's order.
pub async fn order_transferers(
    conn: &impl ConnectionTrait,
    order: &order::Model,
) -> ApiResult<Vec<i64>> {
    managers_among(conn, order, false).await
}

/// An order's managers; the buying member of an organization's order among
/// them only with `with_buyer`. One statement: it runs inside writes that
/// hold the key's lock, and an organization may have a thousand admins.
async fn managers_among(
    conn: &impl ConnectionTrait,
    order: &order::Model,
    with_buyer: bool,
) -> ApiResult<Vec<i64>> {
    let Some(organization_id) = order.organization_id else {
        return Ok(vec![order.owner_id]);
    };
    let members = |admin_only: bool| {
        let mut q = Query::select();
        q.column(organization_member::Column::Email)
            .from(organization_member::Entity)
            .and_where(organization_member::Column::OrganizationId.eq(organization_id));
        if admin_only {
            q.and_where(organization_member::Column::Role.eq(OrganizationRole::Admin));
        }
        q.to_owned()
    };
    let mut who = Condition::any().add(account::Column::Email.in_subquery(members(true)));
    if with_buyer {
        who = who.add(
            Condition::all()
                .add(account::Column::Id.eq(order.owner_id))
                .add(account::Column::Email.in_subquery(members(false))),
        );
    }
    Ok(account::Entity::find()
        .select_only()
        .column(account::Column::Id)
        .filter(account::Column::EmailVerifiedAt.is_not_null())
        .filter(who)
        .into_tuple()
        .all(conn)
        .await?)
}

/// Administrators' support actions on an account: the account receives the
/// event, but the administrator's reason is for administrators only.
fn support_action(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::AccountDisabled
            | EventKind::AccountEnabled
            | EventKind::SessionsRevoked
            | EventKind::EmailResent
    )
}

/// Event kinds whose `changes` are snapshots of a key's assignee
/// (`assigneeEmail`, organization) before and after.
fn snapshots_assignee(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::LicenseAssigned | EventKind::LicenseUnassigned | EventKind::OrganizationChanged
    )
}

/// True when a snapshot of a key's assignee tells `viewer` nothing about
/// anyone else: the key was theirs, or nobody's.
fn own_snapshot(snapshot: &Value, viewer: &Viewer) -> bool {
    match snapshot.get("assigneeEmail").and_then(Value::as_str) {
        None => true,
        Some(email) => viewer.email_verified && email == viewer.email,
    }
}

/// The assignee emails in `changes` that `viewer` may not read.
fn hidden_assignees<'a>(kind: EventKind, changes: &'a Value, viewer: &Viewer) -> Vec<&'a str> {
    if !snapshots_assignee(kind) {
        return Vec::new();
    }
    ["before", "after"]
        .iter()
        .filter_map(|side| changes.get(side))
        .filter(|snapshot| !own_snapshot(snapshot, viewer))
        .filter_map(|snapshot| snapshot.get("assigneeEmail").and_then(Value::as_str))
        .collect()
}

/// An event's `changes` as `viewer` may read them. The order's managers and
/// administrators (`full`) read them whole. Anyone else received a key's
/// assignment event as its former or new assignee: each reads their own
/// side and not the other's (the side is null), so a former assignee learns
/// that the key left them, not who got it, nor their organization.
pub fn event_changes_for(kind: EventKind, changes: &Value, viewer: &Viewer, full: bool) -> Value {
    let mut visible = changes.clone();
    if !viewer.is_admin
        && support_action(kind)
        && let Some(map) = visible.as_object_mut()
    {
        map.remove("reason");
    }
    if full || hidden_assignees(kind, changes, viewer).is_empty() {
        return visible;
    }
    if let Some(map) = visible.as_object_mut() {
        for side in ["before", "after"] {
            if let Some(snapshot) = map.get_mut(side)
                && !own_snapshot(snapshot, viewer)
            {
                *snapshot = Value::Null;
            }
        }
    }
    visible
}

/// True when `viewer` may learn who caused an event: not when the actor is
/// an assignee hidden from them by [`event_changes_for`] (a claimer who
/// replaced them, say).
pub fn may_see_event_actor(
    kind: EventKind,
    changes: &Value,
    viewer: &Viewer,
    full: bool,
    actor_email: &str,
) -> bool {
    full || actor_email == viewer.email
        || !hidden_assignees(kind, changes, viewer).contains(&actor_email)
}

/// True when an event needs `full` (whether `viewer` manages its order) to
/// be shown to them: it holds something [`event_changes_for`] would hide.
pub fn event_needs_rights(kind: EventKind, changes: &Value, viewer: &Viewer) -> bool {
    !hidden_assignees(kind, changes, viewer).is_empty()
}
