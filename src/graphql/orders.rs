//! Orders and their keys: buying, paying, listing, assigning.
use std::{collections::HashMap, sync::Arc};

use async_graphql::{
    Context, Enum, ID, InputObject, Object, SelectionField, SimpleObject, Value,
    connection::Connection, dataloader::Loader,
};
use chrono::{DateTime, Utc};
use entity::{account, activation, license, order};
use futures_util::FutureExt;

use super::{
    ContextExt,
    accounts::Account,
    events::Event,
    loaders::{HistoryPageKey, LicensePageKey, Loaders},
    pagination::{self, Page, parse_id},
};
use crate::{
    domain::{
        licenses::{self, Access, AssignmentFilter},
        orders, rights,
    },
    error::{ApiResult, AppError},
    events::{LiveEvent, cursor::Cursor},
};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "entity::order::OrderStatus")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    /// Refunded after payment: its keys no longer work.
    Refunded,
}

/// Who confirmed an order's payment.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum PaymentProvider {
    /// The Stripe webhook (`POST /webhooks/stripe`).
    Stripe,
    /// An administrator's `markOrderPaid`.
    Manual,
}

/// How an order was paid.
#[derive(SimpleObject)]
pub struct OrderPayment {
    pub provider: PaymentProvider,
    /// The provider's event that confirmed it (Stripe's `evt_…`).
    pub event_id: Option<String>,
    /// What was paid, in minor units of `currency` (null for a manual payment).
    pub amount: Option<i64>,
    /// ISO 4217, upper case.
    pub currency: Option<String>,
    /// Stripe's PaymentIntent (`pi_…`).
    pub payment_intent: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum LicenseStatus {
    Unassigned,
    Assigned,
}

impl From<LicenseStatus> for AssignmentFilter {
    fn from(status: LicenseStatus) -> Self {
        match status {
            LicenseStatus::Unassigned => AssignmentFilter::Unassigned,
            LicenseStatus::Assigned => AssignmentFilter::Assigned,
        }
    }
}

fn loaders<'a>(ctx: &'a Context<'_>) -> &'a Loaders {
    ctx.data_unchecked::<Loaders>()
}

/// The catalog name of the product `code` (the code itself should an order
/// ever name no catalog product).
async fn product_name(ctx: &Context<'_>, code: &str) -> ApiResult<String> {
    Ok(loaders(ctx)
        .products()
        .load_one(code.to_owned())
        .boxed()
        .await?
        .map_or_else(|| code.to_owned(), |p| p.name))
}

/// An order of license keys, seen by someone with rights on it.
pub struct Order(pub Arc<order::Model>);

impl From<order::Model> for Order {
    fn from(model: order::Model) -> Self {
        Order(Arc::new(model))
    }
}

#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// Human-readable order number.
    async fn number(&self) -> String {
        orders::number(self.0.id)
    }

    /// The catalog code of the product.
    async fn product(&self) -> &str {
        &self.0.product
    }

    /// The product's name in the catalog.
    async fn product_name(&self, ctx: &Context<'_>) -> ApiResult<String> {
        product_name(ctx, &self.0.product).await
    }

    async fn quantity(&self) -> i32 {
        self.0.quantity
    }

    async fn status(&self) -> OrderStatus {
        self.0.status.into()
    }

    /// The organization the order was bought for, if any.
    async fn organization(
        &self,
        ctx: &Context<'_>,
    ) -> ApiResult<Option<super::organizations::Organization>> {
        let Some(id) = self.0.organization_id else {
            return Ok(None);
        };
        super::organizations::Organization::load(ctx, id)
            .boxed()
            .await
    }

    async fn owner(&self, ctx: &Context<'_>) -> ApiResult<Option<Account>> {
        Ok(loaders(ctx)
            .accounts()
            .load_one(self.0.owner_id)
            .boxed()
            .await?
            .map(Account))
    }

    /// Per-order override of the owner's "require manual approval"; null inherits it.
    async fn require_manual_approval(&self) -> Option<bool> {
        self.0.require_manual_approval
    }

    /// How many devices each key may be activated on.
    async fn device_limit(&self) -> i32 {
        self.0.device_limit
    }

