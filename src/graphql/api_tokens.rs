//! API tokens: `createApiToken`, `revokeApiToken`, `me { apiTokens }`.
//! Only a person signed in with a session manages tokens; the scope table
//! refuses these operations to tokens (`auth::scopes`).
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::session;

use super::ContextExt;
use crate::{
    auth::scopes::{self, Scopes},
    domain::api_tokens,
    error::ApiResult,
};

/// What a token may do (docs/api-tokens.md). In the documentation they are
/// written `orders:read`, `claims:write`, …
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "ApiScope", remote = "crate::auth::scopes::Scope")]
pub enum ApiScope {
    /// `orders:read`: orders, their transfers, claims and requests on them.
    OrdersRead,
    /// `orders:write`: create orders, transfers, organizations.
    OrdersWrite,
    /// `licenses:read`: keys, assigned keys, the caller's own claims.
    LicensesRead,
    /// `licenses:write`: assign, reissue, activate and deactivate keys.
    LicensesWrite,
    /// `claims:write`: claim keys, request them, decide claims and requests.
    ClaimsWrite,
    /// `events:read`: the `events` query and subscription.
    EventsRead,
    /// `admin`: administrators' fields (granted by administrators only).
    Admin,
}

/// An API token of the caller (never its secret).
pub struct ApiToken(pub session::Model);

#[Object]
impl ApiToken {
    /// Pass it to `revokeApiToken`.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        self.0.name.as_deref().unwrap_or_default()
    }

    async fn scopes(&self) -> Vec<ApiScope> {
        Scopes::from_column(self.0.scopes.as_deref().unwrap_or_default())
            .iter()
            .map(ApiScope::from)
            .collect()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When it last authenticated a request, to the minute; null if never.
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }

    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }
}

#[derive(InputObject)]
pub struct CreateApiTokenInput {
    /// 1 to 100 characters, to tell tokens apart.
    name: String,
    /// At least one; `ADMIN` only from an administrator.
    scopes: Vec<ApiScope>,
    /// 1 to 3650.
    expires_in_days: i32,
}

#[derive(SimpleObject)]
pub struct CreateApiTokenPayload {
    /// The secret, `kl_…`, for `Authorization: Bearer …` and websocket
    /// `connection_init`. Shown this once: only its hash is kept.
    token: String,
    api_token: ApiToken,
}

/// `me { apiTokens }`.
pub async fn list(ctx: &Context<'_>) -> ApiResult<Vec<ApiToken>> {
    let viewer = ctx.viewer()?;
    let tokens = api_tokens::list(&ctx.state().ctx, viewer).await?;
    Ok(tokens.into_iter().map(ApiToken).collect())
}

#[derive(Default)]
pub struct ApiTokenMutation;

#[Object]
impl ApiTokenMutation {
    /// Make a token for a program to act for the caller within `scopes`.
    /// Signed in as a person with a verified address (`EMAIL_NOT_VERIFIED`
    /// otherwise); at most 50 live tokens per account (`CONFLICT`).
    async fn create_api_token(
        &self,
        ctx: &Context<'_>,
        input: CreateApiTokenInput,
    ) -> ApiResult<CreateApiTokenPayload> {
        let viewer = ctx.viewer()?;
        let new = api_tokens::NewToken {
            name: input.name,
            scopes: input.scopes.into_iter().map(scopes::Scope::from).collect(),
            expires_in_days: input.expires_in_days,
        };
        let (token, row) = api_tokens::create(&ctx.state().ctx, viewer, new).await?;
        Ok(CreateApiTokenPayload {
            token,
            api_token: ApiToken(row),
        })
    }

    /// Revoke one of the caller's tokens: it authenticates nothing from now
    /// on, on every instance, and live subscriptions opened with it end.
    /// Another account's token is `NOT_FOUND`.
    async fn revoke_api_token(&self, ctx: &Context<'_>, id: ID) -> ApiResult<bool> {
        let state = ctx.state();
        let viewer = ctx.viewer()?;
        let token_id = super::pagination::parse_id(&id, "API token")?;
        api_tokens::revoke(&state.ctx, viewer, token_id).await?;
        state.one_session_revoked(viewer.account_id, token_id).await;
        Ok(true)
    }
}
