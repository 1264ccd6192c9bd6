//! Getting an account back and keeping it: password reset by email, password
//! and email changes, and the account's sessions (product.md "Accounts").
//! A reset is how the owner of an address takes back an account someone
//! else opened with it: it proves the mailbox, verifies the address and ends
//! every session.
use chrono::{DateTime, Duration, Utc};
use entity::{account, email_verification, password_reset, session};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, SqlErr,
};
use serde_json::json;

use super::{Ctx, accounts, email};
use crate::{
    auth::{Viewer, password, token},
    error::{ApiResult, AppError},
    events::{self, EventKind, NewEvent},
    mail::{self, Email},
};

/// How long a password-reset link works.
pub const RESET_TTL: Duration = Duration::hours(1);
/// Most sessions `me { sessions }` lists (the most recent first).
pub const SESSIONS_LISTED: u64 = 100;

/// Store a reset token for `account_id`; returns the raw token (for the
/// email only) and its row.
pub(super) async fn new_reset_token(
    conn: &impl ConnectionTrait,
    account_id: i64,
    now: DateTime<Utc>,
) -> ApiResult<(String, password_reset::Model)> {
    let raw = token::generate();
    let row = password_reset::ActiveModel {
        account_id: Set(account_id),
        token_hash: Set(token::hash(&raw)),
        created_at: Set(now),
        expires_at: Set(now + RESET_TTL),
        used_at: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok((raw, row))
}

/// Revoke the account's live sessions, all or all but `keep`; returns how many.
pub(super) async fn revoke_sessions(
    conn: &impl ConnectionTrait,
    account_id: i64,
    keep: Option<i64>,
    now: DateTime<Utc>,
) -> ApiResult<u64> {
    let mut update = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, now.into())
        .filter(session::Column::AccountId.eq(account_id))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now));
    if let Some(keep) = keep {
        update = update.filter(session::Column::Id.ne(keep));
    }
    Ok(update.exec(conn).await?.rows_affected)
}

