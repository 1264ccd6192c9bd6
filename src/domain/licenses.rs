//! Keys of an order: who may see them, assigning and unassigning
//! (product.md "Orders and keys", "Assigning").
use std::{collections::HashMap, sync::Arc};

use entity::{by_position, license, order};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::json;

use super::{
    Ctx, email, keys, orders,
    organizations::{self, OrganizationRole},
    rights, siret,
};
use crate::{
    auth::Viewer,
    error::{ApiResult, AppError},
    events::{self, EventKind, NewEvent},
    mail::{self, Email},
};

/// Filter of an order's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssignmentFilter {
    Unassigned,
    Assigned,
}

/// How a viewer relates to a key; decides what they may see and do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Holds the owner's rights on the key's order.
    Manager,
    /// The key is assigned to the viewer's verified email.
    Assignee,
    /// Reached as an administrator, who reads every key's record but not its
    /// string (unless they also manage its order or hold it).
    Admin,
}

/// True when `license` is assigned to `viewer`'s verified email.
pub fn is_assignee(viewer: &Viewer, license: &license::Model) -> bool {
    viewer.email_verified && license.assignee_email.as_deref() == Some(viewer.email.as_str())
}

/// The key `license_id` with the viewer's access to it. Strangers get
/// `NOT_FOUND`, exactly as for a key that does not exist.
pub async fn readable(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    license_id: i64,
) -> ApiResult<(license::Model, order::Model, Access)> {
    let not_found = AppError::NotFound("license");
    let license = license::Entity::find_by_id(license_id)
        .one(conn)
        .await?
        .ok_or(not_found.clone())?;
    let order = order::Entity::find_by_id(license.order_id)
        .one(conn)
        .await?
        .ok_or(not_found.clone())?;
    let access = if rights::can_manage(conn, viewer, &order).await? {
        Access::Manager
    } else if is_assignee(viewer, &license) {
        Access::Assignee
    } else if viewer.is_admin {
        Access::Admin
    } else {
        return Err(not_found);
    };
    Ok((license, order, access))
}

/// A key the viewer may read, with its order and their access to it, both
/// shared (by the items of a page that point at the key).
pub type Readable = (Arc<license::Model>, Arc<order::Model>, Access);

/// [`readable`] for many keys at once (a page of claims or requests, each
/// pointing at a key): two statements for the keys and their orders, and
/// one membership read per organization among those orders, rather than
/// three statements per key. Keys the viewer may not read, or that do not
/// exist, are left out; each order is shared by its keys.
pub async fn readable_many(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    license_ids: impl IntoIterator<Item = i64>,
) -> ApiResult<HashMap<i64, Readable>> {
    let mut ids: Vec<i64> = license_ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    // Read by position: a page of claims or requests reads a hundred.
    let licenses: Vec<license::Model> = by_position::all(
        conn,
        license::Entity::find().filter(license::Column::Id.is_in(ids)),
    )
    .await?;
    let mut order_ids: Vec<i64> = licenses.iter().map(|l| l.order_id).collect();
    order_ids.sort_unstable();
    order_ids.dedup();
    let mut orders: HashMap<i64, (Arc<order::Model>, bool)> = HashMap::new();
    // The viewer's role in each organization among the orders, read once.
    let mut roles: HashMap<i64, Option<OrganizationRole>> = HashMap::new();
    for order in order::Entity::find()
        .filter(order::Column::Id.is_in(order_ids))
        .all(conn)
        .await?
    {
        let role = match order.organization_id {
            None => None,
            Some(organization_id) => match roles.get(&organization_id) {
                Some(role) => *role,
                None => {
                    let role = organizations::membership(conn, viewer, organization_id)
                        .await?
                        .map(|member| member.role);
                    roles.insert(organization_id, role);
                    role
                }
            },
        };
        let manages = rights::manages(viewer, &order, role);
        orders.insert(order.id, (Arc::new(order), manages));
    }
    let mut readable = HashMap::with_capacity(licenses.len());
    for license in licenses {
        let Some((order, manages)) = orders.get(&license.order_id) else {
            continue;
        };
        let access = if *manages {
            Access::Manager
        } else if is_assignee(viewer, &license) {
            Access::Assignee
        } else if viewer.is_admin {
            Access::Admin
        } else {
            continue;
        };
        readable.insert(license.id, (Arc::new(license), order.clone(), access));
    }
    Ok(readable)
}

/// Lock a key (`FOR UPDATE`) and hold its order ([`orders::lock_shared`])
/// for a change by one of the order's managers.
pub async fn lock_for_manager(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    license_id: i64,
) -> ApiResult<(license::Model, order::Model)> {
    let license = license::Entity::find_by_id(license_id)
        .lock_exclusive()
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("license"))?;
    let order = orders::lock_shared(conn, license.order_id).await?;
    if !rights::can_manage(conn, viewer, &order).await? {
        return Err(AppError::NotFound("license"));
    }
    Ok((license, order))
}

pub struct Assignment {
    pub license_id: i64,
    pub email: String,
    pub organization_name: Option<String>,
    pub organization_siret: Option<String>,
}

