//! Stored answers of mutations sent with an `Idempotency-Key` (product.md
//! "Integrations": a client on a flaky network retries with the same key
//! and is sure the mutation happened once). The HTTP layer
//! (`http::idempotency`) decides when a request takes part; this module
//! keeps the rows.
//!
//! Race-safe without check-then-insert: the first attempt is the one whose
//! `INSERT … ON CONFLICT DO NOTHING` takes the unique (caller, key) pair;
//! every other attempt, on any instance, finds that row and answers from
//! it (the stored answer, or, while it runs, what [`look`] finds).
use chrono::{DateTime, Duration, Utc};
use entity::idempotency_key;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter, Set, Statement,
    sea_query::OnConflict,
};

use crate::{db::RELAXED_COMMIT, error::ApiResult};

/// How long a key and its answer are kept.
pub const TTL: Duration = Duration::hours(24);
/// Longest key, in characters (visible ASCII).
pub const MAX_KEY_LEN: usize = 255;
/// A first attempt still `running` after this long is taken to have died
/// with its instance (an attempt that outlives its client still finishes
/// and records its answer), and the next retry runs the mutation again.
pub const RUNNING_LEASE: Duration = Duration::minutes(5);
/// What a retry that meets a running first attempt is told to wait
/// (`extensions.retryAfter`, seconds).
pub const RETRY_AFTER_SECS: u64 = 1;

const RUNNING: &str = "running";
const DONE: &str = "done";

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Begin {
    /// This is the first attempt: run it, then [`finish`] or [`abandon`] row `id`.
    Run { id: i64 },
    /// Answered before: send this answer again.
    Replay { response: String },
    /// The key was used with another body.
    OtherBody,
    /// The first attempt is still running.
    InFlight,
}

/// A transaction whose commit does not wait for its WAL flush on
/// PostgreSQL (`synchronous_commit` off, as the relay does): a key's rows
/// then cost no disk wait of their own. The insert is made durable by the
/// mutation's own commit, which flushes the WAL before it; only the
/// answer's update can be lost, and only when PostgreSQL itself crashes
/// within a fraction of a second, and then the row stays `running` until
/// [`RUNNING_LEASE`].
async fn relaxed(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let txn = crate::db::begin_write(db).await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT * FROM {RELAXED_COMMIT}"),
        ))
        .await?;
    }
    Ok(txn)
}

/// Take `key` for `caller`'s request whose body hashes to `body_hash`, or
/// tell what became of it.
pub async fn begin(
    db: &DatabaseConnection,
    caller: &str,
    key: &str,
    body_hash: &str,
    now: DateTime<Utc>,
) -> ApiResult<Begin> {
    if db.get_database_backend() == DbBackend::Postgres
        && let Some(id) = take_relaxed(db, caller, key, body_hash, now).await?
    {
        return Ok(Begin::Run { id });
    }
    let txn = relaxed(db).await?;
    let begun = begin_in(&txn, caller, key, body_hash, now).await?;
    txn.commit().await?;
    Ok(begun)
}

/// The first attempt's insert on PostgreSQL in one statement, relaxed as
/// [`relaxed`] is ([`RELAXED_COMMIT`]): a round trip rather than four,
/// since a key is paid for on every mutation that carries one. `None` when
/// the key is taken.
async fn take_relaxed(
    db: &DatabaseConnection,
    caller: &str,
    key: &str,
    body_hash: &str,
    now: DateTime<Utc>,
) -> ApiResult<Option<i64>> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "INSERT INTO idempotency_keys \
                   (caller, key, body_hash, state, response, created_at, expires_at) \
                 SELECT $1, $2, $3, $4, NULL, $5, $6 FROM {RELAXED_COMMIT} \
                 ON CONFLICT (caller, key) DO NOTHING RETURNING id"
            ),
            [
                caller.into(),
                key.into(),
                body_hash.into(),
                RUNNING.into(),
                now.into(),
                (now + TTL).into(),
            ],
        ))
        .await?;
    Ok(row.map(|row| row.try_get::<i64>("", "id")).transpose()?)
}

