//! Batch loaders, one set per request, so that nested lists cost a constant
//! number of SQL statements whatever their length (e.g. `orders { licenses {
//! assignee { email } } }` is two statements for any page sizes).
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use entity::{
    account, activation,
    by_position::{self, FromColumns as _},
    event, license, order, product,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, FromQueryResult, Iterable,
    JoinType, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    sea_query::{
        Alias, Asterisk, Condition, Expr, ExprTrait, Order, Query, SelectStatement, UnionType,
    },
};

use super::pagination::Page;
use crate::{
    domain::licenses::AssignmentFilter,
    error::AppError,
    events::{
        LiveEvent,
        cursor::{self, Cursor},
    },
};

/// The request's loaders, built on first use: most requests (a key
/// validation, a mutation) never load anything in batches. Boxed, so an
/// idle websocket connection, which holds its loaders, keeps only a pointer.
pub struct Loaders {
    db: DatabaseConnection,
    built: OnceLock<Box<Built>>,
}

struct Built {
    /// Cached for the request (misses included): keys reached one by one
    /// (from claims, requests or events) ask for the same assignees again.
    /// A page of an order's keys reads its assignees with them instead.
    verified_accounts: DataLoader<VerifiedAccountsByEmail, HashMapCache>,
    accounts: DataLoader<AccountsById>,
    orders: DataLoader<OrdersById>,
    products: DataLoader<ProductsByCode>,
    license_pages: DataLoader<LicensePages>,
    activations: DataLoader<ActivationsByLicense>,
    license_histories: DataLoader<LicenseHistories>,
}

impl Loaders {
    pub fn new(db: DatabaseConnection) -> Self {
        Loaders {
            db,
            built: OnceLock::new(),
        }
    }

    fn built(&self) -> &Built {
        self.built.get_or_init(|| {
            let db = &self.db;
            Box::new(Built {
                verified_accounts: DataLoader::with_cache(
                    VerifiedAccountsByEmail(db.clone()),
                    tokio::spawn,
                    HashMapCache::default(),
                ),
                accounts: DataLoader::new(AccountsById(db.clone()), tokio::spawn),
                orders: DataLoader::new(OrdersById(db.clone()), tokio::spawn),
                products: DataLoader::new(ProductsByCode(db.clone()), tokio::spawn),
                license_pages: DataLoader::new(LicensePages(db.clone()), tokio::spawn),
                activations: DataLoader::new(ActivationsByLicense(db.clone()), tokio::spawn),
                license_histories: DataLoader::new(LicenseHistories(db.clone()), tokio::spawn),
            })
        })
    }

    pub fn verified_accounts(&self) -> &DataLoader<VerifiedAccountsByEmail, HashMapCache> {
        &self.built().verified_accounts
    }

    pub fn accounts(&self) -> &DataLoader<AccountsById> {
        &self.built().accounts
    }

    pub fn orders(&self) -> &DataLoader<OrdersById> {
        &self.built().orders
    }

    pub fn products(&self) -> &DataLoader<ProductsByCode> {
        &self.built().products
    }

    pub fn license_pages(&self) -> &DataLoader<LicensePages> {
        &self.built().license_pages
    }

    pub fn activations(&self) -> &DataLoader<ActivationsByLicense> {
        &self.built().activations
    }

    pub fn license_histories(&self) -> &DataLoader<LicenseHistories> {
        &self.built().license_histories
    }
}

/// Accounts by their *verified* email: an unverified address links to no one
/// (`None`: every email asked gets an answer, so the cache remembers misses).
pub struct VerifiedAccountsByEmail(DatabaseConnection);

impl Loader<String> for VerifiedAccountsByEmail {
    type Value = Option<Arc<account::Model>>;
    type Error = AppError;

