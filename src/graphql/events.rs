//! Events: the history of orders and keys, the caller's event feed, and the
//! live `events` subscription.
use async_graphql::{Context, Enum, ID, Json, Object, Subscription, connection::Connection};
use chrono::{DateTime, Utc};

use futures_util::{FutureExt, StreamExt, stream::BoxStream};
use sea_orm::Condition;

use super::{
    ContextExt,
    accounts::Account,
    claims::Claim,
    orders::{License, Order},
    pagination::Page,
    requests::{LicenseRequest, OrderTransfer},
};
use crate::{
    auth::Viewer,
    domain::{claims, orders, requests, rights, transfers},
    error::{ApiResult, AppError},
    events::{
        LiveEvent,
        cursor::{self, Cursor},
        stream,
    },
};

/// What happened (the `kind` of an event).
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "entity::event::EventKind")]
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
    LicenseReissued,
    OrganizationChanged,
    TransferStarted,
    TransferAccepted,
    TransferCancelled,
    DeviceActivated,
    DeviceDeactivated,
    OrderCreated,
    OrderPaid,
    ClaimSettingsChanged,
    ProductCreated,
    ProductUpdated,
    PasswordChanged,
    EmailChanged,
    OrderRefunded,
    // Administration (support actions).
    AccountDisabled,
    AccountEnabled,
    SessionsRevoked,
    EmailResent,
    LicenseSuspended,
    LicenseResumed,
    DeviceExpired,
    WebhookEndpointCreated,
    WebhookEndpointUpdated,
    WebhookEndpointDeleted,
    WebhookSecretRotated,
}

/// Something that happened to an order, a key, a claim, a request or a transfer.
pub struct Event(pub LiveEvent);

#[Object]
impl Event {
    /// The event's place in the order events are delivered in: pass it as
    /// `after` to resume after this event.
    async fn id(&self) -> ID {
        ID(self.0.cursor().to_string())
    }

    async fn kind(&self) -> EventKind {
        self.0.kind.into()
    }

    async fn occurred_at(&self) -> DateTime<Utc> {
        self.0.occurred_at
    }

    /// Who caused it; null for the system (e.g. expiry), and when the caller
    /// may not know who it was (the next holder of a key that left them).
    // The rule: `rights::may_see_event_actor`.
    async fn actor(&self, ctx: &Context<'_>) -> ApiResult<Option<Account>> {
        let Some(id) = self.0.actor_id else {
            return Ok(None);
        };
        let loaders = ctx.data_unchecked::<super::Loaders>();
        let Some(actor) = loaders.accounts().load_one(id).boxed().await? else {
            return Ok(None);
        };
        let (kind, changes) = (self.0.kind, self.raw_changes());
        let visible = match ctx.viewer() {
            Ok(viewer) if rights::event_needs_rights(kind, &changes, viewer) => {
                let full = self.reads_whole(ctx, viewer).boxed().await?;
                rights::may_see_event_actor(kind, &changes, viewer, full, &actor.email)
            }
            Ok(_) => true,
            Err(_) => false,
        };
        Ok(visible.then_some(Account(actor)))
    }

    /// What changed: `{"before": …, "after": …}`. Of a key's assignment, a
    /// caller who does not manage its order reads only their own side (the
    /// other is null).
    // The rule: `rights::event_changes_for`.
    async fn changes(&self, ctx: &Context<'_>) -> ApiResult<Json<serde_json::Value>> {
        let (kind, changes) = (self.0.kind, self.raw_changes());
        let Ok(viewer) = ctx.viewer() else {
            return Ok(Json(serde_json::Value::Null));
        };
        let full = rights::event_needs_rights(kind, &changes, viewer)
            && self.reads_whole(ctx, viewer).boxed().await?;
        Ok(Json(rights::event_changes_for(
            kind, &changes, viewer, full,
        )))
    }

