use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000001_create_accounts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .col(big_pk_auto(Accounts::Id))
                    // Trimmed and lower-cased: emails compare case-insensitively.
                    .col(string_len_uniq(Accounts::Email, 254))
                    // argon2id PHC string (algorithm, parameters, salt, hash).
                    .col(string(Accounts::PasswordHash))
                    // NULL until the address is proven by the verification email.
                    .col(timestamp_with_time_zone_null(Accounts::EmailVerifiedAt))
                    // USER or ADMIN; admins are granted only by `keyledger grant-admin`.
                    .col(string_len(Accounts::Role, 16).default("USER"))
                    // Claim settings (product.md "Claim settings"), with their defaults.
                    .col(boolean(Accounts::RequireManualApproval).default(false))
                    .col(boolean(Accounts::AllowOverrideAssignee).default(false))
                    .col(boolean(Accounts::NotifyOnClaim).default(true))
                    .col(boolean(Accounts::AllowAssigneeOrganization).default(false))
                    .col(timestamp_with_time_zone(Accounts::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(big_pk_auto(Sessions::Id))
                    .col(big_integer(Sessions::AccountId))
                    // SHA-256 of the bearer token; the token itself is never stored.
                    .col(string_len_uniq(Sessions::TokenHash, 64))
                    .col(timestamp_with_time_zone(Sessions::CreatedAt))
                    .col(timestamp_with_time_zone(Sessions::ExpiresAt))
                    // Set by sign-out; a revoked session never authenticates again.
                    .col(timestamp_with_time_zone_null(Sessions::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Sessions::Table, Sessions::AccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EmailVerifications::Table)
                    .col(big_pk_auto(EmailVerifications::Id))
                    .col(big_integer(EmailVerifications::AccountId))
                    // The address this token proves (the account's email when it was sent).
                    .col(string_len(EmailVerifications::Email, 254))
                    // SHA-256 of the single-use token sent by email.
                    .col(string_len_uniq(EmailVerifications::TokenHash, 64))
                    .col(timestamp_with_time_zone(EmailVerifications::CreatedAt))
                    .col(timestamp_with_time_zone(EmailVerifications::ExpiresAt))
                    .col(timestamp_with_time_zone_null(EmailVerifications::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(EmailVerifications::Table, EmailVerifications::AccountId)
                            .to(Accounts::Table, Accounts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            EmailVerifications::Table.into_iden(),
            Sessions::Table.into_iden(),
            Accounts::Table.into_iden(),
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
    Email,
    PasswordHash,
    EmailVerifiedAt,
    Role,
    RequireManualApproval,
    AllowOverrideAssignee,
    NotifyOnClaim,
    AllowAssigneeOrganization,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    AccountId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum EmailVerifications {
    Table,
    Id,
    AccountId,
    Email,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}