    async fn load(
        &self,
        emails: &[String],
    ) -> Result<HashMap<String, Option<Arc<account::Model>>>, AppError> {
        let mut found: HashMap<String, Option<Arc<account::Model>>> =
            emails.iter().map(|e| (e.clone(), None)).collect();
        for account in account::Entity::find()
            .filter(account::Column::Email.is_in(emails.iter().cloned()))
            .filter(account::Column::EmailVerifiedAt.is_not_null())
            .all(&self.0)
            .await?
        {
            found.insert(account.email.clone(), Some(Arc::new(account)));
        }
        Ok(found)
    }
}

pub struct AccountsById(DatabaseConnection);

impl Loader<i64> for AccountsById {
    type Value = Arc<account::Model>;
    type Error = AppError;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Arc<account::Model>>, AppError> {
        Ok(account::Entity::find()
            .filter(account::Column::Id.is_in(ids.iter().copied()))
            .all(&self.0)
            .await?
            .into_iter()
            .map(|a| (a.id, Arc::new(a)))
            .collect())
    }
}

pub struct OrdersById(DatabaseConnection);

impl Loader<i64> for OrdersById {
    type Value = Arc<order::Model>;
    type Error = AppError;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Arc<order::Model>>, AppError> {
        Ok(order::Entity::find()
            .filter(order::Column::Id.is_in(ids.iter().copied()))
            .all(&self.0)
            .await?
            .into_iter()
            .map(|o| (o.id, Arc::new(o)))
            .collect())
    }
}

/// Catalog products by code (an order's `productName`).
pub struct ProductsByCode(DatabaseConnection);

impl Loader<String> for ProductsByCode {
    type Value = product::Model;
    type Error = AppError;

    async fn load(&self, codes: &[String]) -> Result<HashMap<String, product::Model>, AppError> {
        Ok(product::Entity::find()
            .filter(product::Column::Code.is_in(codes.iter().cloned()))
            .all(&self.0)
            .await?
            .into_iter()
            .map(|p| (p.code.clone(), p))
            .collect())
    }
}

/// One page of an order's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LicensePageKey {
    pub order_id: i64,
    pub filter: Option<AssignmentFilter>,
    pub page: Page,
    /// Read each key's assignee (its verified account) with it.
    pub with_assignees: bool,
}

/// A key of a page, and its assignee's verified account when the page was
/// read with them (`None`: none, or not read).
#[derive(Clone)]
pub struct PageKey {
    pub license: Arc<license::Model>,
    pub assignee: Option<Arc<account::Model>>,
}

/// Pages of keys for many orders in one statement per distinct (filter,
/// page): each order's page is its own `ORDER BY id LIMIT n` subquery (a
/// short walk of the `(order_id, id)` index, whatever the order's size),
/// and the subqueries are glued with `UNION ALL`. Their assignees, when
/// asked, come in the same statement (a join on the verified email): a
/// second statement would cost the database a round trip and a wake-up
/// more than the join, and the server a connection's checkout and return.
pub struct LicensePages(DatabaseConnection);

impl Loader<LicensePageKey> for LicensePages {
    type Value = Vec<PageKey>;
    type Error = AppError;

