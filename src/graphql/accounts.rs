//! Accounts: sign-up, verification, sign-in/out, `me`, claim settings.
use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::account;
use futures_util::FutureExt;

use super::{Auth, ContextExt};
use crate::{
    client_ip::ClientAddr,
    domain::{accounts, recovery},
    error::{ApiResult, AppError},
};

/// The `User-Agent` of the HTTP request, kept with the sessions it opens.
#[derive(Clone)]
pub struct UserAgent(pub String);

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "entity::account::AccountRole")]
pub enum Role {
    User,
    Admin,
}

/// A person's account. Private fields (settings) are shown to the account
/// itself and to admins only.
pub struct Account(pub Arc<account::Model>);

impl From<account::Model> for Account {
    fn from(model: account::Model) -> Self {
        Account(Arc::new(model))
    }
}

#[Object]
impl Account {
    /// The account's id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The sign-in address, trimmed and lower-cased.
    async fn email(&self) -> &str {
        &self.0.email
    }

    /// True once the account proved it receives mail at `email`.
    async fn email_verified(&self) -> bool {
        self.0.email_verified_at.is_some()
    }

    /// `USER`, or `ADMIN` (granted by `keyledger grant-admin`).
    async fn role(&self) -> Role {
        self.0.role.into()
    }

    /// When the account signed up.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// True while an administrator has the account disabled (it cannot
    /// sign in); null unless the caller is an administrator or the account.
    async fn disabled(&self, ctx: &Context<'_>) -> Option<bool> {
        let viewer = ctx.viewer().ok()?;
        (viewer.is_admin || viewer.account_id == self.0.id).then_some(self.0.disabled_at.is_some())
    }

