//! Administrators' cross-account reads (support in GraphiQL): the lists of
//! `admin { … }` and their filters. The caller's role is checked where the
//! `admin` field is resolved.
//!
//! Every list is read by keyset: rows after the last one seen, in a fixed
//! order (id; events in delivery order), so a cursor means the same row
//! whatever was written between two pages. Each filter is bounded here
//! before any query runs, and each is served by an index (docs/admin.md).
use chrono::{DateTime, Utc};
use entity::{
    account::{self, AccountRole},
    event, event_recipient, license,
    order::{self, OrderStatus},
    retired_key,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Select,
    sea_query::{Expr, ExprTrait, Query, UnionType},
};

use super::{email, keys};
use crate::{
    error::{ApiResult, AppError},
    events::EventKind,
};

/// Longest email prefix an `accounts` filter takes (an address's length).
pub const EMAIL_PREFIX_MAX: usize = 254;
/// Longest product code a filter takes (the catalog's).
pub const PRODUCT_MAX: usize = 64;
/// Longest order number or key string a filter takes, spaces included.
pub const TEXT_MAX: usize = 64;
/// Most event kinds one `kinds` filter lists.
pub const KINDS_MAX: usize = 64;

/// A half-open time range: `after` (included) to `before` (excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub after: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

impl TimeRange {
    /// `VALIDATION` on `field` when the range is empty (`before` not later than `after`).
    pub fn checked(self, field: &'static str) -> ApiResult<Self> {
        if let (Some(after), Some(before)) = (self.after, self.before)
            && before <= after
        {
            return Err(AppError::validation(
                field,
                "the end of a time range must be later than its start",
            ));
        }
        Ok(self)
    }

    /// [`TimeRange::condition`] on `time`, for a table read in the order
    /// of `key` (a page's keyset), where `key` grows with `time` (ids, event
    /// transactions). PostgreSQL would walk `key`'s index from the start,
    /// expecting matches all along, and for "a day a month ago" meet them
    /// only near the end (hundreds of milliseconds on a long history).
    /// Bounding `key` by the range's own smallest and largest, read from
    /// `time`'s index once per statement, starts the walk there; the result
    /// is the same whatever the correlation.
    fn condition_along<E>(self, table: E, time: E::Column, key: E::Column) -> Condition
    where
        E: EntityTrait + Copy,
    {
        if self == TimeRange::default() {
            return Condition::all();
        }
        let in_range = self.condition(time);
        let bound = |extreme: Expr| {
            Expr::SubQuery(
                None,
                Box::new(
                    Query::select()
                        .expr(extreme)
                        .from(table)
                        .cond_where(in_range.clone())
                        .to_owned()
                        .into(),
                ),
            )
        };
        let key_col = || Expr::col((table, key));
        Condition::all()
            .add(in_range.clone())
            // `key + 0`: a bare `min(key)` PostgreSQL would answer by
            // walking `key`'s index, the very walk this avoids.
            .add(key_col().gte(bound(Expr::col(key).add(0).min())))
            .add(key_col().lte(bound(Expr::col(key).add(0).max())))
    }

    fn condition(self, column: impl ColumnTrait) -> Condition {
        let mut condition = Condition::all();
        if let Some(after) = self.after {
            condition = condition.add(column.gte(after));
        }
        if let Some(before) = self.before {
            condition = condition.add(column.lt(before));
        }
        condition
    }
}

/// A trimmed text of at most `max` characters, or `VALIDATION` on `field`.
fn bounded(text: &str, max: usize, field: &'static str) -> ApiResult<String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(AppError::validation(
            field,
            format!("must be 1 to {max} printable characters"),
        ));
    }
    Ok(text.to_owned())
}

/// An exact address to filter on, normalised like stored ones.
fn address(raw: &str, field: &'static str) -> ApiResult<String> {
    if raw.len() > 4 * EMAIL_PREFIX_MAX {
        return Err(AppError::validation(field, "not a valid email address"));
    }
    email::normalize(raw, field)
}

/// Filter of `admin { accounts }`.
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    /// The start of the address, any case.
    pub email: Option<String>,
    pub role: Option<AccountRole>,
    pub verified: Option<bool>,
    pub disabled: Option<bool>,
}