    async fn load(
        &self,
        keys: &[LicensePageKey],
    ) -> Result<HashMap<LicensePageKey, Vec<PageKey>>, AppError> {
        let mut groups: HashMap<(Option<AssignmentFilter>, Page, bool), Vec<i64>> = HashMap::new();
        for key in keys {
            groups
                .entry((key.filter, key.page, key.with_assignees))
                .or_default()
                .push(key.order_id);
        }
        let mut pages = HashMap::new();
        for ((filter, page, with_assignees), order_ids) in groups {
            let mut statement: Option<SelectStatement> = None;
            for (n, order_id) in order_ids.iter().enumerate() {
                let mut inner = Query::select();
                inner
                    // In the model's order: the rows are read by position.
                    .columns(license::Column::iter())
                    .from(license::Entity)
                    .and_where(license::Column::OrderId.eq(*order_id))
                    .order_by(license::Column::Id, Order::Asc)
                    .limit(page.fetch());
                if let Some(after) = page.after {
                    inner.and_where(license::Column::Id.gt(after));
                }
                match filter {
                    Some(AssignmentFilter::Assigned) => {
                        inner.and_where(license::Column::AssigneeEmail.is_not_null());
                    }
                    Some(AssignmentFilter::Unassigned) => {
                        inner.and_where(license::Column::AssigneeEmail.is_null());
                    }
                    None => {}
                }
                union_all(&mut statement, inner, &format!("page{n}"));
            }
            let Some(mut statement) = statement else {
                continue;
            };
            if with_assignees {
                statement = joined_with_assignees(statement);
            }
            let backend = self.0.get_database_backend();
            let mut by_order: HashMap<i64, Vec<PageKey>> = HashMap::new();
            let rows = self.0.query_all_raw(backend.build(&statement)).await?;
            let assignees = if with_assignees {
                account::Model::width()
            } else {
                0
            };
            by_position::check_width(&rows, license::Model::width() + assignees)?;
            for row in rows {
                // By position (`entity::by_position`): the page selects
                // the key's columns in its model's order, then the
                // assignee's.
                let license = license::Model::from_columns(&row, 0)?;
                let assignee = if with_assignees {
                    account::Model::from_joined_columns(&row, license::Model::width())?
                } else {
                    None
                };
                by_order.entry(license.order_id).or_default().push(PageKey {
                    license: Arc::new(license),
                    assignee: assignee.map(Arc::new),
                });
            }
            for page in by_order.values_mut() {
                page.sort_by_key(|k| k.license.id);
            }
            for order_id in order_ids {
                let key = LicensePageKey {
                    order_id,
                    filter,
                    page,
                    with_assignees,
                };
                pages.insert(key, by_order.remove(&order_id).unwrap_or_default());
            }
        }
        Ok(pages)
    }
}

/// `pages` (keys) with each key's assignee: the account whose verified
/// email is the key's assignee email, its columns after the key's, in the
/// model's order (the page reads them by position, not by name).
fn joined_with_assignees(pages: SelectStatement) -> SelectStatement {
    let (page, assignee) = (Alias::new("page"), Alias::new("assignee"));
    let mut joined = Query::select();
    joined
        .column((page.clone(), Asterisk))
        .from_subquery(pages, page.clone());
    for column in account::Column::iter() {
        joined.column((assignee.clone(), column));
    }
    joined.join_as(
        JoinType::LeftJoin,
        account::Entity,
        assignee.clone(),
        Condition::all()
            .add(
                Expr::col((assignee.clone(), account::Column::Email))
                    .equals((page, license::Column::AssigneeEmail)),
            )
            .add(Expr::col((assignee, account::Column::EmailVerifiedAt)).is_not_null()),
    );
    joined
}

/// The devices each key is active on, oldest first (every key asked gets
/// an answer, empty when it has none).
pub struct ActivationsByLicense(DatabaseConnection);

impl Loader<i64> for ActivationsByLicense {
    type Value = Vec<activation::Model>;
    type Error = AppError;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Vec<activation::Model>>, AppError> {
        let mut found: HashMap<i64, Vec<activation::Model>> =
            ids.iter().map(|id| (*id, Vec::new())).collect();
        for row in activation::Entity::find()
            .filter(activation::Column::LicenseId.is_in(ids.iter().copied()))
            .order_by_asc(activation::Column::Id)
            .all(&self.0)
            .await?
        {
            found.entry(row.license_id).or_default().push(row);
        }
        Ok(found)
    }
}

/// One page of a key's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HistoryPageKey {
    pub license_id: i64,
    pub page: Page<Cursor>,
}

/// At most this many subqueries in one `UNION ALL` (SQLite allows 500).
const UNION_CHUNK: usize = 250;

