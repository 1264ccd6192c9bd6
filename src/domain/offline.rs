//! Offline certificates (product.md "Licensed software"): the licensed
//! software checks a key out on an activated device and gets a compact JWS
//! (EdDSA) it verifies with the published JWKS, with no call home, until
//! the certificate expires.
//!
//! A check-out writes nothing: it asks what `validateLicense` asks (from
//! the same cache) and reads the order's facts (cached the same way), so
//! that the busiest software costs no write per request.
use chrono::{DateTime, Duration, Utc};
use entity::{license, order};
use sea_orm::{EntityTrait, QuerySelect, RelationTrait, sea_query::JoinType};

use super::{Ctx, devices, devices::Validity, orders, validity_cache::LicenseFacts};
use crate::{
    error::{ApiResult, AppError},
    signing::{Claims, Signer},
};

/// Shortest certificate: one hour.
pub const MIN_TTL_SECONDS: i64 = 3_600;
/// Longest certificate: 90 days.
pub const MAX_TTL_SECONDS: i64 = 7_776_000;
/// A certificate's life when none is asked for: 30 days.
pub const DEFAULT_TTL_SECONDS: i64 = 2_592_000;

/// A signed certificate and when it expires.
pub struct Certificate {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Check `raw_key` out on the device `fingerprint` for `ttl_seconds`
/// (default 30 days; capped at the order's heartbeat interval). The key
/// must be valid on that device: unknown keys are `NOT_FOUND`, any other
/// refusal (unpaid, unassigned, suspended, not activated there) `CONFLICT`.
pub async fn check_out(
    ctx: &Ctx,
    signer: &Signer,
    raw_key: &str,
    fingerprint: &str,
    ttl_seconds: Option<i64>,
) -> ApiResult<Certificate> {
    let ttl = ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(AppError::validation(
            "ttlSeconds",
            format!("ttlSeconds must be {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}"),
        ));
    }
    let fingerprint = devices::check_field(fingerprint, "fingerprint")?;
    let (validity, license_id) = devices::validate(ctx, raw_key, Some(&fingerprint)).await?;
    let refusal = match validity {
        Validity::Valid => None,
        Validity::NotFound => return Err(AppError::NotFound("key")),
        Validity::Suspended => Some("this key is suspended by its owner"),
        Validity::NotActivated => Some("this key is not activated on this device"),
        Validity::NotAssigned => Some("this key is not assigned to anyone yet"),
        Validity::OrderUnpaid => Some("this key's order is not paid"),
        Validity::OrderRefunded => Some("this key's order was refunded"),
    };
    if let Some(reason) = refusal {
        return Err(AppError::conflict(reason));
    }
    let license_id = license_id.ok_or_else(|| AppError::internal("a valid key without id"))?;
    let facts = facts(ctx, license_id).await?;
    let ttl = match facts.heartbeat_seconds {
        Some(seconds) => ttl.min(seconds.into()),
        None => ttl,
    };
    let now = ctx.clock.now();
    let expires_at = now + Duration::seconds(ttl);
    let token = signer
        .sign(&Claims {
            sub: license_id.to_string(),
            product: &facts.product,
            order: orders::number(facts.order_id),
            fpr: &fingerprint,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
        })
        .map_err(|e| AppError::internal(format!("signing a certificate: {e}")))?;
    Ok(Certificate { token, expires_at })
}

/// The order facts of license `id`, from the cache or one read.
async fn facts(ctx: &Ctx, id: i64) -> ApiResult<LicenseFacts> {
    if let Some(facts) = ctx.validities.facts(id) {
        return Ok(facts);
    }
    let read = ctx.validities.before_read();
    let row: Option<(i64, String, Option<i32>)> = license::Entity::find_by_id(id)
        .select_only()
        .column(order::Column::Id)
        .column(order::Column::Product)
        .column(order::Column::HeartbeatSeconds)
        .join(JoinType::InnerJoin, license::Relation::Order.def())
        .into_tuple()
        .one(&ctx.db)
        .await?;
    let (order_id, product, heartbeat_seconds) = row.ok_or(AppError::NotFound("key"))?;
    let facts = LicenseFacts {
        order_id,
        product,
        heartbeat_seconds,
    };
    ctx.validities.put_facts(id, read, facts.clone());
    Ok(facts)
}
