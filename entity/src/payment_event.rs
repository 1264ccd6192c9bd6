use sea_orm::entity::prelude::*;

/// An event a payment provider delivered, recorded once (unique provider +
/// event id) in the transaction of its effect.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "payment_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub provider: String,
    pub event_id: String,
    pub kind: String,
    pub order_id: Option<i64>,
    pub payment_intent: Option<String>,
    pub outcome: String,
    pub received_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
