//! Devices and validation, for the licensed software (no sign-in), and the
//! owner's forced deactivation.
use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};
use entity::activation;

use super::{ContextExt, orders::License, pagination::parse_id};
use crate::{
    client_ip::ClientAddr,
    domain::devices::{self, DeviceOf, Validity},
    error::ApiResult,
    rate_limits::LimitKey,
};

/// A device a key is active on.
pub struct Activation(pub activation::Model);

#[Object]
impl Activation {
    async fn fingerprint(&self) -> &str {
        &self.0.fingerprint
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn activated_at(&self) -> DateTime<Utc> {
        self.0.activated_at
    }
}

/// Why a key is or is not valid.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "crate::domain::devices::Validity")]
pub enum ValidationCode {
    Valid,
    NotFound,
    NotAssigned,
    NotActivated,
    OrderUnpaid,
    /// The key's order was refunded.
    OrderRefunded,
    /// The owner suspended the key.
    Suspended,
}

/// The answer of `validateLicense`; the license is read only when asked for
/// (the licensed software asks for `valid` and `code`: one statement).
pub struct LicenseValidation {
    validity: Validity,
    license_id: Option<i64>,
}

impl LicenseValidation {
    pub(super) fn new((validity, license_id): crate::domain::validity_cache::Validation) -> Self {
        LicenseValidation {
            validity,
            license_id,
        }
    }
}

#[Object]
impl LicenseValidation {
    async fn valid(&self) -> bool {
        self.validity == Validity::Valid
    }

    async fn code(&self) -> ValidationCode {
        self.validity.into()
    }

    /// The key, when the caller is signed in and may see it.
    async fn license(&self, ctx: &Context<'_>) -> ApiResult<Option<License>> {
        match self.license_id {
            Some(id) => License::visible(ctx, id).await,
            None => Ok(None),
        }
    }
}

pub(super) async fn limit_devices(ctx: &Context<'_>) -> ApiResult<()> {
    let keys: Vec<LimitKey> = ctx
        .data_opt::<ClientAddr>()
        .map(|ClientAddr(ip)| LimitKey::Client(*ip))
        .into_iter()
        .collect();
    ctx.state().limits.devices(&keys).await
}

#[derive(Default)]
pub struct DeviceQuery;

#[Object]
impl DeviceQuery {
    /// For licensed software, no sign-in: is this key valid (on this device)?
    /// One indexed read; unknown and foreign keys answer alike (`NOT_FOUND`).
    async fn validate_license(
        &self,
        ctx: &Context<'_>,
        key: String,
        fingerprint: Option<String>,
    ) -> ApiResult<LicenseValidation> {
        let (validity, license_id) =
            devices::validate(&ctx.state().ctx, &key, fingerprint.as_deref()).await?;
        Ok(LicenseValidation {
            validity,
            license_id,
        })
    }
}

#[derive(Default)]
pub struct DeviceMutation;

#[Object]
impl DeviceMutation {
    /// For licensed software, no sign-in: activate an assigned key on a device,
    /// up to the order's per-key device limit (`CONFLICT` naming it). Idempotent
    /// per fingerprint. Rate limited per client address.
    async fn activate_license(
        &self,
        ctx: &Context<'_>,
        key: String,
        fingerprint: String,
        name: String,
    ) -> ApiResult<Activation> {
        limit_devices(ctx).await?;
        Ok(Activation(
            devices::activate(&ctx.state().ctx, &key, &fingerprint, &name).await?,
        ))
    }

    /// For licensed software, no sign-in: deactivate a device. Rate limited per client address.
    async fn deactivate_license(
        &self,
        ctx: &Context<'_>,
        key: String,
        fingerprint: String,
    ) -> ApiResult<Activation> {
        limit_devices(ctx).await?;
        Ok(Activation(
            devices::deactivate(&ctx.state().ctx, DeviceOf::Key(&key), &fingerprint).await?,
        ))
    }

    /// The order's managers force-deactivate a device of one of their keys.
    async fn deactivate_device(
        &self,
        ctx: &Context<'_>,
        license_id: ID,
        fingerprint: String,
    ) -> ApiResult<Activation> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&license_id, "license")?;
        Ok(Activation(
            devices::deactivate(
                &ctx.state().ctx,
                DeviceOf::ManagedLicense(viewer, id),
                &fingerprint,
            )
            .await?,
        ))
    }
}
