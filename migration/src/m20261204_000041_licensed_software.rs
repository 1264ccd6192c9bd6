use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000041_licensed_software"
    }
}

/// Offline certificates, heartbeats and suspension (product.md "Licensed
/// software"):
/// - `signing_keys`: every public key certificates were ever signed with,
///   so that the JWKS still lists a retired one while certificates it
///   signed are in use;
/// - `orders.heartbeat_seconds`: a floating order's devices must report
///   this often, else their seat is freed;
/// - `activations.alive_until`: when a device of such an order is
///   deactivated unless it reports before;
/// - `licenses.suspended`: the owner's stop on a key.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SigningKeys::Table)
                    .col(big_pk_auto(SigningKeys::Id))
                    // RFC 7638 thumbprint of the public key (base64url SHA-256,
                    // 43 characters): the `kid` of the certificates it signed.
                    .col(string_len_uniq(SigningKeys::Kid, 64))
                    // The public key as a JWK (JSON text), served as is.
                    .col(text(SigningKeys::PublicJwk))
                    // When an instance first signed with it.
                    .col(timestamp_with_time_zone(SigningKeys::FirstUsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Orders::Table)
                    // Null: devices need not report. Else at least 60.
                    .add_column(integer_null(Orders::HeartbeatSeconds))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Licenses::Table)
                    .add_column(boolean(Licenses::Suspended).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Activations::Table)
                    // Null when the order needs no heartbeat. Else a
                    // heartbeat moves it on, and past it the sweeper
                    // deactivates the device (DEVICE_EXPIRED).
                    .add_column(timestamp_with_time_zone_null(Activations::AliveUntil))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("activations_alive_until")
                    .table(Activations::Table)
                    .col(Activations::AliveUntil)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("activations_alive_until")
                    .table(Activations::Table)
                    .to_owned(),
            )
            .await?;
        for (table, column) in [
            (
                Activations::Table.into_iden(),
                Activations::AliveUntil.into_iden(),
            ),
            (Licenses::Table.into_iden(), Licenses::Suspended.into_iden()),
            (
                Orders::Table.into_iden(),
                Orders::HeartbeatSeconds.into_iden(),
            ),
        ] {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(SigningKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    Id,
    Kid,
    PublicJwk,
    FirstUsedAt,
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    HeartbeatSeconds,
}

#[derive(DeriveIden)]
enum Licenses {
    Table,
    Suspended,
}

#[derive(DeriveIden)]
enum Activations {
    Table,
    AliveUntil,
}
