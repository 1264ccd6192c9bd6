//! `admin { … }`: cross-account reads for administrators (support in
//! GraphiQL), their filters, and the support actions.
use async_graphql::{Context, Enum, ID, InputObject, Object, connection::Connection};
use chrono::{DateTime, Utc};

use super::{
    ContextExt,
    accounts::{Account, Role},
    events::{Event, EventKind, event_page},
    orders::{License, LicenseStatus, Order, OrderStatus},
    pagination::{Page, parse_id},
    webhooks::WebhookEndpoint,
};
use crate::{
    domain::{
        admin::{self, TimeRange},
        licenses::Access,
        support,
    },
    error::{ApiResult, AppError},
};

/// Filter of `admin { accounts }`: every field given must match.
///
/// ```graphql
/// { admin { accounts(filter: { email: "ada@", verified: true }) {
///     edges { node { id email role emailVerified disabled createdAt } } } } }
/// ```
#[derive(InputObject, Default)]
pub struct AccountFilter {
    /// The start of the address, any case (`"ada@"`, `"ada@exa"`): 1 to 254 characters.
    pub email: Option<String>,
    /// `USER` or `ADMIN`.
    pub role: Option<Role>,
    /// True: verified addresses only; false: only accounts never verified.
    pub verified: Option<bool>,
    /// True: disabled accounts only; false: enabled ones only.
    pub disabled: Option<bool>,
}

/// Filter of `admin { orders }`: every field given must match. Time ranges
/// include their start (`…After`) and exclude their end (`…Before`).
///
/// ```graphql
/// { admin { orders(filter: { ownerEmail: "buyer@example.com", status: PAID,
///                            paidAfter: "2026-12-01T00:00:00Z" }) {
///     edges { cursor node { id number product status owner { email } paidAt } }
///     pageInfo { hasNextPage endCursor } } } }
/// ```
#[derive(InputObject, Default)]
pub struct OrderFilter {
    /// The order number (`KL-000042`, or `42`).
    pub number: Option<String>,
    /// The owner's exact address, any case.
    pub owner_email: Option<String>,
    /// Orders with a key assigned to this exact address, any case.
    pub assignee_email: Option<String>,
    /// The product's catalog code.
    pub product: Option<String>,
    /// `PENDING_PAYMENT` or `PAID`.
    pub status: Option<OrderStatus>,
    /// Created at or after this time (ISO 8601, e.g. `2026-12-01T00:00:00Z`).
    pub created_after: Option<DateTime<Utc>>,
    /// Created before this time; must be later than `createdAfter`.
    pub created_before: Option<DateTime<Utc>>,
    /// Paid at or after this time (unpaid orders never match a paid range).
    pub paid_after: Option<DateTime<Utc>>,
    /// Paid before this time; must be later than `paidAfter`.
    pub paid_before: Option<DateTime<Utc>>,
}

/// Filter of `admin { licenses }`: every field given must match.
///
/// ```graphql
/// { admin { licenses(filter: { key: "abcd efgh jkmn pqrs" }) {
///     edges { node { id status assigneeEmail order { number owner { email } } } } } } }
/// ```
#[derive(InputObject, Default)]
pub struct LicenseFilter {
    /// A key's full string, as a customer would paste it (case, spaces and
    /// dashes do not matter); a string the key had before a reissue finds
    /// it too. The key string itself stays hidden in the results.
    pub key: Option<String>,
    /// The assignee's exact address, any case.
    pub assignee_email: Option<String>,
    /// `ASSIGNED` (to an email) or `UNASSIGNED`.
    pub status: Option<LicenseStatus>,
    /// The keys of this order (`Order.id`).
    pub order_id: Option<ID>,
}

/// Filter of `admin { events }` and `admin { auditLog }`: every field given
/// must match. The time range includes `after` and excludes `before`.
///
/// ```graphql
/// { admin { auditLog(filter: { kinds: [ACCOUNT_DISABLED, SESSIONS_REVOKED],
///                              accountEmail: "ada@example.com" }) {
///     edges { node { id kind occurredAt actor { email } changes } } } } }
/// ```
#[derive(InputObject, Default)]
pub struct EventFilter {
    /// Any of these kinds (at most 64; empty or absent: every kind).
    pub kinds: Option<Vec<EventKind>>,
    /// Events the account with this exact address caused or received.
    pub account_email: Option<String>,
    /// Events about this order (`Order.id`) and its keys.
    pub order_id: Option<ID>,
    /// Occurred at or after this time.
    pub after: Option<DateTime<Utc>>,
    /// Occurred before this time; must be later than `after`.
    pub before: Option<DateTime<Utc>>,
}

