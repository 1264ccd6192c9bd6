//! Claim settings of a buyer, the per-order override, and the assignee's
//! organization (product.md "Claim settings").
use entity::{account, license, order};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, QuerySelect};
use serde_json::json;

use super::{Ctx, licenses, orders, rights, siret};
use crate::{
    auth::Viewer,
    error::{ApiResult, AppError},
    events::{self, EventKind, NewEvent},
};

/// A change to some of the claim settings; `None` keeps the current value.
#[derive(Debug, Default, Clone)]
pub struct ClaimSettingsChange {
    pub require_manual_approval: Option<bool>,
    pub allow_override_assignee: Option<bool>,
    pub notify_on_claim: Option<bool>,
    pub allow_assignee_organization: Option<bool>,
}

fn settings_json(a: &account::Model) -> serde_json::Value {
    json!({
        "requireManualApproval": a.require_manual_approval,
        "allowOverrideAssignee": a.allow_override_assignee,
        "notifyOnClaim": a.notify_on_claim,
        "allowAssigneeOrganization": a.allow_assignee_organization,
    })
}

/// Update the caller's own claim settings (any subset).
pub async fn update_claim_settings(
    ctx: &Ctx,
    viewer: &Viewer,
    change: ClaimSettingsChange,
) -> ApiResult<account::Model> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let before = account::Entity::find_by_id(viewer.account_id)
        .one(&txn)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    let mut changed: account::ActiveModel = before.clone().into();
    if let Some(v) = change.require_manual_approval {
        changed.require_manual_approval = Set(v);
    }
    if let Some(v) = change.allow_override_assignee {
        changed.allow_override_assignee = Set(v);
    }
    if let Some(v) = change.notify_on_claim {
        changed.notify_on_claim = Set(v);
    }
    if let Some(v) = change.allow_assignee_organization {
        changed.allow_assignee_organization = Set(v);
    }
    let after = changed.update(&txn).await?;
    if settings_json(&before) != settings_json(&after) {
        let mut event = NewEvent::new(EventKind::ClaimSettingsChanged, Some(viewer.account_id));
        event.changes = json!({"before": settings_json(&before), "after": settings_json(&after)});
        event.recipients = vec![viewer.account_id];
        events::record(&txn, now, event).await?;
    }
    txn.commit().await?;
    Ok(after)
}

/// Override "require manual approval" for one order: `Some(true|false)`, or
/// `None` to inherit the owner's setting.
pub async fn set_order_manual_approval(
    ctx: &Ctx,
    viewer: &Viewer,
    order_id: i64,
    value: Option<bool>,
) -> ApiResult<order::Model> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let order = orders::lock(&txn, order_id).await?;
    rights::require_manage(&txn, viewer, &order).await?;
    let before = order.require_manual_approval;
    let mut changed: order::ActiveModel = order.clone().into();
    changed.require_manual_approval = Set(value);
    let updated = changed.update(&txn).await?;
    if before != value {
        let mut event = NewEvent::new(EventKind::ClaimSettingsChanged, Some(viewer.account_id));
        event.order_id = Some(order.id);
        event.changes = json!({"before": {"requireManualApproval": before}, "after": {"requireManualApproval": value}});
        event.recipients = rights::order_managers(&txn, &order).await?;
        events::record(&txn, now, event).await?;
    }
    txn.commit().await?;
    Ok(updated)
}

/// The assignee attaches (or, with neither field, removes) an organization on
/// their own key, when the order's owner allows it.
pub async fn set_license_organization(
    ctx: &Ctx,
    viewer: &Viewer,
    license_id: i64,
    name: Option<&str>,
    siret_number: Option<&str>,
) -> ApiResult<license::Model> {
    viewer.verified_email()?;
    let organization = siret::validate_organization(name, siret_number)?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let license = license::Entity::find_by_id(license_id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("license"))?;
    if !licenses::is_assignee(viewer, &license) {
        return Err(AppError::NotFound("license"));
    }
    let order = order::Entity::find_by_id(license.order_id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound("license"))?;
    let owner = account::Entity::find_by_id(order.owner_id)
        .one(&txn)
        .await?
        .ok_or_else(|| AppError::internal("order without owner"))?;
    if !owner.allow_assignee_organization {
        return Err(AppError::Forbidden(
            "the owner of this key does not let assignees set an organization",
        ));
    }
    let before = licenses::assignment_json(&license);
    let mut changed: license::ActiveModel = license.clone().into();
    changed.organization_name = Set(organization.as_ref().map(|o| o.name.clone()));
    changed.organization_siret = Set(organization.as_ref().map(|o| o.siret.clone()));
    let updated = changed.update(&txn).await?;
    let after = licenses::assignment_json(&updated);
    if before != after {
        let mut event = NewEvent::new(EventKind::OrganizationChanged, Some(viewer.account_id));
        event.order_id = Some(order.id);
        event.license_id = Some(license.id);
        event.changes = json!({"before": before, "after": after});
        event.recipients = rights::order_managers(&txn, &order).await?;
        event.recipients.push(viewer.account_id);
        events::record(&txn, now, event).await?;
    }
    txn.commit().await?;
    Ok(updated)
}
