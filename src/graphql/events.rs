//! Events: the history of orders and keys, the caller's event feed, and the
//! live `events` subscription.
use async_graphql::{Context, Enum, ID, Json, Object, Subscription, connection::Connection};
use chrono::{DateTime, Utc};
use entity::event;
use futures_util::{StreamExt, stream::BoxStream};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{
    ContextExt,
    accounts::Account,
    claims::Claim,
    orders::{License, Order},
    pagination::Page,
    requests::{LicenseRequest, OrderTransfer},
};
use crate::{
    domain::{claims, orders, requests, transfers},
    error::{ApiResult, AppError},
    events::{LiveEvent, stream},
};

/// What happened (the `kind` of an event).
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "crate::events::EventKind")]
pub enum EventKind {
    ClaimCreated,
    ClaimApproved,
    ClaimDeclined,
    RequestCreated,
    RequestApproved,
    RequestDeclined,
    RequestExpired,
    LicenseAssigned,
    LicenseUnassigned,
    OrganizationChanged,
    TransferStarted,
    TransferAccepted,
    TransferCancelled,
    DeviceActivated,
    DeviceDeactivated,
    OrderCreated,
    OrderPaid,
    ClaimSettingsChanged,
}

/// Something that happened to an order, a key, a claim, a request or a transfer.
pub struct Event(pub LiveEvent);

#[Object]
impl Event {
    /// The event's position: pass it as `after` to resume after this event.
    async fn id(&self) -> ID {
        ID(self.0.position.to_string())
    }

    async fn kind(&self) -> ApiResult<EventKind> {
        crate::events::EventKind::parse(&self.0.kind)
            .map(Into::into)
            .ok_or_else(|| AppError::internal(format!("unknown event kind {}", self.0.kind)))
    }

    async fn occurred_at(&self) -> DateTime<Utc> {
        self.0.occurred_at
    }

    /// Who caused it; null for the system (e.g. expiry).
    async fn actor(&self, ctx: &Context<'_>) -> ApiResult<Option<Account>> {
        let Some(id) = self.0.actor_id else {
            return Ok(None);
        };
        let loaders = ctx.data_unchecked::<super::Loaders>();
        Ok(loaders.accounts().load_one(id).await?.map(Account))
    }

    /// What changed: `{"before": …, "after": …}`.
    async fn changes(&self) -> Json<serde_json::Value> {
        Json(serde_json::from_str(&self.0.changes).unwrap_or_default())
    }

