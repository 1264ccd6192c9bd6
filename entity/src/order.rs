use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub owner_id: i64,
    pub organization_id: Option<i64>,
    pub product: String,
    pub quantity: i32,
    pub status: OrderStatus,
    pub require_manual_approval: Option<bool>,
    pub device_limit: i32,
    pub created_at: DateTimeUtc,
    pub paid_at: Option<DateTimeUtc>,
    pub payment_provider: Option<String>,
    pub payment_event_id: Option<String>,
    pub payment_amount: Option<i64>,
    pub payment_currency: Option<String>,
    pub payment_intent: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub payment_problem: Option<String>,
    pub refunded_at: Option<DateTimeUtc>,
    /// Devices must report this often (seconds), else their seat is freed.
    pub heartbeat_seconds: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::account::Entity",
        from = "Column::OwnerId",
        to = "super::account::Column::Id"
    )]
    Owner,
}

/// The order's owner (an account), for reading both in one statement.
impl Related<super::account::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Owner.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

/// Where an order stands: keys exist once it is paid; a refunded order's
/// keys stay, and no longer work.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    #[sea_orm(string_value = "PENDING_PAYMENT")]
    PendingPayment,
    #[sea_orm(string_value = "PAID")]
    Paid,
    #[sea_orm(string_value = "REFUNDED")]
    Refunded,
}
