//! `admin { … }`: cross-account reads for administrators (support in GraphiQL).
use async_graphql::{Context, Object, connection::Connection};
use entity::{account, event, license, order};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Query,
};

use super::{
    ContextExt,
    accounts::Account,
    events::{Event, event_page},
    orders::{License, Order},
    pagination::Page,
};
use crate::{domain::licenses::Access, error::ApiResult};

/// Administrators only: every account, order, key and event.
pub struct Admin;

macro_rules! page_of {
    ($ctx:expr, $entity:ty, $column:expr, $first:expr, $after:expr) => {{
        let page = Page::new($first, $after)?;
        let mut query = <$entity>::find().order_by_asc($column).limit(page.fetch());
        if let Some(after) = page.after {
            query = query.filter($column.gt(after));
        }
        (page, query.all(&$ctx.state().ctx.db).await?)
    }};
}

#[Object]
impl Admin {
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn accounts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Account>> {
        let (page, rows) = page_of!(ctx, account::Entity, account::Column::Id, first, after);
        Ok(page.connection(rows, |a| a.id, Account))
    }

    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Order>> {
        let (page, rows) = page_of!(ctx, order::Entity, order::Column::Id, first, after);
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
        let (page, rows) = page_of!(ctx, license::Entity, license::Column::Id, first, after);
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
        event_page(ctx, Condition::all(), first, after).await
    }

    /// What administrators did (events caused by an admin account), in delivery order.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Event>> {
        let admins = Query::select()
            .column(account::Column::Id)
            .from(account::Entity)
            .and_where(account::Column::Role.eq("ADMIN"))
            .to_owned();
        let by_admins = Condition::all().add(event::Column::ActorId.in_subquery(admins));
        event_page(ctx, by_admins, first, after).await
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