/// An id argument of a filter: a row id, else `VALIDATION` on `field`.
fn filter_id(id: Option<ID>, field: &'static str) -> ApiResult<Option<i64>> {
    id.map(|id| {
        id.parse::<i64>()
            .map_err(|_| AppError::validation(field, "not an id"))
    })
    .transpose()
}

impl EventFilter {
    fn into_domain(self) -> ApiResult<admin::EventFilter> {
        Ok(admin::EventFilter {
            kinds: self
                .kinds
                .map(|kinds| kinds.into_iter().map(Into::into).collect()),
            account_email: self.account_email,
            order_id: filter_id(self.order_id, "filter.orderId")?,
            occurred: TimeRange {
                after: self.after,
                before: self.before,
            },
        })
    }
}

/// Administrators only: every account, order, key and event, filtered and
/// paged by keyset (a cursor stays valid whatever is written meanwhile).
pub struct Admin;

#[Object]
impl Admin {
    /// Accounts, oldest first.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn accounts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<AccountFilter>,
    ) -> ApiResult<Connection<String, Account>> {
        let page = Page::new(first, after)?;
        let filter = filter.unwrap_or_default();
        let filter = admin::AccountFilter {
            email: filter.email,
            role: filter.role.map(Into::into),
            verified: filter.verified,
            disabled: filter.disabled,
        };
        let db = &ctx.state().ctx.db;
        let rows = admin::accounts(db, &filter, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |a| a.id, Account::from))
    }

    /// Orders, oldest first.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<OrderFilter>,
    ) -> ApiResult<Connection<String, Order>> {
        let page = Page::new(first, after)?;
        let filter = filter.unwrap_or_default();
        let filter = admin::OrderFilter {
            number: filter.number,
            owner_email: filter.owner_email,
            assignee_email: filter.assignee_email,
            product: filter.product,
            status: filter.status.map(Into::into),
            created: TimeRange {
                after: filter.created_after,
                before: filter.created_before,
            },
            paid: TimeRange {
                after: filter.paid_after,
                before: filter.paid_before,
            },
        };
        let db = &ctx.state().ctx.db;
        let rows = admin::orders(db, &filter, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |o| o.id, Order::from))
    }

    /// Every key, oldest first; the key strings themselves stay hidden
    /// (`key` is null) unless the administrator manages the order or holds
    /// the key.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn licenses(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<LicenseFilter>,
    ) -> ApiResult<Connection<String, License>> {
        let page = Page::new(first, after)?;
        let filter = filter.unwrap_or_default();
        let filter = admin::LicenseFilter {
            key: filter.key,
            assignee_email: filter.assignee_email,
            assigned: filter.status.map(|s| s == LicenseStatus::Assigned),
            order_id: filter_id(filter.order_id, "filter.orderId")?,
        };
        let db = &ctx.state().ctx.db;
        let rows = admin::licenses(db, &filter, page.after, page.fetch()).await?;
        Ok(page.connection(rows, |l| l.id, |l| License::new(l, None, Access::Admin)))
    }

    /// Every event, in delivery order.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<EventFilter>,
    ) -> ApiResult<Connection<String, Event>> {
        let filter = filter.unwrap_or_default().into_domain()?;
        Page::<crate::events::cursor::Cursor>::parse(first, after.clone())?;
        let condition = admin::event_condition(&ctx.state().ctx.db, &filter).await?;
        event_page(ctx, condition, first, after).await
    }

    /// What administrators did (events caused by an admin account: support
    /// actions with their `changes.reason`, catalog changes, orders marked
    /// paid, …), in delivery order.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<EventFilter>,
    ) -> ApiResult<Connection<String, Event>> {
        let filter = filter.unwrap_or_default().into_domain()?;
        Page::<crate::events::cursor::Cursor>::parse(first, after.clone())?;
        let condition = admin::event_condition(&ctx.state().ctx.db, &filter).await?;
        event_page(ctx, condition.add(admin::audit_log()), first, after).await
    }

    /// Outbound webhook endpoints, oldest first (at most 100).
    async fn webhook_endpoints(&self, ctx: &Context<'_>) -> ApiResult<Vec<WebhookEndpoint>> {
        let rows = crate::domain::webhooks::list(&ctx.state().ctx.db).await?;
        Ok(rows.into_iter().map(WebhookEndpoint).collect())
    }
}

#[derive(Default)]
pub struct AdminQuery;

