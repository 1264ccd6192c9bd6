//! License requests (asking a buyer for a key) and order transfers.
use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, connection::Connection};
use chrono::{DateTime, Utc};
use entity::{license_request, order_transfer};
use futures_util::FutureExt;

use super::{
    ContextExt,
    accounts::Account,
    claims::ApprovalStatus,
    orders::{License, Order, PageRefs},
    pagination::{self, Page, parse_id},
};
use crate::{
    domain::{orders, requests, transfers},
    error::{ApiResult, AppError},
};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "crate::domain::Direction")]
pub enum Direction {
    /// Addressed to you.
    Incoming,
    /// Started by you.
    Outgoing,
}

/// A request for a license, from a person without a key to a buyer.
// With what the page it was listed in read for all its requests at once.
pub struct LicenseRequest(pub license_request::Model, Option<Arc<PageRefs>>);

impl LicenseRequest {
    pub fn new(model: license_request::Model) -> Self {
        LicenseRequest(model, None)
    }
}

#[Object]
impl LicenseRequest {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// Pending requests older than 7 days read as `EXPIRED`.
    async fn status(&self, ctx: &Context<'_>) -> ApprovalStatus {
        ApprovalStatus::from(requests::effective_status(
            &self.0,
            ctx.state().ctx.clock.now(),
        ))
    }

    async fn requester(&self, ctx: &Context<'_>) -> ApiResult<Option<Account>> {
        PageRefs::account(self.1.as_deref(), ctx, self.0.requester_id).await
    }

    async fn buyer_email(&self) -> &str {
        &self.0.buyer_email
    }

    /// The requester's message: untrusted text, escape it when rendering.
    async fn message(&self) -> &str {
        &self.0.message
    }

    /// The key given on approval, when the caller may see it.
    async fn license(&self, ctx: &Context<'_>) -> ApiResult<Option<License>> {
        match self.0.license_id {
            Some(id) => PageRefs::key(self.1.as_deref(), ctx, id).await,
            None => Ok(None),
        }
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn decided_at(&self) -> Option<DateTime<Utc>> {
        self.0.decided_at
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "entity::order_transfer::TransferStatus")]
pub enum TransferStatus {
    Pending,
    Accepted,
    Cancelled,
    Expired,
}

/// A transfer of an order's ownership.
pub struct OrderTransfer(pub order_transfer::Model);

#[Object]
impl OrderTransfer {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn status(&self, ctx: &Context<'_>) -> TransferStatus {
        TransferStatus::from(transfers::effective_status(
            &self.0,
            ctx.state().ctx.clock.now(),
        ))
    }

