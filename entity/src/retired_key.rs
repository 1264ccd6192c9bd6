use sea_orm::entity::prelude::*;

/// A string a key no longer answers to once `valid_until` has passed.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "retired_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub license_id: i64,
    #[sea_orm(unique)]
    pub key: String,
    pub retired_at: DateTimeUtc,
    pub valid_until: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
