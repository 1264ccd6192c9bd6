use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000006_create_organizations_and_devices"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .col(big_pk_auto(Organizations::Id))
                    .col(string_len(Organizations::Name, 200))
                    .col(string_len(Organizations::Siret, 14))
                    .col(timestamp_with_time_zone(Organizations::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrganizationMembers::Table)
                    .col(big_integer(OrganizationMembers::OrganizationId))
                    // Normalised email; the member acts once an account has verified it.
                    .col(string_len(OrganizationMembers::Email, 254))
                    // ADMIN or MEMBER.
                    .col(string_len(OrganizationMembers::Role, 16))
                    .col(timestamp_with_time_zone(OrganizationMembers::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(OrganizationMembers::OrganizationId)
                            .col(OrganizationMembers::Email),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                OrganizationMembers::Table,
                                OrganizationMembers::OrganizationId,
                            )
                            .to(Organizations::Table, Organizations::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("organization_members_email")
                    .table(OrganizationMembers::Table)
                    .col(OrganizationMembers::Email)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Activations::Table)
                    .col(big_pk_auto(Activations::Id))
                    .col(big_integer(Activations::LicenseId))
                    // Opaque device identifier chosen by the licensed software.
                    .col(string_len(Activations::Fingerprint, 200))
                    .col(string_len(Activations::Name, 200))
                    .col(timestamp_with_time_zone(Activations::ActivatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Activations::Table, Activations::LicenseId)
                            .to(Licenses::Table, Licenses::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("activations_license_fingerprint")
                    .table(Activations::Table)
                    .col(Activations::LicenseId)
                    .col(Activations::Fingerprint)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Activations::Table.into_iden(),
            OrganizationMembers::Table.into_iden(),
            Organizations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Licenses {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Name,
    Siret,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OrganizationMembers {
    Table,
    OrganizationId,
    Email,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Activations {
    Table,
    Id,
    LicenseId,
    Fingerprint,
    Name,
    ActivatedAt,
}
