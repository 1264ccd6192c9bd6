//! `admin { … }`: cross-account reads for administrators (support in GraphiQL).
use async_graphql::{Context, Object, connection::Connection};

use super::{
    ContextExt,
    accounts::Account,
    events::{Event, event_page},
    orders::{License, Order},
    pagination::Page,
    webhooks::WebhookEndpoint,
};
use crate::{
    domain::{admin, licenses::Access},
    error::ApiResult,
};

/// Administrators only: every account, order, key and event.
pub struct Admin;

#[Object]
impl Admin {
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn accounts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Account>> {
        let page = Page::new(first, after)?;
        let rows = admin::accounts(&ctx.state().ctx.db, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |a| a.id, Account))
    }

    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Order>> {
        let page = Page::new(first, after)?;
        let rows = admin::orders(&ctx.state().ctx.db, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |o| o.id, Order))
    }

    /// Every key; the key strings themselves stay hidden (`key` is null).
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn licenses(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, License>> {
        let page = Page::new(first, after)?;
        let rows = admin::licenses(&ctx.state().ctx.db, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |l| l.id, |l| License::new(l, None, Access::Admin)))
    }

    /// Every event, in delivery order.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Event>> {
        event_page(ctx, sea_orm::Condition::all(), first, after).await
    }

    /// What administrators did (events caused by an admin account), in delivery order.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Event>> {
        event_page(ctx, admin::audit_log(), first, after).await
    }

    /// Outbound webhook endpoints, oldest first (at most 100).
    async fn webhook_endpoints(&self, ctx: &Context<'_>) -> ApiResult<Vec<WebhookEndpoint>> {
        let rows = crate::domain::webhooks::list(&ctx.state().ctx.db).await?;
        Ok(rows.into_iter().map(WebhookEndpoint).collect())
    }
}

#[derive(Default)]
pub struct AdminQuery;

#[Object]
impl AdminQuery {
    /// Cross-account reads; `FORBIDDEN` unless the caller is an administrator.
    async fn admin(&self, ctx: &Context<'_>) -> ApiResult<Admin> {
        ctx.viewer()?.require_admin()?;
        Ok(Admin)
    }
}