    /// The order concerned, when the caller has rights on it.
    async fn order(&self, ctx: &Context<'_>) -> ApiResult<Option<Order>> {
        let (Some(id), Ok(viewer)) = (self.0.order_id, ctx.viewer()) else {
            return Ok(None);
        };
        match orders::readable(&ctx.state().ctx.db, viewer, id)
            .boxed()
            .await
        {
            Ok(order) => Ok(Some(Order::from(order))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The key concerned, when the caller may see it.
    async fn license(&self, ctx: &Context<'_>) -> ApiResult<Option<License>> {
        match self.0.license_id {
            Some(id) => License::visible(ctx, id).boxed().await,
            None => Ok(None),
        }
    }
    /// The claim concerned, when the caller is its claimer or manages its key.
    async fn claim(&self, ctx: &Context<'_>) -> ApiResult<Option<Claim>> {
        let (Some(id), Ok(viewer)) = (self.0.claim_id, ctx.viewer()) else {
            return Ok(None);
        };
        Ok(claims::readable(&ctx.state().ctx.db, viewer, id)
            .boxed()
            .await?
            .map(Claim::new))
    }

    /// The license request concerned, when the caller is one of its parties.
    async fn request(&self, ctx: &Context<'_>) -> ApiResult<Option<LicenseRequest>> {
        let (Some(id), Ok(viewer)) = (self.0.request_id, ctx.viewer()) else {
            return Ok(None);
        };
        Ok(requests::readable(&ctx.state().ctx.db, viewer, id)
            .boxed()
            .await?
            .map(LicenseRequest::new))
    }

    /// The order transfer concerned, when the caller is one of its parties.
    async fn transfer(&self, ctx: &Context<'_>) -> ApiResult<Option<OrderTransfer>> {
        let (Some(id), Ok(viewer)) = (self.0.transfer_id, ctx.viewer()) else {
            return Ok(None);
        };
        Ok(transfers::readable(&ctx.state().ctx.db, viewer, id)
            .boxed()
            .await?
            .map(OrderTransfer))
    }
}

impl Event {
    fn raw_changes(&self) -> serde_json::Value {
        serde_json::from_str(&self.0.changes).unwrap_or_default()
    }

    /// True when `viewer` reads the event whole: an administrator, or one of
    /// its order's managers.
    async fn reads_whole(&self, ctx: &Context<'_>, viewer: &Viewer) -> ApiResult<bool> {
        if viewer.is_admin {
            return Ok(true);
        }
        let Some(order_id) = self.0.order_id else {
            return Ok(false);
        };
        let loaders = ctx.data_unchecked::<super::Loaders>();
        let Some(order) = loaders.orders().load_one(order_id).await? else {
            return Ok(false);
        };
        rights::can_manage(&ctx.state().ctx.db, viewer, &order).await
    }
}

/// An order's history (the caller's rights were checked by the order). A
/// key's history is batched for a page of keys (`loaders::LicenseHistories`).
pub async fn order_history(
    ctx: &Context<'_>,
    order_id: i64,
    first: Option<i32>,
    after: Option<String>,
) -> ApiResult<Connection<String, Event>> {
    event_page(ctx, stream::about_order(order_id), first, after).await
}

/// A page of the events matching `condition`, in delivery order. It first
/// waits until every event committed before the call can be read in order,
/// so a client reads its own writes.
pub async fn event_page(
    ctx: &Context<'_>,
    condition: Condition,
    first: Option<i32>,
    after: Option<String>,
) -> ApiResult<Connection<String, Event>> {
    let page = Page::<Cursor>::parse(first, after)?;
    let after = page.after.unwrap_or_default();
    let events = stream::matching(&ctx.state().ctx.db, condition, after, page.fetch()).await?;
    Ok(page.connection(events, LiveEvent::cursor, Event))
}

fn parse_cursor(after: Option<ID>) -> ApiResult<Cursor> {
    after
        .map(|a| {
            a.parse::<Cursor>()
                .map_err(|_| AppError::validation("after", "not an event cursor"))
        })
        .transpose()
        .map(Option::unwrap_or_default)
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
        let page = Page::<Cursor>::parse(first, Some(after.to_string()))?;
        let db = &ctx.state().ctx.db;
        cursor::settle(db).await?;
        let rows = stream::for_account(db, viewer.account_id, after, page.fetch()).await?;
        Ok(page.connection(rows, LiveEvent::cursor, Event))
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