/// Pages of many keys' histories, in delivery order: one settle, then one
/// statement per distinct page (and per [`UNION_CHUNK`] keys), each key's
/// page its own `LIMIT`ed subquery glued with `UNION ALL`, as [`LicensePages`].
pub struct LicenseHistories(DatabaseConnection);

impl Loader<HistoryPageKey> for LicenseHistories {
    type Value = Vec<LiveEvent>;
    type Error = AppError;

    async fn load(
        &self,
        keys: &[HistoryPageKey],
    ) -> Result<HashMap<HistoryPageKey, Vec<LiveEvent>>, AppError> {
        let backend = self.0.get_database_backend();
        // A client reads its own writes, as in `event_page`.
        cursor::settle(&self.0).await?;
        let mut groups: HashMap<Page<Cursor>, Vec<i64>> = HashMap::new();
        for key in keys {
            groups.entry(key.page).or_default().push(key.license_id);
        }
        let mut pages: HashMap<HistoryPageKey, Vec<LiveEvent>> =
            keys.iter().map(|key| (*key, Vec::new())).collect();
        for (page, license_ids) in groups {
            for chunk in license_ids.chunks(UNION_CHUNK) {
                let mut statement: Option<SelectStatement> = None;
                for (n, license_id) in chunk.iter().enumerate() {
                    let inner = cursor::deliverable_after(
                        event::Entity::find().filter(event::Column::LicenseId.eq(*license_id)),
                        page.after.unwrap_or_default(),
                        backend,
                    )
                    .limit(page.fetch())
                    .into_query();
                    union_all(&mut statement, inner, &format!("history{n}"));
                }
                let Some(statement) = statement else {
                    continue;
                };
                let rows = event::Model::find_by_statement(backend.build(&statement))
                    .all(&self.0)
                    .await?;
                for row in rows {
                    let Some(license_id) = row.license_id else {
                        continue;
                    };
                    let key = HistoryPageKey { license_id, page };
                    pages
                        .entry(key)
                        .or_default()
                        .push(LiveEvent::from_row(row, Vec::new()));
                }
            }
        }
        for events in pages.values_mut() {
            events.sort_by_key(LiveEvent::cursor);
        }
        Ok(pages)
    }
}