    /// The caller's organizations and roles (empty for other accounts).
    async fn organizations(
        &self,
        ctx: &Context<'_>,
    ) -> ApiResult<Vec<super::organizations::Membership>> {
        match ctx.viewer() {
            Ok(viewer) if viewer.account_id == self.0.id => {
                super::organizations::memberships(ctx).boxed().await
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The account's live sessions, the most recent first (at most 100);
    /// null unless it is the caller's own account; `FORBIDDEN` with an API
    /// token. API tokens are listed in `apiTokens`.
    async fn sessions(&self, ctx: &Context<'_>) -> ApiResult<Option<Vec<Session>>> {
        let Ok(viewer) = ctx.viewer() else {
            return Ok(None);
        };
        if viewer.account_id != self.0.id {
            return Ok(None);
        }
        viewer.require_session()?;
        let sessions = recovery::sessions(&ctx.state().ctx, viewer).boxed().await?;
        Ok(Some(
            sessions
                .into_iter()
                .map(|s| Session {
                    current: s.id == viewer.session_id,
                    session: s,
                })
                .collect(),
        ))
    }

    /// The account's live API tokens, the newest first; null unless it is
    /// the caller's own account. `FORBIDDEN` with an API token: tokens do
    /// not manage tokens.
    async fn api_tokens(
        &self,
        ctx: &Context<'_>,
    ) -> ApiResult<Option<Vec<super::api_tokens::ApiToken>>> {
        match ctx.viewer() {
            Ok(viewer) if viewer.account_id == self.0.id => {
                super::api_tokens::list(ctx).boxed().await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// How this account's keys may be claimed; null unless it is the caller's own account.
    async fn claim_settings(&self, ctx: &Context<'_>) -> Option<ClaimSettings> {
        let viewer = ctx.viewer().ok()?;
        (viewer.account_id == self.0.id || viewer.is_admin).then(|| ClaimSettings::from(&*self.0))
    }
}

/// A buyer's claim settings (product.md "Claim settings").
#[derive(SimpleObject)]
pub struct ClaimSettings {
    /// Every claim waits for approval (orders may override).
    pub require_manual_approval: bool,
    /// A claim may replace a key's current assignee without approval.
    pub allow_override_assignee: bool,
    /// Email on every successful claim (suppressed while manual approval applies).
    pub notify_on_claim: bool,
    /// Assignees may attach an organization to their key.
    pub allow_assignee_organization: bool,
}

impl From<&account::Model> for ClaimSettings {
    fn from(a: &account::Model) -> Self {
        ClaimSettings {
            require_manual_approval: a.require_manual_approval,
            allow_override_assignee: a.allow_override_assignee,
            notify_on_claim: a.notify_on_claim,
            allow_assignee_organization: a.allow_assignee_organization,
        }
    }
}

/// A signed-in session of the caller (never its token).
pub struct Session {
    session: entity::session::Model,
    current: bool,
}

#[Object]
impl Session {
    /// Pass it to `revokeSession`.
    async fn id(&self) -> ID {
        ID(self.session.id.to_string())
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.session.created_at
    }

    async fn expires_at(&self) -> DateTime<Utc> {
        self.session.expires_at
    }

    /// True for the session of this request.
    async fn current(&self) -> bool {
        self.current
    }

    /// The `User-Agent` that signed in, if it sent one.
    async fn user_agent(&self) -> Option<&str> {
        self.session.user_agent.as_deref()
    }

    /// The client address that signed in.
    async fn client_address(&self) -> Option<&str> {
        self.session.client_addr.as_deref()
    }
}

/// The same for every sign-up with a well-formed address and password,
/// whether or not the address already had an account.
#[derive(SimpleObject)]
pub struct SignUpPayload {
    /// The address, normalised, that an email was sent to.
    email: String,
}

#[derive(SimpleObject)]
pub struct SignInPayload {
    /// Bearer token for `Authorization: Bearer …` and websocket `connection_init`.
    token: String,
    expires_at: DateTime<Utc>,
    account: Account,
}

#[derive(Default)]
pub struct AccountQuery;

#[Object]
impl AccountQuery {
    /// The signed-in account; null without a token, `UNAUTHENTICATED` with a bad one.
    async fn me(&self, ctx: &Context<'_>) -> ApiResult<Option<Account>> {
        match ctx.auth() {
            Auth::Anonymous => Ok(None),
            Auth::Invalid => Err(AppError::Unauthenticated),
            Auth::Viewer(viewer) => Ok(accounts::of_viewer(&ctx.state().ctx.db, viewer)
                .await?
                .map(Account::from)),
        }
    }
}

#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Create an account and email a verification link. Passwords: 10 to 128
    /// characters. The answer does not tell whether the address already had
    /// an account: if it had a verified one, its owner is emailed instead
    /// (with a password-reset link) and nothing changes; if it had one never
    /// verified, that account gets this password and its sessions end.
    /// Rate limited per client address and per recipient address (`RATE_LIMITED`).
    async fn sign_up(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> ApiResult<SignUpPayload> {
        // Counted whether or not the address already has an account, so
        // that sign-ups cannot flood its owner with mail either.
        ctx.limit_mail(&email).await?;
        let state = ctx.state();
        let signed_up = accounts::sign_up(&state.ctx, &email, &password).await?;
        if let Some(account_id) = signed_up.replaced_account {
            state.account_sessions_revoked(account_id).await;
        }
        Ok(SignUpPayload {
            email: signed_up.email,
        })
    }

    /// Prove an email address with the token from the verification email,
    /// signed in to the account it was sent for (`FORBIDDEN` for another).
    /// A token sent by `changeEmail` makes its address the account's email.
    async fn verify_email(&self, ctx: &Context<'_>, token: String) -> ApiResult<Account> {
        let state = ctx.state();
        let viewer = ctx.viewer()?;
        let verified = accounts::verify_email(&state.ctx, viewer, &token).await?;
        if verified.email_changed_from.is_some() {
            state.account_sessions_revoked(verified.account.id).await;
        }
        Ok(Account::from(verified.account))
    }

    /// Send a new verification email to the signed-in, unverified account
    /// (rate limited like every email the caller addresses).
    async fn resend_verification_email(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        let viewer = ctx.viewer()?;
        if !viewer.email_verified {
            ctx.limit_mail(&viewer.email).await?;
        }
        accounts::resend_verification(&ctx.state().ctx, viewer).await?;
        Ok(true)
    }

    /// Open a session. A wrong password and an unknown email get the same
    /// answer. Wrong passwords are limited per account and per client
    /// address: past a limit every attempt, the right password included, is
    /// `RATE_LIMITED` with `extensions.retryAfter` (seconds).
    async fn sign_in(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> ApiResult<SignInPayload> {
        let state = ctx.state();
        let ttl = chrono::Duration::hours(state.config.session_ttl_hours);
        let client = ctx.data_opt::<ClientAddr>().map(|ClientAddr(ip)| *ip);
        let origin = accounts::SessionOrigin {
            user_agent: ctx.data_opt::<UserAgent>().map(|ua| ua.0.clone()),
            client_addr: client,
        };
        let sign_in = accounts::sign_in(&state.ctx, &email, &password, ttl, origin);
        let (token, account) = state
            .limits
            .passwords
            .check(&email, client, sign_in)
            .await?;
        Ok(SignInPayload {
            token,
            expires_at: state.ctx.clock.now() + ttl,
            account: Account::from(account),
        })
    }

    /// Revoke the current token; live subscriptions opened with it end.
    async fn sign_out(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        let state = ctx.state();
        let viewer = ctx.viewer()?;
        accounts::sign_out(&state.ctx, viewer).await?;
        state.session_revoked(viewer).await;
        Ok(true)
    }

    /// Email a single-use link, valid 1 hour, to set a new password. Always
    /// `true`: the answer does not tell whether the address has an account.
    /// A new link makes the older ones useless. Rate limited like every email.
    async fn request_password_reset(&self, ctx: &Context<'_>, email: String) -> ApiResult<bool> {
        ctx.limit_mail(&email).await?;
        recovery::request_password_reset(&ctx.state().ctx, &email).await?;
        Ok(true)
    }

    /// Set a new password with the token of a reset email: the address
    /// counts as verified and every session of the account ends. The token
    /// works once (`NOT_FOUND` after), for 1 hour (`EXPIRED` after).
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        token: String,
        new_password: String,
    ) -> ApiResult<bool> {
        let state = ctx.state();
        let account_id = recovery::reset_password(&state.ctx, &token, &new_password)
            .await
            .map_err(|e| e.on_field("password", "newPassword"))?;
        state.account_sessions_revoked(account_id).await;
        Ok(true)
    }

    /// Change the caller's password; every other session of the account
    /// ends. A wrong `current` password is `UNAUTHENTICATED` and counts
    /// against the same limits as `signIn`'s.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current: String,
        new: String,
    ) -> ApiResult<bool> {
        let state = ctx.state();
        let viewer = ctx.viewer()?;
        let change = recovery::change_password(&state.ctx, viewer, &current, &new);
        let revoked = state
            .limits
            .passwords
            .check(&viewer.email, ctx.client_addr(), change)
            .await
            .map_err(|e| e.on_field("password", "new"))?;
        if revoked > 0 {
            state.account_sessions_revoked(viewer.account_id).await;
        }
        Ok(true)
    }

    /// Move the caller's account to another address: a confirmation link
    /// goes to `newEmail`, and the account's email changes only once it is
    /// used (`verifyEmail` or the link's page, signed in to this account).
    /// When a verified account already has that address, nothing is sent
    /// and the answer is the same. A wrong `password` is handled as in
    /// `changePassword`; the email is rate limited like every email.
    async fn change_email(
        &self,
        ctx: &Context<'_>,
        new_email: String,
        password: String,
    ) -> ApiResult<bool> {
        let state = ctx.state();
        let viewer = ctx.viewer()?;
        ctx.limit_mail(&new_email).await?;
        let change = recovery::change_email(&state.ctx, viewer, &new_email, &password);
        state
            .limits
            .passwords
            .check(&viewer.email, ctx.client_addr(), change)
            .await?;
        Ok(true)
    }

    /// End one of the caller's sessions (see `me { sessions }`); its token
    /// stops working and its live subscriptions end. Another account's
    /// session is `NOT_FOUND`.
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> ApiResult<bool> {
        let state = ctx.state();
        let viewer = ctx.viewer()?;
        let session_id = super::pagination::parse_id(&id, "session")?;
        recovery::revoke_session(&state.ctx, viewer, session_id).await?;
        state
            .one_session_revoked(viewer.account_id, session_id)
            .await;
        Ok(true)
    }
}