    /// Devices must call `heartbeatLicense` this often (seconds), else they
    /// are deactivated and their seat freed; null: no heartbeat needed.
    async fn heartbeat_seconds(&self) -> Option<i32> {
        self.0.heartbeat_seconds
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn paid_at(&self) -> Option<DateTime<Utc>> {
        self.0.paid_at
    }

    /// How the order was paid; null until it is.
    async fn payment(&self) -> Option<OrderPayment> {
        let provider = match self.0.payment_provider.as_deref()? {
            crate::domain::payments::STRIPE => PaymentProvider::Stripe,
            _ => PaymentProvider::Manual,
        };
        Some(OrderPayment {
            provider,
            event_id: self.0.payment_event_id.clone(),
            amount: self.0.payment_amount,
            currency: self.0.payment_currency.clone(),
            payment_intent: self.0.payment_intent.clone(),
            paid_at: self.0.paid_at,
        })
    }

    /// Administrators: why a payment provider's confirmation did not pay
    /// this order (an amount or currency that is not the catalog's, say);
    /// null for everyone else, and once the order is paid.
    async fn payment_problem(&self, ctx: &Context<'_>) -> Option<&str> {
        let admin = ctx.viewer().is_ok_and(|viewer| viewer.is_admin);
        admin.then_some(self.0.payment_problem.as_deref()).flatten()
    }

    /// When the order was refunded (status `REFUNDED`).
    async fn refunded_at(&self) -> Option<DateTime<Utc>> {
        self.0.refunded_at
    }

    /// The order's keys, optionally only assigned or unassigned ones.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn licenses(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<LicenseStatus>,
    ) -> ApiResult<Connection<String, License>> {
        self.license_page(ctx, first, after, status).boxed().await
    }

    /// History of the order and its keys, oldest first.
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Event>> {
        super::events::order_history(ctx, self.0.id, first, after)
            .boxed()
            .await
    }
}

impl Order {
    /// A page of the order's keys (`licenses`), with what its selection
    /// reads of each key loaded for the whole page.
    async fn license_page(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<LicenseStatus>,
    ) -> ApiResult<Connection<String, License>> {
        let page = Page::new(first, after)?;
        // The page's assignees with its keys, when they are asked for: each
        // key then reads its own, rather than a hundred loads having to land
        // in one batching window (under load they did not, and one page cost
        // dozens of statements), or a hundred lookups in a loader's cache.
        let with_assignees = pagination::nodes(ctx).field("assignee").exists();
        let key = LicensePageKey {
            order_id: self.0.id,
            filter: status.map(Into::into),
            page,
            with_assignees,
        };
        // Through the loader's batch: the pages of several orders
        // (`orders { licenses }`) then share one statement.
        let rows = loaders(ctx)
            .license_pages()
            .load_one(key)
            .await?
            .unwrap_or_default();
        // An administrator reaches any order, but holds no owner's rights on it.
        let access = if rights::can_manage(&ctx.state().ctx.db, ctx.viewer()?, &self.0).await? {
            Access::Manager
        } else {
            Access::Admin
        };
        let mut prefetched = prefetch(ctx, rows.iter().map(|row| row.license.id)).await?;
        // One copy of the order for the whole page, shared by its keys.
        let order = self.0.clone();
        Ok(page.connection(
            rows,
            |row| row.license.id,
            |row| {
                let mut license = License::shared(row.license, order.clone(), access);
                if let Some(p) = prefetched.remove(&license.model.id) {
                    license.prefetched = p;
                }
                if with_assignees {
                    license.prefetched.assignee = Some(row.assignee);
                }
                license
            },
        ))
    }
}

/// What a key's list fields read, loaded for a whole page of keys at once.
#[derive(Default)]
pub struct Prefetched {
    activations: Option<Vec<activation::Model>>,
    history: Vec<(Page<Cursor>, Vec<LiveEvent>)>,
    /// The assignee's verified account (`Some(None)`: none), when loaded.
    assignee: Option<Option<Arc<account::Model>>>,
}

