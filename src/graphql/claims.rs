//! Claims, their approval, and the claim settings.
use std::{collections::HashMap, sync::Arc};

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, connection::Connection};
use chrono::{DateTime, Utc};
use entity::{account, claim};

use super::{
    ContextExt,
    accounts::Account,
    orders::{License, Order, OrganizationInput, PageRefs},
    pagination::{self, Page, parse_id},
};
use crate::{
    client_ip::ClientAddr,
    domain::{
        claims::{self, Outcome},
        licenses::Access,
        settings,
    },
    error::ApiResult,
    rate_limits::LimitKey,
};

/// Where a claim or a license request stands. Pending ones read as
/// `EXPIRED` after 7 days.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "entity::claim::ApprovalStatus")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Declined,
    Expired,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ClaimOutcome {
    /// The key is now assigned to you.
    Linked,
    /// The claim waits for the owner's approval.
    Pending,
    /// The key was already yours; nothing changed.
    AlreadyYours,
}

/// A claim of a key by its string.
// With what the page it was listed in read for all its claims at once.
pub struct Claim(pub claim::Model, Option<Arc<PageRefs>>);

impl Claim {
    pub fn new(model: claim::Model) -> Self {
        Claim(model, None)
    }

    /// A page of claims, whose keys and claimers are read in one go (the
    /// claimers are `read` already when the page's statement joined them).
    async fn page(
        ctx: &Context<'_>,
        page: &Page,
        rows: Vec<claim::Model>,
        read: Option<HashMap<i64, Arc<account::Model>>>,
    ) -> ApiResult<Connection<String, Claim>> {
        let listed = &rows[..rows.len().min(page.first as usize)];
        let refs = PageRefs::load(
            ctx,
            ("license", listed.iter().map(|c| c.license_id)),
            ("claimer", listed.iter().map(|c| c.claimer_id)),
            read,
        )
        .await?;
        Ok(page.connection(rows, |c| c.id, |c| Claim(c, Some(refs.clone()))))
    }
}

#[Object]
impl Claim {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// Pending claims older than 7 days read as `EXPIRED`.
    async fn status(&self, ctx: &Context<'_>) -> ApprovalStatus {
        ApprovalStatus::from(claims::effective_status(
            &self.0,
            ctx.state().ctx.clock.now(),
        ))
    }

    async fn claimer(&self, ctx: &Context<'_>) -> ApiResult<Option<Account>> {
        PageRefs::account(self.1.as_deref(), ctx, self.0.claimer_id).await
    }

    /// The key, when the caller may see it (its order's managers; the claimer once it is theirs).
    async fn license(&self, ctx: &Context<'_>) -> ApiResult<Option<License>> {
        PageRefs::key(self.1.as_deref(), ctx, self.0.license_id).await
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn decided_at(&self) -> Option<DateTime<Utc>> {
        self.0.decided_at
    }
}

#[derive(SimpleObject)]
pub struct ClaimPayload {
    outcome: ClaimOutcome,
    /// The claim; null when the key was already yours without one.
    claim: Option<Claim>,
    /// The key, when it is yours (linked or already yours).
    license: Option<License>,
}

#[derive(InputObject, Default)]
pub struct ClaimSettingsInput {
    pub require_manual_approval: Option<bool>,
    pub allow_override_assignee: Option<bool>,
    pub notify_on_claim: Option<bool>,
    pub allow_assignee_organization: Option<bool>,
}

#[derive(InputObject)]
pub struct SetLicenseOrganizationInput {
    pub license_id: ID,
    /// Name and SIRET together; null or both empty removes the organization.
    pub organization: Option<OrganizationInput>,
}

#[derive(Default)]
pub struct ClaimQuery;

#[Object]
impl ClaimQuery {
    /// Claims on the caller's orders (incoming), oldest first.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn claim_requests(
        &self,
        ctx: &Context<'_>,
        status: Option<ApprovalStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Claim>> {
        let viewer = ctx.viewer()?;
        let page = Page::new(first, after)?;
        let state = ctx.state();
        // Claims come from many people: their accounts ride on the page's
        // statement.
        let with_claimers = pagination::nodes(ctx).field("claimer").exists();
        let rows = claims::incoming(
            &state.ctx.db,
            viewer,
            status.map(Into::into),
            state.ctx.clock.now(),
            page.after,
            page.fetch(),
            with_claimers,
        )
        .await?;
        let (rows, claimers) = PageRefs::split(rows, with_claimers);
        Claim::page(ctx, &page, rows, claimers).await
    }

