//! Organizations (product.md "Companies and devices"): admins and members,
//! known by email; a member acts once an account has verified that email.
//! An organization always keeps at least one admin with a verified email.
use entity::{account, organization, organization_member};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{LockType, Query},
};

use super::{Ctx, email, siret};
use crate::{
    auth::Viewer,
    error::{ApiResult, AppError},
};

pub use entity::organization_member::OrganizationRole;

/// The caller's membership of `organization_id` (by verified email), if any.
pub async fn membership(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    organization_id: i64,
) -> ApiResult<Option<organization_member::Model>> {
    membership_of(conn, organization_id, &viewer.email, viewer.email_verified).await
}

/// An organization by id.
pub async fn find(
    conn: &impl ConnectionTrait,
    organization_id: i64,
) -> ApiResult<Option<organization::Model>> {
    Ok(organization::Entity::find_by_id(organization_id)
        .one(conn)
        .await?)
}

/// The members of an organization, as `viewer` may see them: all of them
/// for a member, none for anyone else.
pub async fn members_seen_by(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    organization_id: i64,
) -> ApiResult<Vec<organization_member::Model>> {
    if membership(conn, viewer, organization_id).await?.is_none() {
        return Ok(Vec::new());
    }
    Ok(organization_member::Entity::find()
        .filter(organization_member::Column::OrganizationId.eq(organization_id))
        .all(conn)
        .await?)
}

/// The membership of `email` in `organization_id`, if any: it counts only
/// for a verified email.
pub async fn membership_of(
    conn: &impl ConnectionTrait,
    organization_id: i64,
    email: &str,
    email_verified: bool,
) -> ApiResult<Option<organization_member::Model>> {
    if !email_verified {
        return Ok(None);
    }
    Ok(
        organization_member::Entity::find_by_id((organization_id, email.to_owned()))
            .one(conn)
            .await?,
    )
}

/// Organizations the caller belongs to, with their role.
pub async fn of_viewer(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
) -> ApiResult<Vec<(organization::Model, OrganizationRole)>> {
    if !viewer.email_verified {
        return Ok(Vec::new());
    }
    let rows = organization_member::Entity::find()
        .filter(organization_member::Column::Email.eq(&viewer.email))
        .order_by_asc(organization_member::Column::OrganizationId)
        .all(conn)
        .await?;
    let ids: Vec<i64> = rows.iter().map(|m| m.organization_id).collect();
    let orgs = organization::Entity::find()
        .filter(organization::Column::Id.is_in(ids))
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|m| {
            let org = orgs.iter().find(|o| o.id == m.organization_id)?.clone();
            Some((org, m.role))
        })
        .collect())
}

