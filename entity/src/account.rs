use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub email: String,
    pub password_hash: String,
    pub email_verified_at: Option<DateTimeUtc>,
    pub role: AccountRole,
    pub require_manual_approval: bool,
    pub allow_override_assignee: bool,
    pub notify_on_claim: bool,
    pub allow_assignee_organization: bool,
    pub created_at: DateTimeUtc,
    /// Set while an administrator has the account disabled: it cannot sign
    /// in and its sessions do not authenticate.
    pub disabled_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// What an account may do: administrators manage the whole service.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccountRole {
    #[sea_orm(string_value = "USER")]
    User,
    #[sea_orm(string_value = "ADMIN")]
    Admin,
}

/// The account that column `.0` of `E` points at (a claim's claimer, a
/// license request's requester): a join for `find_also_linked`, where `E`
/// has no relation to accounts of its own (a claim names two).
pub struct Via<E: EntityTrait>(pub E::Column);

impl<E: EntityTrait> Linked for Via<E> {
    type FromEntity = E;
    type ToEntity = Entity;

    fn link(&self) -> Vec<RelationDef> {
        vec![E::belongs_to(Entity).from(self.0).to(Column::Id).into()]
    }
}
