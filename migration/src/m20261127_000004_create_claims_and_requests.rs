use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000004_create_claims_and_requests"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Claims::Table)
                    .col(big_pk_auto(Claims::Id))
                    .col(big_integer(Claims::LicenseId))
                    .col(big_integer(Claims::ClaimerId))
                    // PENDING, APPROVED, DECLINED or EXPIRED.
                    .col(string_len(Claims::Status, 16))
                    .col(timestamp_with_time_zone(Claims::CreatedAt))
                    .col(timestamp_with_time_zone_null(Claims::DecidedAt))
                    // Who approved or declined; NULL when decided by the rules or by expiry.
                    .col(big_integer_null(Claims::DecidedBy))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Claims::Table, Claims::LicenseId)
                            .to(Licenses::Table, Licenses::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Claims::Table, Claims::ClaimerId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("claims_license_status", [Claims::LicenseId, Claims::Status]),
            ("claims_claimer", [Claims::ClaimerId, Claims::Id]),
            ("claims_status_created", [Claims::Status, Claims::CreatedAt]),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Claims::Table)
                        .col(cols[0].clone())
                        .col(cols[1].clone())
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(LicenseRequests::Table)
                    .col(big_pk_auto(LicenseRequests::Id))
                    .col(big_integer(LicenseRequests::RequesterId))
                    // Normalised email of the buyer asked; matched to an account once verified.
                    .col(string_len(LicenseRequests::BuyerEmail, 254))
                    // Untrusted text from the requester: escaped wherever it is rendered.
                    .col(text(LicenseRequests::Message))
                    // PENDING, APPROVED, DECLINED or EXPIRED.
                    .col(string_len(LicenseRequests::Status, 16))
                    // The key given on approval.
                    .col(big_integer_null(LicenseRequests::LicenseId))
                    .col(timestamp_with_time_zone(LicenseRequests::CreatedAt))
                    .col(timestamp_with_time_zone_null(LicenseRequests::DecidedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(LicenseRequests::Table, LicenseRequests::RequesterId)
                            .to(Accounts::Table, Accounts::Id),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "license_requests_buyer",
                [LicenseRequests::BuyerEmail, LicenseRequests::Status],
            ),
            (
                "license_requests_requester",
                [LicenseRequests::RequesterId, LicenseRequests::Id],
            ),
            (
                "license_requests_status_created",
                [LicenseRequests::Status, LicenseRequests::CreatedAt],
            ),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(LicenseRequests::Table)
                        .col(cols[0].clone())
                        .col(cols[1].clone())
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(OrderTransfers::Table)
                    .col(big_pk_auto(OrderTransfers::Id))
                    .col(big_integer(OrderTransfers::OrderId))
                    .col(big_integer(OrderTransfers::FromAccountId))
                    // Normalised email of the new owner; only that verified account may accept.
                    .col(string_len(OrderTransfers::ToEmail, 254))
                    // SHA-256 of the single-use confirmation token.
                    .col(string_len_uniq(OrderTransfers::TokenHash, 64))
                    // PENDING, ACCEPTED, CANCELLED or EXPIRED.
                    .col(string_len(OrderTransfers::Status, 16))
                    .col(timestamp_with_time_zone(OrderTransfers::CreatedAt))
                    .col(timestamp_with_time_zone(OrderTransfers::ExpiresAt))
                    .col(timestamp_with_time_zone_null(OrderTransfers::DecidedAt))
                    .col(big_integer_null(OrderTransfers::ToAccountId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(OrderTransfers::Table, OrderTransfers::OrderId)
                            .to(Orders::Table, Orders::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("order_transfers_order")
                    .table(OrderTransfers::Table)
                    .col(OrderTransfers::OrderId)
                    .col(OrderTransfers::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            OrderTransfers::Table.into_iden(),
            LicenseRequests::Table.into_iden(),
            Claims::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
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
}

#[derive(DeriveIden)]
enum Licenses {
    Table,
    Id,
}

#[derive(DeriveIden, Clone)]
enum Claims {
    Table,
    Id,
    LicenseId,
    ClaimerId,
    Status,
    CreatedAt,
    DecidedAt,
    DecidedBy,
}

#[derive(DeriveIden, Clone)]
enum LicenseRequests {
    Table,
    Id,
    RequesterId,
    BuyerEmail,
    Message,
    Status,
    LicenseId,
    CreatedAt,
    DecidedAt,
}

#[derive(DeriveIden)]
enum OrderTransfers {
    Table,
    Id,
    OrderId,
    FromAccountId,
    ToEmail,
    TokenHash,
    Status,
    CreatedAt,
    ExpiresAt,
    DecidedAt,
    ToAccountId,
}
