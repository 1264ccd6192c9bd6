use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000002_create_mail_queue"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MailQueue::Table)
                    .col(big_pk_auto(MailQueue::Id))
                    .col(string_len(MailQueue::Recipient, 254))
                    .col(string(MailQueue::Subject))
                    .col(text(MailQueue::TextBody))
                    .col(text(MailQueue::HtmlBody))
                    // Delivery attempts so far; the sender backs off exponentially.
                    .col(integer(MailQueue::Attempts).default(0))
                    .col(timestamp_with_time_zone(MailQueue::NextAttemptAt))
                    // NULL while waiting to be sent.
                    .col(timestamp_with_time_zone_null(MailQueue::SentAt))
                    // Last transport error, for operators; never shown to users.
                    .col(text_null(MailQueue::LastError))
                    .col(timestamp_with_time_zone(MailQueue::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("mail_queue_due")
                    .table(MailQueue::Table)
                    .col(MailQueue::SentAt)
                    .col(MailQueue::NextAttemptAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(MailQueue::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum MailQueue {
    Table,
    Id,
    Recipient,
    Subject,
    TextBody,
    HtmlBody,
    Attempts,
    NextAttemptAt,
    SentAt,
    LastError,
    CreatedAt,
}
