//! Writes gathered into rounds: the frequent one-row statements of many
//! requests (the keys of `Idempotency-Key`s and their answers, heartbeats)
//! written together, one statement per round. On PostgreSQL a statement's
//! round trip and its backend's wake-up cost more than its row, so under
//! load each request pays a share of a statement rather than one of its
//! own.
//!
//! One task per kind of write takes every request waiting when it is free
//! and writes them with one call. A round waits `linger` after its first
//! request for others to join (none: a lone request is a round of one,
//! written at once). A round whose call fails (one request's input, a
//! deadlock with another transaction) is written again one request at a
//! time, so that only a request that fails by itself is told so; a panic
//! fails its round, not the writer.
use std::{panic::AssertUnwindSafe, time::Duration};

use futures_util::FutureExt as _;
use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiResult, AppError};

/// Most requests one round writes.
pub const ROUND_MAX: usize = 256;

/// A request waiting for its round, and where its answer goes.
struct Waiting<T, A> {
    request: T,
    reply: oneshot::Sender<ApiResult<A>>,
}

/// Where requests of one kind of write wait for their round. Cheap to
/// clone; the writing task ends with the last clone.
pub struct Rounds<T, A> {
    waiting: mpsc::Sender<Waiting<T, A>>,
}

impl<T, A> Clone for Rounds<T, A> {
    fn clone(&self) -> Self {
        Self {
            waiting: self.waiting.clone(),
        }
    }
}

impl<T, A> Rounds<T, A>
where
    T: Clone + Send + 'static,
    A: Send + 'static,
{
    /// Start the task writing rounds with `write`, which answers each of a
    /// round's requests, in order, or fails the whole round.
    pub fn start<F>(
        db: DatabaseConnection,
        linger: Option<Duration>,
        write: impl Fn(DatabaseConnection, Vec<T>) -> F + Send + Sync + 'static,
    ) -> Self
    where
        F: Future<Output = ApiResult<Vec<A>>> + Send + 'static,
    {
        let (waiting, rounds) = mpsc::channel(ROUND_MAX);
        tokio::spawn(write_rounds(db, rounds, linger, write));
        Self { waiting }
    }

    /// Hand `request` to the next round, and wait for its answer.
    pub async fn write(&self, request: T) -> ApiResult<A> {
        self.submit(request).await?.await
    }

    /// Hand `request` to the next round now; its answer comes with the
    /// future returned, so the caller can do other work meanwhile.
    pub async fn submit(
        &self,
        request: T,
    ) -> ApiResult<impl Future<Output = ApiResult<A>> + use<T, A>> {
        // Only a writer that panicked outside a round is gone while its
        // senders live.
        let stopped = || AppError::internal("a writer of rounds stopped");
        let (reply, answer) = oneshot::channel();
        self.waiting
            .send(Waiting { request, reply })
            .await
            .map_err(|_| stopped())?;
        Ok(async move { answer.await.map_err(|_| stopped())? })
    }
}