/// The `activations` and `history` a page of keys selects, in one load each
/// for the page (one per distinct `history` page asked), so that a page of
/// keys costs the same number of statements whatever its length: each key
/// then reads its own, rather than a hundred loads having to land in one
/// batching window (see `assignee` above).
async fn prefetch(
    ctx: &Context<'_>,
    ids: impl Iterator<Item = i64>,
) -> ApiResult<HashMap<i64, Prefetched>> {
    let node = pagination::nodes(ctx);
    let ids: Vec<i64> = ids.collect();
    let mut prefetched: HashMap<i64, Prefetched> = HashMap::new();
    if ids.is_empty() {
        return Ok(prefetched);
    }
    if node.field("activations").exists() {
        let mut found = loaders(ctx).activations().load_many(ids.clone()).await?;
        for id in &ids {
            prefetched.entry(*id).or_default().activations = found.remove(id);
        }
    }
    let mut pages: Vec<Page<Cursor>> = Vec::new();
    for field in node.field("history").selection_fields() {
        // A page the resolver will refuse is left to it, for its error.
        if let Some(page) = history_page(&field).filter(|p| !pages.contains(p)) {
            pages.push(page);
        }
    }
    if !pages.is_empty() {
        let mut keys = Vec::with_capacity(pages.len() * ids.len());
        for page in &pages {
            keys.extend(ids.iter().map(|id| HistoryPageKey {
                license_id: *id,
                page: *page,
            }));
        }
        for (key, events) in loaders(ctx).license_histories().load_many(keys).await? {
            prefetched
                .entry(key.license_id)
                .or_default()
                .history
                .push((key.page, events));
        }
    }
    Ok(prefetched)
}

/// The page a `history(first, after)` selection asks for, if valid.
fn history_page(field: &SelectionField<'_>) -> Option<Page<Cursor>> {
    let (mut first, mut after) = (None, None);
    for (name, value) in field.arguments().ok()? {
        match (name.as_str(), value) {
            ("first", Value::Number(n)) => first = Some(i32::try_from(n.as_i64()?).ok()?),
            ("after", Value::String(a)) => after = Some(a),
            (_, Value::Null) => {}
            _ => return None,
        }
    }
    Page::parse(first, after).ok()
}

/// An organization a key is bound to.
#[derive(SimpleObject, Clone)]
pub struct LicenseOrganization {
    pub name: String,
    pub siret: String,
}

/// A license key. Its string is shown to the order's managers and to the assignee only.
/// `access` is how the path reached it; `key` asks the rule itself.
pub struct License {
    /// Shared, as a page's keys are with the loader that read them.
    pub model: Arc<license::Model>,
    /// The key's order, when the path that reached the key read it (shared
    /// by a page's keys).
    pub order: Option<Arc<order::Model>>,
    pub access: Access,
    pub prefetched: Prefetched,
}

/// What the items of a page of claims or license requests point at, read
/// once for the whole page when the query selects it: their keys, as the
/// caller may see them, and their accounts (claimer, requester). Each item
/// then takes its own, rather than costing statements of its own or a
/// hundred loads having to land in one batching window.
#[derive(Default)]
pub struct PageRefs {
    keys: Option<HashMap<i64, licenses::Readable>>,
    accounts: Option<HashMap<i64, Arc<account::Model>>>,
}

impl PageRefs {
    /// The items of a page read with (`joined`) or without their accounts,
    /// and those accounts by id for [`PageRefs::load`] (`None` when not
    /// joined: `load` then reads them itself).
    pub fn split<T>(
        rows: Vec<(T, Option<account::Model>)>,
        joined: bool,
    ) -> (Vec<T>, Option<HashMap<i64, Arc<account::Model>>>) {
        let (items, accounts): (Vec<T>, Vec<_>) = rows.into_iter().unzip();
        let accounts = joined.then(|| {
            let accounts = accounts.into_iter().flatten();
            accounts
                .map(|account| (account.id, Arc::new(account)))
                .collect()
        });
        (items, accounts)
    }

