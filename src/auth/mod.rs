//! Who is calling. [`authenticate`] turns a bearer token into a [`Viewer`]; the
//! HTTP handler and the websocket `connection_init` both use it, so a
//! subscription is authenticated exactly like a query.
pub mod password;
pub mod session_cache;
pub mod token;

use chrono::{DateTime, Utc};
use entity::{account, session};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, JoinType, QueryFilter, QuerySelect};

use self::session_cache::SessionCache;
use crate::error::{ApiResult, AppError};

/// The signed-in account behind a request, as read at authentication time.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub account_id: i64,
    /// Normalised email of the account.
    pub email: String,
    /// True once the account proved it receives mail at `email`.
    pub email_verified: bool,
    pub is_admin: bool,
    pub session_id: i64,
    /// When the session stops being valid; long-lived subscriptions end then.
    pub session_expires_at: DateTime<Utc>,
}

impl Viewer {
    /// The viewer of an account proven by its password on a page (no session).
    pub fn of(account: &account::Model) -> Viewer {
        Viewer {
            account_id: account.id,
            email: account.email.clone(),
            email_verified: account.email_verified_at.is_some(),
            is_admin: account.role == entity::account::AccountRole::Admin,
            session_id: 0,
            session_expires_at: chrono::Utc::now(),
        }
    }

    /// The verified email of the caller, or `EMAIL_NOT_VERIFIED`: nothing
    /// addressed to an email is usable before the address is proven.
    pub fn verified_email(&self) -> ApiResult<&str> {
        if self.email_verified {
            Ok(&self.email)
        } else {
            Err(AppError::EmailNotVerified)
        }
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin {
            Ok(())
        } else {
            Err(AppError::Forbidden("administrators only"))
        }
    }
}

/// Extract the token from an `Authorization: Bearer TOKEN` value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Resolve a session token to its viewer: `UNAUTHENTICATED` for an unknown,
/// expired or revoked token, or one of a disabled account (one answer, so
/// tokens cannot be probed). Every authenticated request starts here: a
/// session used in the last moments is taken from `sessions` (see
/// [`session_cache`] for why that is safe), else the session and its
/// account are read in one statement.
pub async fn authenticate(
    db: &impl ConnectionTrait,
    sessions: &SessionCache,
    raw_token: &str,
    now: DateTime<Utc>,
) -> ApiResult<Viewer> {
    let token_hash = token::hash(raw_token);
    if let Some(viewer) = sessions.get(&token_hash, now) {
        return Ok(viewer);
    }
    let before = sessions.before_read();
    let viewer = read_session(db, &token_hash, now).await?;
    sessions.put(token_hash, before, &viewer);
    Ok(viewer)
}

async fn read_session(
    db: &impl ConnectionTrait,
    token_hash: &str,
    now: DateTime<Utc>,
) -> ApiResult<Viewer> {
    let (session, account) = session::Entity::find()
        .filter(session::Column::TokenHash.eq(token_hash))
        .join(
            JoinType::LeftJoin,
            session::Entity::belongs_to(account::Entity)
                .from(session::Column::AccountId)
                .to(account::Column::Id)
                .into(),
        )
        .select_also(account::Entity)
        .one(db)
        .await?
        .filter(|(s, _)| s.revoked_at.is_none() && s.expires_at > now)
        .ok_or(AppError::Unauthenticated)?;
    // A disabled account's sessions were revoked with it; this also stops
    // one opened by a sign-in that raced the disabling.
    let account = account
        .filter(|a| a.disabled_at.is_none())
        .ok_or(AppError::Unauthenticated)?;
    Ok(Viewer {
        account_id: account.id,
        email_verified: account.email_verified_at.is_some(),
        is_admin: account.role == entity::account::AccountRole::Admin,
        email: account.email,
        session_id: session.id,
        session_expires_at: session.expires_at,
    })
}
