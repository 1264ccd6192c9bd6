//! Payments confirmed by the payment provider (Stripe) and refunds
//! (product.md "Integrations"; api.md `POST /webhooks/stripe`, `refundOrder`).
//!
//! A delivery's signature is checked first ([`verify_signature`]), then its
//! event is read ([`parse_event`]) and applied ([`apply`]). Each event id is
//! recorded in `payment_events` (unique per provider) by the transaction that
//! applies it, before anything else: a replay, a retry or a concurrent copy
//! waits on the unique index (PostgreSQL) or the write lock (SQLite), then
//! finds it there and changes nothing. Orders are locked before they are
//! read, so two different events for one order (`checkout.session.completed`
//! and `checkout.session.async_payment_succeeded`, say) pay it once.
use chrono::{DateTime, Utc};
use entity::{account, license, order, payment_event};
use hmac::{KeyInit, Mac};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QuerySelect, sea_query::OnConflict,
};
use serde_json::{Value, json};

use super::{
    Ctx, Write, claims,
    orders::{self, OrderStatus, Payment},
    products, rights,
};
use crate::{
    auth::Viewer,
    error::{ApiResult, AppError},
    events::{self, EventKind, NewEvent},
    mail::{self, Email},
};

/// The provider name stored with Stripe's payments and events.
pub const STRIPE: &str = "stripe";
/// How far a signature's timestamp may be from now (Stripe's own default).
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// Longest id (event, order reference, PaymentIntent) taken from an event.
const ID_MAX: usize = 255;
/// Most `v1` signatures looked at in one header (Stripe sends two while a
/// secret is being rolled).
const SIGNATURES_MAX: usize = 8;
/// Longest `Stripe-Signature` header read.
const SIGNATURE_HEADER_MAX: usize = 2048;

/// Why a delivery's signature was refused (all answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    Missing,
    /// A header without `t` or `v1`, or one that cannot be read.
    Malformed,
    /// A timestamp more than [`SIGNATURE_TOLERANCE_SECS`] from now: an old
    /// delivery replayed by someone who kept it.
    Stale,
    /// No `v1` is the HMAC of this body under our secret.
    Mismatch,
}

impl SignatureError {
    pub fn describe(self) -> &'static str {
        match self {
            SignatureError::Missing => "the Stripe-Signature header is missing",
            SignatureError::Malformed => "the Stripe-Signature header cannot be read",
            SignatureError::Stale => "the Stripe-Signature timestamp is too far from now",
            SignatureError::Mismatch => "no Stripe-Signature matches this body",
        }
    }
}