    /// Read the keys and accounts of a page's items, each only when the
    /// page's `edges { node { … } }` selects `key_field` / `account_field`;
    /// the accounts are `read` already when the page's statement joined them.
    pub async fn load(
        ctx: &Context<'_>,
        (key_field, key_ids): (&str, impl IntoIterator<Item = i64>),
        (account_field, account_ids): (&str, impl IntoIterator<Item = i64>),
        read: Option<HashMap<i64, Arc<account::Model>>>,
    ) -> ApiResult<Arc<PageRefs>> {
        let node = pagination::nodes(ctx);
        let mut refs = PageRefs::default();
        if node.field(key_field).exists() {
            refs.keys = Some(match ctx.viewer() {
                Ok(viewer) => licenses::readable_many(&ctx.state().ctx.db, viewer, key_ids).await?,
                Err(_) => HashMap::new(),
            });
        }
        if read.is_some() {
            refs.accounts = read;
        } else if node.field(account_field).exists() {
            let mut ids: Vec<i64> = account_ids.into_iter().collect();
            ids.sort_unstable();
            ids.dedup();
            // Straight to the loader: the page is a root field, and every
            // id is known, so waiting for a batch to gather would only add
            // its delay.
            refs.accounts = Some(loaders(ctx).accounts().loader().load(&ids).await?);
        }
        Ok(Arc::new(refs))
    }

    /// The key `license_id` as the caller may see it, from the page when it
    /// read its keys, else by itself.
    pub async fn key(
        refs: Option<&PageRefs>,
        ctx: &Context<'_>,
        license_id: i64,
    ) -> ApiResult<Option<License>> {
        match refs.and_then(|r| r.keys.as_ref()) {
            Some(keys) => Ok(keys.get(&license_id).map(|(model, order, access)| {
                License::shared(model.clone(), order.clone(), *access)
            })),
            None => License::visible(ctx, license_id).boxed().await,
        }
    }

    /// The account `account_id`, from the page when it read its accounts,
    /// else through the request's loader.
    pub async fn account(
        refs: Option<&PageRefs>,
        ctx: &Context<'_>,
        account_id: i64,
    ) -> ApiResult<Option<Account>> {
        let account = match refs.and_then(|r| r.accounts.as_ref()) {
            Some(accounts) => accounts.get(&account_id).cloned(),
            None => loaders(ctx).accounts().load_one(account_id).boxed().await?,
        };
        Ok(account.map(Account))
    }
}

impl License {
    pub fn new(model: license::Model, order: Option<order::Model>, access: Access) -> Self {
        License {
            model: Arc::new(model),
            order: order.map(Arc::new),
            access,
            prefetched: Prefetched::default(),
        }
    }

    /// A key of a page whose keys share one order.
    pub fn shared(model: Arc<license::Model>, order: Arc<order::Model>, access: Access) -> Self {
        License {
            model,
            order: Some(order),
            access,
            prefetched: Prefetched::default(),
        }
    }

