//! Organizations and their members.
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use entity::{organization, organization_member};
use futures_util::FutureExt;

use super::{ContextExt, pagination::parse_id};
use crate::{domain::organizations, error::ApiResult};

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "entity::organization_member::OrganizationRole")]
pub enum OrganizationRole {
    Admin,
    Member,
}

/// A company account: its admins hold the owner's rights on the orders bought for it.
pub struct Organization(pub organization::Model);

impl Organization {
    pub async fn load(ctx: &Context<'_>, id: i64) -> ApiResult<Option<Organization>> {
        Ok(organizations::find(&ctx.state().ctx.db, id)
            .await?
            .map(Organization))
    }
}

#[Object]
impl Organization {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn siret(&self) -> &str {
        &self.0.siret
    }

    /// Members and their roles; visible to members only (empty for others).
    async fn members(&self, ctx: &Context<'_>) -> ApiResult<Vec<OrganizationMember>> {
        let viewer = ctx.viewer()?;
        let rows = organizations::members_seen_by(&ctx.state().ctx.db, viewer, self.0.id)
            .boxed()
            .await?;
        Ok(rows.into_iter().map(OrganizationMember::from).collect())
    }
}

#[derive(SimpleObject)]
pub struct OrganizationMember {
    email: String,
    role: OrganizationRole,
}

impl From<organization_member::Model> for OrganizationMember {
    fn from(m: organization_member::Model) -> Self {
        OrganizationMember {
            role: m.role.into(),
            email: m.email,
        }
    }
}

/// One of the caller's memberships.
#[derive(SimpleObject)]
pub struct Membership {
    organization: Organization,
    role: OrganizationRole,
}

/// The caller's organizations (for `me.organizations`).
pub async fn memberships(ctx: &Context<'_>) -> ApiResult<Vec<Membership>> {
    let viewer = ctx.viewer()?;
    let rows = organizations::of_viewer(&ctx.state().ctx.db, viewer).await?;
    Ok(rows
        .into_iter()
        .map(|(org, role)| Membership {
            organization: Organization(org),
            role: role.into(),
        })
        .collect())
}

#[derive(Default)]
pub struct OrganizationMutation;

#[Object]
impl OrganizationMutation {
    /// Create an organization (name + valid SIRET); you become its first admin.
    async fn create_organization(
        &self,
        ctx: &Context<'_>,
        name: String,
        siret: String,
    ) -> ApiResult<Organization> {
        let viewer = ctx.viewer()?;
        Ok(Organization(
            organizations::create(&ctx.state().ctx, viewer, &name, &siret).await?,
        ))
    }

    /// Organization admins: add a member by email (or change their role). The
    /// member acts once they have verified that email.
    async fn add_organization_member(
        &self,
        ctx: &Context<'_>,
        organization_id: ID,
        email: String,
        role: OrganizationRole,
    ) -> ApiResult<OrganizationMember> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&organization_id, "organization")?;
        let member =
            organizations::add_member(&ctx.state().ctx, viewer, id, &email, role.into()).await?;
        Ok(member.into())
    }

    /// Organization admins: remove a member. Their orders stay with the
    /// organization, and the transfers of them they started are cancelled; an
    /// organization keeps at least one admin with a verified email.
    async fn remove_organization_member(
        &self,
        ctx: &Context<'_>,
        organization_id: ID,
        email: String,
    ) -> ApiResult<bool> {
        let viewer = ctx.viewer()?;
        let id = parse_id(&organization_id, "organization")?;
        organizations::remove_member(&ctx.state().ctx, viewer, id, &email).await?;
        Ok(true)
    }
}
