//! Who is calling. [`authenticate`] turns a bearer token into a [`Viewer`]; the
//! HTTP handler and the websocket `connection_init` both use it, so a
//! subscription is authenticated exactly like a query.
pub mod password;
pub mod scopes;
pub mod session_cache;
pub mod token;

use chrono::{DateTime, Utc};
use entity::{account, session};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, JoinType, QueryFilter, QuerySelect};

use self::{scopes::Scopes, session_cache::SessionCache};
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
    /// An API token's scopes; `None` for a session (every right of the account).
    pub scopes: Option<Scopes>,
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
            scopes: None,
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

    /// True when the caller authenticated with an API token.
    pub fn is_api_token(&self) -> bool {
        self.scopes.is_some()
    }

    /// `FORBIDDEN` for an API token: what only a person may do (manage
    /// tokens and sessions). The scope table already refuses such root
    /// fields to tokens; this guards the nested fields and the rules.
    pub fn require_session(&self) -> ApiResult<()> {
        if self.is_api_token() {
            Err(AppError::Forbidden(
                "API tokens cannot manage tokens or sessions",
            ))
        } else {
            Ok(())
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
    let scopes = session.scopes.as_deref().map(Scopes::from_column);
    if scopes.is_some() {
        note_use(db, &session, now).await?;
    }
    Ok(Viewer {
        account_id: account.id,
        email_verified: account.email_verified_at.is_some(),
        is_admin: account.role == entity::account::AccountRole::Admin,
        email: account.email,
        session_id: session.id,
        session_expires_at: session.expires_at,
        scopes,
    })
}

/// How stale an API token's `last_used_at` may get: it is written at most
/// this often per token, not once per request.
pub const LAST_USED_RESOLUTION: chrono::Duration = chrono::Duration::minutes(1);

/// Record that an API token was used, when its `last_used_at` is older
/// than [`LAST_USED_RESOLUTION`]. Reads happen at most every couple of
/// seconds per token (the session cache), and the conditional update lets
/// one instance write per minute even when several read at once.
async fn note_use(
    db: &impl ConnectionTrait,
    session: &session::Model,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let stale = now - LAST_USED_RESOLUTION;
    if session.last_used_at.is_some_and(|at| at > stale) {
        return Ok(());
    }
    session::Entity::update_many()
        .col_expr(session::Column::LastUsedAt, now.into())
        .filter(session::Column::Id.eq(session.id))
        .filter(
            sea_orm::Condition::any()
                .add(session::Column::LastUsedAt.is_null())
                .add(session::Column::LastUsedAt.lte(stale)),
        )
        .exec(db)
        .await?;
    Ok(())
}