    /// The order, when the caller has rights on it (the owner before, the new owner after).
    async fn order(&self, ctx: &Context<'_>) -> ApiResult<Option<Order>> {
        let viewer = ctx.viewer()?;
        match orders::readable(&ctx.state().ctx.db, viewer, self.0.order_id)
            .boxed()
            .await
        {
            Ok(order) => Ok(Some(Order::from(order))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn order_number(&self) -> String {
        orders::number(self.0.order_id)
    }

    async fn from_email(&self, ctx: &Context<'_>) -> ApiResult<String> {
        transfers::from_email(&ctx.state().ctx.db, &self.0)
            .boxed()
            .await
    }

    async fn to_email(&self) -> &str {
        &self.0.to_email
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }

    async fn decided_at(&self) -> Option<DateTime<Utc>> {
        self.0.decided_at
    }
}

#[derive(InputObject)]
pub struct RequestLicenseInput {
    /// Email of the buyer you ask.
    pub buyer_email: String,
    /// Optional, at most 1000 characters.
    pub message: Option<String>,
}

#[derive(SimpleObject)]
pub struct RequestLicensePayload {
    request: LicenseRequest,
}

#[derive(Default)]
pub struct RequestQuery;

#[Object]
impl RequestQuery {
    /// Requests to you (INCOMING, by your verified email) or from you (OUTGOING).
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn license_requests(
        &self,
        ctx: &Context<'_>,
        direction: Direction,
        status: Option<ApprovalStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, LicenseRequest>> {
        let viewer = ctx.viewer()?;
        let page = Page::new(first, after)?;
        let state = ctx.state();
        let direction = direction.into();
        // Incoming requests come from many people: their accounts ride on
        // the page's statement. Outgoing ones are all the caller's own.
        let with_requesters = direction == crate::domain::Direction::Incoming
            && pagination::nodes(ctx).field("requester").exists();
        let rows = requests::list(
            &state.ctx.db,
            viewer,
            direction,
            status.map(Into::into),
            state.ctx.clock.now(),
            page.after,
            page.fetch(),
            with_requesters,
        )
        .await?;
        let (rows, requesters) = PageRefs::split(rows, with_requesters);
        let listed = &rows[..rows.len().min(page.first as usize)];
        let refs = PageRefs::load(
            ctx,
            ("license", listed.iter().filter_map(|r| r.license_id)),
            ("requester", listed.iter().map(|r| r.requester_id)),
            requesters,
        )
        .await?;
        Ok(page.connection(rows, |r| r.id, |r| LicenseRequest(r, Some(refs.clone()))))
    }

    /// Transfers from you (OUTGOING) or to your verified email (INCOMING), newest first (at most 100).
    async fn order_transfers(
        &self,
        ctx: &Context<'_>,
        direction: Direction,
        status: Option<TransferStatus>,
    ) -> ApiResult<Vec<OrderTransfer>> {
        let viewer = ctx.viewer()?;
        let state = ctx.state();
        let direction = direction.into();
        let rows = transfers::list(
            &state.ctx.db,
            viewer,
            direction,
            status.map(Into::into),
            state.ctx.clock.now(),
        )
        .await?;
        Ok(rows.into_iter().map(OrderTransfer).collect())
    }
}

#[derive(Default)]
pub struct RequestMutation;

#[Object]
impl RequestMutation {
    /// Ask a buyer (by email) for a license. Needs a verified account; the
    /// emails are rate limited per account, client address and recipient.
    async fn request_license(
        &self,
        ctx: &Context<'_>,
        input: RequestLicenseInput,
    ) -> ApiResult<RequestLicensePayload> {
        let viewer = ctx.viewer()?;
        viewer.verified_email()?;
        ctx.limit_mail(&input.buyer_email).await?;
        let request = requests::create(
            &ctx.state().ctx,
            viewer,
            &input.buyer_email,
            input.message.as_deref(),
        )
        .await?;
        Ok(RequestLicensePayload {
            request: LicenseRequest::new(request),
        })
    }

    /// Approve a request by assigning one of your free keys to the requester.
    async fn approve_license_request(
        &self,
        ctx: &Context<'_>,
        request_id: ID,
        license_id: ID,
    ) -> ApiResult<LicenseRequest> {
        let viewer = ctx.viewer()?;
        let request = parse_id(&request_id, "request")?;
        let license = parse_id(&license_id, "license")
            .map_err(|_| AppError::conflict("this key is not one of yours"))?;
        Ok(LicenseRequest::new(
            requests::approve(&ctx.state().ctx, viewer, request, license).await?,
        ))
    }

    /// The buyer declines a request; an administrator may decline any
    /// request on the buyer's behalf (with a `reason`), recorded with the
    /// administrator as actor.
    async fn decline_license_request(
        &self,
        ctx: &Context<'_>,
        request_id: ID,
        #[graphql(
            desc = "Administrators declining for the buyer: why (1 to 500 characters, required then; kept in the event's `changes.reason`)."
        )]
        reason: Option<String>,
    ) -> ApiResult<LicenseRequest> {
        let viewer = ctx.viewer()?;
        let request = parse_id(&request_id, "request")?;
        Ok(LicenseRequest::new(
            requests::decline(&ctx.state().ctx, viewer, request, reason.as_deref()).await?,
        ))
    }

    /// Offer an order to another account; both parties are emailed, the new
    /// owner with a single-use confirmation link valid 7 days. Needs a
    /// verified account; rate limited like `requestLicense`.
    async fn start_order_transfer(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        new_owner_email: String,
    ) -> ApiResult<OrderTransfer> {
        let viewer = ctx.viewer()?;
        viewer.verified_email()?;
        let order = parse_id(&order_id, "order")?;
        ctx.limit_mail(&new_owner_email).await?;
        Ok(OrderTransfer(
            transfers::start(&ctx.state().ctx, viewer, order, &new_owner_email).await?,
        ))
    }

    /// Accept a transfer with the token from its email, signed in with the addressed, verified email.
    async fn accept_order_transfer(
        &self,
        ctx: &Context<'_>,
        token: String,
    ) -> ApiResult<OrderTransfer> {
        let viewer = ctx.viewer()?;
        Ok(OrderTransfer(
            transfers::accept(&ctx.state().ctx, viewer, &token).await?,
        ))
    }

    /// The owner cancels a pending transfer; an administrator may cancel
    /// any on the owner's behalf (with a `reason`), recorded with the
    /// administrator as actor.
    async fn cancel_order_transfer(
        &self,
        ctx: &Context<'_>,
        transfer_id: ID,
        #[graphql(
            desc = "Administrators cancelling for the owner: why (1 to 500 characters, required then; kept in the event's `changes.reason`)."
        )]
        reason: Option<String>,
    ) -> ApiResult<OrderTransfer> {
        let viewer = ctx.viewer()?;
        let transfer = parse_id(&transfer_id, "transfer")?;
        Ok(OrderTransfer(
            transfers::cancel(&ctx.state().ctx, viewer, transfer, reason.as_deref()).await?,
        ))
    }
}
