//! `POST /webhooks/stripe`: payment confirmations and refunds from Stripe
//! (the rules: [`crate::domain::payments`]). The route exists only when
//! `STRIPE_WEBHOOK_SECRET` is set; without it the path answers 404 like any
//! unknown one.
//!
//! Answers: 413 for a body over [`MAX_BODY_BYTES`], before it is read
//! further; 400 for a missing, malformed, stale or wrong signature (logged),
//! and for a signed body that cannot be read; 200 with `{"received": true,
//! "outcome": …}` for everything else, ignored types and unknown orders
//! included (Stripe retries non-2xx answers for days, and no retry would
//! change those); 500 when the database fails, so that Stripe retries.
use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

use super::{
    Server,
    refusal::{declared_length, read_body, refuse},
};
use crate::{
    client_ip::ClientAddr,
    domain::payments::{self, Outcome},
    graphql::limits,
};

/// Largest body read: Stripe's events are a few KiB; 256 KiB leaves room
/// for a large Checkout Session with expanded line items.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

fn bad_request(message: &str) -> Response {
    refuse(
        StatusCode::BAD_REQUEST,
        limits::coded_error(message.to_owned(), "body", None),
    )
}

pub async fn webhook(
    State(server): State<Server>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(secret) = server.state.config.stripe_webhook_secret.as_ref() else {
        return super::refusal::not_found().await;
    };
    let body = match read_body(body, declared_length(&headers), MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let signature = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or_default());
    let now = server.state.ctx.clock.now();
    if let Err(error) = payments::verify_signature(signature, &body, secret.expose(), now) {
        tracing::warn!(client = %client.0, reason = error.describe(), "Stripe webhook refused");
        return refuse(
            StatusCode::BAD_REQUEST,
            limits::coded_error(error.describe().to_owned(), "Stripe-Signature", None),
        );
    }
    let delivery = match payments::parse_event(&body) {
        Ok(delivery) => delivery,
        Err(reason) => {
            tracing::warn!(client = %client.0, %reason, "signed Stripe event cannot be read");
            return bad_request(&reason);
        }
    };
    match payments::apply(&server.state.ctx, &delivery).await {
        Ok(outcome) => {
            if matches!(outcome, Outcome::Ignored | Outcome::Duplicate) {
                tracing::debug!(
                    event_id = %delivery.event_id,
                    kind = %delivery.kind,
                    outcome = outcome.as_str(),
                    "Stripe event acknowledged"
                );
            }
            (
                StatusCode::OK,
                axum::Json(serde_json::json!({"received": true, "outcome": outcome.as_str()})),
            )
                .into_response()
        }
        Err(error) => {
            tracing::error!(
                event_id = %delivery.event_id,
                error = %error.detail(),
                "Stripe event failed; Stripe will retry it"
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({"received": false})),
            )
                .into_response()
        }
    }
}
