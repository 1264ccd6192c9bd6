use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000002_key_reissue"
    }
}

/// Strings a key no longer answers to. Reissuing a key (taking it from its
/// assignee, or the owner's `reissueLicense`) gives it a new string and
/// files the old one here: it keeps answering the licensed software for the
/// same key until `valid_until` (the owner's grace, none when the key
/// changed hands), then never again. Rows are kept after the grace so that a
/// string handed out once is never handed out again, and so that the string
/// a claimer used can be told from the current one.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RetiredKeys::Table)
                    .col(big_pk_auto(RetiredKeys::Id))
                    // The key (license) the string belonged to.
                    .col(big_integer(RetiredKeys::LicenseId))
                    // The former XXXX-XXXX-XXXX-XXXX: unique here, and never
                    // equal to a current key (the generator checks both).
                    .col(string_len_uniq(RetiredKeys::Key, 19))
                    // When the key got its next string.
                    .col(timestamp_with_time_zone(RetiredKeys::RetiredAt))
                    // Until then the string still validates, activates and
                    // deactivates the same key; equal to `retired_at` when no
                    // grace was given.
                    .col(timestamp_with_time_zone(RetiredKeys::ValidUntil))
                    .foreign_key(
                        ForeignKey::create()
                            .from(RetiredKeys::Table, RetiredKeys::LicenseId)
                            .to(Licenses::Table, Licenses::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("retired_keys_license")
                    .table(RetiredKeys::Table)
                    .col(RetiredKeys::LicenseId)
                    .col(RetiredKeys::RetiredAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RetiredKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Licenses {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum RetiredKeys {
    Table,
    Id,
    LicenseId,
    Key,
    RetiredAt,
    ValidUntil,
}