    /// The order concerned, when the caller has rights on it.
    async fn order(&self, ctx: &Context<'_>) -> ApiResult<Option<Order>> {
        let (Some(id), Ok(viewer)) = (self.0.order_id, ctx.viewer()) else {
            return Ok(None);
        };
        match orders::readable(&ctx.state().ctx.db, viewer, id).await {
            Ok(order) => Ok(Some(Order(order))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The key concerned, when the caller may see it.
    async fn license(&self, ctx: &Context<'_>) -> ApiResult<Option<License>> {
        match self.0.license_id {
            Some(id) => License::visible(ctx, id).await,
            None => Ok(None),
        }
    }
    /// The claim concerned, when the caller is its claimer or manages its key.
    async fn claim(&self, ctx: &Context<'_>) -> ApiResult<Option<Claim>> {
        let (Some(id), Ok(viewer)) = (self.0.claim_id, ctx.viewer()) else {
            return Ok(None);
        };
        Ok(claims::readable(&ctx.state().ctx.db, viewer, id)
            .await?
            .map(Claim))
    }

    /// The license request concerned, when the caller is one of its parties.
    async fn request(&self, ctx: &Context<'_>) -> ApiResult<Option<LicenseRequest>> {
        let (Some(id), Ok(viewer)) = (self.0.request_id, ctx.viewer()) else {
            return Ok(None);
        };
        Ok(requests::readable(&ctx.state().ctx.db, viewer, id)
            .await?
            .map(LicenseRequest))
    }

    /// The order transfer concerned, when the caller is one of its parties.
    async fn transfer(&self, ctx: &Context<'_>) -> ApiResult<Option<OrderTransfer>> {
        let (Some(id), Ok(viewer)) = (self.0.transfer_id, ctx.viewer()) else {
            return Ok(None);
        };
        Ok(transfers::readable(&ctx.state().ctx.db, viewer, id)
            .await?
            .map(OrderTransfer))
    }
}

/// Whose history to list.
pub enum HistoryOf {
    Order(i64),
    License(i64),
}

/// History rows (the caller's rights were checked by the parent object).
pub async fn history(
    ctx: &Context<'_>,
    of: HistoryOf,
    first: Option<i32>,
    after: Option<String>,
) -> ApiResult<Connection<String, Event>> {
    let condition = match of {
        HistoryOf::Order(id) => event::Column::OrderId.eq(id),
        HistoryOf::License(id) => event::Column::LicenseId.eq(id),
    };
    event_page(ctx, Condition::all().add(condition), first, after).await
}

/// A page of positioned events matching `condition`, by position. It first
/// waits for the relay to position every event committed before the call,
/// so a client reads its own writes.
pub async fn event_page(
    ctx: &Context<'_>,
    condition: Condition,
    first: Option<i32>,
    after: Option<String>,
) -> ApiResult<Connection<String, Event>> {
    let page = Page::new(first, after)?;
    ctx.state().ctx.wake.relay.positioned().await;
    let mut query = event::Entity::find()
        .filter(event::Column::Position.is_not_null())
        .filter(condition)
        .order_by_asc(event::Column::Position)
        .limit(page.fetch());
    if let Some(after) = page.after {
        query = query.filter(event::Column::Position.gt(after));
    }
    let rows = query.all(&ctx.state().ctx.db).await?;
    let events = rows
        .into_iter()
        .filter_map(|r| LiveEvent::from_row(r, Vec::new()))
        .collect();
    Ok(page.connection(events, |e: &LiveEvent| e.position, Event))
}

fn parse_cursor(after: Option<ID>) -> ApiResult<i64> {
    after
        .map(|a| {
            a.parse::<i64>()
                .map_err(|_| AppError::validation("after", "not an event cursor"))
        })
        .transpose()
        .map(|a| a.unwrap_or(0))
}

#[derive(Default)]
pub struct EventQuery;

#[Object]
impl EventQuery {
    /// The caller's events, oldest first, after the cursor `after`.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<ID>,
        first: Option<i32>,
    ) -> ApiResult<Connection<String, Event>> {
        let viewer = ctx.viewer()?;
        let after = parse_cursor(after)?;
        let page = Page::new(first, Some(after.to_string()))?;
        ctx.state().ctx.wake.relay.positioned().await;
        let rows = stream::for_account(&ctx.state().ctx.db, viewer.account_id, after, page.fetch())
            .await?;
        Ok(page.connection(rows, |e| e.position, Event))
    }
}

#[derive(Default)]
pub struct EventSubscription;

#[Subscription]
impl EventSubscription {
    /// The caller's events as they happen, after replaying those after `after`.
    /// Ends with `UNAUTHENTICATED` when the session expires or signs out.
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<ID>,
    ) -> Result<BoxStream<'static, ApiResult<Event>>, AppError> {
        let viewer = ctx.viewer()?;
        let after = parse_cursor(after)?;
        let state = ctx.state();
        let subscriber = stream::Subscriber {
            account_id: viewer.account_id,
            session_id: viewer.session_id,
            session_expires_at: viewer.session_expires_at,
        };
        let live = stream::subscribe(
            state.ctx.db.clone(),
            &state.hub,
            state.ctx.clock.clone(),
            state.metrics.clone(),
            subscriber,
            after,
        );
        Ok(live.map(|item| item.map(Event)).boxed())
    }
}
