//! Refunds (administrators). Payments themselves arrive by webhook
//! (`src/http/stripe.rs`) or `markOrderPaid`.
use async_graphql::{Context, ID, Object};

use super::{ContextExt, orders::Order, pagination::parse_id};
use crate::{domain::payments, error::ApiResult};

#[derive(Default)]
pub struct PaymentMutation;

#[Object]
impl PaymentMutation {
    /// Administrators: refund a paid order. Its keys then validate as
    /// `ORDER_REFUNDED`, stop activating and changing hands, pending claims
    /// on them are declined, and the owner and assignees are emailed.
    /// `reason` (1 to 500 characters) goes in the `ORDER_REFUNDED` event's
    /// `changes.reason`. `CONFLICT` for an order not paid or already refunded.
    async fn refund_order(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        reason: String,
    ) -> ApiResult<Order> {
        let viewer = ctx.viewer()?;
        viewer.require_admin()?;
        let order = payments::refund_order(
            &ctx.state().ctx,
            viewer,
            parse_id(&order_id, "order")?,
            &reason,
        )
        .await?;
        Ok(Order::from(order))
    }
}