/// The condition `email` starts with `prefix` (lower-cased already): a
/// range of the code point order, which an index serves (see the migration
/// `m20261203_000020_admin_support`). A string starts with `prefix` exactly
/// when it sorts from `prefix` (included) to `prefix` + U+10FFFF (excluded).
fn email_prefix(backend: DatabaseBackend, prefix: &str) -> Condition {
    let upper = format!("{prefix}\u{10FFFF}");
    let column = match backend {
        DatabaseBackend::Postgres => Expr::cust(r#""accounts"."email" COLLATE "C""#),
        _ => Expr::col((account::Entity, account::Column::Email)),
    };
    Condition::all()
        .add(column.clone().gte(prefix.to_owned()))
        .add(column.lt(upper))
}

/// Up to `limit` accounts matching `filter`, by id, after the id `after`.
pub async fn accounts(
    conn: &impl ConnectionTrait,
    filter: &AccountFilter,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<account::Model>> {
    let query = accounts_query(conn.get_database_backend(), filter, after, limit)?;
    Ok(query.all(conn).await?)
}

/// The statement of [`accounts`] (the benchmark explains it).
pub fn accounts_query(
    backend: DatabaseBackend,
    filter: &AccountFilter,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Select<account::Entity>> {
    let mut query = account::Entity::find();
    if let Some(prefix) = &filter.email {
        if prefix.len() > 4 * EMAIL_PREFIX_MAX {
            return Err(AppError::validation(
                "filter.email",
                format!("must be 1 to {EMAIL_PREFIX_MAX} printable characters"),
            ));
        }
        let prefix = bounded(prefix, EMAIL_PREFIX_MAX, "filter.email")?.to_lowercase();
        query = query.filter(email_prefix(backend, &prefix));
    }
    if let Some(role) = filter.role {
        query = query.filter(account::Column::Role.eq(role));
    }
    if let Some(verified) = filter.verified {
        query = query.filter(if verified {
            account::Column::EmailVerifiedAt.is_not_null()
        } else {
            account::Column::EmailVerifiedAt.is_null()
        });
    }
    if let Some(disabled) = filter.disabled {
        query = query.filter(if disabled {
            account::Column::DisabledAt.is_not_null()
        } else {
            account::Column::DisabledAt.is_null()
        });
    }
    Ok(page(query, account::Column::Id, after, limit))
}

/// Filter of `admin { orders }`.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// `KL-000042` (or `42`).
    pub number: Option<String>,
    pub owner_email: Option<String>,
    /// Orders with a key assigned to this address.
    pub assignee_email: Option<String>,
    pub product: Option<String>,
    pub status: Option<OrderStatus>,
    pub created: TimeRange,
    pub paid: TimeRange,
}

/// The order id of an order number (`KL-000042`, any case, or `42`).
fn order_number(raw: &str) -> ApiResult<i64> {
    let text = bounded(raw, TEXT_MAX, "filter.number")?;
    let digits = match text.get(..3) {
        Some(head) if head.eq_ignore_ascii_case("KL-") => &text[3..],
        _ => text.as_str(),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AppError::validation(
            "filter.number",
            "not an order number (KL-000042)",
        ));
    }
    digits
        .parse::<i64>()
        .map_err(|_| AppError::validation("filter.number", "not an order number (KL-000042)"))
}

/// Up to `limit` orders matching `filter`, by id, after the id `after`.
pub async fn orders(
    conn: &impl ConnectionTrait,
    filter: &OrderFilter,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<order::Model>> {
    Ok(orders_query(filter, after, limit)?.all(conn).await?)
}

/// The statement of [`orders`] (the benchmark explains it).
pub fn orders_query(
    filter: &OrderFilter,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Select<order::Entity>> {
    let mut query = order::Entity::find();
    if let Some(number) = &filter.number {
        query = query.filter(order::Column::Id.eq(order_number(number)?));
    }
    if let Some(owner) = &filter.owner_email {
        let owner = address(owner, "filter.ownerEmail")?;
        query = query.filter(
            order::Column::OwnerId.in_subquery(
                Query::select()
                    .column(account::Column::Id)
                    .from(account::Entity)
                    .and_where(account::Column::Email.eq(owner))
                    .to_owned(),
            ),
        );
    }
    if let Some(assignee) = &filter.assignee_email {
        let assignee = address(assignee, "filter.assigneeEmail")?;
        query = query.filter(
            order::Column::Id.in_subquery(
                Query::select()
                    .column(license::Column::OrderId)
                    .from(license::Entity)
                    .and_where(license::Column::AssigneeEmail.eq(assignee))
                    .to_owned(),
            ),
        );
    }
    if let Some(product) = &filter.product {
        let product = bounded(product, PRODUCT_MAX, "filter.product")?;
        query = query.filter(order::Column::Product.eq(product));
    }
    if let Some(status) = filter.status {
        query = query.filter(order::Column::Status.eq(status));
    }
    query = query
        .filter(
            filter
                .created
                .checked("filter.createdBefore")?
                .condition_along(order::Entity, order::Column::CreatedAt, order::Column::Id),
        )
        .filter(filter.paid.checked("filter.paidBefore")?.condition_along(
            order::Entity,
            order::Column::PaidAt,
            order::Column::Id,
        ));
    Ok(page(query, order::Column::Id, after, limit))
}

/// Filter of `admin { licenses }`.
#[derive(Debug, Clone, Default)]
pub struct LicenseFilter {
    /// A key's full string, as typed (normalised before the match); a
    /// string the key had before a reissue finds it too.
    pub key: Option<String>,
    pub assignee_email: Option<String>,
    /// `Some(true)`: assigned keys only; `Some(false)`: unassigned only.
    pub assigned: Option<bool>,
    pub order_id: Option<i64>,
}

/// Up to `limit` keys matching `filter`, by id, after the id `after`.
pub async fn licenses(
    conn: &impl ConnectionTrait,
    filter: &LicenseFilter,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Vec<license::Model>> {
    match licenses_query(conn, filter, after, limit).await? {
        Some(query) => Ok(query.all(conn).await?),
        None => Ok(Vec::new()),
    }
}

/// The statement of [`licenses`] (the benchmark explains it); `None` when
/// the key asked for does not exist.
pub async fn licenses_query(
    conn: &impl ConnectionTrait,
    filter: &LicenseFilter,
    after: Option<i64>,
    limit: u64,
) -> ApiResult<Option<Select<license::Entity>>> {
    let mut query = license::Entity::find();
    if let Some(key) = &filter.key {
        let typed = bounded(key, TEXT_MAX, "filter.key")?;
        let key = keys::normalize(&typed)
            .ok_or_else(|| AppError::validation("filter.key", "not a key (XXXX-XXXX-XXXX-XXXX)"))?;
        // Two lookups by unique index rather than one `OR` over a
        // subquery, which PostgreSQL can only answer by reading every key.
        let mut id: Option<i64> = license::Entity::find()
            .select_only()
            .column(license::Column::Id)
            .filter(license::Column::Key.eq(&key))
            .into_tuple()
            .one(conn)
            .await?;
        if id.is_none() {
            id = retired_key::Entity::find()
                .select_only()
                .column(retired_key::Column::LicenseId)
                .filter(retired_key::Column::Key.eq(&key))
                .into_tuple()
                .one(conn)
                .await?;
        }
        let Some(id) = id else {
            return Ok(None);
        };
        query = query.filter(license::Column::Id.eq(id));
    }
    if let Some(assignee) = &filter.assignee_email {
        let assignee = address(assignee, "filter.assigneeEmail")?;
        query = query.filter(license::Column::AssigneeEmail.eq(assignee));
    }
    if let Some(assigned) = filter.assigned {
        query = query.filter(if assigned {
            license::Column::AssigneeEmail.is_not_null()
        } else {
            license::Column::AssigneeEmail.is_null()
        });
    }
    if let Some(order_id) = filter.order_id {
        query = query.filter(license::Column::OrderId.eq(order_id));
    }
    Ok(Some(page(query, license::Column::Id, after, limit)))
}

/// Filter of `admin { events }` and `admin { auditLog }`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Any of these kinds (none listed: every kind).
    pub kinds: Option<Vec<EventKind>>,
    /// Events this account caused or received.
    pub account_email: Option<String>,
    pub order_id: Option<i64>,
    pub occurred: TimeRange,
}

/// The condition of `filter` on events. An account that does not exist
/// matches nothing.
pub async fn event_condition(
    conn: &impl ConnectionTrait,
    filter: &EventFilter,
) -> ApiResult<Condition> {
    let mut condition = Condition::all();
    if let Some(kinds) = &filter.kinds {
        if kinds.len() > KINDS_MAX {
            return Err(AppError::validation(
                "filter.kinds",
                format!("at most {KINDS_MAX} kinds"),
            ));
        }
        if !kinds.is_empty() {
            let mut kinds = kinds.clone();
            kinds.sort_by_key(sea_orm::ActiveEnum::to_value);
            kinds.dedup();
            condition = condition.add(event::Column::Kind.is_in(kinds));
        }
    }
    if let Some(email) = &filter.account_email {
        let email = address(email, "filter.accountEmail")?;
        let account_id: Option<i64> = account::Entity::find()
            .select_only()
            .column(account::Column::Id)
            .filter(account::Column::Email.eq(email))
            .into_tuple()
            .one(conn)
            .await?;
        let account_id = account_id.unwrap_or(-1);
        // One `IN` over a union, which PostgreSQL answers from the two
        // indexes (recipients' primary key, `events_actor`), rather than an
        // `OR` it could only check row by row.
        let mut received = Query::select()
            .column(event_recipient::Column::EventId)
            .from(event_recipient::Entity)
            .and_where(event_recipient::Column::AccountId.eq(account_id))
            .to_owned();
        let caused = Query::select()
            .column(event::Column::Id)
            .from(event::Entity)
            .and_where(event::Column::ActorId.eq(account_id))
            .to_owned();
        received.union(UnionType::Distinct, caused);
        condition = condition.add(event::Column::Id.in_subquery(received));
    }
    if let Some(order_id) = filter.order_id {
        condition = condition.add(event::Column::OrderId.eq(order_id));
    }
    let occurred = filter.occurred.checked("filter.before")?;
    condition = condition.add(occurred.condition_along(
        event::Entity,
        event::Column::OccurredAt,
        event::Column::Tx,
    ));
    Ok(condition)
}

/// The statement of an `events` page from the start (the benchmark explains
/// it; the server reads through `events::stream::matching`, which also waits
/// for the horizon).
pub fn events_query(condition: Condition, limit: u64) -> Select<event::Entity> {
    crate::events::cursor::deliverable_after(
        event::Entity::find(),
        crate::events::cursor::Cursor::default(),
        DatabaseBackend::Postgres,
    )
    .filter(condition)
    .limit(limit)
}

/// `query` ordered by `id`, narrowed to the rows after `after`, at most `limit`.
fn page<E: EntityTrait>(
    query: Select<E>,
    id: impl ColumnTrait,
    after: Option<i64>,
    limit: u64,
) -> Select<E> {
    let mut query = query.order_by_asc(id).limit(limit);
    if let Some(after) = after {
        query = query.filter(id.gt(after));
    }
    query
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_read_with_or_without_their_prefix() {
        assert_eq!(order_number("KL-000042").unwrap(), 42);
        assert_eq!(order_number(" kl-7 ").unwrap(), 7);
        assert_eq!(order_number("42").unwrap(), 42);
        for bad in [
            "",
            "KL-",
            "KL-x1",
            "-1",
            "1.5",
            "99999999999999999999",
            "KL-1 2",
        ] {
            assert!(order_number(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn time_ranges_must_not_be_empty() {
        let at = Utc::now();
        let range = |after, before| TimeRange {
            after: Some(after),
            before: Some(before),
        };
        assert!(range(at, at).checked("f").is_err());
        assert!(
            range(at, at - chrono::Duration::seconds(1))
                .checked("f")
                .is_err()
        );
        assert!(
            range(at, at + chrono::Duration::seconds(1))
                .checked("f")
                .is_ok()
        );
        assert!(TimeRange::default().checked("f").is_ok());
    }
}
