use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000102_idempotency_keys"
    }
}

/// The `Idempotency-Key`s of `POST /graphql` mutations, kept 24 h: a retry
/// with the same key and body gets `response` again, on any instance. The
/// unique (caller, key) pair is what makes two concurrent first attempts
/// safe: one insert wins, the other finds its row.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(big_pk_auto(IdempotencyKeys::Id))
                    // Whose key it is: `account:<id>` for a signed-in caller
                    // (session or API token), `anonymous:<body hash>` without
                    // a token.
                    .col(string_len(IdempotencyKeys::Caller, 80))
                    // The header's value (1 to 255 visible ASCII characters).
                    .col(string_len(IdempotencyKeys::Key, 255))
                    // SHA-256 (hex) of the request body the key was first used with.
                    .col(string_len(IdempotencyKeys::BodyHash, 64))
                    // `running` while the first request executes, `done` after.
                    .col(string_len(IdempotencyKeys::State, 16))
                    // The JSON answer of the first request, once `done`.
                    .col(text_null(IdempotencyKeys::Response))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    // 24 h after creation; the expiry sweeper deletes it then.
                    .col(timestamp_with_time_zone(IdempotencyKeys::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idempotency_keys_caller_key")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::Caller)
                    .col(IdempotencyKeys::Key)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idempotency_keys_expires_at")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Id,
    Caller,
    Key,
    BodyHash,
    State,
    Response,
    CreatedAt,
    ExpiresAt,
}
