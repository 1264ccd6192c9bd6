use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

/// Connect to `url` (SQLite or PostgreSQL), bring the schema up to date, and
/// make sure new events sort after the stored ones.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(if url.starts_with("sqlite") { 8 } else { 32 })
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        // Ping a pooled connection only when it has been idle a while (the
        // server, a proxy or a firewall may have dropped it), not on every
        // checkout: that was one more round trip per statement outside a
        // transaction and per transaction.
        .test_before_acquire_if_idle_for(Duration::from_secs(10))
        .sqlx_logging(false);
    // WAL lets readers run beside the single writer; the busy timeout makes
    // concurrent writers wait for their turn instead of failing.
    options.map_sqlx_sqlite_opts(|sqlite| {
        sqlite
            .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
    });
    let db = Database::connect(options).await?;
    Migrator::up(&db, None).await?;
    let raised = crate::events::cursor::keep_ahead(&db).await?;
    if raised > 0 {
        tracing::warn!(
            raised,
            "transaction ids are behind the stored events (database restored into another \
             cluster?): new events are shifted after them"
        );
    }
    Ok(db)
}

/// Start a transaction that will write. On SQLite it takes the write lock at
/// `BEGIN` (`BEGIN IMMEDIATE`), so concurrent writers queue on the busy timeout
/// instead of failing with `SQLITE_BUSY` when a read-then-write transaction
/// tries to upgrade; on PostgreSQL it is a plain `BEGIN` and rows are locked
/// with `SELECT … FOR UPDATE` where a rule needs it.
pub async fn begin_write<C: sea_orm::TransactionTrait>(db: &C) -> Result<C::Transaction, DbErr> {
    db.begin_with_options(sea_orm::TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}