#[Object]
impl AdminQuery {
    /// Cross-account reads; `FORBIDDEN` unless the caller is an
    /// administrator. Each list takes `first` (at most 100), `after` (a
    /// cursor) and a `filter`. For example, in GraphiQL:
    ///
    /// ```graphql
    /// {
    ///   admin {
    ///     accounts(filter: { email: "ada@" }) { edges { node { id email disabled } } }
    ///     orders(first: 10, filter: { status: PENDING_PAYMENT,
    ///                                 createdBefore: "2026-12-01T00:00:00Z" }) {
    ///       edges { node { number owner { email } createdAt } }
    ///       pageInfo { hasNextPage endCursor }
    ///     }
    ///     licenses(filter: { assigneeEmail: "ada@example.com" }) {
    ///       edges { node { id status order { number } } }
    ///     }
    ///     auditLog(filter: { kinds: [ACCOUNT_DISABLED] }) {
    ///       edges { node { kind occurredAt actor { email } changes } }
    ///     }
    ///   }
    /// }
    /// ```
    async fn admin(&self, ctx: &Context<'_>) -> ApiResult<Admin> {
        ctx.viewer()?.require_admin()?;
        Ok(Admin)
    }
}

/// Which email `resendEmail` sends again.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ResendEmailKind {
    /// A new verification link, to an account whose address is not verified yet.
    Verification,
    /// A new confirmation link of a pending order transfer, to its
    /// addressee; the link sent before stops working.
    TransferConfirmation,
}

#[derive(Default)]
pub struct AdminMutation;

/// Administrators' support actions. Each is `FORBIDDEN` to anyone else and
/// recorded in `admin { auditLog }` with the administrator as actor and the
/// `reason` (1 to 500 characters) in `changes.reason`.
#[Object]
impl AdminMutation {
    /// Disable an account: it cannot sign in (`FORBIDDEN`), its tokens stop
    /// working (`UNAUTHENTICATED`) and its live subscriptions close, on
    /// every instance. Your own account, or one already disabled, is
    /// `CONFLICT`; an unknown address `NOT_FOUND`.
    ///
    /// ```graphql
    /// mutation { disableAccount(email: "ada@example.com", reason: "chargeback fraud") { id disabled } }
    /// ```
    async fn disable_account(
        &self,
        ctx: &Context<'_>,
        email: String,
        reason: String,
    ) -> ApiResult<Account> {
        let viewer = ctx.viewer()?;
        viewer.require_admin()?;
        let state = ctx.state();
        let account = support::disable_account(&state.ctx, viewer, &email, &reason).await?;
        state.account_sessions_revoked(account.id).await;
        Ok(Account::from(account))
    }

    /// Enable a disabled account again (`CONFLICT` if it is not disabled);
    /// its owner signs in anew.
    async fn enable_account(
        &self,
        ctx: &Context<'_>,
        email: String,
        reason: String,
    ) -> ApiResult<Account> {
        let viewer = ctx.viewer()?;
        viewer.require_admin()?;
        let account = support::enable_account(&ctx.state().ctx, viewer, &email, &reason).await?;
        Ok(Account::from(account))
    }

    /// End every session of an account (yours included, if you name
    /// yourself), on every instance: its tokens stop working and its live
    /// subscriptions close. Returns how many sessions ended.
    async fn revoke_sessions(
        &self,
        ctx: &Context<'_>,
        email: String,
        reason: String,
    ) -> ApiResult<i32> {
        let viewer = ctx.viewer()?;
        viewer.require_admin()?;
        let state = ctx.state();
        let (account, revoked) =
            support::revoke_sessions(&state.ctx, viewer, &email, &reason).await?;
        state.account_sessions_revoked(account.id).await;
        Ok(i32::try_from(revoked).unwrap_or(i32::MAX))
    }

    /// Send an email again: `VERIFICATION` to the account of `email`
    /// (`CONFLICT` once verified), or `TRANSFER_CONFIRMATION` of the pending
    /// transfer `transferId` to its addressee `email` (with a new link;
    /// `EXPIRED` or `CONFLICT` once the transfer cannot be accepted).
    /// Rate limited like every email (per administrator and per recipient:
    /// `RATE_LIMITED`). `reason` is optional here (1 to 500 characters).
    async fn resend_email(
        &self,
        ctx: &Context<'_>,
        kind: ResendEmailKind,
        email: String,
        transfer_id: Option<ID>,
        reason: Option<String>,
    ) -> ApiResult<bool> {
        let viewer = ctx.viewer()?;
        viewer.require_admin()?;
        let transfer_id = transfer_id
            .map(|id| parse_id(&id, "transfer"))
            .transpose()?;
        if let Some(reason) = &reason {
            support::reason(reason)?;
        }
        ctx.limit_mail(&email).await?;
        let kind = match kind {
            ResendEmailKind::Verification => support::ResendKind::Verification,
            ResendEmailKind::TransferConfirmation => support::ResendKind::TransferConfirmation,
        };
        support::resend_email(
            &ctx.state().ctx,
            viewer,
            kind,
            &email,
            transfer_id,
            reason.as_deref(),
        )
        .await?;
        Ok(true)
    }
}
