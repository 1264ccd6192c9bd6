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
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use futures_util::future::{BoxFuture, FutureExt as _, Shared};

use chrono::{DateTime, Duration, Utc};
use entity::idempotency_key;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter, Set, Statement,
    sea_query::OnConflict,
};

use super::rounds::Rounds;
use crate::{
    db::RELAXED_COMMIT,
    error::{ApiResult, AppError},
};

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
#[derive(Debug, Clone)]
pub enum Begin {
    /// This is the first attempt, holding row `id`: keep its answer
    /// ([`KeyRows::finish`]) or forget the key ([`abandon`]).
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

/// The rows of keys, taken one of two ways ([`Attempt`]) and their
/// answers kept in [`Rounds`] on PostgreSQL: one relaxed statement
/// ([`RELAXED_COMMIT`]) for every answer that requests of this instance
/// are waiting to keep (and, under load, for every key they are waiting to
/// take), so that a key costs a share of a statement rather than one of its
/// own. On SQLite, whose writes go one at a time anyway, each request
/// writes its own.
#[derive(Clone)]
pub struct KeyRows {
    db: DatabaseConnection,
    /// PostgreSQL's.
    writers: Option<Writers>,
    /// Keyed attempts running on this instance.
    running: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Writers {
    takes: Rounds<Take, Option<i64>>,
    records: Rounds<Record, ()>,
}

/// A first attempt's insert in a round: answered with the row's id, or
/// `None` when the key was taken already.
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

/// How long a round of answers waits for more once its first arrives. An
/// answer is recorded after it is sent, so nobody waits for it but a retry
/// of a request still running, which looks again after 5, 10, 20 … ms;
/// the wait lets even a lone client's answers share statements (about ten
/// of a client sending one claim after the other).
const RECORD_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

impl KeyRows {
    /// The writer of `db`'s key rows; on PostgreSQL it starts the tasks
    /// that write them in rounds (they end with the last clone).
    pub fn new(db: DatabaseConnection) -> Self {
        let writers = (db.get_database_backend() == DbBackend::Postgres).then(|| Writers {
            takes: Rounds::start(db.clone(), None, take_round),
            records: Rounds::start(db.clone(), Some(RECORD_LINGER), record_round),
        });
        Self {
            db,
            writers,
            running: Arc::default(),
        }
    }

    /// An attempt at `caller`'s mutation sent with `key`, whose body hashes
    /// to `body_hash`. Alone on this instance, its key goes into its first
    /// change's transaction; with other keyed attempts running (PostgreSQL),
    /// into the next round of keys, at once, while the mutation starts.
    pub async fn attempt(
        &self,
        caller: String,
        key: String,
        body_hash: String,
        now: DateTime<Utc>,
    ) -> Arc<Attempt> {
        let others = self.running.fetch_add(1, Ordering::Relaxed);
        let running = Running {
            count: self.running.clone(),
            stopped: AtomicBool::new(false),
        };
        let (gate, round) = match &self.writers {
            Some(writers) if others > 0 => {
                let take = Take {
                    caller: caller.clone(),
                    key: key.clone(),
                    body_hash: body_hash.clone(),
                    now,
                };
                let taken = writers.takes.submit(take).await;
                let taken = async move {
                    Arc::new(match taken {
                        Ok(answer) => answer.await,
                        Err(error) => Err(error),
                    })
                };
                (Gate::BeforeBegin, Some(taken.boxed().shared()))
            }
            _ => (Gate::InTransaction, None),
        };
        Arc::new(Attempt {
            caller,
            key,
            body_hash,
            now,
            gate,
            round,
            held: std::sync::Mutex::new(Held::No),
            wrote: AtomicBool::new(false),
            running,
        })
    }

