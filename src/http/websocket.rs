//! `GET /graphql/ws`: subscriptions over `graphql-transport-ws` and the
//! legacy `graphql-ws` (subscriptions-transport-ws).
//!
//! async-graphql's `WebSocket` runs the protocol (acknowledgement, streams,
//! `next`/`complete`, pings); a gatekeeper in front of it enforces what it
//! does not: a deadline for `connection_init`, refusal codes from the
//! graphql-ws protocol (4403, 4401, 4409 rather than a generic 1002), and a
//! cap on subscriptions per socket. The gatekeeper resolves the token
//! itself and hands async-graphql the connection's data. Operations run
//! through the [`Endpoint`](crate::graphql::Endpoint), which checks each
//! as it checks an HTTP request.
use std::{collections::HashSet, str::FromStr, time::Duration};

use async_graphql::{
    Data,
    http::{ClientMessage, WebSocket as ProtocolMachine, WebSocketProtocols, WsMessage},
};
use axum::{
    extract::{
        State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{Sink, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::{Server, resolve_auth};
use crate::client_ip::ClientAddr;
use crate::graphql::{Auth, Loaders};

/// Initial read buffer of a websocket connection.
const WS_READ_BUFFER: usize = 256;
/// Largest websocket message accepted, as the largest HTTP body.
const WS_MAX_MESSAGE: usize = crate::graphql::limits::MAX_BODY_BYTES;
/// Time a client has to send `connection_init` after the upgrade (the
/// graphql-ws library's own server default): a socket that never does would
/// otherwise hold a connection for nothing.
const INIT_TIMEOUT: Duration = Duration::from_secs(3);
/// Subscriptions active at once on one socket. A client needs one `events`
/// subscription; 100 leaves room for several tabs' worth multiplexed on one
/// socket while bounding the streams (and hub entries) one socket can hold.
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// Longest close reason a close frame may carry (RFC 6455: 125-byte
/// control frame payload, 2 of them for the code).
const MAX_CLOSE_REASON: usize = 123;

/// The graphql-ws close codes used here (PROTOCOL.md).
mod code {
    pub const INVALID_MESSAGE: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const INIT_TIMEOUT: u16 = 4408;
    pub const DUPLICATE_ID: u16 = 4409;
    pub const TOO_MANY_INITS: u16 = 4429;
    pub const INTERNAL: u16 = 4500;
}

/// The sub-protocol the client asked for: the first of its list that is
/// known (as async-graphql-axum's extractor chooses).
fn requested_protocol(headers: &HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
}

/// Websocket subscriptions (`graphql-transport-ws` and legacy `graphql-ws`).
/// The token travels in `connection_init`'s payload, `{"authorization":
/// "Bearer TOKEN"}`, since browsers cannot set headers on a websocket. A bad
/// token refuses the connection (4403); no token leaves it anonymous. A
/// browser's `Origin` must be keyledger's own or an allowed one (403 before
/// the upgrade); clients that send none (programs) are not asked.
pub async fn graphql_ws(
    State(server): State<Server>,
    client: ClientAddr,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let config = &server.state.config;
        let allowed = origin.to_str().is_ok_and(|origin| {
            crate::origins::websocket_allowed(
                origin,
                host,
                &config.public_url(),
                &config.cors_allowed_origins,
            )
        });
        if !allowed {
            // A page of another site (cross-site websocket hijacking).
            return super::refusal::refuse(
                StatusCode::FORBIDDEN,
                super::refusal::coded(
                    "this origin may not open a websocket (CORS_ALLOWED_ORIGINS)".into(),
                    "FORBIDDEN",
                ),
            );
        }
    }
    let Some(protocol) = requested_protocol(&headers) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    upgrade
        // Answer with the protocol the session will speak (axum would pick
        // by the server's preference among those offered).
        .protocols([protocol.sec_websocket_protocol()])
        // tungstenite zero-fills its whole read buffer on each read, so its
        // 128 KiB default stays resident for every idle subscriber; GraphQL
        // messages are small (the buffer grows for a larger one).
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(WS_MAX_MESSAGE)
        .on_upgrade(move |socket| {
            Gatekeeper {
                server,
                client,
                protocol,
            }
            .run(socket)
        })
}

/// A server `complete` message (async-graphql writes the tag first).
#[derive(Deserialize)]
struct Completed {
    id: String,
}

/// `reason` cut to what a close frame can carry, on a character boundary.
fn close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

struct Gatekeeper {
    server: Server,
    client: ClientAddr,
    protocol: WebSocketProtocols,
}

/// What the gatekeeper decided about a client message.
// Lives for one message on the stack: boxing the message would cost an
// allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
enum Verdict {
    /// Hand it to the protocol machine.
    Forward(ClientMessage),
    /// Answered here; nothing to forward.
    Handled,
    /// Close the socket with this code and reason.
    Close(u16, String),
}

impl Gatekeeper {
    /// One socket, read in the select's branch and written in its handlers
    /// (which run once the branches are dropped): not split, since the
    /// halves' shared lock would be kept by every idle socket.
    ///
    /// This future is what every idle subscriber's task keeps, so it is kept
    /// small: not an `async fn`, whose arguments the compiler would store
    /// twice (as captures and as the body's locals); the deadline for
    /// `connection_init` freed once it is met; and a message judged from a
    /// boxed future, nothing of it held across an `.await` inline.
    #[allow(clippy::manual_async_fn)] // see above: an `async fn` stores its arguments twice
    fn run(self, mut socket: WebSocket) -> impl Future<Output = ()> + Send {
        async move {
            // The protocol machine reads the messages the gatekeeper lets
            // through. It drains them on every poll (its own callbacks resolve
            // at once), so the queue stays short; it is a linked list, with no
            // block of slots kept for the socket's life.
            let (forward, mut forwarded) = futures_channel::mpsc::unbounded::<Box<ClientMessage>>();
            let input = futures_util::stream::poll_fn(move |cx| {
                forwarded
                    .poll_next_unpin(cx)
                    .map(|message| message.map(|message| Ok(*message)))
            });
            // The connection's data, resolved by the gatekeeper at
            // `connection_init` before that message is forwarded.
            let (data_tx, data_rx) = tokio::sync::oneshot::channel::<Data>();
            let mut data_tx = Some(data_tx);
            let machine = ProtocolMachine::from_message_stream(
                self.server.graphql.clone(),
                input,
                self.protocol,
            )
            .on_connection_init(move |_payload| async move {
                data_rx
                    .await
                    .map_err(|_| async_graphql::Error::new("connection data missing"))
            });
            let mut machine = std::pin::pin!(machine);
            let mut init_deadline = Some(Box::pin(tokio::time::sleep(INIT_TIMEOUT)));
            let mut initialised = false;
            let mut active: HashSet<String> = HashSet::new();

            loop {
                tokio::select! {
                    () = until(&mut init_deadline), if !initialised => {
                        self.refuse(&mut socket, code::INIT_TIMEOUT, "Connection initialisation timeout").await;
                        return;
                    }
                    frame = socket.next() => {
                        // Boxed: the wait for the token's session (a database
                        // read) would otherwise be room kept in every idle
                        // socket's task. The message is moved into it, in a
                        // block of its own, so that none of it stays inline.
                        let judging = {
                            let parsed = match frame {
                                Some(Ok(Message::Text(text))) => ClientMessage::from_bytes(text.as_bytes()),
                                Some(Ok(Message::Binary(bytes))) => ClientMessage::from_bytes(&bytes),
                                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                            };
                            parsed.map(|message| {
                                Box::pin(self.judge(message, &mut initialised, &mut active, &mut data_tx, &mut socket))
                            })
                        };
                        let verdict = match judging.ok() {
                            Some(judging) => judging.await,
                            None => Verdict::Close(code::INVALID_MESSAGE, "Invalid message received".into()),
                        };
                        if initialised {
                            init_deadline = None;
                        }
                        match verdict {
                            Verdict::Forward(message) => {
                                if forward.unbounded_send(Box::new(message)).is_err() {
                                    return;
                                }
                            }
                            Verdict::Handled => {}
                            Verdict::Close(code, reason) => {
                                self.refuse(&mut socket, code, &reason).await;
                                return;
                            }
                        }
                    }
                    out = machine.next() => {
                        let Some(out) = out else {
                            let _ = socket.close().await;
                            return;
                        };
                        let message = match out {
                            WsMessage::Text(text) => {
                                if text.starts_with(r#"{"type":"complete""#)
                                    && let Ok(done) = serde_json::from_str::<Completed>(&text)
                                {
                                    active.remove(&done.id);
                                }
                                Message::Text(text.into())
                            }
                            WsMessage::Close(code, reason) => {
                                let _ = socket.send(close_frame(code, &reason)).await;
                                return;
                            }
                        };
                        if socket.send(message).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Decide what to do with one client message.
    async fn judge(
        &self,
        message: ClientMessage,
        initialised: &mut bool,
        active: &mut HashSet<String>,
        data_tx: &mut Option<tokio::sync::oneshot::Sender<Data>>,
        sink: &mut (impl Sink<Message> + Unpin),
    ) -> Verdict {
        match &message {
            ClientMessage::ConnectionInit { payload } => {
                let Some(data_tx) = data_tx.take() else {
                    return Verdict::Close(
                        code::TOO_MANY_INITS,
                        "Too many initialisation requests".into(),
                    );
                };
                let authorization = payload.as_ref().and_then(|payload| {
                    payload
                        .get("authorization")
                        .or_else(|| payload.get("Authorization"))
                        .map(|v| v.as_str().unwrap_or("invalid").to_owned())
                });
                let auth = match resolve_auth(&self.server.state, authorization.as_deref()).await {
                    Ok(Auth::Invalid) => {
                        return Verdict::Close(code::FORBIDDEN, "Forbidden".into());
                    }
                    Ok(auth) => auth,
                    Err(error) => {
                        tracing::warn!(error = %error.detail(), "websocket authentication failed");
                        return Verdict::Close(code::INTERNAL, "Internal server error".into());
                    }
                };
                let mut data = Data::default();
                data.insert(auth);
                data.insert(self.client);
                data.insert(Loaders::new(self.server.state.ctx.db.clone()));
                let _ = data_tx.send(data);
                *initialised = true;
                Verdict::Forward(message)
            }
            ClientMessage::Start { id, .. } => {
                if !*initialised {
                    return Verdict::Close(code::UNAUTHORIZED, "Unauthorized".into());
                }
                if active.contains(id) {
                    // The legacy protocol's reference server replaces the
                    // operation under a reused id, as async-graphql does.
                    if self.protocol == WebSocketProtocols::SubscriptionsTransportWS {
                        return Verdict::Forward(message);
                    }
                    return Verdict::Close(
                        code::DUPLICATE_ID,
                        format!("Subscriber for {id} already exists"),
                    );
                }
                if active.len() >= MAX_SUBSCRIPTIONS {
                    let _ = sink
                        .send(Message::Text(self.too_many_subscriptions(id).into()))
                        .await;
                    return Verdict::Handled;
                }
                active.insert(id.clone());
                Verdict::Forward(message)
            }
            ClientMessage::Stop { id } => {
                active.remove(id);
                Verdict::Forward(message)
            }
            ClientMessage::ConnectionTerminate => Verdict::Close(1000, String::new()),
            ClientMessage::Ping { .. } | ClientMessage::Pong { .. } => Verdict::Forward(message),
        }
    }

    /// The `error` message refusing subscription `id` over the cap: a
    /// limit's `VALIDATION` error (api.md "Errors"), as a list of GraphQL
    /// errors (graphql-transport-ws) or a single one (legacy).
    fn too_many_subscriptions(&self, id: &str) -> String {
        let error = json!({
            "message": format!("a connection may have at most {MAX_SUBSCRIPTIONS} active subscriptions"),
            "extensions": {"code": "VALIDATION", "field": "query", "limit": "subscriptions"},
        });
        let payload = match self.protocol {
            WebSocketProtocols::GraphQLWS => json!([error]),
            WebSocketProtocols::SubscriptionsTransportWS => error,
        };
        json!({"type": "error", "id": id, "payload": payload}).to_string()
    }

    /// Close the socket with `code`; the legacy protocol, which has no close
    /// codes of its own, first gets a `connection_error` saying why.
    async fn refuse(&self, sink: &mut (impl Sink<Message> + Unpin), code: u16, reason: &str) {
        if self.protocol == WebSocketProtocols::SubscriptionsTransportWS && code != 1000 {
            let error = json!({"type": "connection_error", "payload": {"message": reason}});
            let _ = sink.send(Message::Text(error.to_string().into())).await;
        }
        let _ = sink.send(close_frame(code, reason)).await;
    }
}

/// Wait for `deadline`, or forever once it is gone.
async fn until(deadline: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(deadline) => deadline.await,
        None => std::future::pending().await,
    }
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: close_reason(reason).into(),
    }))
}