async fn write_rounds<T, A, F>(
    db: DatabaseConnection,
    mut rounds: mpsc::Receiver<Waiting<T, A>>,
    linger: Option<Duration>,
    write: impl Fn(DatabaseConnection, Vec<T>) -> F,
) where
    T: Clone,
    F: Future<Output = ApiResult<Vec<A>>>,
{
    let mut round = Vec::with_capacity(ROUND_MAX);
    while rounds.recv_many(&mut round, ROUND_MAX).await > 0 {
        if let Some(linger) = linger
            && round.len() < ROUND_MAX
        {
            tokio::time::sleep(linger).await;
            while round.len() < ROUND_MAX
                && let Ok(more) = rounds.try_recv()
            {
                round.push(more);
            }
        }
        let (requests, replies): (Vec<T>, Vec<_>) = round
            .drain(..)
            .map(|waiting| (waiting.request, waiting.reply))
            .unzip();
        let count = requests.len();
        match write_one(&write, &db, requests.clone()).await {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            // One request's input, or a deadlock with another transaction,
            // fails the whole statement (and so no request's write took
            // effect): each is written again alone, so that only a request
            // that fails by itself is told so.
            Err(error) if count > 1 => {
                tracing::warn!(
                    error = %error.detail(),
                    count,
                    "a round failed; writing its requests one at a time"
                );
                for (request, reply) in requests.into_iter().zip(replies) {
                    let answer = write_one(&write, &db, vec![request])
                        .await
                        .map(|mut answers| answers.remove(0));
                    if let Err(error) = &answer {
                        error.log();
                    }
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                error.log();
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// One call of `write`, with one answer per request; a panic in it is
/// `INTERNAL` for its requests, and the writer goes on with the next round.
async fn write_one<T, A, F>(
    write: &impl Fn(DatabaseConnection, Vec<T>) -> F,
    db: &DatabaseConnection,
    requests: Vec<T>,
) -> ApiResult<Vec<A>>
where
    F: Future<Output = ApiResult<Vec<A>>>,
{
    let count = requests.len();
    let answers = AssertUnwindSafe(write(db.clone(), requests))
        .catch_unwind()
        .await
        .map_err(|_| AppError::internal("a writer of rounds panicked"))??;
    if answers.len() != count {
        return Err(AppError::internal(format!(
            "a round of {count} requests got {} answers",
            answers.len()
        )));
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer that doubles each request and notes the size of each round.
    fn doubling(
        sizes: &Arc<Mutex<Vec<usize>>>,
    ) -> impl Fn(DatabaseConnection, Vec<u32>) -> std::future::Ready<ApiResult<Vec<u32>>> + use<>
    {
        let sizes = sizes.clone();
        move |_, round: Vec<u32>| {
            sizes.lock().unwrap().push(round.len());
            std::future::ready(Ok(round.into_iter().map(|n| n * 2).collect()))
        }
    }

    #[tokio::test]
    async fn requests_arriving_together_share_a_round_and_get_their_own_answers() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let rounds = Rounds::start(
            DatabaseConnection::default(),
            Some(Duration::from_millis(50)),
            doubling(&sizes),
        );
        let answers = futures_util::future::join_all((0..10).map(|n| rounds.write(n))).await;
        let answers: Vec<u32> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, (0..10).map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(*sizes.lock().unwrap(), [10]);
    }

    #[tokio::test]
    async fn without_linger_a_lone_request_is_a_round_of_one() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let rounds = Rounds::start(DatabaseConnection::default(), None, doubling(&sizes));
        assert_eq!(rounds.write(21).await.unwrap(), 42);
        assert_eq!(rounds.write(1).await.unwrap(), 2);
        assert_eq!(*sizes.lock().unwrap(), [1, 1]);
    }

    #[tokio::test]
    async fn a_request_that_fails_its_round_fails_alone() {
        // Fails any round holding a 13; doubles the others.
        let write = |_, round: Vec<u32>| {
            std::future::ready(if round.contains(&13) {
                Err(AppError::conflict("no"))
            } else {
                Ok(round.into_iter().map(|n| n * 2).collect())
            })
        };
        let rounds = Rounds::start(
            DatabaseConnection::default(),
            Some(Duration::from_millis(50)),
            write,
        );
        let answers = futures_util::future::join_all([1, 13, 2].map(|n| rounds.write(n))).await;
        assert!(matches!(
            answers[..],
            [Ok(2), Err(AppError::Conflict(_)), Ok(4)]
        ));
    }

    #[tokio::test]
    async fn a_writer_that_panics_or_answers_short_fails_its_requests_and_goes_on() {
        // A writer answering fewer requests than it was given is a bug:
        // INTERNAL to each, never a request left without an answer.
        let short = Rounds::<u32, u32>::start(
            DatabaseConnection::default(),
            Some(Duration::from_millis(20)),
            |_, _| std::future::ready(Ok(vec![])),
        );
        let answers = futures_util::future::join_all((0..3).map(|n| short.write(n))).await;
        assert!(
            answers
                .iter()
                .all(|answer| matches!(answer, Err(AppError::Internal(_))))
        );
        let panicking =
            Rounds::<u32, u32>::start(DatabaseConnection::default(), None, |_, round| async move {
                assert!(round[0] != 7, "a bug in a writer");
                Ok(round)
            });
        assert!(matches!(
            panicking.write(7).await,
            Err(AppError::Internal(_))
        ));
        assert_eq!(panicking.write(8).await.unwrap(), 8);
    }
}
