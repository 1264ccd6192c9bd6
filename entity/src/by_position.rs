//! Models read from a row by the position of their columns rather than by
//! their names, for the rows of the dashboard's pages (a hundred models per
//! request). By name, sea-orm looks each column's name up, and formats a
//! string for every NULL and, in a join (whose columns it prefixes), for
//! every column: on a page of keys with their assignees that was a quarter
//! of the server's time. A statement read this way must select each
//! model's columns in its `Column` order (sea-orm's own selects do).
use sea_orm::{
    ConnectionTrait, DbErr, EntityTrait, Iterable, QueryResult, QueryTrait, Select, SelectTwo,
};

use crate::{account, claim, license, license_request};

pub trait FromColumns: Sized {
    /// The model from the row's columns `at`, `at + 1`, … in `Column` order.
    fn from_columns(row: &QueryResult, at: usize) -> Result<Self, DbErr>;

    /// How many columns the model takes.
    fn width() -> usize;

    /// The model of a left join from the row's columns `at` on, `None`
    /// when the join found none (its first column, the id, is NULL).
    fn from_joined_columns(row: &QueryResult, at: usize) -> Result<Option<Self>, DbErr> {
        match row.try_get_by_index::<Option<i64>>(at)? {
            Some(_) => Self::from_columns(row, at).map(Some),
            None => Ok(None),
        }
    }
}

/// The rows of `select` (a model's `find()`, with filters, order and limit
/// but its columns as sea-orm lists them), each read by position.
pub async fn all<E>(conn: &impl ConnectionTrait, select: Select<E>) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: FromColumns,
{
    let statement = conn.get_database_backend().build(&select.into_query());
    let rows = conn.query_all_raw(statement).await?;
    check_width(&rows, E::Model::width())?;
    rows.iter()
        .map(|row| E::Model::from_columns(row, 0))
        .collect()
}

/// The rows of `select`, a model with another joined to it as sea-orm's
/// `find_also_related` and `find_also_linked` select them (the first's
/// columns, then the second's), each read by position.
pub async fn pairs<E, F>(
    conn: &impl ConnectionTrait,
    select: SelectTwo<E, F>,
) -> Result<Vec<(E::Model, Option<F::Model>)>, DbErr>
where
    E: EntityTrait,
    F: EntityTrait,
    E::Model: FromColumns,
    F::Model: FromColumns,
{
    let statement = conn.get_database_backend().build(&select.into_query());
    let rows = conn.query_all_raw(statement).await?;
    let at = E::Model::width();
    check_width(&rows, at + F::Model::width())?;
    rows.iter()
        .map(|row| {
            Ok((
                E::Model::from_columns(row, 0)?,
                F::Model::from_joined_columns(row, at)?,
            ))
        })
        .collect()
}

/// An error unless `rows` (a statement's) have `width` columns: a statement
/// that selects other columns than its models' would be misread, not
/// refused, where neighbouring columns share a type. Checked on the first
/// row; no rows, nothing to misread.
pub fn check_width(rows: &[QueryResult], width: usize) -> Result<(), DbErr> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let found = first.column_names().len();
    if found == width {
        Ok(())
    } else {
        Err(DbErr::Type(format!(
            "a row read by position has {found} columns where its models have {width}"
        )))
    }
}

impl FromColumns for license::Model {
    fn from_columns(row: &QueryResult, at: usize) -> Result<Self, DbErr> {
        use license::Column as C;
        let get = |column: C| at + column as usize;
        Ok(Self {
            id: row.try_get_by_index(get(C::Id))?,
            order_id: row.try_get_by_index(get(C::OrderId))?,
            key: row.try_get_by_index(get(C::Key))?,
            assignee_email: row.try_get_by_index(get(C::AssigneeEmail))?,
            assigned_at: row.try_get_by_index(get(C::AssignedAt))?,
            organization_name: row.try_get_by_index(get(C::OrganizationName))?,
            organization_siret: row.try_get_by_index(get(C::OrganizationSiret))?,
            created_at: row.try_get_by_index(get(C::CreatedAt))?,
            suspended: row.try_get_by_index(get(C::Suspended))?,
        })
    }

    fn width() -> usize {
        license::Column::iter().count()
    }
}

impl FromColumns for account::Model {
    fn from_columns(row: &QueryResult, at: usize) -> Result<Self, DbErr> {
        use account::Column as C;
        let get = |column: C| at + column as usize;
        Ok(Self {
            id: row.try_get_by_index(get(C::Id))?,
            email: row.try_get_by_index(get(C::Email))?,
            password_hash: row.try_get_by_index(get(C::PasswordHash))?,
            email_verified_at: row.try_get_by_index(get(C::EmailVerifiedAt))?,
            role: row.try_get_by_index(get(C::Role))?,
            require_manual_approval: row.try_get_by_index(get(C::RequireManualApproval))?,
            allow_override_assignee: row.try_get_by_index(get(C::AllowOverrideAssignee))?,
            notify_on_claim: row.try_get_by_index(get(C::NotifyOnClaim))?,
            allow_assignee_organization: row.try_get_by_index(get(C::AllowAssigneeOrganization))?,
            created_at: row.try_get_by_index(get(C::CreatedAt))?,
            disabled_at: row.try_get_by_index(get(C::DisabledAt))?,
        })
    }

    fn width() -> usize {
        account::Column::iter().count()
    }
}

impl FromColumns for claim::Model {
    fn from_columns(row: &QueryResult, at: usize) -> Result<Self, DbErr> {
        use claim::Column as C;
        let get = |column: C| at + column as usize;
        Ok(Self {
            id: row.try_get_by_index(get(C::Id))?,
            license_id: row.try_get_by_index(get(C::LicenseId))?,
            claimer_id: row.try_get_by_index(get(C::ClaimerId))?,
            status: row.try_get_by_index(get(C::Status))?,
            created_at: row.try_get_by_index(get(C::CreatedAt))?,
            decided_at: row.try_get_by_index(get(C::DecidedAt))?,
            decided_by: row.try_get_by_index(get(C::DecidedBy))?,
        })
    }

    fn width() -> usize {
        claim::Column::iter().count()
    }
}

impl FromColumns for license_request::Model {
    fn from_columns(row: &QueryResult, at: usize) -> Result<Self, DbErr> {
        use license_request::Column as C;
        let get = |column: C| at + column as usize;
        Ok(Self {
            id: row.try_get_by_index(get(C::Id))?,
            requester_id: row.try_get_by_index(get(C::RequesterId))?,
            buyer_email: row.try_get_by_index(get(C::BuyerEmail))?,
            message: row.try_get_by_index(get(C::Message))?,
            status: row.try_get_by_index(get(C::Status))?,
            license_id: row.try_get_by_index(get(C::LicenseId))?,
            created_at: row.try_get_by_index(get(C::CreatedAt))?,
            decided_at: row.try_get_by_index(get(C::DecidedAt))?,
        })
    }

    fn width() -> usize {
        license_request::Column::iter().count()
    }
}