    /// The key `license_id` as the caller may see it, or `None` when they may
    /// not (for fields that point at a key from a claim, request or event).
    pub async fn visible(ctx: &Context<'_>, license_id: i64) -> ApiResult<Option<License>> {
        let Ok(viewer) = ctx.viewer() else {
            return Ok(None);
        };
        match licenses::readable(&ctx.state().ctx.db, viewer, license_id).await {
            Ok((license, order, access)) => Ok(Some(License::new(license, Some(order), access))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

#[Object]
impl License {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }

    /// `XXXX-XXXX-XXXX-XXXX`, for the order's managers and the key's assignee
    /// only; null for anyone else, administrators included.
    // The rule: `rights::may_see_key`.
    async fn key(&self, ctx: &Context<'_>) -> ApiResult<Option<&str>> {
        let Ok(viewer) = ctx.viewer() else {
            return Ok(None);
        };
        let manages_order = match self.access {
            Access::Manager => true,
            // Reached as an administrator: they may still manage this order.
            Access::Admin if !licenses::is_assignee(viewer, &self.model) => {
                let order = self.order_model(ctx).await?;
                rights::can_manage(&ctx.state().ctx.db, viewer, &order)
                    .boxed()
                    .await?
            }
            _ => false,
        };
        Ok(rights::may_see_key(viewer, &self.model, manages_order)
            .then_some(self.model.key.as_str()))
    }

    /// The catalog code of the key's product.
    async fn product(&self, ctx: &Context<'_>) -> ApiResult<String> {
        Ok(self.order_model(ctx).await?.product.clone())
    }

    /// The product's name in the catalog.
    async fn product_name(&self, ctx: &Context<'_>) -> ApiResult<String> {
        product_name(ctx, &self.order_model(ctx).await?.product).await
    }

    /// The order, for its managers and administrators; null for the assignee.
    async fn order(&self, ctx: &Context<'_>) -> ApiResult<Option<Order>> {
        if self.access == Access::Assignee {
            return Ok(None);
        }
        Ok(Some(Order(self.order_model(ctx).await?)))
    }

    async fn status(&self) -> LicenseStatus {
        if self.model.assignee_email.is_some() {
            LicenseStatus::Assigned
        } else {
            LicenseStatus::Unassigned
        }
    }

    async fn assignee_email(&self) -> Option<&str> {
        self.model.assignee_email.as_deref()
    }

    /// The owner suspended the key (`suspendLicense`): it does not validate,
    /// activate, report or check out until resumed.
    async fn suspended(&self) -> bool {
        self.model.suspended
    }

    /// The account that verified the assignee email, once there is one.
    async fn assignee(&self, ctx: &Context<'_>) -> ApiResult<Option<Account>> {
        let Some(email) = &self.model.assignee_email else {
            return Ok(None);
        };
        if let Some(found) = &self.prefetched.assignee {
            return Ok(found.clone().map(Account));
        }
        Ok(loaders(ctx)
            .verified_accounts()
            .load_one(email.clone())
            .boxed()
            .await?
            .flatten()
            .map(Account))
    }

    async fn organization(&self) -> Option<LicenseOrganization> {
        Some(LicenseOrganization {
            name: self.model.organization_name.clone()?,
            siret: self.model.organization_siret.clone()?,
        })
    }

    async fn assigned_at(&self) -> Option<DateTime<Utc>> {
        self.model.assigned_at
    }

    /// Devices the key is active on.
    async fn activations(&self, ctx: &Context<'_>) -> ApiResult<Vec<super::devices::Activation>> {
        let rows = match &self.prefetched.activations {
            Some(rows) => rows.clone(),
            None => loaders(ctx)
                .activations()
                .load_one(self.model.id)
                .boxed()
                .await?
                .unwrap_or_default(),
        };
        Ok(rows.into_iter().map(super::devices::Activation).collect())
    }

    /// Every change to this key, oldest first (order managers and admins).
    async fn history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Event>> {
        if self.access == Access::Assignee {
            return Err(AppError::Forbidden(
                "only the order's owner sees a key's history",
            ));
        }
        let page = Page::<Cursor>::parse(first, after)?;
        let prefetched = self.prefetched.history.iter().find(|(p, _)| *p == page);
        let rows = match prefetched {
            Some((_, rows)) => rows.clone(),
            None => {
                let key = HistoryPageKey {
                    license_id: self.model.id,
                    page,
                };
                let loaded = loaders(ctx)
                    .license_histories()
                    .load_one(key)
                    .boxed()
                    .await?;
                loaded.unwrap_or_default()
            }
        };
        Ok(page.connection(rows, LiveEvent::cursor, Event))
    }
}

impl License {
    async fn order_model(&self, ctx: &Context<'_>) -> ApiResult<Arc<order::Model>> {
        if let Some(order) = &self.order {
            return Ok(order.clone());
        }
        loaders(ctx)
            .orders()
            .load_one(self.model.order_id)
            .boxed()
            .await?
            .ok_or_else(|| AppError::internal("license without order"))
    }
}

#[derive(InputObject)]
pub struct CreateOrderInput {
    /// The code of a catalog product (`products`).
    pub product: String,
    /// Number of keys, 1 to 100,000.
    pub quantity: i32,
    /// Devices each key may be activated on (default 1).
    pub device_limit: Option<i32>,
    /// Devices must report (`heartbeatLicense`) this often, in seconds (at
    /// least 60), else their seat is freed; null (default): never.
    pub heartbeat_seconds: Option<i32>,
    /// Buy for this organization (you must be a member): its admins share the owner's rights.
    pub organization_id: Option<ID>,
}

#[derive(InputObject)]
pub struct OrganizationInput {
    pub name: Option<String>,
    /// 14 digits passing the Luhn check (La Poste: digit sum multiple of 5).
    pub siret: Option<String>,
}

#[derive(InputObject)]
pub struct AssignLicenseInput {
    pub license_id: ID,
    pub email: String,
    /// Name and SIRET together, or neither.
    pub organization: Option<OrganizationInput>,
}

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// Orders the caller manages, oldest first.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Order>> {
        let viewer = ctx.viewer()?;
        let page = Page::new(first, after)?;
        let rows =
            orders::list_managed(&ctx.state().ctx.db, viewer, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |o| o.id, Order::from))
    }

