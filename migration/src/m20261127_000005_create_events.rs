use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000005_create_events"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The outbox and the append-only history in one table: a row is written in
        // the transaction of the change it describes.
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(big_pk_auto(Events::Id))
                    // Delivery order, assigned by the relay after commit, so that a
                    // subscriber's cursor never skips an event committed late (ids are
                    // allocated at insert time, before commit, and can commit out of order).
                    .col(big_integer_null(Events::Position).unique_key())
                    // LICENSE_ASSIGNED, CLAIM_CREATED, … (api.md "Subscription").
                    .col(string_len(Events::Kind, 32))
                    // The account that caused it; NULL for the system (expiry sweeper).
                    .col(big_integer_null(Events::ActorId))
                    .col(big_integer_null(Events::OrderId))
                    .col(big_integer_null(Events::LicenseId))
                    .col(big_integer_null(Events::ClaimId))
                    .col(big_integer_null(Events::RequestId))
                    .col(big_integer_null(Events::TransferId))
                    // JSON object {"before": …, "after": …} of the fields that changed.
                    .col(text(Events::Changes))
                    .col(timestamp_with_time_zone(Events::OccurredAt))
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("events_license", Events::LicenseId),
            ("events_order", Events::OrderId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Events::Table)
                        .col(col)
                        .col(Events::Id)
                        .to_owned(),
                )
                .await?;
        }

        // Who receives each event (owner, assignee, claimer, …), fixed at write time.
        manager
            .create_table(
                Table::create()
                    .table(EventRecipients::Table)
                    .col(big_integer(EventRecipients::AccountId))
                    .col(big_integer(EventRecipients::EventId))
                    .primary_key(
                        Index::create()
                            .col(EventRecipients::AccountId)
                            .col(EventRecipients::EventId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(EventRecipients::Table, EventRecipients::EventId)
                            .to(Events::Table, Events::Id),
                    )
                    .to_owned(),
            )
            .await?;

        // One row: how far the relay has published (by position), shared by instances.
        manager
            .create_table(
                Table::create()
                    .table(RelayState::Table)
                    .col(integer(RelayState::Id).primary_key())
                    .col(big_integer(RelayState::PublishedThrough).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(RelayState::Table)
                    .columns([RelayState::Id, RelayState::PublishedThrough])
                    .values_panic([1.into(), 0.into()])
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RelayState::Table.into_iden(),
            EventRecipients::Table.into_iden(),
            Events::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
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
    Kind,
    ActorId,
    OrderId,
    LicenseId,
    ClaimId,
    RequestId,
    TransferId,
    Changes,
    OccurredAt,
}

#[derive(DeriveIden)]
enum EventRecipients {
    Table,
    AccountId,
    EventId,
}

#[derive(DeriveIden)]
enum RelayState {
    Table,
    Id,
    PublishedThrough,
}
