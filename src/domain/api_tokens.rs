//! API tokens (product.md "Integrations"): programs act for an account with
//! a token restricted to scopes. A token is a row of `sessions` with
//! `scopes` set, so it is resolved, cached, revoked and re-checked by live
//! subscriptions exactly as a session is, and a password reset or change
//! ends it like the account's other sessions. Its secret is shown once, when
//! it is made; only its SHA-256 is stored.
use chrono::{DateTime, Utc};
use entity::{account, session};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::Ctx;
use crate::{
    auth::{
        Viewer,
        scopes::{Scope, Scopes},
        token,
    },
    error::{ApiResult, AppError},
};

/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Most live (neither revoked nor expired) tokens an account holds.
pub const MAX_TOKENS_PER_ACCOUNT: u64 = 50;
/// Bounds of a token's lifetime, in days (up to about ten years).
pub const MIN_DAYS: i32 = 1;
pub const MAX_DAYS: i32 = 3650;

/// What `createApiToken` asks for.
pub struct NewToken {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub expires_in_days: i32,
}

/// Check a request for a token: a name of 1 to [`MAX_NAME_CHARS`] printable
/// characters (trimmed), at least one scope (`admin` only from an
/// administrator), a lifetime of [`MIN_DAYS`] to [`MAX_DAYS`] days.
fn validate(viewer: &Viewer, new: &NewToken) -> ApiResult<(String, Scopes)> {
    let name = new.name.trim();
    if name.is_empty() {
        return Err(AppError::validation("name", "name the token"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::validation(
            "name",
            format!("a token's name is at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::validation(
            "name",
            "a token's name cannot hold control characters",
        ));
    }
    if !(MIN_DAYS..=MAX_DAYS).contains(&new.expires_in_days) {
        return Err(AppError::validation(
            "expiresInDays",
            format!("a token lasts {MIN_DAYS} to {MAX_DAYS} days"),
        ));
    }
    let scopes: Scopes = new.scopes.iter().copied().collect();
    if scopes.is_empty() {
        return Err(AppError::validation("scopes", "give the token a scope"));
    }
    if scopes.contains(Scope::Admin) && !viewer.is_admin {
        return Err(AppError::Forbidden(
            "only administrators can grant the admin scope",
        ));
    }
    Ok((name.to_owned(), scopes))
}

/// Make a token for the caller (a person signed in with a verified
/// address); returns its secret, shown this once, and its row.
pub async fn create(
    ctx: &Ctx,
    viewer: &Viewer,
    new: NewToken,
) -> ApiResult<(String, session::Model)> {
    viewer.require_session()?;
    viewer.verified_email()?;
    let (name, scopes) = validate(viewer, &new)?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    // The account's row, locked: two creations at once count one after the other.
    account::Entity::find_by_id(viewer.account_id)
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(AppError::Unauthenticated)?;
    let live = live_tokens(viewer.account_id, now).count(&txn).await?;
    if live >= MAX_TOKENS_PER_ACCOUNT {
        return Err(AppError::conflict(format!(
            "an account holds at most {MAX_TOKENS_PER_ACCOUNT} API tokens: revoke one first"
        )));
    }
    let raw = token::generate_api_token();
    let row = session::ActiveModel {
        account_id: Set(viewer.account_id),
        token_hash: Set(token::hash(&raw)),
        created_at: Set(now),
        expires_at: Set(now + chrono::Duration::days(i64::from(new.expires_in_days))),
        revoked_at: Set(None),
        name: Set(Some(name)),
        scopes: Set(Some(scopes.to_column())),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    Ok((raw, row))
}

use sea_orm::PaginatorTrait as _;

/// The live tokens of an account.
fn live_tokens(account_id: i64, now: DateTime<Utc>) -> sea_orm::Select<session::Entity> {
    session::Entity::find()
        .filter(session::Column::AccountId.eq(account_id))
        .filter(session::Column::Scopes.is_not_null())
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now))
}

/// The caller's live tokens, the newest first (at most
/// [`MAX_TOKENS_PER_ACCOUNT`]).
pub async fn list(ctx: &Ctx, viewer: &Viewer) -> ApiResult<Vec<session::Model>> {
    viewer.require_session()?;
    Ok(live_tokens(viewer.account_id, ctx.clock.now())
        .order_by_desc(session::Column::Id)
        .limit(MAX_TOKENS_PER_ACCOUNT)
        .all(&ctx.db)
        .await?)
}

/// Revoke one of the caller's live tokens: it authenticates nothing from
/// now on. Another account's token, a session, or a token already revoked
/// or expired is `NOT_FOUND`.
pub async fn revoke(ctx: &Ctx, viewer: &Viewer, token_id: i64) -> ApiResult<()> {
    viewer.require_session()?;
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let revoked = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, now.into())
        .filter(session::Column::Id.eq(token_id))
        .filter(session::Column::AccountId.eq(viewer.account_id))
        .filter(session::Column::Scopes.is_not_null())
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    if revoked.rows_affected == 0 {
        return Err(AppError::NotFound("API token"));
    }
    Ok(())
}
