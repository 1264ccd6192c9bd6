//! `Idempotency-Key` on `POST /graphql` (api.md "Integrations"): a client
//! retries a mutation with the same key and body and gets the first answer
//! again, with `idempotent-replayed: true` and no second effect, on any
//! instance (the answers are kept in the database, `domain::idempotency`).
//!
//! - Only mutations take part. A query sent with a key runs as usual (it
//!   changes nothing, so there is nothing to make happen once).
//! - Keys belong to the caller: the account (whatever session or API token
//!   sends them), or, without a token, the body itself (an anonymous key
//!   is only ever answered to the same bytes).
//! - The same key with another body is `CONFLICT`; a retry while the first
//!   attempt runs waits up to a second for its answer, then is `CONFLICT`
//!   with `extensions.retryAfter`.
//! - Answers with a `RATE_LIMITED` or `INTERNAL` error, and requests that
//!   never executed (invalid document or variables), are not kept: the row
//!   is deleted and the next retry runs.
//! - Mutations whose answer holds a secret shown once ([`SECRET_BEARING`])
//!   are refused with a key, so that no secret is ever stored.
//!
//! A request without the header pays nothing; with it, a look at the
//! operation's root fields (in the document the request checks parsed), a
//! hash of the body, an insert (in the mutation's first transaction, or on
//! PostgreSQL under load a share of one statement with the other requests'
//! keys) and an update after its answer is sent (on PostgreSQL a share of
//! one statement): `domain::idempotency::{Attempt, KeyRows}`.
use axum::{
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::Response,
};

use super::{Server, over_http};
use crate::{
    domain::idempotency::{self, Begin, MAX_KEY_LEN, RETRY_AFTER_SECS},
    error::{ApiResult, AppError},
    graphql::{Admitted, Auth, limits::coded_error, operation, transport::Executed},
};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The response header of an answer sent again.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Mutations whose answer holds a secret shown once: refused with a key,
/// so that no secret is kept in the database. Add new ones here.
pub const SECRET_BEARING: &[&str] = &[
    "signIn",
    "createApiToken",
    "createWebhookEndpoint",
    "rotateWebhookSecret",
];

/// The request's key: absent, or 1 to 255 visible ASCII characters (else
/// `VALIDATION` with field `idempotencyKey`).
pub fn key(headers: &HeaderMap) -> Result<Option<String>, async_graphql::ServerError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let valid = values.next().is_none()
        && !bytes.is_empty()
        && bytes.len() <= MAX_KEY_LEN
        && bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    if !valid {
        return Err(coded_error(
            format!(
                "Idempotency-Key must be one value of 1 to {MAX_KEY_LEN} visible ASCII characters"
            ),
            "idempotencyKey",
            None,
        ));
    }
    Ok(value.to_str().ok().map(str::to_owned))
}

/// Whether a request with a key takes part.
pub enum Decision {
    /// Not a mutation (or not a valid document, or a bad token): run as usual.
    Ignore,
    /// A mutation that may not carry a key.
    Refuse(async_graphql::ServerError),
    /// A mutation to run once for `caller`.
    Keyed { caller: String },
}

pub fn decide(request: &mut Admitted, auth: &Auth, body_hash: &str) -> Decision {
    let caller = match auth {
        Auth::Viewer(viewer) => format!("account:{}", viewer.account_id),
        Auth::Anonymous => format!("anonymous:{body_hash}"),
        // Refused as UNAUTHENTICATED whatever it asks: nothing to keep.
        Auth::Invalid => return Decision::Ignore,
    };
    let operation_name = request.operation_name().map(str::to_owned);
    let Some(doc) = request.document() else {
        return Decision::Ignore;
    };
    let Some((ty, selection_set)) = operation::selected(doc, operation_name.as_deref()) else {
        return Decision::Ignore;
    };
    if ty != async_graphql::parser::types::OperationType::Mutation {
        return Decision::Ignore;
    }
    let root_fields = operation::root_fields(doc, selection_set);
    if let Some(field) = root_fields.iter().find(|f| SECRET_BEARING.contains(f)) {
        return Decision::Refuse(coded_error(
            format!(
                "{field} answers with a secret shown once and cannot be sent with an Idempotency-Key"
            ),
            "idempotencyKey",
            None,
        ));
    }
    Decision::Keyed { caller }
}

/// A request to run once.
pub struct Keyed {
    pub caller: String,
    pub key: String,
    pub body_hash: String,
}