/// Snapshot of the assignment fields, for the history's before/after.
pub fn assignment_json(license: &license::Model) -> serde_json::Value {
    json!({
        "assigneeEmail": license.assignee_email,
        "organizationName": license.organization_name,
        "organizationSiret": license.organization_siret,
    })
}

/// Who a key goes to in [`set_assignment`].
pub struct NewAssignee<'a> {
    pub email: &'a str,
    pub organization: Option<siret::Organization>,
    /// The account that verified `email`, when the caller already knows it
    /// (a claimer claiming for themselves); else it is looked up.
    pub account_id: Option<i64>,
}

impl<'a> NewAssignee<'a> {
    pub fn email(email: &'a str) -> Self {
        NewAssignee {
            email,
            organization: None,
            account_id: None,
        }
    }
}

/// Change a key's assignee (and organization) in the caller's transaction and
/// record it in the history: `Some(assignee)` assigns, `None` unassigns. The
/// order's managers and the old and new assignees receive the event. Taking
/// a key from its assignee while it is active on a device is refused with
/// `DEVICE_ACTIVE`; otherwise it gives the key a new string at once
/// ([`keys::reissue`], no grace), since the former assignee still holds the
/// old one, and the event says `keyReissued`. Emails are the caller's
/// business (each path tells people differently; the former assignee may
/// only be shown the old string). A change that changes nothing records
/// nothing. The keys of a refunded order do not change hands (`CONFLICT`).
pub async fn set_assignment(
    txn: &impl ConnectionTrait,
    actor_id: i64,
    order: &order::Model,
    license: license::Model,
    assignee: Option<NewAssignee<'_>>,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<license::Model> {
    orders::ensure_not_refunded(order)?;
    let before = assignment_json(&license);
    let previous = license.assignee_email.clone();
    let new_email = assignee.as_ref().map(|a| a.email.to_owned());
    let known_account = assignee.as_ref().and_then(|a| a.account_id);
    let taken_from_assignee = previous.is_some() && previous != new_email;
    let license = if taken_from_assignee {
        // A key in use on a device must be deactivated before it changes hands.
        super::devices::ensure_none_active(txn, license.id).await?;
        keys::reissue(txn, license, now, now).await?
    } else {
        license
    };
    let organization = assignee.and_then(|a| a.organization);
    let mut changed: license::ActiveModel = license.clone().into();
    changed.assignee_email = Set(new_email.clone());
    changed.organization_name = Set(organization.as_ref().map(|o| o.name.clone()));
    changed.organization_siret = Set(organization.as_ref().map(|o| o.siret.clone()));
    if previous != new_email {
        changed.assigned_at = Set(new_email.as_ref().map(|_| now));
    }
    let updated = changed.update(txn).await?;
    let after = assignment_json(&updated);
    if before == after {
        return Ok(updated);
    }
    let kind = if new_email.is_some() {
        EventKind::LicenseAssigned
    } else {
        EventKind::LicenseUnassigned
    };
    let mut event = NewEvent::new(kind, Some(actor_id));
    event.order_id = Some(order.id);
    event.license_id = Some(license.id);
    event.changes = json!({"before": before, "after": after});
    if taken_from_assignee {
        event.changes["keyReissued"] = json!(true);
    }
    event.recipients = rights::order_managers(txn, order).await?;
    if let Some(previous) = &previous {
        event
            .recipients
            .extend(rights::verified_account_id(txn, previous).await?);
    }
    if let Some(new_email) = &new_email {
        let account = match known_account {
            Some(id) => Some(id),
            None => rights::verified_account_id(txn, new_email).await?,
        };
        event.recipients.extend(account);
    }
    events::record(txn, now, event).await?;
    Ok(updated)
}

/// Assign or reassign a key to an email (and optionally an organization);
/// the new assignee is emailed the key, the previous one is told.
pub async fn assign(ctx: &Ctx, viewer: &Viewer, input: Assignment) -> ApiResult<license::Model> {
    let email = email::normalize(&input.email, "email")?;
    let organization = siret::validate_organization(
        input.organization_name.as_deref(),
        input.organization_siret.as_deref(),
    )?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let (license, order) = lock_for_manager(&txn, viewer, input.license_id).await?;
    let previous = license.assignee_email.clone();
    let old_key = license.key.clone();
    let updated = set_assignment(
        &txn,
        viewer.account_id,
        &order,
        license,
        Some(NewAssignee {
            email: &email,
            organization,
            account_id: None,
        }),
        now,
    )
    .await?;
    if previous.as_deref() != Some(email.as_str()) {
        let product = super::products::display_name(&txn, &order.product).await?;
        mail::enqueue(
            &txn,
            now,
            &email,
            Email::LicenseAssigned {
                product: product.clone(),
                key: updated.key.clone(),
                link: format!("{}/graphql", ctx.public_url),
            },
        )
        .await?;
        if let Some(previous) = previous {
            mail::enqueue(
                &txn,
                now,
                &previous,
                Email::LicenseUnassigned {
                    product,
                    key: old_key,
                },
            )
            .await?;
        }
    }
    txn.commit().await?;
    Ok(updated)
}