/// Create an organization; the caller (verified) becomes its first admin.
pub async fn create(
    ctx: &Ctx,
    viewer: &Viewer,
    name: &str,
    siret_number: &str,
) -> ApiResult<organization::Model> {
    let admin_email = viewer.verified_email()?.to_owned();
    let org = siret::validate_organization(Some(name), Some(siret_number))?
        .ok_or_else(|| AppError::validation("name", "an organization needs a name and a SIRET"))?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let created = organization::ActiveModel {
        name: Set(org.name),
        siret: Set(org.siret),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    organization_member::ActiveModel {
        organization_id: Set(created.id),
        email: Set(admin_email),
        role: Set(OrganizationRole::Admin),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok(created)
}

/// `NOT_FOUND` unless the caller is a verified admin of the organization.
async fn require_admin(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    organization_id: i64,
) -> ApiResult<()> {
    match membership(conn, viewer, organization_id).await? {
        Some(m) if m.role == OrganizationRole::Admin => Ok(()),
        Some(_) => Err(AppError::Forbidden(
            "only organization admins manage members",
        )),
        None => Err(AppError::NotFound("organization")),
    }
}

/// Lock the organization for a change of its members, so that two admins
/// removing or demoting each other at once take turns, and the second sees
/// that it would leave no admin. `NOT_FOUND` for an organization that does
/// not exist, as for one the caller has no rights on. `FOR NO KEY UPDATE`:
/// rows that merely reference the organization (an order bought for it)
/// need not wait.
async fn lock_members(conn: &impl ConnectionTrait, organization_id: i64) -> ApiResult<()> {
    organization::Entity::find_by_id(organization_id)
        .lock(LockType::NoKeyUpdate)
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("organization"))?;
    Ok(())
}

/// Number of admins who can act (their email is verified) left if `email`
/// stops being one. An admin invited at an address nobody has verified
/// does not count: a typo must not leave the organization without anyone
/// able to manage it.
async fn other_admins(
    conn: &impl ConnectionTrait,
    organization_id: i64,
    email: &str,
) -> ApiResult<u64> {
    let verified = Query::select()
        .column(account::Column::Email)
        .from(account::Entity)
        .and_where(account::Column::EmailVerifiedAt.is_not_null())
        .to_owned();
    Ok(organization_member::Entity::find()
        .filter(organization_member::Column::OrganizationId.eq(organization_id))
        .filter(organization_member::Column::Role.eq(OrganizationRole::Admin))
        .filter(organization_member::Column::Email.ne(email))
        .filter(organization_member::Column::Email.in_subquery(verified))
        .count(conn)
        .await?)
}

/// Add a member (or change their role), by an organization admin.
pub async fn add_member(
    ctx: &Ctx,
    viewer: &Viewer,
    organization_id: i64,
    member_email: &str,
    role: OrganizationRole,
) -> ApiResult<organization_member::Model> {
    let member_email = email::normalize(member_email, "email")?;
    let txn = ctx.begin_write().await?;
    lock_members(&txn, organization_id).await?;
    require_admin(&txn, viewer, organization_id).await?;
    let existing = organization_member::Entity::find_by_id((organization_id, member_email.clone()))
        .one(&txn)
        .await?;
    let member = match existing {
        Some(existing) => {
            let demoted =
                existing.role == OrganizationRole::Admin && role != OrganizationRole::Admin;
            if demoted && other_admins(&txn, organization_id, &member_email).await? == 0 {
                return Err(AppError::conflict(
                    "an organization keeps at least one admin with a verified email",
                ));
            }
            let mut changed: organization_member::ActiveModel = existing.into();
            changed.role = Set(role);
            let changed = changed.update(&txn).await?;
            if demoted {
                // The demoted admin's pending transfers of the organization's
                // orders go.
                super::transfers::cancel_orphaned(
                    &txn,
                    organization_id,
                    viewer.account_id,
                    ctx.clock.now(),
                )
                .await?;
            }
            changed
        }
        None => {
            organization_member::ActiveModel {
                organization_id: Set(organization_id),
                email: Set(member_email),
                role: Set(role),
                created_at: Set(ctx.clock.now()),
            }
            .insert(&txn)
            .await?
        }
    };
    txn.commit().await?;
    Ok(member)
}

/// Remove a member, by an organization admin. Orders the member bought stay
/// with the organization; the member's rights on them end.
pub async fn remove_member(
    ctx: &Ctx,
    viewer: &Viewer,
    organization_id: i64,
    member_email: &str,
) -> ApiResult<()> {
    let member_email = email::normalize(member_email, "email")?;
    let txn = ctx.begin_write().await?;
    lock_members(&txn, organization_id).await?;
    require_admin(&txn, viewer, organization_id).await?;
    let member = organization_member::Entity::find_by_id((organization_id, member_email.clone()))
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("member"))?;
    if member.role == OrganizationRole::Admin
        && other_admins(&txn, organization_id, &member_email).await? == 0
    {
        return Err(AppError::conflict(
            "an organization keeps at least one admin with a verified email",
        ));
    }
    organization_member::Entity::delete_by_id((organization_id, member_email))
        .exec(&txn)
        .await?;
    // The member's pending transfers of the organization's orders go.
    super::transfers::cancel_orphaned(&txn, organization_id, viewer.account_id, ctx.clock.now())
        .await?;
    txn.commit().await?;
    Ok(())
}
