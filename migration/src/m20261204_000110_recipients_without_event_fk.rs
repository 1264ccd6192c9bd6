use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000110_recipients_without_event_fk"
    }
}

/// `event_recipients.event_id` loses its foreign key on PostgreSQL. An
/// event and its recipients are written by one statement (`events::record`)
/// and events are never deleted, so the key guarded nothing; but it checked
/// every recipient row against the event row, locking it each time: an
/// event for an organization's 1,000 admins took 8–12 ms to write instead
/// of 4, inside the writer's locks. SQLite keeps it (dropping it there
/// means rebuilding the table, and its one writer at a time writes few).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            // The constraint's name is the one the table's creation gave.
            manager
                .get_connection()
                .execute_unprepared(
                    "DO $$ DECLARE fk text; BEGIN \
                       SELECT conname INTO fk FROM pg_constraint \
                        WHERE conrelid = 'event_recipients'::regclass AND contype = 'f'; \
                       IF fk IS NOT NULL THEN \
                         EXECUTE format('ALTER TABLE event_recipients DROP CONSTRAINT %I', fk); \
                       END IF; \
                     END $$",
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE event_recipients ADD CONSTRAINT event_recipients_event_id_fkey \
                     FOREIGN KEY (event_id) REFERENCES events (id)",
                )
                .await?;
        }
        Ok(())
    }
}