/// Check Stripe's `Stripe-Signature: t=…,v1=…[,v1=…]`: one `v1` must be the
/// HMAC-SHA256, keyed by the whole `whsec_…` secret, of `"{t}.{body}"`, and
/// `t` (Unix seconds) within [`SIGNATURE_TOLERANCE_SECS`] of `now`. The
/// comparison is constant-time (`Mac::verify_slice`).
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > SIGNATURE_HEADER_MAX {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((name, value)) = part.trim().split_once('=') else {
            continue;
        };
        match name {
            "t" if timestamp.is_some() => return Err(SignatureError::Malformed),
            "t" => timestamp = Some(value),
            "v1" if signatures.len() < SIGNATURES_MAX => {
                // Not hex, or not 32 bytes: not a signature of ours.
                if let Ok(signature) = hex::decode(value) {
                    signatures.push(signature);
                }
            }
            _ => {} // v0 (test mode's SHA-1 scheme) and future schemes
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    let seconds: i64 = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.timestamp().abs_diff(seconds) > SIGNATURE_TOLERANCE_SECS as u64 {
        return Err(SignatureError::Stale);
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    if signatures
        .iter()
        .any(|signature| mac.clone().verify_slice(signature).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A Stripe event this service reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Stripe's event id (`evt_…`).
    pub event_id: String,
    /// Its type, e.g. `checkout.session.completed`.
    pub kind: String,
    pub event: StripeEvent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeEvent {
    /// `checkout.session.completed` or `…async_payment_succeeded`.
    Checkout {
        /// `client_reference_id`, else `metadata.order_id`.
        order_ref: Option<String>,
        /// Paid now (`payment_status: "paid"`, or the async success).
        paid: bool,
        amount_total: i64,
        currency: String,
        payment_intent: Option<String>,
    },
    /// `charge.refunded`.
    ChargeRefunded {
        /// The whole charge was refunded (`refunded: true`).
        refunded: bool,
        payment_intent: Option<String>,
    },
    /// Any other type: acknowledged, nothing done.
    Other,
}

/// An id from an event: 1 to [`ID_MAX`] visible ASCII characters.
fn id_field(value: &Value, name: &'static str) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(text)
            if (1..=ID_MAX).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(text.clone()))
        }
        // An expanded object carries its id.
        Value::Object(object) if object.contains_key("id") => id_field(&object["id"], name),
        _ => Err(format!(
            "{name} must be an id of 1 to {ID_MAX} visible characters"
        )),
    }
}

fn required_id(value: &Value, name: &'static str) -> Result<String, String> {
    id_field(value, name)?.ok_or_else(|| format!("{name} is missing"))
}

/// Read a delivery's body (already authenticated by its signature). What
/// cannot be read is an error for a 400, never a panic: missing fields,
/// wrong types, ids out of bounds.
pub fn parse_event(body: &[u8]) -> Result<Delivery, String> {
    let event: Value =
        serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_owned())?;
    if !event.is_object() {
        return Err("the body is not a JSON object".into());
    }
    let event_id = required_id(&event["id"], "id")?;
    let kind = match &event["type"] {
        Value::String(kind)
            if (1..=128).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            kind.clone()
        }
        _ => return Err("type must be an event type".into()),
    };
    let object = &event["data"]["object"];
    let event = match kind.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            if !object.is_object() {
                return Err("data.object must be a Checkout Session".into());
            }
            let order_ref = match id_field(&object["client_reference_id"], "client_reference_id")? {
                Some(reference) => Some(reference),
                None => id_field(&object["metadata"]["order_id"], "metadata.order_id")?,
            };
            let amount_total = object["amount_total"]
                .as_i64()
                .ok_or("amount_total must be an integer")?;
            let currency = match object["currency"].as_str() {
                Some(code) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    code.to_ascii_uppercase()
                }
                _ => return Err("currency must be a three-letter ISO 4217 code".into()),
            };
            let paid = kind == "checkout.session.async_payment_succeeded"
                || object["payment_status"].as_str() == Some("paid");
            StripeEvent::Checkout {
                order_ref,
                paid,
                amount_total,
                currency,
                payment_intent: id_field(&object["payment_intent"], "payment_intent")?,
            }
        }
        "charge.refunded" => {
            if !object.is_object() {
                return Err("data.object must be a Charge".into());
            }
            StripeEvent::ChargeRefunded {
                refunded: object["refunded"]
                    .as_bool()
                    .ok_or("refunded must be a boolean")?,
                payment_intent: id_field(&object["payment_intent"], "payment_intent")?,
            }
        }
        _ => StripeEvent::Other,
    };
    Ok(Delivery {
        event_id,
        kind,
        event,
    })
}

/// What a delivery did (stored in `payment_events.outcome`, and answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The order is paid and its keys generated.
    Paid,
    /// The order is refunded.
    Refunded,
    /// The amount or currency is not the catalog's (or the product has no
    /// price, or the payment was refunded before it was confirmed): the
    /// order stays unpaid and is flagged for administrators.
    Mismatch,
    /// No order has this reference (or, for a refund, this PaymentIntent).
    UnknownOrder,
    /// The order was already paid (or refunded): nothing more.
    AlreadyPaid,
    /// The order was already refunded.
    AlreadyRefunded,
    /// A refund for an order that was never paid: nothing to undo.
    NotPaid,
    /// A type, or a state (a session not paid yet, a partial refund), that
    /// changes nothing.
    Ignored,
    /// This event id was applied before: nothing again.
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Paid => "PAID",
            Outcome::Refunded => "REFUNDED",
            Outcome::Mismatch => "MISMATCH",
            Outcome::UnknownOrder => "UNKNOWN_ORDER",
            Outcome::AlreadyPaid => "ALREADY_PAID",
            Outcome::AlreadyRefunded => "ALREADY_REFUNDED",
            Outcome::NotPaid => "NOT_PAID",
            Outcome::Ignored => "IGNORED",
            Outcome::Duplicate => "DUPLICATE",
        }
    }
}

