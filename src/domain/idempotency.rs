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
use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use entity::idempotency_key;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter, Set, Statement,
    sea_query::OnConflict,
};

use super::rounds::Rounds;
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
    /// This is the first attempt: run it, then [`KeyRows::finish`] or [`abandon`] row `id`.
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

/// The two writes a key costs on every mutation that carries one (the
/// first attempt's insert, and its answer), written on PostgreSQL in
/// [`Rounds`]: one relaxed statement ([`RELAXED_COMMIT`]) for every insert
/// (or answer) that requests of this instance are waiting for, so under
/// load a key costs a share of a statement rather than two of its own.
/// Inserts do not wait for their round to fill. On SQLite, whose writes go
/// one at a time anyway, each request writes its own.
#[derive(Clone)]
pub struct KeyRows {
    db: DatabaseConnection,
    /// PostgreSQL's.
    writers: Option<Writers>,
}

/// A first attempt's insert: answered with the row's id, or `None` when
/// the key was taken already.
#[derive(Clone)]
struct Take {
    caller: String,
    key: String,
    body_hash: String,
    now: DateTime<Utc>,
}

/// A first attempt's answer, to keep in row `id`.
#[derive(Clone)]
struct Record {
    id: i64,
    response: String,
}

#[derive(Clone)]
struct Writers {
    takes: Rounds<Take, Option<i64>>,
    records: Rounds<Record, ()>,
}

/// How long a round of answers waits for more once its first arrives. An
/// answer is recorded after it is sent, so nobody waits for it but a retry
/// of a request still running, which looks again after 5, 10, 20 … ms;
/// the wait lets even a lone client's answers share statements.
const RECORD_LINGER: std::time::Duration = std::time::Duration::from_millis(5);

impl KeyRows {
    /// The writer of `db`'s key rows; on PostgreSQL it starts the two
    /// tasks that write them in rounds (they end with the last clone).
    pub fn new(db: DatabaseConnection) -> Self {
        let writers = (db.get_database_backend() == DbBackend::Postgres).then(|| Writers {
            takes: Rounds::start(db.clone(), None, take_round),
            records: Rounds::start(db.clone(), Some(RECORD_LINGER), record_round),
        });
        Self { db, writers }
    }

    /// Take `key` for `caller`'s request whose body hashes to `body_hash`,
    /// or tell what became of it.
    pub async fn begin(
        &self,
        caller: &str,
        key: &str,
        body_hash: &str,
        now: DateTime<Utc>,
    ) -> ApiResult<Begin> {
        if let Some(writers) = &self.writers {
            let take = Take {
                caller: caller.to_owned(),
                key: key.to_owned(),
                body_hash: body_hash.to_owned(),
                now,
            };
            if let Some(id) = writers.takes.write(take).await? {
                return Ok(Begin::Run { id });
            }
        }
        // Taken already (or SQLite): read what became of it.
        let txn = relaxed(&self.db).await?;
        let begun = begin_in(&txn, caller, key, body_hash, now).await?;
        txn.commit().await?;
        Ok(begun)
    }

    /// Keep the answer of the first attempt of row `id`.
    pub async fn finish(&self, id: i64, response: String) -> ApiResult<()> {
        if let Some(writers) = &self.writers {
            return writers.records.write(Record { id, response }).await;
        }
        let txn = relaxed(&self.db).await?;
        finish_in(&txn, id, response).await?;
        txn.commit().await?;
        Ok(())
    }
}

/// One statement inserting a round's keys; each request's row id, or
/// `None` for a key taken before (or earlier in the round: only a key's
/// first request in the round is inserted, the others then read it).
async fn take_round(db: DatabaseConnection, round: Vec<Take>) -> ApiResult<Vec<Option<i64>>> {
    // A key's first request in the round, in (caller, key) order: every
    // instance's rounds then take their keys' index entries in one order,
    // and two rounds with the same keys cannot deadlock.
    let mut firsts: Vec<&Take> = round.iter().collect();
    firsts.sort_by(|a, b| (&a.caller, &a.key).cmp(&(&b.caller, &b.key)));
    firsts.dedup_by(|a, b| (&a.caller, &a.key) == (&b.caller, &b.key));
    let (mut callers, mut keys, mut hashes, mut created, mut expires) =
        (vec![], vec![], vec![], vec![], vec![]);
    for take in firsts {
        callers.push(take.caller.clone());
        keys.push(take.key.clone());
        hashes.push(take.body_hash.clone());
        created.push(take.now);
        expires.push(take.now + TTL);
    }
    // As arrays: PostgreSQL plans this statement again for each round's
    // length, but so simple an insert plans in about 0.03 ms (`EXPLAIN
    // ANALYZE`); the heartbeats' round, far costlier to plan, goes as one
    // JSON parameter instead (`heartbeats::beat_round`).
    let inserted = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "INSERT INTO idempotency_keys \
                   (caller, key, body_hash, state, response, created_at, expires_at) \
                 SELECT t.caller, t.key, t.body_hash, $6, NULL, t.created_at, t.expires_at \
                 FROM unnest($1::text[], $2::text[], $3::text[], \
                             $4::timestamptz[], $5::timestamptz[]) \
                   AS t(caller, key, body_hash, created_at, expires_at), {RELAXED_COMMIT} \
                 ON CONFLICT (caller, key) DO NOTHING RETURNING id, caller, key"
            ),
            [
                callers.into(),
                keys.into(),
                hashes.into(),
                created.into(),
                expires.into(),
                RUNNING.into(),
            ],
        ))
        .await?;
    let mut ids = HashMap::with_capacity(inserted.len());
    for row in inserted {
        let caller: String = row.try_get("", "caller")?;
        let key: String = row.try_get("", "key")?;
        ids.insert((caller, key), row.try_get::<i64>("", "id")?);
    }
    Ok(round
        .into_iter()
        .map(|take| ids.remove(&(take.caller, take.key)))
        .collect())
}

/// One statement keeping a round's answers; a row swept or taken over
/// meanwhile updates nothing.
async fn record_round(db: DatabaseConnection, round: Vec<Record>) -> ApiResult<Vec<()>> {
    let count = round.len();
    let (ids, responses): (Vec<i64>, Vec<String>) = round
        .into_iter()
        .map(|record| (record.id, record.response))
        .unzip();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!(
            "UPDATE idempotency_keys k SET state = $3, response = a.response \
             FROM unnest($1::bigint[], $2::text[]) AS a(id, response), {RELAXED_COMMIT} \
             WHERE k.id = a.id"
        ),
        [ids.into(), responses.into(), DONE.into()],
    ))
    .await?;
    Ok(vec![(); count])
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