    async fn order(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Order> {
        let viewer = ctx.viewer()?;
        let order = orders::readable(&ctx.state().ctx.db, viewer, parse_id(&id, "order")?).await?;
        Ok(Order::from(order))
    }

    async fn license(&self, ctx: &Context<'_>, id: ID) -> ApiResult<License> {
        let viewer = ctx.viewer()?;
        let (license, order, access) =
            licenses::readable(&ctx.state().ctx.db, viewer, parse_id(&id, "license")?).await?;
        Ok(License::new(license, Some(order), access))
    }

    /// Keys assigned to the caller's verified email (`EMAIL_NOT_VERIFIED` before verification).
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn assigned_licenses(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, License>> {
        let viewer = ctx.viewer()?;
        let page = Page::new(first, after)?;
        let rows =
            licenses::assigned_to(&ctx.state().ctx.db, viewer, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |l| l.id, |l| License::new(l, None, Access::Assignee)))
    }
}

#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Create an order waiting for payment (verified accounts only:
    /// `EMAIL_NOT_VERIFIED`); an unknown product code is `VALIDATION` on `product`.
    async fn create_order(&self, ctx: &Context<'_>, input: CreateOrderInput) -> ApiResult<Order> {
        let viewer = ctx.viewer()?;
        let organization_id = input
            .organization_id
            .map(|id| parse_id(&id, "organization"))
            .transpose()?;
        let new = orders::NewOrder {
            product: input.product,
            quantity: input.quantity,
            device_limit: input.device_limit,
            heartbeat_seconds: input.heartbeat_seconds,
            organization_id,
        };
        Ok(Order::from(
            orders::create(&ctx.state().ctx, viewer, new).await?,
        ))
    }

    /// Administrators: mark an order paid, generating its keys.
    async fn mark_order_paid(&self, ctx: &Context<'_>, order_id: ID) -> ApiResult<Order> {
        let viewer = ctx.viewer()?;
        Ok(Order::from(
            orders::mark_paid(&ctx.state().ctx, viewer, parse_id(&order_id, "order")?).await?,
        ))
    }

    /// Assign or reassign a key to an email, optionally with an organization.
    /// Taking it from another assignee gives the key a new string at once.
    async fn assign_license(
        &self,
        ctx: &Context<'_>,
        input: AssignLicenseInput,
    ) -> ApiResult<License> {
        let viewer = ctx.viewer()?;
        let (name, siret) = input
            .organization
            .map(|o| (o.name, o.siret))
            .unwrap_or_default();
        let assignment = licenses::Assignment {
            license_id: parse_id(&input.license_id, "license")?,
            email: input.email,
            organization_name: name,
            organization_siret: siret,
        };
        let license = licenses::assign(&ctx.state().ctx, viewer, assignment).await?;
        Ok(License::new(license, None, Access::Manager))
    }

    /// Take a key from its assignee; the key gets a new string at once.
    async fn unassign_license(&self, ctx: &Context<'_>, license_id: ID) -> ApiResult<License> {
        let viewer = ctx.viewer()?;
        let license =
            licenses::unassign(&ctx.state().ctx, viewer, parse_id(&license_id, "license")?).await?;
        Ok(License::new(license, None, Access::Manager))
    }

    /// The order's managers: give a key a new string (a compromised one,
    /// say). The old string still validates, activates and deactivates for
    /// `graceHours` (0 to 72, default 0), then answers `NOT_FOUND`; assignee
    /// and devices stay. The assignee is emailed the new key.
    async fn reissue_license(
        &self,
        ctx: &Context<'_>,
        license_id: ID,
        grace_hours: Option<i32>,
    ) -> ApiResult<License> {
        let viewer = ctx.viewer()?;
        let license = licenses::reissue(
            &ctx.state().ctx,
            viewer,
            parse_id(&license_id, "license")?,
            grace_hours.unwrap_or(0),
        )
        .await?;
        Ok(License::new(license, None, Access::Manager))
    }
}
