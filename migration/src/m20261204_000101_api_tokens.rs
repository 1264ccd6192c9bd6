use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000101_api_tokens"
    }
}

/// API tokens are sessions with scopes: a row of `sessions` whose `scopes`
/// is set. They share the session's token hash, expiry and revocation, so
/// every path that resolves, caches, revokes or re-checks a session (and a
/// password reset, which ends them all) treats tokens alike.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for column in [
            // The name its owner gave the token (at most 100 characters);
            // null for a session.
            string_len_null(Sessions::Name, 100),
            // The token's scopes, space-separated (`orders:read
            // licenses:read`); null for a session, which has every right of
            // its account.
            string_len_null(Sessions::Scopes, 200),
            // When the token last authenticated a request, updated at most
            // once a minute; null until its first use.
            timestamp_with_time_zone_null(Sessions::LastUsedAt),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Sessions::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Sessions::LastUsedAt, Sessions::Scopes, Sessions::Name] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Sessions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Name,
    Scopes,
    LastUsedAt,
}
