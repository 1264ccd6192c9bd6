//! Outbound webhook endpoints and their delivery log (administrators only).
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, connection::Connection};
use chrono::{DateTime, Utc};
use entity::{webhook_delivery::DeliveryStatus, webhook_endpoint};

use super::{
    ContextExt,
    events::EventKind,
    pagination::{Page, parse_id},
};
use crate::{
    domain::webhooks::{self, Delivery},
    error::ApiResult,
    events::cursor::Cursor,
};

/// A receiver of signed webhooks (Standard Webhooks).
pub struct WebhookEndpoint(pub webhook_endpoint::Model);

#[Object]
impl WebhookEndpoint {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn url(&self) -> &str {
        &self.0.url
    }

    async fn description(&self) -> &str {
        &self.0.description
    }

    /// The kinds sent; empty: every kind.
    async fn event_kinds(&self) -> Vec<EventKind> {
        webhooks::event_kinds(&self.0)
            .into_iter()
            .map(Into::into)
            .collect()
    }

    /// Off after 5 days of failures, or by an administrator; its pending
    /// deliveries wait.
    async fn enabled(&self) -> bool {
        self.0.enabled
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The delivery log, newest first.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, WebhookDelivery>> {
        let page = Page::new(first, after)?;
        let rows =
            webhooks::deliveries(&ctx.state().ctx.db, self.0.id, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |d| d.id, WebhookDelivery))
    }
}

/// Where a delivery stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "entity::webhook_delivery::DeliveryStatus")]
pub enum WebhookDeliveryStatus {
    /// Waiting for its (next) attempt.
    Pending,
    Succeeded,
    /// Every attempt of `WEBHOOK_RETRY_SCHEDULE` failed.
    Failed,
}

/// One event sent (or to send) to one endpoint.
pub struct WebhookDelivery(pub Delivery);

#[Object]
impl WebhookDelivery {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The event's id (its cursor), also the `webhook-id` header.
    async fn event_id(&self) -> ID {
        ID(Cursor {
            tx: self.0.event_tx,
            id: self.0.event_id,
        }
        .to_string())
    }

    /// Attempts made so far.
    async fn attempt(&self) -> i32 {
        self.0.attempt
    }

    async fn status(&self) -> WebhookDeliveryStatus {
        self.0.status.into()
    }

    /// The last attempt's HTTP status; null when it got no answer.
    async fn response_status(&self) -> Option<i32> {
        self.0.response_status
    }

    /// At most 1 KiB of the last answer's body, or of the error.
    async fn response_excerpt(&self) -> Option<&str> {
        self.0.response_excerpt.as_deref()
    }

    /// When it goes out next; null once it succeeded or failed for good.
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        (self.0.status == DeliveryStatus::Pending).then_some(self.0.next_attempt_at)
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

#[derive(InputObject)]
pub struct CreateWebhookEndpointInput {
    /// https:// or http://, at most 2,048 characters, on a public address.
    pub url: String,
    /// Empty: every kind.
    pub event_kinds: Vec<EventKind>,
    /// At most 500 characters.
    pub description: Option<String>,
}

#[derive(InputObject)]
pub struct UpdateWebhookEndpointInput {
    /// Omitted fields are unchanged.
    pub url: Option<String>,
    pub event_kinds: Option<Vec<EventKind>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(SimpleObject)]
pub struct CreateWebhookEndpointPayload {
    pub endpoint: WebhookEndpoint,
    /// `whsec_…`, shown this once.
    pub secret: String,
}

#[derive(SimpleObject)]
pub struct RotateWebhookSecretPayload {
    /// The new `whsec_…`, shown this once; the previous one also signs for 24 h.
    pub secret: String,
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Administrators: register an endpoint for signed webhooks. Audited.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookEndpointInput,
    ) -> ApiResult<CreateWebhookEndpointPayload> {
        let viewer = ctx.viewer()?;
        let state = ctx.state();
        let new = webhooks::NewEndpoint {
            url: input.url,
            event_kinds: input.event_kinds.into_iter().map(Into::into).collect(),
            description: input.description,
        };
        let (endpoint, secret) =
            webhooks::create(&state.ctx, viewer, new, state.config.webhook_allow_private).await?;
        Ok(CreateWebhookEndpointPayload {
            endpoint: WebhookEndpoint(endpoint),
            secret,
        })
    }

    /// Administrators: change an endpoint. Audited.
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateWebhookEndpointInput,
    ) -> ApiResult<WebhookEndpoint> {
        let viewer = ctx.viewer()?;
        viewer.require_admin()?;
        let state = ctx.state();
        let change = webhooks::EndpointChange {
            url: input.url,
            event_kinds: input
                .event_kinds
                .map(|kinds| kinds.into_iter().map(Into::into).collect()),
            description: input.description,
            enabled: input.enabled,
        };
        let id = parse_id(&id, "webhook endpoint")?;
        let endpoint = webhooks::update(
            &state.ctx,
            viewer,
            id,
            change,
            state.config.webhook_allow_private,
        )
        .await?;
        Ok(WebhookEndpoint(endpoint))
    }

    /// Administrators: remove an endpoint and its delivery log. Audited.
    async fn delete_webhook_endpoint(&self, ctx: &Context<'_>, id: ID) -> ApiResult<bool> {
        let viewer = ctx.viewer()?;
        viewer.require_admin()?;
        let id = parse_id(&id, "webhook endpoint")?;
        webhooks::delete(&ctx.state().ctx, viewer, id).await?;
        Ok(true)
    }

    /// Administrators: a new signing secret; the previous one also signs
    /// for 24 h. Audited.
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> ApiResult<RotateWebhookSecretPayload> {
        let viewer = ctx.viewer()?;
        viewer.require_admin()?;
        let id = parse_id(&id, "webhook endpoint")?;
        let secret = webhooks::rotate_secret(&ctx.state().ctx, viewer, id).await?;
        Ok(RotateWebhookSecretPayload { secret })
    }

    /// Administrators: send a delivery's event to its endpoint again (same
    /// `webhook-id`), after what is already queued there.
    async fn redeliver_webhook(
        &self,
        ctx: &Context<'_>,
        delivery_id: ID,
    ) -> ApiResult<WebhookDelivery> {
        let viewer = ctx.viewer()?;
        viewer.require_admin()?;
        let id = parse_id(&delivery_id, "webhook delivery")?;
        Ok(WebhookDelivery(
            webhooks::redeliver(&ctx.state().ctx, viewer, id).await?,
        ))
    }
}