/// Apply an authenticated delivery, exactly once per event id.
pub async fn apply(ctx: &Ctx, delivery: &Delivery) -> ApiResult<Outcome> {
    match &delivery.event {
        StripeEvent::Checkout {
            order_ref,
            paid: true,
            amount_total,
            currency,
            payment_intent,
        } => {
            let confirmation = Confirmation {
                order_ref: order_ref.as_deref(),
                amount_total: *amount_total,
                currency,
                payment_intent: payment_intent.as_deref(),
            };
            checkout_paid(ctx, delivery, confirmation).await
        }
        StripeEvent::ChargeRefunded {
            refunded: true,
            payment_intent: Some(payment_intent),
        } => charge_refunded(ctx, delivery, payment_intent).await,
        // A session still waiting for an asynchronous payment, a partial
        // refund, a charge without PaymentIntent, another type.
        _ => Ok(Outcome::Ignored),
    }
}

/// Record `delivery` in `payment_events`, unless its id is there already
/// (then `None`). `INSERT … ON CONFLICT DO NOTHING`: on PostgreSQL a
/// concurrent copy waits on the unique index until this transaction ends.
async fn record_delivery(
    txn: &Write<'_>,
    delivery: &Delivery,
    payment_intent: Option<&str>,
    now: DateTime<Utc>,
) -> ApiResult<Option<i64>> {
    let row = payment_event::ActiveModel {
        provider: Set(STRIPE.to_owned()),
        event_id: Set(delivery.event_id.clone()),
        kind: Set(delivery.kind.clone()),
        order_id: Set(None),
        payment_intent: Set(payment_intent.map(str::to_owned)),
        outcome: Set("RECEIVED".to_owned()),
        received_at: Set(now),
        ..Default::default()
    };
    let inserted = payment_event::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                payment_event::Column::Provider,
                payment_event::Column::EventId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    if inserted == 0 {
        return Ok(None);
    }
    let id = payment_event::Entity::find()
        .select_only()
        .column(payment_event::Column::Id)
        .filter(payment_event::Column::Provider.eq(STRIPE))
        .filter(payment_event::Column::EventId.eq(&delivery.event_id))
        .into_tuple::<i64>()
        .one(txn)
        .await?
        .ok_or_else(|| AppError::internal("payment event not found after its insert"))?;
    Ok(Some(id))
}

