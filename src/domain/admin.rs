//! Administrators' cross-account reads (support in GraphiQL). The caller's
//! role is checked where the `admin` field is resolved.
use entity::{account, event, license, order};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Query,
};

use crate::error::ApiResult;

/// Up to `limit` rows of `E` after the id `after`, by id.
async fn page<E, C>(
    conn: &impl ConnectionTrait,
    id: C,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<E::Model>>
where
    E: EntityTrait,
    C: ColumnTrait,
{
    let mut query = E::find().order_by_asc(id).limit(limit);
    if let Some(after) = after {
        query = query.filter(id.gt(after));
    }
    Ok(query.all(conn).await?)
}

pub async fn accounts(
    conn: &impl ConnectionTrait,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<account::Model>> {
    page::<account::Entity, _>(conn, account::Column::Id, after, limit).await
}

pub async fn orders(
    conn: &impl ConnectionTrait,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<order::Model>> {
    page::<order::Entity, _>(conn, order::Column::Id, after, limit).await
}

pub async fn licenses(
    conn: &impl ConnectionTrait,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<license::Model>> {
    page::<license::Entity, _>(conn, license::Column::Id, after, limit).await
}

/// The audit log: events caused by an administrator.
pub fn audit_log() -> Condition {
    let admins = Query::select()
        .column(account::Column::Id)
        .from(account::Entity)
        .and_where(account::Column::Role.eq(account::AccountRole::Admin))
        .to_owned();
    Condition::all().add(event::Column::ActorId.in_subquery(admins))
}
