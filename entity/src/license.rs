use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "licenses")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub order_id: i64,
    #[sea_orm(unique)]
    pub key: String,
    pub assignee_email: Option<String>,
    pub assigned_at: Option<DateTimeUtc>,
    pub organization_name: Option<String>,
    pub organization_siret: Option<String>,
    pub created_at: DateTimeUtc,
    /// The owner stopped the key (`suspendLicense`).
    pub suspended: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The order the key belongs to (a claim reads the key, its order and the
    /// order's owner in one statement).
    #[sea_orm(
        belongs_to = "super::order::Entity",
        from = "Column::OrderId",
        to = "super::order::Column::Id"
    )]
    Order,
}

impl Related<super::order::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Order.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