/// Write what a recorded delivery did.
async fn settle(
    txn: &Write<'_>,
    row_id: i64,
    order_id: Option<i64>,
    outcome: Outcome,
) -> ApiResult<()> {
    payment_event::Entity::update_many()
        .col_expr(
            payment_event::Column::Outcome,
            sea_orm::sea_query::Expr::value(outcome.as_str()),
        )
        .col_expr(
            payment_event::Column::OrderId,
            sea_orm::sea_query::Expr::value(order_id),
        )
        .filter(payment_event::Column::Id.eq(row_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// What a paid Checkout Session says.
struct Confirmation<'a> {
    order_ref: Option<&'a str>,
    amount_total: i64,
    currency: &'a str,
    payment_intent: Option<&'a str>,
}

async fn checkout_paid(
    ctx: &Ctx,
    delivery: &Delivery,
    paid: Confirmation<'_>,
) -> ApiResult<Outcome> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let Some(row_id) = record_delivery(&txn, delivery, paid.payment_intent, now).await? else {
        return Ok(Outcome::Duplicate);
    };
    let order_id = paid.order_ref.and_then(|r| r.trim().parse::<i64>().ok());
    let order = match order_id {
        Some(id) => {
            order::Entity::find_by_id(id)
                .lock_exclusive()
                .one(&txn)
                .await?
        }
        None => None,
    };
    let Some(order) = order else {
        tracing::warn!(
            event_id = %delivery.event_id,
            order_ref = paid.order_ref.unwrap_or_default(),
            "Stripe confirmed a payment for no known order"
        );
        settle(&txn, row_id, None, Outcome::UnknownOrder).await?;
        txn.commit().await?;
        return Ok(Outcome::UnknownOrder);
    };
    let outcome = match order.status {
        OrderStatus::Paid | OrderStatus::Refunded => Outcome::AlreadyPaid,
        OrderStatus::PendingPayment => match payment_problem(&txn, &order, &paid).await? {
            Some(problem) => {
                tracing::warn!(
                    order_id = order.id,
                    event_id = %delivery.event_id,
                    problem = %problem,
                    "a Stripe payment does not match its order: left unpaid and flagged"
                );
                let mut flagged: order::ActiveModel = order.into();
                flagged.payment_problem = Set(Some(problem));
                flagged.update(&txn).await?;
                Outcome::Mismatch
            }
            None => {
                let payment = Payment {
                    provider: STRIPE,
                    event_id: Some(delivery.event_id.clone()),
                    amount: Some(paid.amount_total),
                    currency: Some(paid.currency.to_owned()),
                    payment_intent: paid.payment_intent.map(str::to_owned),
                };
                orders::pay(&txn, order, payment, None, now).await?;
                Outcome::Paid
            }
        },
    };
    settle(&txn, row_id, order_id, outcome).await?;
    txn.commit().await?;
    tracing::info!(
        event_id = %delivery.event_id,
        order_id,
        outcome = outcome.as_str(),
        "Stripe payment confirmation"
    );
    Ok(outcome)
}

/// Why a confirmed payment does not pay `order`, if it does not: the
/// amount and currency must be its quantity times the catalog's unit price.
async fn payment_problem(
    conn: &impl ConnectionTrait,
    order: &order::Model,
    paid: &Confirmation<'_>,
) -> ApiResult<Option<String>> {
    if let Some(payment_intent) = paid.payment_intent {
        let refunded_before = payment_event::Entity::find()
            .filter(payment_event::Column::Provider.eq(STRIPE))
            .filter(payment_event::Column::PaymentIntent.eq(payment_intent))
            .filter(payment_event::Column::Kind.eq("charge.refunded"))
            .one(conn)
            .await?;
        if refunded_before.is_some() {
            return Ok(Some(format!(
                "Stripe reported a refund of {payment_intent} before confirming its payment"
            )));
        }
    }
    let price = products::find(conn, &order.product)
        .await?
        .as_ref()
        .and_then(products::price);
    let Some(price) = price else {
        return Ok(Some(format!(
            "the product {} has no price in the catalog: paid {} {}",
            order.product, paid.amount_total, paid.currency
        )));
    };
    let expected = price.amount.checked_mul(i64::from(order.quantity));
    if expected != Some(paid.amount_total) || !paid.currency.eq_ignore_ascii_case(&price.currency) {
        return Ok(Some(format!(
            "paid {} {}, the catalog price is {} {} ({} × {})",
            paid.amount_total,
            paid.currency,
            expected.map_or_else(|| "too large".to_owned(), |e| e.to_string()),
            price.currency,
            order.quantity,
            price.amount,
        )));
    }
    Ok(None)
}

async fn charge_refunded(
    ctx: &Ctx,
    delivery: &Delivery,
    payment_intent: &str,
) -> ApiResult<Outcome> {
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let Some(row_id) = record_delivery(&txn, delivery, Some(payment_intent), now).await? else {
        return Ok(Outcome::Duplicate);
    };
    let order = order::Entity::find()
        .filter(order::Column::PaymentIntent.eq(payment_intent))
        .filter(order::Column::PaymentProvider.eq(STRIPE))
        .lock_exclusive()
        .one(&txn)
        .await?;
    let Some(order) = order else {
        tracing::warn!(
            event_id = %delivery.event_id,
            payment_intent,
            "Stripe refunded a payment that paid no known order"
        );
        settle(&txn, row_id, None, Outcome::UnknownOrder).await?;
        txn.commit().await?;
        return Ok(Outcome::UnknownOrder);
    };
    let order_id = order.id;
    let outcome = match order.status {
        OrderStatus::Refunded => Outcome::AlreadyRefunded,
        OrderStatus::PendingPayment => Outcome::NotPaid,
        OrderStatus::Paid => {
            let refund = Refund {
                actor_id: None,
                source: STRIPE,
                reason: None,
                event_id: Some(delivery.event_id.clone()),
            };
            apply_refund(&txn, order, refund, now).await?;
            Outcome::Refunded
        }
    };
    settle(&txn, row_id, Some(order_id), outcome).await?;
    txn.commit().await?;
    tracing::info!(
        event_id = %delivery.event_id,
        order_id,
        outcome = outcome.as_str(),
        "Stripe refund"
    );
    Ok(outcome)
}

/// Administrators: refund a paid order (`reason`: as every support action's,
/// [`super::support::reason`]; recorded in the `ORDER_REFUNDED` event). `CONFLICT` for an
/// order not paid, or already refunded.
pub async fn refund_order(
    ctx: &Ctx,
    viewer: &Viewer,
    order_id: i64,
    reason: &str,
) -> ApiResult<order::Model> {
    viewer.require_admin()?;
    let reason = super::support::reason(reason)?;
    let reason = reason.as_str();
    let now = ctx.clock.now();
    let txn = ctx.begin_write().await?;
    let order = orders::lock(&txn, order_id).await?;
    match order.status {
        OrderStatus::Paid => {}
        OrderStatus::PendingPayment => {
            return Err(AppError::conflict("this order is not paid"));
        }
        OrderStatus::Refunded => {
            return Err(AppError::conflict("this order is already refunded"));
        }
    }
    let refund = Refund {
        actor_id: Some(viewer.account_id),
        source: "admin",
        reason: Some(reason.to_owned()),
        event_id: None,
    };
    let refunded = apply_refund(&txn, order, refund, now).await?;
    txn.commit().await?;
    Ok(refunded)
}

/// Who refunded an order, and why.
struct Refund {
    /// The administrator; `None` for the payment provider.
    actor_id: Option<i64>,
    /// `admin` or `stripe`.
    source: &'static str,
    reason: Option<String>,
    /// The provider's event.
    event_id: Option<String>,
}

/// Refund `order` (paid, locked by the caller) in the caller's transaction:
/// status `REFUNDED`, pending claims on its keys declined, `ORDER_REFUNDED`
/// to its managers and its keys' assignees, and an email to the owner and
/// to each assignee. Its keys then validate as `ORDER_REFUNDED`; the commit
/// forgets this instance's cached answers and the event the others'.
async fn apply_refund(
    txn: &Write<'_>,
    order: order::Model,
    refund: Refund,
    now: DateTime<Utc>,
) -> ApiResult<order::Model> {
    let mut refunded: order::ActiveModel = order.clone().into();
    refunded.status = Set(OrderStatus::Refunded);
    refunded.refunded_at = Set(Some(now));
    let refunded = refunded.update(txn).await?;
    claims::decline_pending_on_order(txn, &refunded, refund.actor_id, now).await?;
    let assigned_emails = || {
        sea_orm::sea_query::Query::select()
            .distinct()
            .column(license::Column::AssigneeEmail)
            .from(license::Entity)
            .and_where(license::Column::OrderId.eq(order.id))
            .and_where(license::Column::AssigneeEmail.is_not_null())
            .to_owned()
    };
    let assignees: Vec<String> = license::Entity::find()
        .select_only()
        .column(license::Column::AssigneeEmail)
        .distinct()
        .filter(license::Column::OrderId.eq(order.id))
        .filter(license::Column::AssigneeEmail.is_not_null())
        .into_tuple::<String>()
        .all(txn)
        .await?;
    let mut event = NewEvent::new(EventKind::OrderRefunded, refund.actor_id);
    event.order_id = Some(order.id);
    event.changes = json!({
        "before": {"status": order.status},
        "after": {"status": OrderStatus::Refunded},
        "reason": refund.reason,
        "source": refund.source,
        "eventId": refund.event_id,
    });
    event.recipients = rights::order_managers(txn, &order).await?;
    if !assignees.is_empty() {
        let verified: Vec<i64> = account::Entity::find()
            .select_only()
            .column(account::Column::Id)
            .filter(account::Column::Email.in_subquery(assigned_emails()))
            .filter(account::Column::EmailVerifiedAt.is_not_null())
            .into_tuple()
            .all(txn)
            .await?;
        event.recipients.extend(verified);
    }
    events::record(txn, now, event).await?;
    let product = products::display_name(txn, &order.product).await?;
    let owner = account::Entity::find_by_id(order.owner_id)
        .one(txn)
        .await?
        .ok_or_else(|| AppError::internal("order without owner"))?;
    mail::enqueue(
        txn,
        now,
        &owner.email,
        Email::OrderRefunded {
            order_number: Some(orders::number(order.id)),
            product: product.clone(),
        },
    )
    .await?;
    let others: Vec<String> = assignees
        .into_iter()
        .filter(|email| *email != owner.email)
        .collect();
    mail::enqueue_many(
        txn,
        now,
        &others,
        Email::OrderRefunded {
            order_number: None,
            product,
        },
    )
    .await?;
    tracing::info!(
        order_id = order.id,
        source = refund.source,
        "order refunded"
    );
    Ok(refunded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_are_checked_like_stripe_does() {
        let now = Utc::now();
        let t = now.timestamp();
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(SECRET, t, body);
        let header = format!("t={t},v1={good}");
        assert_eq!(verify_signature(Some(&header), body, SECRET, now), Ok(()));
        // Rotated secret: one of several v1 is enough; v0 is ignored.
        let other = sign("whsec_old", t, body);
        let header = format!("t={t},v1={other},v1={good},v0=abc");
        assert_eq!(verify_signature(Some(&header), body, SECRET, now), Ok(()));
        let header = format!("t={t},v1={other}");
        assert_eq!(
            verify_signature(Some(&header), body, SECRET, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&format!("t={t},v1={good}")), b"{}", SECRET, now),
            Err(SignatureError::Mismatch),
            "another body"
        );
        let old = t - SIGNATURE_TOLERANCE_SECS - 1;
        let header = format!("t={old},v1={}", sign(SECRET, old, body));
        assert_eq!(
            verify_signature(Some(&header), body, SECRET, now),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(None, body, SECRET, now),
            Err(SignatureError::Missing)
        );
        for malformed in [
            "",
            "garbage",
            &format!("v1={good}"),
            &format!("t=,v1={good}"),
            &format!("t=-5,v1={good}"),
            &format!("t=99999999999999999999999,v1={good}"),
            &format!("t={t}"),
            &format!("t={t},t={t},v1={good}"),
            &format!("t={t},v1=zz"),
        ] {
            assert_eq!(
                verify_signature(Some(malformed), body, SECRET, now),
                Err(SignatureError::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn events_are_read_and_bad_ones_refused() {
        let delivery = parse_event(
            br#"{"id":"evt_1","type":"checkout.session.completed","data":{"object":{
                "client_reference_id":null,"metadata":{"order_id":"42"},"payment_status":"paid",
                "amount_total":1500,"currency":"eur","payment_intent":"pi_1"}}}"#,
        )
        .unwrap();
        assert_eq!(
            delivery.event,
            StripeEvent::Checkout {
                order_ref: Some("42".into()),
                paid: true,
                amount_total: 1500,
                currency: "EUR".into(),
                payment_intent: Some("pi_1".into()),
            }
        );
        let other = parse_event(br#"{"id":"evt_2","type":"invoice.paid","data":{}}"#).unwrap();
        assert_eq!(other.event, StripeEvent::Other);
        for bad in [
            &b"not json"[..],
            b"[]",
            br#"{"type":"charge.refunded"}"#,
            br#"{"id":"evt_3"}"#,
            br#"{"id":"evt_3","type":"charge.refunded","data":{"object":{}}}"#,
            br#"{"id":"evt_3","type":"checkout.session.completed","data":{"object":{"currency":"eur"}}}"#,
            br#"{"id":"evt_3","type":"checkout.session.completed","data":{"object":{"amount_total":1,"currency":"euro"}}}"#,
            br#"{"id":"","type":"invoice.paid"}"#,
            br#"{"id":7,"type":"invoice.paid"}"#,
        ] {
            assert!(
                parse_event(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
