use sea_orm_migration::{prelude::*, schema::*, sea_orm::DatabaseBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000021_create_webhooks"
    }
}

/// Outbound webhooks (Standard Webhooks): the endpoints administrators
/// register, and one delivery row per event and endpoint, written in the
/// event's own transaction (the outbox), so a crash loses none and a rolled
/// back change sends none.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .col(big_pk_auto(WebhookEndpoints::Id))
                    // http(s) URL, at most 2,048 characters, checked against
                    // private addresses when written and again when sent.
                    .col(text(WebhookEndpoints::Url))
                    .col(text(WebhookEndpoints::Description).default(""))
                    // The event kinds sent, as ",CLAIM_CREATED,ORDER_PAID,"
                    // (so one `strpos`/`instr` matches a kind); "" = all.
                    .col(text(WebhookEndpoints::EventKinds).default(""))
                    .col(boolean(WebhookEndpoints::Enabled).default(true))
                    // `whsec_…`: the HMAC key must be readable to sign, so it
                    // is stored as is (shown to the administrator once).
                    .col(text(WebhookEndpoints::Secret))
                    // The secret before the last rotation, still signing (a
                    // second signature) until `previous_secret_until`.
                    .col(text_null(WebhookEndpoints::PreviousSecret))
                    .col(timestamp_with_time_zone_null(
                        WebhookEndpoints::PreviousSecretUntil,
                    ))
                    // Since when every attempt failed (NULL after a success):
                    // 5 days of it disable the endpoint.
                    .col(timestamp_with_time_zone_null(
                        WebhookEndpoints::FailingSince,
                    ))
                    .col(timestamp_with_time_zone(WebhookEndpoints::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookEndpoints::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(big_pk_auto(WebhookDeliveries::Id))
                    // With `id`, the order an endpoint's deliveries go out
                    // in: on PostgreSQL the writing transaction (as
                    // `events.tx`), on SQLite 0.
                    .col(big_integer(WebhookDeliveries::Tx).default(0))
                    .col(big_integer(WebhookDeliveries::EndpointId))
                    .col(big_integer(WebhookDeliveries::EventId))
                    // PENDING, SUCCEEDED or FAILED (for good).
                    .col(string_len(WebhookDeliveries::Status, 16))
                    // Attempts made so far.
                    .col(integer(WebhookDeliveries::Attempt).default(0))
                    .col(timestamp_with_time_zone(WebhookDeliveries::NextAttemptAt))
                    // Reserved by an instance sending it until then.
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::LeasedUntil,
                    ))
                    // The last attempt's HTTP status (NULL: no answer) and
                    // at most 1 KiB of its body or of the error.
                    .col(integer_null(WebhookDeliveries::ResponseStatus))
                    .col(text_null(WebhookDeliveries::ResponseExcerpt))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookDeliveries::Table, WebhookDeliveries::EndpointId)
                            .to(WebhookEndpoints::Table, WebhookEndpoints::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookDeliveries::Table, WebhookDeliveries::EventId)
                            .to(Events::Table, Events::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // The worker's read: each endpoint's pending deliveries in order.
        manager
            .create_index(
                Index::create()
                    .name("webhook_deliveries_queue")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::Status)
                    .col(WebhookDeliveries::Tx)
                    .col(WebhookDeliveries::Id)
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE webhook_deliveries ALTER COLUMN tx \
                     SET DEFAULT (pg_current_xact_id()::text::bigint + keyledger_tx_offset())",
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(WebhookDeliveries::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(WebhookEndpoints::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    Url,
    Description,
    EventKinds,
    Enabled,
    Secret,
    PreviousSecret,
    PreviousSecretUntil,
    FailingSince,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    Tx,
    EndpointId,
    EventId,
    Status,
    Attempt,
    NextAttemptAt,
    LeasedUntil,
    ResponseStatus,
    ResponseExcerpt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
}