async fn begin_in(
    db: &impl ConnectionTrait,
    caller: &str,
    key: &str,
    body_hash: &str,
    now: DateTime<Utc>,
) -> ApiResult<Begin> {
    // A row found expired or abandoned is deleted and the insert tried
    // again; a few rounds settle any interleaving of concurrent attempts.
    for _ in 0..4 {
        let row = idempotency_key::ActiveModel {
            caller: Set(caller.to_owned()),
            key: Set(key.to_owned()),
            body_hash: Set(body_hash.to_owned()),
            state: Set(RUNNING.to_owned()),
            response: Set(None),
            created_at: Set(now),
            expires_at: Set(now + TTL),
            ..Default::default()
        };
        let inserted = idempotency_key::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([
                    idempotency_key::Column::Caller,
                    idempotency_key::Column::Key,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec(db)
            .await;
        match inserted {
            Ok(done) => {
                return Ok(Begin::Run {
                    id: done.last_insert_id,
                });
            }
            Err(DbErr::RecordNotInserted) => {}
            Err(error) => return Err(error.into()),
        }
        let Some(found) = idempotency_key::Entity::find()
            .filter(idempotency_key::Column::Caller.eq(caller))
            .filter(idempotency_key::Column::Key.eq(key))
            .one(db)
            .await?
        else {
            continue; // deleted meanwhile: try again
        };
        let abandoned = found.state == RUNNING && found.created_at <= now - RUNNING_LEASE;
        if found.expires_at <= now || abandoned {
            idempotency_key::Entity::delete_many()
                .filter(idempotency_key::Column::Id.eq(found.id))
                .filter(
                    Condition::any()
                        .add(idempotency_key::Column::ExpiresAt.lte(now))
                        .add(
                            Condition::all()
                                .add(idempotency_key::Column::State.eq(RUNNING))
                                .add(idempotency_key::Column::CreatedAt.lte(now - RUNNING_LEASE)),
                        ),
                )
                .exec(db)
                .await?;
            continue;
        }
        if found.body_hash != body_hash {
            return Ok(Begin::OtherBody);
        }
        return Ok(match recorded(found) {
            Some(response) => Begin::Replay { response },
            None => Begin::InFlight,
        });
    }
    Ok(Begin::InFlight)
}

/// The answer `row` holds, once its first attempt has recorded one.
fn recorded(row: idempotency_key::Model) -> Option<String> {
    row.response.filter(|_| row.state == DONE)
}

/// What a retry waiting for a running first attempt finds of its row.
#[derive(Debug, PartialEq, Eq)]
pub enum Look {
    /// The answer, recorded.
    Recorded(String),
    /// Still running.
    Running,
    /// Deleted: its answer was not to be kept, or it expired.
    Gone,
}

/// The state of `caller`'s `key`, read without a transaction.
pub async fn look(db: &DatabaseConnection, caller: &str, key: &str) -> ApiResult<Look> {
    let found = idempotency_key::Entity::find()
        .filter(idempotency_key::Column::Caller.eq(caller))
        .filter(idempotency_key::Column::Key.eq(key))
        .one(db)
        .await?;
    Ok(match found {
        Some(row) => match recorded(row) {
            Some(response) => Look::Recorded(response),
            None => Look::Running,
        },
        None => Look::Gone,
    })
}

/// Keep the answer of the first attempt.
pub async fn finish(db: &DatabaseConnection, id: i64, response: String) -> ApiResult<()> {
    if db.get_database_backend() == DbBackend::Postgres {
        // One relaxed statement, as [`take_relaxed`]; a row swept or taken
        // over meanwhile updates nothing.
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "UPDATE idempotency_keys SET state = $1, response = $2 \
                 FROM {RELAXED_COMMIT} WHERE id = $3"
            ),
            [DONE.into(), response.into(), id.into()],
        ))
        .await?;
        return Ok(());
    }
    let txn = relaxed(db).await?;
    finish_in(&txn, id, response).await?;
    txn.commit().await?;
    Ok(())
}

async fn finish_in(db: &impl ConnectionTrait, id: i64, response: String) -> ApiResult<()> {
    idempotency_key::ActiveModel {
        id: Set(id),
        state: Set(DONE.to_owned()),
        response: Set(Some(response)),
        ..Default::default()
    }
    .update(db)
    .await
    .map(drop)
    .or_else(|error| match error {
        // Swept or taken over meanwhile: nothing to keep it in.
        DbErr::RecordNotUpdated => Ok(()),
        error => Err(error.into()),
    })
}

/// Forget the first attempt (its answer is not to be kept): a retry runs again.
pub async fn abandon(db: &impl ConnectionTrait, id: i64) -> ApiResult<()> {
    idempotency_key::Entity::delete_by_id(id).exec(db).await?;
    Ok(())
}

/// Delete the keys older than [`TTL`]; returns how many.
pub async fn sweep(db: &impl ConnectionTrait, now: DateTime<Utc>) -> ApiResult<u64> {
    let deleted = idempotency_key::Entity::delete_many()
        .filter(idempotency_key::Column::ExpiresAt.lte(now))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected)
}
