use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000001_account_recovery"
    }
}

/// Password resets by email, and what a person needs to recognise their
/// sessions. An email change needs no table of its own: its confirmation
/// is an `email_verifications` row whose `email` is not the account's yet.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PasswordResets::Table)
                    .col(big_pk_auto(PasswordResets::Id))
                    .col(big_integer(PasswordResets::AccountId))
                    // SHA-256 of the single-use token sent by email.
                    .col(string_len_uniq(PasswordResets::TokenHash, 64))
                    .col(timestamp_with_time_zone(PasswordResets::CreatedAt))
                    // One hour after creation.
                    .col(timestamp_with_time_zone(PasswordResets::ExpiresAt))
                    // Set when the password is reset with it; a newer request
                    // deletes the unused ones.
                    .col(timestamp_with_time_zone_null(PasswordResets::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(PasswordResets::Table, PasswordResets::AccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("password_resets_account_id")
                    .table(PasswordResets::Table)
                    .col(PasswordResets::AccountId)
                    .to_owned(),
            )
            .await?;
        // One column per statement: SQLite alters one thing at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    // The `User-Agent` the session was opened with (truncated),
                    // so a person can tell their sessions apart.
                    .add_column(string_len_null(Sessions::UserAgent, 256))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    // The client address that signed in.
                    .add_column(string_len_null(Sessions::ClientAddr, 64))
                    .to_owned(),
            )
            .await?;
        // `me { sessions }`, and what a reset or a replaced sign-up revokes
        // or deletes for one account.
        manager
            .create_index(
                Index::create()
                    .name("sessions_account_id")
                    .table(Sessions::Table)
                    .col(Sessions::AccountId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("email_verifications_account_id")
                    .table(EmailVerifications::Table)
                    .col(EmailVerifications::AccountId)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (index, table) in [
            (
                "email_verifications_account_id",
                EmailVerifications::Table.into_iden(),
            ),
            ("sessions_account_id", Sessions::Table.into_iden()),
        ] {
            manager
                .drop_index(Index::drop().name(index).table(table).to_owned())
                .await?;
        }
        for column in [Sessions::ClientAddr, Sessions::UserAgent] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Sessions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(PasswordResets::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    AccountId,
    UserAgent,
    ClientAddr,
}

#[derive(DeriveIden)]
enum EmailVerifications {
    Table,
    AccountId,
}

#[derive(DeriveIden)]
enum PasswordResets {
    Table,
    Id,
    AccountId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}