/// Delete the account's unused verification and reset tokens: they were
/// sent on behalf of a password that no longer holds, or for an address the
/// account no longer has.
pub(super) async fn forget_pending_tokens(
    conn: &impl ConnectionTrait,
    account_id: i64,
) -> ApiResult<()> {
    email_verification::Entity::delete_many()
        .filter(email_verification::Column::AccountId.eq(account_id))
        .filter(email_verification::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    password_reset::Entity::delete_many()
        .filter(password_reset::Column::AccountId.eq(account_id))
        .filter(password_reset::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

fn address_taken() -> AppError {
    AppError::conflict("this email address now belongs to another account")
}

/// Give `account` the verified address `new_email` (its confirmation link was
/// just used), recording the change. `CONFLICT` when another account holds
/// the address by now.
pub(super) async fn apply_email_change(
    conn: &impl ConnectionTrait,
    account: account::Model,
    new_email: &str,
    now: DateTime<Utc>,
) -> ApiResult<account::Model> {
    let taken = account::Entity::find()
        .filter(account::Column::Email.eq(new_email))
        .filter(account::Column::Id.ne(account.id))
        .one(conn)
        .await?
        .is_some();
    if taken {
        return Err(address_taken());
    }
    let (id, old_email) = (account.id, account.email.clone());
    let mut changed: account::ActiveModel = account.into();
    changed.email = Set(new_email.to_owned());
    changed.email_verified_at = Set(Some(now));
    let changed = changed.update(conn).await.map_err(|e| match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => address_taken(),
        _ => e.into(),
    })?;
    forget_pending_tokens(conn, id).await?;
    let mut event = NewEvent::new(EventKind::EmailChanged, Some(id));
    event.changes = json!({"before": {"email": old_email}, "after": {"email": new_email}});
    event.recipients = vec![id];
    events::record(conn, now, event).await?;
    Ok(changed)
}

/// Email a reset link to the account of `email`, if there is one; the caller
/// answers alike either way. A new link replaces the unused older ones.
pub async fn request_password_reset(ctx: &Ctx, email: &str) -> ApiResult<()> {
    let Ok(email) = email::normalize(email, "email") else {
        return Ok(());
    };
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let Some(account) = account::Entity::find()
        .filter(account::Column::Email.eq(&email))
        .one(&txn)
        .await?
    else {
        return Ok(());
    };
    password_reset::Entity::delete_many()
        .filter(password_reset::Column::AccountId.eq(account.id))
        .filter(password_reset::Column::UsedAt.is_null())
        .exec(&txn)
        .await?;
    let (raw, _) = new_reset_token(&txn, account.id, now).await?;
    let link = format!("{}/reset-password?token={raw}", ctx.public_url);
    mail::enqueue(
        &txn,
        now,
        &account.email,
        Email::PasswordReset { link, token: raw },
    )
    .await?;
    txn.commit().await?;
    Ok(())
}

/// The reset behind `raw_token` and its account, if the token can still be
/// used: `NOT_FOUND` for an unknown or used one, `EXPIRED` after [`RESET_TTL`].
async fn live_reset(
    conn: &impl ConnectionTrait,
    raw_token: &str,
    now: DateTime<Utc>,
) -> ApiResult<(password_reset::Model, account::Model)> {
    let reset = password_reset::Entity::find()
        .filter(password_reset::Column::TokenHash.eq(token::hash(raw_token)))
        .one(conn)
        .await?
        .filter(|r| r.used_at.is_none())
        .ok_or(AppError::NotFound("password reset token"))?;
    if reset.expires_at <= now {
        return Err(AppError::Expired(
            "this password reset link has expired; ask for a new one",
        ));
    }
    let account = account::Entity::find_by_id(reset.account_id)
        .one(conn)
        .await?
        .ok_or(AppError::NotFound("password reset token"))?;
    Ok((reset, account))
}

/// The address a live reset link is for (its page names it; changes nothing).
pub async fn reset_email(ctx: &Ctx, raw_token: &str) -> ApiResult<String> {
    let (_, account) = live_reset(&ctx.db, raw_token, ctx.clock.now()).await?;
    Ok(account.email)
}

/// Set a new password with a reset link: the token is used up, the address
/// counts as verified (the link reached its mailbox) and every session of
/// the account ends. Returns the account's id, whose sessions the caller
/// announces as revoked.
pub async fn reset_password(ctx: &Ctx, raw_token: &str, new_password: &str) -> ApiResult<i64> {
    password::validate(new_password)?;
    // Unknown tokens are refused before the (costly) hash.
    live_reset(&ctx.db, raw_token, ctx.clock.now()).await?;
    let password_hash = password::hash(new_password.to_owned()).await?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    // Read again in the transaction: of two uses at once, one wins.
    let (reset, account) = live_reset(&txn, raw_token, now).await?;
    let claimed = password_reset::Entity::update_many()
        .col_expr(password_reset::Column::UsedAt, now.into())
        .filter(password_reset::Column::Id.eq(reset.id))
        .filter(password_reset::Column::UsedAt.is_null())
        .exec(&txn)
        .await?;
    if claimed.rows_affected != 1 {
        return Err(AppError::NotFound("password reset token"));
    }
    let newly_verified = account.email_verified_at.is_none();
    let account_id = account.id;
    let mut changed: account::ActiveModel = account.into();
    changed.password_hash = Set(password_hash);
    if newly_verified {
        changed.email_verified_at = Set(Some(now));
    }
    let account = changed.update(&txn).await?;
    let revoked = revoke_sessions(&txn, account_id, None, now).await?;
    forget_pending_tokens(&txn, account_id).await?;
    if newly_verified {
        accounts::receive_waiting_requests(&txn, &account).await?;
    }
    let mut event = NewEvent::new(EventKind::PasswordChanged, Some(account_id));
    event.changes =
        json!({"reason": "reset", "sessionsRevoked": revoked, "verified": newly_verified});
    event.recipients = vec![account_id];
    events::record(&txn, now, event).await?;
    txn.commit().await?;
    Ok(account_id)
}

/// The caller's account if `password` is its password, else `UNAUTHENTICATED`
/// (what the wrong-password limits count).
async fn own_account(ctx: &Ctx, viewer: &Viewer, password: &str) -> ApiResult<account::Model> {
    let account = account::Entity::find_by_id(viewer.account_id)
        .one(&ctx.db)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    let ok = password.len() <= 4 * password::MAX_LEN
        && password::verify(password.to_owned(), Some(account.password_hash.clone())).await?;
    if ok {
        Ok(account)
    } else {
        Err(AppError::Unauthenticated)
    }
}

/// Change the caller's password, `current` proving it is them; every other
/// session of the account ends (the caller's stays). Returns how many ended.
pub async fn change_password(
    ctx: &Ctx,
    viewer: &Viewer,
    current: &str,
    new_password: &str,
) -> ApiResult<u64> {
    password::validate(new_password)?;
    own_account(ctx, viewer, current).await?;
    let password_hash = password::hash(new_password.to_owned()).await?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    account::Entity::update_many()
        .col_expr(account::Column::PasswordHash, password_hash.into())
        .filter(account::Column::Id.eq(viewer.account_id))
        .exec(&txn)
        .await?;
    let revoked = revoke_sessions(&txn, viewer.account_id, Some(viewer.session_id), now).await?;
    // Reset links sent before no longer apply.
    password_reset::Entity::delete_many()
        .filter(password_reset::Column::AccountId.eq(viewer.account_id))
        .filter(password_reset::Column::UsedAt.is_null())
        .exec(&txn)
        .await?;
    let mut event = NewEvent::new(EventKind::PasswordChanged, Some(viewer.account_id));
    event.changes = json!({"reason": "change", "sessionsRevoked": revoked});
    event.recipients = vec![viewer.account_id];
    events::record(&txn, now, event).await?;
    txn.commit().await?;
    Ok(revoked)
}

/// Ask to move the caller's account to `new_email`, `password` proving it
/// is them. A confirmation link goes to the new address; the email changes
/// only once it is used (`verifyEmail`, signed in to this account). When a
/// verified account already holds the address nothing is sent, and the
/// answer is the same, so the answer does not tell whether an address is a
/// customer. A newer request replaces an unconfirmed older one.
pub async fn change_email(
    ctx: &Ctx,
    viewer: &Viewer,
    new_email: &str,
    password: &str,
) -> ApiResult<()> {
    let new_email = email::normalize(new_email, "newEmail")?;
    if new_email == viewer.email {
        return Err(AppError::validation(
            "newEmail",
            "this is already the account's address",
        ));
    }
    own_account(ctx, viewer, password).await?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let account = account::Entity::find_by_id(viewer.account_id)
        .one(&txn)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    // Older, unconfirmed changes: only the latest request holds.
    email_verification::Entity::delete_many()
        .filter(email_verification::Column::AccountId.eq(account.id))
        .filter(email_verification::Column::UsedAt.is_null())
        .filter(email_verification::Column::Email.ne(account.email.as_str()))
        .exec(&txn)
        .await?;
    let holder = account::Entity::find()
        .filter(account::Column::Email.eq(&new_email))
        .one(&txn)
        .await?;
    if holder.is_none_or(|h| h.email_verified_at.is_none()) {
        let raw = accounts::new_verification_token(&txn, account.id, &new_email, now).await?;
        let link = format!("{}/verify-email?token={raw}", ctx.public_url);
        mail::enqueue(
            &txn,
            now,
            &new_email,
            Email::ConfirmEmailChange {
                link,
                token: raw,
                old_email: account.email.clone(),
            },
        )
        .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// The caller's live sessions, the most recent first (at most
/// [`SESSIONS_LISTED`]).
pub async fn sessions(ctx: &Ctx, viewer: &Viewer) -> ApiResult<Vec<session::Model>> {
    Ok(session::Entity::find()
        .filter(session::Column::AccountId.eq(viewer.account_id))
        .filter(session::Column::Scopes.is_null())
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(ctx.clock.now()))
        .order_by_desc(session::Column::Id)
        .limit(SESSIONS_LISTED)
        .all(&ctx.db)
        .await?)
}

/// Revoke one of the caller's live sessions (the current one included);
/// another account's session, or one already ended, is `NOT_FOUND`; so is
/// an API token (`revokeApiToken` ends those).
pub async fn revoke_session(ctx: &Ctx, viewer: &Viewer, session_id: i64) -> ApiResult<()> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let revoked = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, now.into())
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::AccountId.eq(viewer.account_id))
        .filter(session::Column::Scopes.is_null())
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    if revoked.rows_affected == 0 {
        return Err(AppError::NotFound("session"));
    }
    Ok(())
}
