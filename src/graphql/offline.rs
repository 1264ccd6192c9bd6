//! Licensed software beyond validation: offline certificates, heartbeats of
//! floating licenses, and the owner's suspension of a key.
use async_graphql::{Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{
    ContextExt,
    devices::{LicenseValidation, limit_devices},
    orders::{License, Order},
    pagination::parse_id,
};
use crate::{
    domain::{heartbeats, licenses, licenses::Access, offline},
    error::ApiResult,
};

/// A license checked out for offline use.
#[derive(SimpleObject)]
pub struct OfflineCertificate {
    /// A compact JWS (`alg: EdDSA`, `kid` in `/.well-known/jwks.json`) whose
    /// claims are `sub` (the license id), `product`, `order` (its number),
    /// `fpr` (the device fingerprint), `iat` and `exp`.
    certificate: String,
    expires_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct LicensingMutation;

#[Object]
impl LicensingMutation {
    /// For licensed software, no sign-in: a signed certificate that the key
    /// is valid on this (activated) device, to verify offline with the JWKS
    /// until it expires. `ttlSeconds` 3600 to 7776000 (default 30 days),
    /// capped at the order's `heartbeatSeconds`. `CONFLICT` unless the key
    /// is assigned, not suspended and active on the device. Rate limited per
    /// client address, like activations.
    async fn check_out_license(
        &self,
        ctx: &Context<'_>,
        key: String,
        fingerprint: String,
        ttl_seconds: Option<i64>,
    ) -> ApiResult<OfflineCertificate> {
        limit_devices(ctx).await?;
        let state = ctx.state();
        let certificate =
            offline::check_out(&state.ctx, &state.signer, &key, &fingerprint, ttl_seconds).await?;
        Ok(OfflineCertificate {
            certificate: certificate.token,
            expires_at: certificate.expires_at,
        })
    }

    /// For licensed software, no sign-in: report that the device is alive
    /// (on orders with `heartbeatSeconds`) and get the key's validity on
    /// it. A device that stopped reporting for `heartbeatSeconds` was
    /// deactivated: `NOT_ACTIVATED`. `CONFLICT` while the key is suspended.
    async fn heartbeat_license(
        &self,
        ctx: &Context<'_>,
        key: String,
        fingerprint: String,
    ) -> ApiResult<LicenseValidation> {
        Ok(LicenseValidation::new(
            heartbeats::heartbeat(&ctx.state().ctx, &key, &fingerprint).await?,
        ))
    }

    /// The order's managers: devices of its keys must report every
    /// `seconds` (60 to 7776000), or null for never. Devices active now get
    /// a full interval from now.
    async fn set_order_heartbeat(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        seconds: Option<i32>,
    ) -> ApiResult<Order> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&order_id, "order")?;
        Ok(Order::from(
            heartbeats::set_order_heartbeat(&ctx.state().ctx, viewer, id, seconds).await?,
        ))
    }

    /// The order's managers: suspend a key. `validateLicense` answers
    /// `SUSPENDED`; activation, heartbeats and check-out are refused
    /// (`CONFLICT`) until `resumeLicense`. Devices stay.
    async fn suspend_license(&self, ctx: &Context<'_>, license_id: ID) -> ApiResult<License> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&license_id, "license")?;
        let license = licenses::set_suspended(&ctx.state().ctx, viewer, id, true).await?;
        Ok(License::new(license, None, Access::Manager))
    }

    /// The order's managers: end a key's suspension.
    async fn resume_license(&self, ctx: &Context<'_>, license_id: ID) -> ApiResult<License> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&license_id, "license")?;
        let license = licenses::set_suspended(&ctx.state().ctx, viewer, id, false).await?;
        Ok(License::new(license, None, Access::Manager))
    }
}
