use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// With `id`, the delivery order and a subscriber's cursor: on
    /// PostgreSQL the id of the transaction that wrote the row (set by the
    /// column's default), on SQLite 0 (see `keyledger::events::cursor`).
    pub tx: i64,
    pub kind: String,
    pub actor_id: Option<i64>,
    pub order_id: Option<i64>,
    pub license_id: Option<i64>,
    pub claim_id: Option<i64>,
    pub request_id: Option<i64>,
    pub transfer_id: Option<i64>,
    #[sea_orm(column_type = "Text")]
    pub changes: String,
    pub occurred_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
