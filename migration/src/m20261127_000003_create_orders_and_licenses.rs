use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000003_create_orders_and_licenses"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Orders::Table)
                    .col(big_pk_auto(Orders::Id))
                    // The account holding the owner's rights (changes on transfer).
                    .col(big_integer(Orders::OwnerId))
                    // Set when bought for an organization: its admins share the owner's rights.
                    .col(big_integer_null(Orders::OrganizationId))
                    .col(string_len(Orders::Product, 100))
                    .col(integer(Orders::Quantity))
                    // PENDING_PAYMENT or PAID.
                    .col(string_len(Orders::Status, 32))
                    // Per-order override of the owner's claim setting; NULL inherits it.
                    .col(boolean_null(Orders::RequireManualApproval))
                    // How many devices each key of this order may be activated on.
                    .col(integer(Orders::DeviceLimit).default(1))
                    .col(timestamp_with_time_zone(Orders::CreatedAt))
                    .col(timestamp_with_time_zone_null(Orders::PaidAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Orders::Table, Orders::OwnerId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("orders_owner")
                    .table(Orders::Table)
                    .col(Orders::OwnerId)
                    .col(Orders::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Licenses::Table)
                    .col(big_pk_auto(Licenses::Id))
                    .col(big_integer(Licenses::OrderId))
                    // XXXX-XXXX-XXXX-XXXX, Crockford base32; unique across the store.
                    .col(string_len_uniq(Licenses::Key, 19))
                    // Normalised (trimmed, lower-case) email the key is assigned to, if any.
                    .col(string_len_null(Licenses::AssigneeEmail, 254))
                    .col(timestamp_with_time_zone_null(Licenses::AssignedAt))
                    // Organization the key is bound to: both set or both NULL.
                    .col(string_len_null(Licenses::OrganizationName, 200))
                    .col(string_len_null(Licenses::OrganizationSiret, 14))
                    .col(timestamp_with_time_zone(Licenses::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Licenses::Table, Licenses::OrderId)
                            .to(Orders::Table, Orders::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("licenses_order")
                    .table(Licenses::Table)
                    .col(Licenses::OrderId)
                    .col(Licenses::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("licenses_assignee_email")
                    .table(Licenses::Table)
                    .col(Licenses::AssigneeEmail)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Licenses::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Orders::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    Id,
    OwnerId,
    OrganizationId,
    Product,
    Quantity,
    Status,
    RequireManualApproval,
    DeviceLimit,
    CreatedAt,
    PaidAt,
}

#[derive(DeriveIden)]
enum Licenses {
    Table,
    Id,
    OrderId,
    Key,
    AssigneeEmail,
    AssignedAt,
    OrganizationName,
    OrganizationSiret,
    CreatedAt,
}