    /// Take `attempt`'s key now, in a transaction of its own, or tell what
    /// became of it: for a mutation that ran without any change taking
    /// the key ([`Attempt::settled`] found nothing).
    pub async fn take_alone(&self, attempt: &Attempt) -> ApiResult<Begin> {
        settle(&self.db, attempt).await
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

/// What another attempt made of `attempt`'s key, read without writing
/// anything: for an attempt whose answer is not to be kept and that took
/// no key (a retry refused before it wrote, e.g. `RATE_LIMITED`), which is
/// answered as a retry all the same. `None` when nobody holds the key.
pub async fn peek(db: &DatabaseConnection, attempt: &Attempt) -> ApiResult<Option<Begin>> {
    let found = find_row(db, &attempt.caller, &attempt.key).await?;
    let Some(found) = found.filter(|row| !lapsed(row, attempt.now)) else {
        return Ok(None);
    };
    if found.body_hash != attempt.body_hash {
        return Ok(Some(Begin::OtherBody));
    }
    Ok(Some(match recorded(found) {
        Some(response) => Begin::Replay { response },
        None => Begin::InFlight,
    }))
}

/// The row of `caller`'s `key`, if any.
async fn find_row(
    db: &impl ConnectionTrait,
    caller: &str,
    key: &str,
) -> Result<Option<idempotency_key::Model>, DbErr> {
    idempotency_key::Entity::find()
        .filter(idempotency_key::Column::Caller.eq(caller))
        .filter(idempotency_key::Column::Key.eq(key))
        .one(db)
        .await
}

/// Whether `row` is expired, or a first attempt's that died with its
/// instance: the next attempt takes its key over.
fn lapsed(row: &idempotency_key::Model, now: DateTime<Utc>) -> bool {
    let abandoned = row.state == RUNNING && row.created_at <= now - RUNNING_LEASE;
    row.expires_at <= now || abandoned
}

/// Take `attempt`'s key in a transaction of its own, or tell what became
/// of it.
async fn settle(db: &DatabaseConnection, attempt: &Attempt) -> ApiResult<Begin> {
    let txn = relaxed(db).await?;
    let begun = begin_in(&txn, attempt).await?;
    txn.commit().await?;
    attempt.hold(&begun, false);
    Ok(begun)
}

tokio::task_local! {
    /// The keyed mutation this task runs ([`Attempt::run`]).
    static ATTEMPT: Arc<Attempt>;
}

/// An attempt at a mutation sent with an `Idempotency-Key`
/// ([`KeyRows::attempt`]). Its key is taken one of two ways, both before
/// the mutation writes anything; a mutation that finds its key held by
/// another attempt writes nothing, and its answer is thrown away for that
/// attempt's.
/// - Alone on its instance, by the mutation's first change, in that
///   change's own transaction ([`take_with`], called by
///   [`super::Ctx::begin_write`]): no round trip of its own, and the row
///   commits if and only if the change does.
/// - With other keyed attempts running, in the next round of keys, sent
///   as the attempt starts; its first change waits for the round before it
///   begins ([`before_write`]). A statement per round costs less than one
///   per key, and the wait overlaps the mutation's start.
pub struct Attempt {
    caller: String,
    key: String,
    body_hash: String,
    now: DateTime<Utc>,
    /// When its mutation's changes wait for the key.
    gate: Gate,
    /// The round the key was sent in: its row's id, or `None` when the key
    /// was taken already.
    round: Option<RoundTake>,
    held: std::sync::Mutex<Held>,
    /// Whether a change of the mutation committed ([`note_commit`]).
    wrote: AtomicBool,
    running: Running,
}

/// A key sent in a round ([`Take`]), awaited by whoever needs it first.
type RoundTake = Shared<BoxFuture<'static, Arc<ApiResult<Option<i64>>>>>;

/// Counts an [`Attempt`] among those running until its mutation has run
/// ([`Running::stop`]; it is dropped then, or with the attempt).
struct Running {
    count: Arc<AtomicUsize>,
    stopped: AtomicBool,
}

impl Running {
    fn stop(&self) {
        if !self.stopped.swap(true, Ordering::Relaxed) {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// When an [`Attempt`]'s changes take or wait for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Inserted by the first change's transaction as it begins: on SQLite,
    /// and on PostgreSQL when no other keyed attempt runs on the instance
    /// (a round of one would cost a statement and a round trip of its own).
    InTransaction,
    /// PostgreSQL, with other keyed attempts running: the key is sent in a
    /// round as the attempt starts, and the first change waits for it
    /// before it begins (never while holding a connection, which the round
    /// needs: a pool held by waiting changes would never free one).
    BeforeBegin,
}

/// How far an [`Attempt`] holds its key.
#[derive(Debug, Clone)]
enum Held {
    /// Not yet: no change of the mutation committed.
    No,
    /// Inserted as row `id` by a change not yet committed.
    Pending(i64),
    /// Row `id`, committed.
    Yes(i64),
    /// Another attempt holds it: what became of it.
    Other(Begin),
}

impl Attempt {
    /// Run `work` (the mutation) as this attempt: its changes take the key.
    pub async fn run<F: Future>(self: &Arc<Self>, work: F) -> F::Output {
        let output = ATTEMPT.scope(self.clone(), work).await;
        // What is left (keeping the answer) does not compete for keys.
        self.running.stop();
        output
    }

    /// What became of the key so far: taken by a change of the mutation
    /// or by its round, or found held by another attempt; `None` while
    /// nothing took it (or the round found it taken already, by an attempt
    /// whose row [`settle`] or [`peek`] reads).
    pub async fn settled(&self) -> ApiResult<Option<Begin>> {
        if let Some(begun) = self.taken() {
            return Ok(Some(begun));
        }
        let Some(round) = &self.round else {
            return Ok(None);
        };
        match &*round.clone().await {
            Ok(Some(id)) => {
                let begun = Begin::Run { id: *id };
                self.hold(&begun, false);
                Ok(Some(begun))
            }
            Ok(None) => Ok(None),
            // Its round failed, the key blocked by another instance's
            // change (`ROUND_LOCK_TIMEOUT`) or the database: take it alone,
            // as if the round had found it taken.
            Err(error) => {
                error.log();
                Ok(None)
            }
        }
    }

    /// Whether a change of the mutation committed: its answer is then kept
    /// whatever it says (a later field's `RATE_LIMITED` or `INTERNAL`
    /// included), so that no retry repeats the change.
    pub fn wrote(&self) -> bool {
        self.wrote.load(Ordering::Relaxed)
    }

    /// What became of the key, once a change of the mutation took it or
    /// found it held by another attempt; `None` while none did.
    fn taken(&self) -> Option<Begin> {
        match &*self.held() {
            Held::Yes(id) => Some(Begin::Run { id: *id }),
            Held::Other(begun) => Some(begun.clone()),
            Held::No | Held::Pending(_) => None,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // Never held across an await, and no code under it panics.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Note what taking the key found; `pending` while the transaction
    /// that inserted it has not committed.
    fn hold(&self, begun: &Begin, pending: bool) {
        *self.held() = match begun {
            Begin::Run { id } if pending => Held::Pending(*id),
            Begin::Run { id } => Held::Yes(*id),
            other => Held::Other(other.clone()),
        };
    }
}

/// The key a change's transaction inserted: committed with it
/// ([`KeyHold::committed`]), or forgotten with its rollback (dropped), so
/// that the mutation's next change takes it again.
pub struct KeyHold {
    attempt: Arc<Attempt>,
    id: i64,
}

impl KeyHold {
    /// The transaction committed: the key is held for good.
    pub fn committed(self) {
        *self.attempt.held() = Held::Yes(self.id);
    }
}

impl Drop for KeyHold {
    fn drop(&mut self) {
        let mut held = self.attempt.held();
        if matches!(*held, Held::Pending(id) if id == self.id) {
            *held = Held::No;
        }
    }
}

/// Note that a change of the keyed mutation this task runs (if any) has
/// committed ([`Attempt::wrote`]); [`super::Write::commit`] calls it.
pub fn note_commit() {
    let _ = ATTEMPT.try_with(|attempt| attempt.wrote.store(true, Ordering::Relaxed));
}

fn held_elsewhere() -> AppError {
    AppError::conflict("another attempt holds this Idempotency-Key")
}

/// Take the key of the keyed mutation this task runs (if any, not taken
/// yet, and taken [`Gate::InTransaction`]) in `txn`, a change's
/// transaction that has just begun; an error when another attempt holds
/// it, so that the change writes nothing.
pub async fn take_with(txn: &impl ConnectionTrait) -> ApiResult<Option<KeyHold>> {
    let Ok(attempt) = ATTEMPT.try_with(Arc::clone) else {
        return Ok(None);
    };
    if attempt.gate != Gate::InTransaction {
        return Ok(None);
    }
    match attempt.settled().await? {
        Some(Begin::Run { .. }) => return Ok(None),
        Some(_) => return Err(held_elsewhere()),
        None => {}
    }
    if matches!(*attempt.held(), Held::Pending(_)) {
        // Two changes of one mutation at once: none does that, and which
        // would hold the key if one rolled back is not worth guessing.
        return Err(AppError::internal(
            "two changes at once in a mutation sent with an Idempotency-Key",
        ));
    }
    let begun = begin_in(txn, &attempt).await?;
    attempt.hold(&begun, true);
    match begun {
        Begin::Run { id } => Ok(Some(KeyHold { attempt, id })),
        _ => Err(held_elsewhere()),
    }
}

/// Before a change begins (and before a write outside
/// [`super::Ctx::begin_write`], the heartbeat's), for the keyed mutation
/// this task runs, if any: wait for its key's round; for a write outside a
/// transaction (`alone`), take the key in a transaction of its own. An
/// error when another attempt holds the key. Never called while holding a
/// connection: a round needs one, and a pool held by waiting changes
/// would never free one.
pub async fn before_write(db: &DatabaseConnection, alone: bool) -> ApiResult<()> {
    let Ok(attempt) = ATTEMPT.try_with(Arc::clone) else {
        return Ok(());
    };
    let begun = match attempt.settled().await? {
        Some(begun) => begun,
        // The change's own transaction takes it (`take_with`).
        None if attempt.gate == Gate::InTransaction && !alone => return Ok(()),
        // Taken already, or no transaction to take it in.
        None => settle(db, &attempt).await?,
    };
    match begun {
        Begin::Run { .. } => Ok(()),
        _ => Err(held_elsewhere()),
    }
}

/// How long a round of keys waits for a key another transaction inserted
/// and has not committed (a mutation on another instance that took it in
/// its own transaction): past that the round fails and is written again
/// one key at a time, and the blocked key's attempt waits alone
/// ([`Attempt::settled`]), so that one slow change elsewhere does not hold
/// up every keyed request of this instance.
const ROUND_LOCK_TIMEOUT: &str = "50ms";

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
                   AS t(caller, key, body_hash, created_at, expires_at), {RELAXED_COMMIT}, \
                   (SELECT set_config('lock_timeout', '{ROUND_LOCK_TIMEOUT}', true)) AS bounded \
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

async fn begin_in(db: &impl ConnectionTrait, attempt: &Attempt) -> ApiResult<Begin> {
    let Attempt {
        caller,
        key,
        body_hash,
        now,
        ..
    } = attempt;
    let (caller, key, body_hash, now) = (caller.as_str(), key.as_str(), body_hash.as_str(), *now);
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
        let Some(found) = find_row(db, caller, key).await? else {
            continue; // deleted meanwhile: try again
        };
        if lapsed(&found, now) {
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
    Ok(match find_row(db, caller, key).await? {
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
