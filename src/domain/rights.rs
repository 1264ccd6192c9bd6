//! Who may do what on an order. One place, so every rule asks the same question.
use entity::{account, order};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::{
    auth::Viewer,
    error::{ApiResult, AppError},
};

/// True when `viewer` holds the owner's rights on `order` (assign, approve
/// claims, settings, transfer).
pub async fn can_manage(
    _conn: &impl ConnectionTrait,
    viewer: &Viewer,
    order: &order::Model,
) -> ApiResult<bool> {
    Ok(order.owner_id == viewer.account_id)
}

/// `can_manage`, or `NOT_FOUND` for a stranger: whether an order exists is
/// not revealed to people with no rights on it.
pub async fn require_manage(
    conn: &impl ConnectionTrait,
    viewer: &Viewer,
    order: &order::Model,
) -> ApiResult<()> {
    if can_manage(conn, viewer, order).await? {
        Ok(())
    } else {
        Err(AppError::NotFound("order"))
    }
}

/// The account that verified `email`, if any: only a verified address links
/// an account to what was addressed to that email.
pub async fn verified_account_id(
    conn: &impl ConnectionTrait,
    email: &str,
) -> ApiResult<Option<i64>> {
    Ok(account::Entity::find()
        .select_only()
        .column(account::Column::Id)
        .filter(account::Column::Email.eq(email))
        .filter(account::Column::EmailVerifiedAt.is_not_null())
        .into_tuple::<i64>()
        .one(conn)
        .await?)
}

/// Ids of the orders `viewer` manages, as a subquery.
pub fn managed_orders_query(viewer: &Viewer) -> sea_orm::sea_query::SelectStatement {
    sea_orm::sea_query::Query::select()
        .column(order::Column::Id)
        .from(order::Entity)
        .and_where(order::Column::OwnerId.eq(viewer.account_id))
        .to_owned()
}

/// Accounts that receive an order's events as its owner.
pub async fn order_managers(
    _conn: &impl ConnectionTrait,
    order: &order::Model,
) -> ApiResult<Vec<i64>> {
    Ok(vec![order.owner_id])
}
