use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000007_indexes_for_load"
    }
}

/// Indexes found by `just bench`:
/// - the relay positions the events that have no position yet, oldest
///   first: a partial index holds just those (a handful at any time);
/// - the relay reads an event batch's recipients by event id, which the
///   primary key (account, event) cannot serve: without this index every
///   publish step scanned the whole recipients table;
/// - most keys are unassigned, so the assignee index only needs the assigned
///   ones (`assignee_email = …` implies NOT NULL, so lookups still use it),
///   and paying a 100,000-key order no longer writes 100,000 NULL entries.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("events_unpositioned")
                    .table(Events::Table)
                    .col(Events::Id)
                    .and_where(Expr::col(Events::Position).is_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("event_recipients_event")
                    .table(EventRecipients::Table)
                    .col(EventRecipients::EventId)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(Index::drop().name("licenses_assignee_email").to_owned())
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("licenses_assigned_email")
                    .table(Licenses::Table)
                    .col(Licenses::AssigneeEmail)
                    .and_where(Expr::col(Licenses::AssigneeEmail).is_not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("licenses_assigned_email").to_owned())
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("licenses_assignee_email")
                    .table(Licenses::Table)
                    .col(Licenses::AssigneeEmail)
                    .to_owned(),
            )
            .await?;
        for name in ["event_recipients_event", "events_unpositioned"] {
            manager
                .drop_index(Index::drop().name(name).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    Position,
}

#[derive(DeriveIden)]
enum EventRecipients {
    Table,
    EventId,
}

#[derive(DeriveIden)]
enum Licenses {
    Table,
    AssigneeEmail,
}
