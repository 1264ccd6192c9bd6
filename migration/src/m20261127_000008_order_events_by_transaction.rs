use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000008_order_events_by_transaction"
    }
}

/// Events are delivered in the order (writing transaction, id), and nothing is
/// written after commit any more (the relay used to number committed events
/// with a `position`, an UPDATE of every event row).
///
/// - `events.tx`: on PostgreSQL the id of the transaction that wrote the row
///   (`pg_current_xact_id()` plus `keyledger_tx_offset()`, by default, so
///   every writer sets it); readers
///   only take rows whose transaction is below the snapshot's xmin, i.e. from
///   transactions that have all ended, so no event can later appear before a
///   cursor. On SQLite, with one writer at a time, ids already follow commit
///   order: `tx` stays 0.
/// - `relay_state` now holds the last published (tx, id).
///
/// Events written before this migration keep tx 0 and are ordered by id, and
/// everything is counted as published: cursors change shape with this
/// migration (an old one is refused as `VALIDATION`), so clients start again
/// from the beginning, and they resubscribe after the restart anyway.
///
/// SQLite cannot drop a UNIQUE column without rebuilding the table, so there
/// the old `position` column stays, unused (NULL in every new row).
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let postgres = manager.get_database_backend() == DatabaseBackend::Postgres;
        let mut statements = vec![
            "ALTER TABLE events ADD COLUMN tx bigint NOT NULL DEFAULT 0",
            "DROP INDEX events_unpositioned",
            "CREATE INDEX events_by_transaction ON events (tx, id)",
            "ALTER TABLE relay_state ADD COLUMN published_tx bigint NOT NULL DEFAULT 0",
            "ALTER TABLE relay_state ADD COLUMN published_id bigint NOT NULL DEFAULT 0",
            "UPDATE relay_state SET published_id = (SELECT COALESCE(MAX(id), 0) FROM events)",
            "ALTER TABLE relay_state DROP COLUMN published_through",
        ];
        if postgres {
            statements.extend([
                // Added to transaction ids wherever they become `tx` or a
                // horizon. 0 until the database moves to a cluster whose
                // transaction counter is behind its events (a restored dump):
                // then `keyledger` raises it at start-up, so that new events
                // still sort after the old ones (`events::cursor::keep_ahead`).
                "CREATE FUNCTION keyledger_tx_offset() RETURNS bigint \
                 LANGUAGE sql STABLE AS 'SELECT 0::bigint'",
                // Set after the column exists, so old rows keep 0.
                "ALTER TABLE events ALTER COLUMN tx \
                 SET DEFAULT (pg_current_xact_id()::text::bigint + keyledger_tx_offset())",
                "ALTER TABLE events DROP COLUMN position",
            ]);
        }
        run(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let postgres = manager.get_database_backend() == DatabaseBackend::Postgres;
        let mut statements = Vec::new();
        if postgres {
            statements.push("ALTER TABLE events ADD COLUMN position bigint UNIQUE");
        }
        statements.extend([
            "UPDATE events SET position = ranked.rn FROM \
             (SELECT id, ROW_NUMBER() OVER (ORDER BY tx, id) AS rn FROM events) AS ranked \
             WHERE events.id = ranked.id",
            "ALTER TABLE relay_state ADD COLUMN published_through bigint NOT NULL DEFAULT 0",
            "UPDATE relay_state SET published_through = (SELECT COALESCE(MAX(position), 0) FROM events)",
            "ALTER TABLE relay_state DROP COLUMN published_id",
            "ALTER TABLE relay_state DROP COLUMN published_tx",
            "DROP INDEX events_by_transaction",
            "CREATE INDEX events_unpositioned ON events (id) WHERE position IS NULL",
            "ALTER TABLE events DROP COLUMN tx",
        ]);
        if postgres {
            statements.push("DROP FUNCTION keyledger_tx_offset()");
        }
        run(manager, &statements).await
    }
}

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}