/// How long a retry that meets a running first attempt waits for its
/// answer before it is told `CONFLICT` with `retryAfter`: a client sending
/// the same request twice at once then gets the answer twice rather than
/// an error, in the usual case of a first attempt that takes milliseconds.
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// The first look again after this long, each next one after twice as long.
const IN_FLIGHT_FIRST_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Run `request` unless its key was used: the first attempt executes, the
/// others are answered from its row. All of it runs in a task of its own,
/// from taking the key to recording the answer, so that a client going
/// away cannot leave a key taken with nobody to run its mutation.
///
/// The mutation runs as an `idempotency::Attempt`: its first change takes
/// the key before it writes anything. An attempt that finds the key held
/// by another has written nothing; its answer is thrown away, and it is
/// answered as a retry.
///
/// The first attempt's answer is sent before it is recorded (the record
/// waits for its round, `KeyRows::finish`). A retry that arrives in
/// between (a client that lost the answer cannot retry that fast, but one
/// sending twice at once can) finds the attempt running and waits for the
/// record ([`IN_FLIGHT_WAIT`]). The server waits for these tasks when it
/// stops ([`AppState::answers`]).
///
/// [`AppState::answers`]: crate::state::AppState::answers
pub async fn run_once(
    server: &Server,
    keyed: Keyed,
    request: Admitted,
    executed: Executed,
    media: over_http::MediaType,
) -> Response {
    let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
    let server = server.clone();
    server.state.answers.clone().spawn(async move {
        let attempt = server
            .state
            .idempotency
            .attempt(
                keyed.caller.clone(),
                keyed.key.clone(),
                keyed.body_hash.clone(),
                server.state.ctx.clock.now(),
            )
            .await;
        let response = attempt.run(server.graphql.run(request)).await;
        let ran = executed.get();
        // Once a change committed the answer is kept whatever it says, so
        // that no retry repeats the change.
        let kept = ran && (attempt.wrote() || !response.errors.iter().any(not_kept));
        let begun = match attempt.settled().await {
            Ok(Some(begun)) => Ok(begun),
            // No change took the key, and there is nothing to keep: unless
            // this is a retry refused before it wrote (say `RATE_LIMITED`),
            // to answer from the first attempt all the same.
            Ok(None) if !kept => match idempotency::peek(&server.state.ctx.db, &attempt).await {
                Ok(Some(begun)) => Ok(begun),
                Ok(None) => {
                    let _ = answer_tx.send(over_http::respond(media, response, ran));
                    return;
                }
                Err(error) => Err(error),
            },
            // No change took the key (the mutation wrote nothing): take
            // it now, unless another attempt holds it.
            Ok(None) => server.state.idempotency.take_alone(&attempt).await,
            Err(error) => Err(error),
        };
        let id = match taken(&server, &keyed, begun, media).await {
            Ok(id) => id,
            Err(answer) => {
                let _ = answer_tx.send(answer);
                return;
            }
        };
        if !kept {
            // Forgotten before the answer goes out, so that a retry right
            // after it runs again.
            if let Err(error) = idempotency::abandon(&server.state.ctx.db, id).await {
                error.log();
            }
            let _ = answer_tx.send(over_http::respond(media, response, ran));
            return;
        }
        let body = serde_json::to_string(&response).unwrap_or_default();
        let mut answer = over_http::executed_body(media, body.clone());
        answer.headers_mut().extend(response.http_headers);
        let _ = answer_tx.send(answer);
        if let Err(error) = server.state.idempotency.finish(id, body).await {
            // The effect happened; a retry will meet the running row until
            // its lease ends. Said in the log, not to the client.
            error.log();
        }
    });
    match answer_rx.await {
        Ok(answer) => answer,
        Err(_) => refused(
            media,
            AppError::internal("the first attempt ended without an answer"),
        ),
    }
}

/// What taking the key (`begun`) makes of this attempt: the first (its
/// row's id), or a retry answered with the recorded answer, `CONFLICT` for
/// another body, or `CONFLICT` with `retryAfter` when the first attempt is
/// still running after [`IN_FLIGHT_WAIT`] (or ended without keeping an
/// answer meanwhile: the client's next retry runs, as it would have
/// without the wait).
async fn taken(
    server: &Server,
    keyed: &Keyed,
    begun: ApiResult<Begin>,
    media: over_http::MediaType,
) -> Result<i64, Response> {
    let response = match begun {
        Ok(Begin::Run { id }) => return Ok(id),
        Ok(Begin::Replay { response }) => response,
        Ok(Begin::OtherBody) => {
            return Err(refused(
                media,
                AppError::conflict("this Idempotency-Key was used with another request"),
            ));
        }
        Ok(Begin::InFlight) => match recorded_answer(server, keyed).await {
            Ok(Some(response)) => response,
            Ok(None) => {
                return Err(refused(
                    media,
                    AppError::InFlight {
                        retry_after_secs: RETRY_AFTER_SECS,
                    },
                ));
            }
            Err(error) => return Err(refused(media, error)),
        },
        Err(error) => return Err(refused(media, error)),
    };
    let mut answer = over_http::executed_body(media, response);
    answer
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    Err(answer)
}

/// The answer a running first attempt records within [`IN_FLIGHT_WAIT`],
/// looked for with reads only (no write lock taken, no row inserted), so
/// that waiting retries cost the database little.
async fn recorded_answer(server: &Server, keyed: &Keyed) -> Result<Option<String>, AppError> {
    let give_up = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
    let mut poll = IN_FLIGHT_FIRST_POLL;
    loop {
        let left = give_up.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        tokio::time::sleep(poll.min(left)).await;
        poll *= 2;
        match idempotency::look(&server.state.ctx.db, &keyed.caller, &keyed.key).await? {
            idempotency::Look::Recorded(response) => return Ok(Some(response)),
            idempotency::Look::Running => {}
            idempotency::Look::Gone => return Ok(None),
        }
    }
}

/// Errors whose answers are not kept: a retry should run again.
fn not_kept(error: &async_graphql::ServerError) -> bool {
    let code = error.extensions.as_ref().and_then(|e| e.get("code"));
    matches!(code, Some(async_graphql::Value::String(code)) if code == "RATE_LIMITED" || code == "INTERNAL")
}

/// An answer of the gate itself (as an executed request's error).
fn refused(media: over_http::MediaType, error: AppError) -> Response {
    let mut error =
        async_graphql::Error::from(error).into_server_error(async_graphql::Pos::default());
    error.locations.clear();
    let mut answer = over_http::respond(
        media,
        async_graphql::Response::from_errors(vec![error]),
        true,
    );
    if answer.status() != StatusCode::OK {
        *answer.status_mut() = StatusCode::OK;
    }
    answer
}
