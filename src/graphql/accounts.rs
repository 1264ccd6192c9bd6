//! Accounts: sign-up, verification, sign-in/out, `me`, claim settings.
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::account;

use super::{Auth, ContextExt};
use crate::{
    client_ip::ClientAddr,
    domain::accounts,
    error::{ApiResult, AppError},
};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum Role {
    User,
    Admin,
}

/// A person's account. Private fields (settings) are shown to the account
/// itself and to admins only.
pub struct Account(pub account::Model);

#[Object]
impl Account {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn email_verified(&self) -> bool {
        self.0.email_verified_at.is_some()
    }

    async fn role(&self) -> Role {
        if self.0.role == "ADMIN" {
            Role::Admin
        } else {
            Role::User
        }
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The caller's organizations and roles (empty for other accounts).
    async fn organizations(
        &self,
        ctx: &Context<'_>,
    ) -> ApiResult<Vec<super::organizations::Membership>> {
        match ctx.viewer() {
            Ok(viewer) if viewer.account_id == self.0.id => {
                super::organizations::memberships(ctx).await
            }
            _ => Ok(Vec::new()),
        }
    }

    /// How this account's keys may be claimed; null unless it is the caller's own account.
    async fn claim_settings(&self, ctx: &Context<'_>) -> Option<ClaimSettings> {
        let viewer = ctx.viewer().ok()?;
        (viewer.account_id == self.0.id || viewer.is_admin).then(|| ClaimSettings::from(&self.0))
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

#[derive(SimpleObject)]
pub struct SignUpPayload {
    account: Account,
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
            Auth::Viewer(viewer) => {
                let account = account::Entity::find_by_id(viewer.account_id)
                    .one(&ctx.state().ctx.db)
                    .await?;
                Ok(account.map(Account))
            }
        }
    }
}

use sea_orm::EntityTrait;

#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Create an account and email a verification link. Passwords: 10 to 128 characters.
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
        let account = accounts::sign_up(&ctx.state().ctx, &email, &password).await?;
        Ok(SignUpPayload {
            account: Account(account),
        })
    }

    /// Prove the email address with the token from the verification email.
    async fn verify_email(&self, ctx: &Context<'_>, token: String) -> ApiResult<Account> {
        Ok(Account(
            accounts::verify_email(&ctx.state().ctx, &token).await?,
        ))
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
        let sign_in = accounts::sign_in(&state.ctx, &email, &password, ttl);
        let (token, account) = state
            .limits
            .passwords
            .check(&email, client, sign_in)
            .await?;
        Ok(SignInPayload {
            token,
            expires_at: state.ctx.clock.now() + ttl,
            account: Account(account),
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
}
