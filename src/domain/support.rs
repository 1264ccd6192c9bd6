//! Administrators' support actions (api.md "Administration"): disabling and
//! enabling an account, ending its sessions, sending an email again. Each
//! is recorded as an event whose actor is the administrator and whose
//! `changes.reason` says why; the account concerned receives it (it reads
//! it without the reason, see `rights::event_changes_for`).
//!
//! Edge cases, decided here:
//! - an administrator cannot disable their own account (`CONFLICT`): the
//!   last one standing could lock everyone out; they may disable another
//!   administrator (a stolen account, say);
//! - disabling a disabled account, or enabling an enabled one, is `CONFLICT`
//!   (one action, one audit entry);
//! - `revokeSessions` on one's own account is allowed (the caller's session
//!   ends too), as is revoking an account that has no session (0 ended);
//! - an email is not resent to a disabled account, nor a verification to a
//!   verified one, nor a transfer's link once it is decided or expired
//!   (`CONFLICT`, `EXPIRED`).
use chrono::{DateTime, Utc};
use entity::{account, order, order_transfer};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QuerySelect,
};
use serde_json::{Value, json};

use super::{Ctx, accounts, email, recovery, transfers};
use crate::{
    auth::{Viewer, token},
    error::{ApiResult, AppError},
    events::{self, EventKind, NewEvent},
    mail::{self, Email},
};

/// Longest reason an administrator gives.
pub const REASON_MAX: usize = 500;

/// A reason, trimmed: 1 to [`REASON_MAX`] characters (`VALIDATION` on `reason`).
pub fn reason(raw: &str) -> ApiResult<String> {
    let reason = raw.trim();
    let length = reason.chars().count();
    if length == 0 || length > REASON_MAX {
        return Err(AppError::validation(
            "reason",
            format!("a reason of 1 to {REASON_MAX} characters is required"),
        ));
    }
    Ok(reason.to_owned())
}

/// The optional reason of an action an administrator may take on someone's
/// behalf: required then, and checked whenever given.
pub fn reason_on_behalf(raw: Option<&str>, on_behalf: bool) -> ApiResult<Option<String>> {
    match raw {
        Some(raw) => reason(raw).map(Some),
        None if on_behalf => reason("").map(Some),
        None => Ok(None),
    }
}

/// The account with `email` (normalised), locked for the change.
async fn lock_account(conn: &impl ConnectionTrait, raw_email: &str) -> ApiResult<account::Model> {
    let email = email::normalize(raw_email, "email")?;
    account::Entity::find()
        .filter(account::Column::Email.eq(email))
        .lock_exclusive()
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("account"))
}

/// Record a support action on `account` by `admin`.
async fn record(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    kind: EventKind,
    admin: &Viewer,
    account: &account::Model,
    reason: &str,
    mut changes: Value,
) -> ApiResult<()> {
    let mut event = NewEvent::new(kind, Some(admin.account_id));
    if let Some(map) = changes.as_object_mut() {
        map.insert("reason".into(), json!(reason));
        map.insert(
            "account".into(),
            json!({"id": account.id.to_string(), "email": account.email}),
        );
    }
    event.changes = changes;
    event.recipients = vec![account.id];
    events::record(conn, now, event).await?;
    Ok(())
}

/// Disable the account of `email`: it can no longer sign in (`FORBIDDEN`),
/// and every session ends. The caller announces the revocation after
/// commit, so that every instance drops its sessions and subscriptions.
pub async fn disable_account(
    ctx: &Ctx,
    admin: &Viewer,
    email: &str,
    reason: &str,
) -> ApiResult<account::Model> {
    admin.require_admin()?;
    let reason = self::reason(reason)?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let account = lock_account(&txn, email).await?;
    if account.id == admin.account_id {
        return Err(AppError::conflict("you cannot disable your own account"));
    }
    if account.disabled_at.is_some() {
        return Err(AppError::conflict("this account is already disabled"));
    }
    let mut disabled: account::ActiveModel = account.into();
    disabled.disabled_at = Set(Some(now));
    let account = disabled.update(&txn).await?;
    let revoked = recovery::revoke_sessions(&txn, account.id, None, now).await?;
    let changes = json!({
        "before": {"disabled": false},
        "after": {"disabled": true},
        "sessionsRevoked": revoked,
    });
    record(
        &txn,
        now,
        EventKind::AccountDisabled,
        admin,
        &account,
        &reason,
        changes,
    )
    .await?;
    txn.commit().await?;
    Ok(account)
}

/// Enable a disabled account again. Its sessions stay ended: its owner signs in anew.
pub async fn enable_account(
    ctx: &Ctx,
    admin: &Viewer,
    email: &str,
    reason: &str,
) -> ApiResult<account::Model> {
    admin.require_admin()?;
    let reason = self::reason(reason)?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let account = lock_account(&txn, email).await?;
    if account.disabled_at.is_none() {
        return Err(AppError::conflict("this account is not disabled"));
    }
    let mut enabled: account::ActiveModel = account.into();
    enabled.disabled_at = Set(None);
    let account = enabled.update(&txn).await?;
    let changes = json!({"before": {"disabled": true}, "after": {"disabled": false}});
    record(
        &txn,
        now,
        EventKind::AccountEnabled,
        admin,
        &account,
        &reason,
        changes,
    )
    .await?;
    txn.commit().await?;
    Ok(account)
}