    /// The caller's own claims, oldest first.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn my_claims(
        &self,
        ctx: &Context<'_>,
        status: Option<ApprovalStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<String, Claim>> {
        let viewer = ctx.viewer()?;
        let page = Page::new(first, after)?;
        let state = ctx.state();
        let rows = claims::mine(
            &state.ctx.db,
            viewer,
            status.map(Into::into),
            state.ctx.clock.now(),
            page.after,
            page.fetch(),
        )
        .await?;
        // All the caller's own: the one account is read by itself.
        Claim::page(ctx, &page, rows, None).await
    }
}

#[derive(Default)]
pub struct ClaimMutation;

#[Object]
impl ClaimMutation {
    /// Claim a key by its string (signed in, verified email). Rate limited per
    /// account and per client address; an unknown key and a key of another
    /// `product` (a catalog code) answer alike (`NOT_FOUND`).
    async fn claim_license(
        &self,
        ctx: &Context<'_>,
        key: String,
        product: Option<String>,
    ) -> ApiResult<ClaimPayload> {
        let viewer = ctx.viewer()?;
        viewer.verified_email()?;
        let state = ctx.state();
        let mut limit_keys = vec![LimitKey::Account(viewer.account_id)];
        if let Some(ClientAddr(ip)) = ctx.data_opt::<ClientAddr>() {
            limit_keys.push(LimitKey::Client(*ip));
        }
        state.limits.claim(&limit_keys).await?;
        let result = claims::claim(&state.ctx, viewer, &key, product.as_deref()).await?;
        let outcome = match result.outcome {
            Outcome::Linked => ClaimOutcome::Linked,
            Outcome::Pending => ClaimOutcome::Pending,
            Outcome::AlreadyYours => ClaimOutcome::AlreadyYours,
        };
        let license = (outcome != ClaimOutcome::Pending)
            .then(|| License::new(result.license, None, Access::Assignee));
        Ok(ClaimPayload {
            outcome,
            claim: result.claim.map(Claim::new),
            license,
        })
    }

    /// The order's owner approves a pending claim; the other pending claims on the key are declined.
    async fn approve_claim(&self, ctx: &Context<'_>, claim_id: ID) -> ApiResult<Claim> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&claim_id, "claim")?;
        Ok(Claim::new(
            claims::approve(&ctx.state().ctx, viewer, id).await?,
        ))
    }

    async fn decline_claim(&self, ctx: &Context<'_>, claim_id: ID) -> ApiResult<Claim> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&claim_id, "claim")?;
        Ok(Claim::new(
            claims::decline(&ctx.state().ctx, viewer, id).await?,
        ))
    }

    /// Change any subset of the caller's claim settings.
    async fn update_claim_settings(
        &self,
        ctx: &Context<'_>,
        input: ClaimSettingsInput,
    ) -> ApiResult<Account> {
        let viewer = ctx.viewer()?;
        let change = settings::ClaimSettingsChange {
            require_manual_approval: input.require_manual_approval,
            allow_override_assignee: input.allow_override_assignee,
            notify_on_claim: input.notify_on_claim,
            allow_assignee_organization: input.allow_assignee_organization,
        };
        Ok(Account::from(
            settings::update_claim_settings(&ctx.state().ctx, viewer, change).await?,
        ))
    }

    /// Per-order override of "require manual approval": true, false, or null to inherit.
    async fn set_order_manual_approval(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
        value: Option<bool>,
    ) -> ApiResult<Order> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&order_id, "order")?;
        Ok(Order::from(
            settings::set_order_manual_approval(&ctx.state().ctx, viewer, id, value).await?,
        ))
    }

    /// The assignee attaches an organization to their key, when the owner allows it.
    async fn set_license_organization(
        &self,
        ctx: &Context<'_>,
        input: SetLicenseOrganizationInput,
    ) -> ApiResult<License> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&input.license_id, "license")?;
        let (name, siret) = input
            .organization
            .map(|o| (o.name, o.siret))
            .unwrap_or_default();
        let license = settings::set_license_organization(
            &ctx.state().ctx,
            viewer,
            id,
            name.as_deref(),
            siret.as_deref(),
        )
        .await?;
        Ok(License::new(license, None, Access::Assignee))
    }
}