/// Add `page` to `statement` with `UNION ALL` (or start it), wrapped as a
/// subquery named `alias` so that both databases accept its ORDER BY and
/// LIMIT inside a UNION: one statement reads a page for each of many parents.
fn union_all(statement: &mut Option<SelectStatement>, page: SelectStatement, alias: &str) {
    let mut member = Query::select();
    member
        .column(Asterisk)
        .from_subquery(page, Alias::new(alias));
    match statement {
        None => *statement = Some(member),
        Some(first) => {
            first.union(UnionType::All, member);
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::dataloader::Loader as _;
    use chrono::{DateTime, Utc};
    use entity::{account, by_position, claim, license, license_request};
    use sea_orm::{
        ActiveModelTrait as _, ConnectionTrait as _, EntityTrait, QuerySelect as _, Set,
    };

    use super::{LicensePageKey, LicensePages, Page};

    #[tokio::test]
    async fn models_read_by_position_read_each_column_where_their_statement_put_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("kl.db").display());
        let db = crate::db::connect_with_pool(&url, Some(1)).await.unwrap();
        // Keys without their order: the page reads keys and accounts only.
        db.execute_unprepared("PRAGMA foreign_keys = OFF")
            .await
            .unwrap();
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // Every column set, and to a value no other column has.
        let assignee = account::ActiveModel {
            id: Set(7),
            email: Set("assignee@columns.example.com".into()),
            password_hash: Set("$argon2id$hash".into()),
            email_verified_at: Set(Some(at("2026-01-02T03:04:05Z"))),
            role: Set(account::AccountRole::Admin),
            require_manual_approval: Set(true),
            allow_override_assignee: Set(false),
            notify_on_claim: Set(true),
            allow_assignee_organization: Set(false),
            created_at: Set(at("2026-01-01T00:00:01Z")),
            disabled_at: Set(Some(at("2026-02-03T04:05:06Z"))),
        }
        .insert(&db)
        .await
        .unwrap();
        let assigned = license::ActiveModel {
            id: Set(11),
            order_id: Set(3),
            key: Set("AAAA-BBBB-CCCC-DDDD".into()),
            assignee_email: Set(Some(assignee.email.clone())),
            assigned_at: Set(Some(at("2026-03-04T05:06:07Z"))),
            organization_name: Set(Some("Columns SA".into())),
            organization_siret: Set(Some("73282932000074".into())),
            created_at: Set(at("2026-01-05T06:07:08Z")),
            suspended: Set(true),
        }
        .insert(&db)
        .await
        .unwrap();
        let unassigned = license::ActiveModel {
            id: Set(12),
            order_id: Set(3),
            key: Set("EEEE-FFFF-GGGG-HHHH".into()),
            assignee_email: Set(None),
            assigned_at: Set(None),
            organization_name: Set(None),
            organization_siret: Set(None),
            created_at: Set(at("2026-01-06T00:00:00Z")),
            suspended: Set(false),
        }
        .insert(&db)
        .await
        .unwrap();
        // The other models the pages read by position, each with every
        // column set: read as sea-orm reads them by name.
        let claim = claim::ActiveModel {
            id: Set(21),
            license_id: Set(11),
            claimer_id: Set(7),
            status: Set(claim::ApprovalStatus::Declined),
            created_at: Set(at("2026-04-01T00:00:00Z")),
            decided_at: Set(Some(at("2026-04-02T00:00:00Z"))),
            decided_by: Set(Some(8)),
        }
        .insert(&db)
        .await
        .unwrap();
        let request = license_request::ActiveModel {
            id: Set(31),
            requester_id: Set(7),
            buyer_email: Set("buyer@columns.example.com".into()),
            message: Set("a key, please".into()),
            status: Set(claim::ApprovalStatus::Approved),
            license_id: Set(Some(12)),
            created_at: Set(at("2026-05-01T00:00:00Z")),
            decided_at: Set(Some(at("2026-05-02T00:00:00Z"))),
        }
        .insert(&db)
        .await
        .unwrap();
        let claims: Vec<claim::Model> = by_position::all(&db, claim::Entity::find()).await.unwrap();
        assert_eq!(claims, std::slice::from_ref(&claim));
        let requests: Vec<license_request::Model> =
            by_position::all(&db, license_request::Entity::find())
                .await
                .unwrap();
        assert_eq!(requests, [request]);
        let accounts: Vec<account::Model> = by_position::all(&db, account::Entity::find())
            .await
            .unwrap();
        assert_eq!(accounts, std::slice::from_ref(&assignee));
        // A claim with its claimer, as the page of incoming claims joins them.
        let pairs = claim::Entity::find().find_also_linked(account::Via(claim::Column::ClaimerId));
        let pairs = by_position::pairs(&db, pairs).await.unwrap();
        assert_eq!(pairs, [(claim.clone(), Some(assignee.clone()))]);
        // A statement with other columns than its models' is refused.
        let narrowed = claim::Entity::find()
            .select_only()
            .column(claim::Column::Id);
        assert!(by_position::all(&db, narrowed).await.is_err());

        for with_assignees in [true, false] {
            let key = LicensePageKey {
                order_id: 3,
                filter: None,
                page: Page {
                    after: None,
                    first: 10,
                },
                with_assignees,
            };
            let pages = LicensePages(db.clone()).load(&[key]).await.unwrap();
            let page = &pages[&key];
            assert_eq!(page.len(), 2);
            assert_eq!(*page[0].license, assigned);
            assert_eq!(*page[1].license, unassigned);
            let expected = with_assignees.then(|| std::sync::Arc::new(assignee.clone()));
            assert_eq!(page[0].assignee, expected);
            assert_eq!(page[1].assignee, None);
        }
    }
}