/// End every session of the account of `email`; returns the account and how
/// many sessions ended. The caller announces the revocation after commit.
pub async fn revoke_sessions(
    ctx: &Ctx,
    admin: &Viewer,
    email: &str,
    reason: &str,
) -> ApiResult<(account::Model, u64)> {
    admin.require_admin()?;
    let reason = self::reason(reason)?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let account = lock_account(&txn, email).await?;
    let revoked = recovery::revoke_sessions(&txn, account.id, None, now).await?;
    let changes = json!({"sessionsRevoked": revoked});
    record(
        &txn,
        now,
        EventKind::SessionsRevoked,
        admin,
        &account,
        &reason,
        changes,
    )
    .await?;
    txn.commit().await?;
    Ok((account, revoked))
}

/// Which email [`resend_email`] sends again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendKind {
    /// A new verification link to an account not verified yet.
    Verification,
    /// A new confirmation link of a pending order transfer to its addressee.
    TransferConfirmation,
}

/// Send an email again on someone's behalf. A verification email carries a
/// new link (older ones still work until they expire); a transfer's
/// confirmation carries a new link that replaces the old one (a token is
/// stored only hashed, so the old link cannot be sent again), valid until
/// the transfer's own expiry. `email` is the recipient: the account for a
/// verification, the transfer's addressee for a transfer.
pub async fn resend_email(
    ctx: &Ctx,
    admin: &Viewer,
    kind: ResendKind,
    email: &str,
    transfer_id: Option<i64>,
    reason: Option<&str>,
) -> ApiResult<()> {
    admin.require_admin()?;
    let reason = reason_on_behalf(reason, false)?;
    let recipient = email::normalize(email, "email")?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let mut event = NewEvent::new(EventKind::EmailResent, Some(admin.account_id));
    let mut changes = json!({"email": recipient});
    match (kind, transfer_id) {
        (ResendKind::Verification, Some(_)) => {
            return Err(AppError::validation(
                "transferId",
                "only a transfer confirmation names a transfer",
            ));
        }
        (ResendKind::TransferConfirmation, None) => {
            return Err(AppError::validation(
                "transferId",
                "name the transfer whose confirmation to send again",
            ));
        }
        (ResendKind::Verification, None) => {
            let account = lock_account(&txn, &recipient).await?;
            if account.disabled_at.is_some() {
                return Err(AppError::conflict("this account is disabled"));
            }
            if account.email_verified_at.is_some() {
                return Err(AppError::conflict("this email address is already verified"));
            }
            let raw =
                accounts::new_verification_token(&txn, account.id, &account.email, now).await?;
            let link = format!("{}/verify-email?token={raw}", ctx.public_url);
            mail::enqueue(
                &txn,
                now,
                &account.email,
                Email::VerifyEmail { link, token: raw },
            )
            .await?;
            changes["kind"] = json!("VERIFICATION");
            changes["account"] = json!({"id": account.id.to_string(), "email": account.email});
            event.recipients = vec![account.id];
        }
        (ResendKind::TransferConfirmation, Some(transfer_id)) => {
            let found = order_transfer::Entity::find_by_id(transfer_id)
                .one(&txn)
                .await?
                .ok_or(AppError::NotFound("transfer"))?;
            // Lock the order, then the transfer, as accepting and cancelling do.
            let order = super::orders::lock(&txn, found.order_id).await?;
            let transfer = order_transfer::Entity::find_by_id(found.id)
                .lock_exclusive()
                .one(&txn)
                .await?
                .ok_or(AppError::NotFound("transfer"))?;
            if transfer.to_email != recipient {
                return Err(AppError::validation(
                    "email",
                    "this is not the transfer's addressee",
                ));
            }
            match transfers::effective_status(&transfer, now) {
                transfers::TransferStatus::Pending => {}
                transfers::TransferStatus::Expired => {
                    return Err(AppError::Expired("this transfer link has expired"));
                }
                _ => return Err(AppError::conflict("this transfer is already decided")),
            }
            let disabled = account::Entity::find()
                .filter(account::Column::Email.eq(&recipient))
                .filter(account::Column::DisabledAt.is_not_null())
                .one(&txn)
                .await?;
            if disabled.is_some() {
                return Err(AppError::conflict("this account is disabled"));
            }
            let raw = token::generate();
            let expires_at = transfer.expires_at;
            let from_email = transfers::from_email(&txn, &transfer).await?;
            let mut renewed: order_transfer::ActiveModel = transfer.into();
            renewed.token_hash = Set(token::hash(&raw));
            let transfer = renewed.update(&txn).await?;
            send_transfer_link(ctx, &txn, &order, &transfer, &from_email, &raw, expires_at).await?;
            changes["kind"] = json!("TRANSFER_CONFIRMATION");
            event.order_id = Some(order.id);
            event.transfer_id = Some(transfer.id);
            event
                .recipients
                .extend(super::rights::verified_account_id(&txn, &recipient).await?);
        }
    }
    if let Some(reason) = reason {
        changes["reason"] = json!(reason);
    }
    event.changes = changes;
    events::record(&txn, now, event).await?;
    txn.commit().await?;
    Ok(())
}

async fn send_transfer_link(
    ctx: &Ctx,
    conn: &impl ConnectionTrait,
    order: &order::Model,
    transfer: &order_transfer::Model,
    from_email: &str,
    raw: &str,
    expires_at: DateTime<Utc>,
) -> ApiResult<()> {
    let product = super::products::display_name(conn, &order.product).await?;
    mail::enqueue(
        conn,
        ctx.clock.now(),
        &transfer.to_email,
        Email::TransferStartedNewOwner {
            order_number: super::orders::number(order.id),
            product,
            old_owner: from_email.to_owned(),
            link: format!("{}/transfers/confirm?token={raw}", ctx.public_url),
            expires_at: expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        },
    )
    .await
}
