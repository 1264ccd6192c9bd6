//! Devices a key is activated on (product.md "Companies and devices"). A key
//! with active devices cannot change hands until they are deactivated.
use entity::{activation, license};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, sea_query::Query,
};

use crate::error::{ActiveDevice, ApiResult, AppError};

fn refusal(active: Vec<activation::Model>) -> ApiResult<()> {
    if active.is_empty() {
        return Ok(());
    }
    Err(AppError::DeviceActive {
        devices: active
            .into_iter()
            .map(|a| ActiveDevice {
                fingerprint: a.fingerprint,
                name: a.name,
                activated_at: a.activated_at.to_rfc3339(),
            })
            .collect(),
    })
}

/// `DEVICE_ACTIVE`, naming the devices, when the key is active anywhere.
pub async fn ensure_none_active(conn: &impl ConnectionTrait, license_id: i64) -> ApiResult<()> {
    let active = activation::Entity::find()
        .filter(activation::Column::LicenseId.eq(license_id))
        .order_by_asc(activation::Column::Id)
        .all(conn)
        .await?;
    refusal(active)
}

/// `DEVICE_ACTIVE`, naming the devices, when any key of the order is active anywhere.
pub async fn ensure_none_active_on_order(
    conn: &impl ConnectionTrait,
    order_id: i64,
) -> ApiResult<()> {
    let active = activation::Entity::find()
        .filter(
            activation::Column::LicenseId.in_subquery(
                Query::select()
                    .column(license::Column::Id)
                    .from(license::Entity)
                    .and_where(license::Column::OrderId.eq(order_id))
                    .to_owned(),
            ),
        )
        .order_by_asc(activation::Column::Id)
        .all(conn)
        .await?;
    refusal(active)
}
