use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, Statement};

use crate::config::DatabaseArgs;

/// Connections per logical CPU of this instance in a PostgreSQL pool when
/// `DATABASE_POOL_SIZE` is unset (8 on a 2-core machine). More connections
/// than the work can use cost more than they give: on 2 cores the claims
/// benchmark did about a third more claims at concurrency 32 with a pool of
/// 8 than with 32 (bench/README.md), since 32 transactions at once
/// contend for the same cores, and sqlx's pool hands out its least recently
/// used connection, so every request met a colder PostgreSQL backend.
pub const POOL_CONNECTIONS_PER_CORE: u32 = 4;

/// The most connections a default PostgreSQL pool has, whatever the cores
/// (the former fixed size): PostgreSQL allows 100 connections by default,
/// and its own cores, not the instance's, bound what they can do.
pub const MAX_DEFAULT_POOL_SIZE: u32 = 32;

/// SQLite's pool when `DATABASE_POOL_SIZE` is unset: one writer works at a
/// time anyway; the rest read beside it (WAL).
pub const DEFAULT_POOL_SIZE_SQLITE: u32 = 8;

/// The pool size used for `url` when none is configured.
pub fn default_pool_size(url: &str) -> u32 {
    if url.starts_with("sqlite") {
        return DEFAULT_POOL_SIZE_SQLITE;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    (POOL_CONNECTIONS_PER_CORE * cores).min(MAX_DEFAULT_POOL_SIZE)
}

/// [`connect_with_pool`] as configured by `DATABASE_URL` and
/// `DATABASE_POOL_SIZE` (the server and every subcommand).
pub async fn connect_configured(database: &DatabaseArgs) -> Result<DatabaseConnection, DbErr> {
    connect_with_pool(&database.database_url, database.database_pool_size).await
}

/// [`connect_with_pool`] with the default pool size.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with_pool(url, None).await
}

/// Connect to `url` (SQLite or PostgreSQL) with a pool of `pool_size`
/// connections (default: [`default_pool_size`]), bring the schema up to
/// date, and make sure new events sort after the stored ones.
pub async fn connect_with_pool(
    url: &str,
    pool_size: Option<u32>,
) -> Result<DatabaseConnection, DbErr> {
    let pool_size = pool_size.unwrap_or_else(|| default_pool_size(url)).max(1);
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(pool_size)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        // Ping a pooled connection only when it has been idle a while (the
        // server, a proxy or a firewall may have dropped it), not on every
        // checkout: that was one more round trip per statement outside a
        // transaction and per transaction.
        .test_before_acquire_if_idle_for(Duration::from_secs(10))
        .sqlx_logging(false);
    // The busy timeout makes concurrent writers wait for their turn instead
    // of failing. The journal mode is not set here: WAL is a property of the
    // file, switched once by `use_wal` below before the pool opens.
    options.map_sqlx_sqlite_opts(|sqlite| {
        sqlite
            .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true)
    });
    if url.starts_with("sqlite") {
        use_wal(url).await?;
    }
    let db = Database::connect(options).await?;
    if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        migrate_under_lock(url).await?;
    } else {
        // SQLite: in one write transaction, which takes the database's write
        // lock at `BEGIN`: processes opening a fresh file together migrate
        // one after the other (the others wait on the busy timeout, then find
        // nothing to do) instead of each creating the same tables.
        let txn = begin_write(&db).await?;
        Migrator::up(&txn, None).await?;
        txn.commit().await?;
    }
    Ok(db)
}

/// How long a SQLite statement waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Put the SQLite file at `url` in WAL mode, which lets readers run beside
/// the single writer. WAL is stored in the file, so this is done once per
/// start on one connection of its own; the pool's connections then find it
/// set. Switching a file into WAL takes an exclusive lock that SQLite's busy
/// timeout does not wait for (processes opening a fresh file together get
/// `SQLITE_BUSY` at once), so a busy answer is retried here until the same
/// timeout has passed.
async fn use_wal(url: &str) -> Result<(), DbErr> {
    use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
    use std::str::FromStr;
    let not_opened =
        |e: sea_orm::sqlx::Error| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into()));
    let options = SqliteConnectOptions::from_str(url)
        .map_err(not_opened)?
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let deadline = tokio::time::Instant::now() + SQLITE_BUSY_TIMEOUT;
    loop {
        match options.connect().await {
            Ok(connection) => {
                connection.close().await.ok();
                return Ok(());
            }
            Err(e) if is_busy(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(not_opened(e)),
        }
    }
}

/// Whether SQLite answered `SQLITE_BUSY` or `SQLITE_LOCKED` (primary codes 5
/// and 6; extended codes keep the primary one in their low byte).
fn is_busy(error: &sea_orm::sqlx::Error) -> bool {
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok());
    matches!(code.map(|c| c & 0xff), Some(5 | 6))
}

/// A `FROM` item that turns `synchronous_commit` off for the transaction of
/// the statement it is in (PostgreSQL): `set_config(…, true)` holds until
/// that transaction ends, so even a single statement's own commit then
/// skips the wait for its WAL flush. For frequent writes whose loss with
/// PostgreSQL itself (the last fraction of a second before a crash) costs
/// little: idempotency keys' rows, heartbeats' deadlines.
pub const RELAXED_COMMIT: &str =
    "(SELECT set_config('synchronous_commit', 'off', true)) AS relaxed";

/// Key of the PostgreSQL advisory lock held while migrations run ("klmigrat"
/// in ASCII): fixed, so every instance of every version takes the same one,
/// and distinct from the relay's and the start-up cursor check's keys.
pub const MIGRATION_LOCK: i64 = 0x6b6c_6d69_6772_6174;

/// Bring a PostgreSQL schema up to date while holding [`MIGRATION_LOCK`], so
/// that instances starting together migrate one after the other (the later
/// ones then find nothing to do) instead of racing on `CREATE TABLE` (which
/// fails with a duplicate key in `pg_type`). An advisory lock belongs to a
/// session, so this runs on a pool of its own with a single connection, closed
/// at the end; if the process dies meanwhile, PostgreSQL releases the lock
/// with the session.
async fn migrate_under_lock(url: &str) -> Result<(), DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(1)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        // Waiting for the lock is waiting for another instance's migrations,
        // not for a connection: this pool never has a second user.
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    let lock_db = Database::connect(options).await?;
    let backend = lock_db.get_database_backend();
    let lock = |function: &str| {
        Statement::from_sql_and_values(
            backend,
            format!("SELECT {function}($1)"),
            [MIGRATION_LOCK.into()],
        )
    };
    let result = async {
        lock_db.execute_raw(lock("pg_advisory_lock")).await?;
        let migrated = Migrator::up(&lock_db, None).await;
        let unlocked = lock_db.execute_raw(lock("pg_advisory_unlock")).await;
        migrated.and(unlocked.map(|_| ()))
    }
    .await;
    lock_db.close().await.ok();
    result
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use clap::Parser;

    #[test]
    fn the_default_pool_follows_the_backend_and_the_cores() {
        let cores = std::thread::available_parallelism().unwrap().get() as u32;
        assert_eq!(default_pool_size("postgres://db/kl"), (4 * cores).min(32));
        assert_eq!(default_pool_size("sqlite://kl.db?mode=rwc"), 8);
    }

    #[test]
    fn a_pool_size_is_at_least_one() {
        let parse = |size: &str| Config::try_parse_from(["serve", "--database-pool-size", size]);
        assert_eq!(parse("3").unwrap().db.database_pool_size, Some(3));
        assert!(parse("0").is_err());
        assert!(parse("-1").is_err());
    }
}