/// Remove a key's assignee (and organization); the history keeps who it was.
pub async fn unassign(ctx: &Ctx, viewer: &Viewer, license_id: i64) -> ApiResult<license::Model> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let (license, order) = lock_for_manager(&txn, viewer, license_id).await?;
    let Some(previous) = license.assignee_email.clone() else {
        return Err(AppError::conflict("this key is not assigned"));
    };
    let old_key = license.key.clone();
    let updated = set_assignment(&txn, viewer.account_id, &order, license, None, now).await?;
    mail::enqueue(
        &txn,
        now,
        &previous,
        Email::LicenseUnassigned {
            product: super::products::display_name(&txn, &order.product).await?,
            key: old_key,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(updated)
}

/// Longest grace `reissueLicense` gives an old string, in hours.
pub const MAX_GRACE_HOURS: i32 = 72;

/// The owner's reissue of a key (a compromised string, say): a new string
/// now, the old one still valid for `grace_hours` (0 to [`MAX_GRACE_HOURS`])
/// so the software can be updated; assignee and devices stay. The managers
/// and the assignee get `LICENSE_REISSUED` (with no key string: events may
/// be read by people who may not see it), the assignee an email with the new
/// key. Anyone but the order's managers gets `NOT_FOUND`, as for unassigning.
pub async fn reissue(
    ctx: &Ctx,
    viewer: &Viewer,
    license_id: i64,
    grace_hours: i32,
) -> ApiResult<license::Model> {
    if !(0..=MAX_GRACE_HOURS).contains(&grace_hours) {
        return Err(AppError::validation(
            "graceHours",
            format!("graceHours must be 0 to {MAX_GRACE_HOURS}"),
        ));
    }
    let now = ctx.clock.now();
    let valid_until = now + chrono::Duration::hours(grace_hours.into());
    let txn = ctx.begin_write().await?;
    let (license, order) = lock_for_manager(&txn, viewer, license_id).await?;
    let updated = keys::reissue(&txn, license, valid_until, now).await?;
    let mut event = NewEvent::new(EventKind::LicenseReissued, Some(viewer.account_id));
    event.order_id = Some(order.id);
    event.license_id = Some(updated.id);
    event.changes =
        json!({"after": {"graceHours": grace_hours, "previousKeyValidUntil": valid_until}});
    event.recipients = rights::order_managers(&txn, &order).await?;
    if let Some(assignee) = &updated.assignee_email {
        event
            .recipients
            .extend(rights::verified_account_id(&txn, assignee).await?);
        mail::enqueue(
            &txn,
            now,
            assignee,
            Email::LicenseReissued {
                product: super::products::display_name(&txn, &order.product).await?,
                key: updated.key.clone(),
                previous_valid_until: (grace_hours > 0)
                    .then(|| valid_until.format("%Y-%m-%d %H:%M UTC").to_string()),
            },
        )
        .await?;
    }
    events::record(&txn, now, event).await?;
    txn.commit().await?;
    Ok(updated)
}

/// The owner's suspension of a key (`suspended`), or its end: while
/// suspended, `validateLicense` answers `SUSPENDED` and activations,
/// heartbeats and check-outs are refused; devices stay. The managers and
/// the assignee get `LICENSE_SUSPENDED` or `LICENSE_RESUMED`; asking for
/// the state the key is already in changes and records nothing. Anyone but
/// the order's managers gets `NOT_FOUND`, as for reissuing.
pub async fn set_suspended(
    ctx: &Ctx,
    viewer: &Viewer,
    license_id: i64,
    suspended: bool,
) -> ApiResult<license::Model> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let (license, order) = lock_for_manager(&txn, viewer, license_id).await?;
    if license.suspended == suspended {
        return Ok(license);
    }
    let mut changed: license::ActiveModel = license.into();
    changed.suspended = Set(suspended);
    let updated = changed.update(&txn).await?;
    let kind = if suspended {
        EventKind::LicenseSuspended
    } else {
        EventKind::LicenseResumed
    };
    let mut event = NewEvent::new(kind, Some(viewer.account_id));
    event.order_id = Some(order.id);
    event.license_id = Some(updated.id);
    event.changes = json!({"before": {"suspended": !suspended}, "after": {"suspended": suspended}});
    event.recipients = rights::order_managers(&txn, &order).await?;
    if let Some(assignee) = &updated.assignee_email {
        event
            .recipients
            .extend(rights::verified_account_id(&txn, assignee).await?);
    }
    events::record(&txn, now, event).await?;
    txn.commit().await?;
    Ok(updated)
}

/// Keys assigned to `viewer`'s verified email, after the id `after`.
/// An unverified account gets `EMAIL_NOT_VERIFIED`: an address is trusted
/// only once proven.
pub async fn assigned_to(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<license::Model>> {
    let email = viewer.verified_email()?;
    let mut query = license::Entity::find()
        .filter(license::Column::AssigneeEmail.eq(email))
        .order_by_asc(license::Column::Id)
        .limit(limit);
    if let Some(after) = after {
        query = query.filter(license::Column::Id.gt(after));
    }
    Ok(query.all(conn).await?)
}
