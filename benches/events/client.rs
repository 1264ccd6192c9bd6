//! The subscribers' side: `graphql-transport-ws` connections, each
//! authenticated and subscribed to `events`.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig,
    },
};

use crate::common::Error;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The subscription every subscriber holds: fields that need no database
/// read to resolve, so that statements counted are the stream's own.
const SUBSCRIPTION: &str = "subscription($after: ID){ events(after: $after){ id occurredAt } }";

/// Time allowed for one connection's handshake, `connection_ack` included.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Open a `graphql-transport-ws` connection to `addr` (from the loopback
/// address `source` when given: each address has its own ephemeral ports),
/// authenticate and subscribe after `after`.
pub async fn subscribe(
    addr: SocketAddr,
    source: Option<IpAddr>,
    token: &str,
    after: Option<&str>,
) -> Result<Ws, Error> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(addr, source, token, after))
        .await
        .map_err(|_| "websocket handshake timed out")?
}

async fn handshake(
    addr: SocketAddr,
    source: Option<IpAddr>,
    token: &str,
    after: Option<&str>,
) -> Result<Ws, Error> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{addr}/graphql/ws").into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    // Small client buffers: thousands of idle clients live in one process.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        request,
        MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await?;
    ws.send(Message::text(
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}})
            .to_string(),
    ))
    .await?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.contains("connection_ack") => {}
        other => return Err(format!("no connection_ack: {other:?}").into()),
    }
    ws.send(Message::text(
        json!({"type": "subscribe", "id": "1", "payload": {"query": SUBSCRIPTION, "variables": {"after": after}}})
            .to_string(),
    ))
    .await?;
    Ok(ws)
}

/// Open one idle subscription per token, `concurrency` handshakes at a time.
pub async fn open_idle(
    addr: SocketAddr,
    source: Option<IpAddr>,
    tokens: &[String],
    after: Option<&str>,
    concurrency: usize,
) -> Result<(Vec<Ws>, Duration), Error> {
    let started = Instant::now();
    let after: Option<Arc<str>> = after.map(Arc::from);
    let sockets: Vec<Result<Ws, Error>> = stream::iter(tokens.iter().cloned())
        .map(|t| {
            let after = after.clone();
            async move { subscribe(addr, source, &t, after.as_deref()).await }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let sockets = sockets.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((sockets, started.elapsed()))
}

/// A message of the subscription, as far as the bench cares.
pub enum Frame {
    /// An event: its `id` (the cursor) and `occurredAt`.
    Event {
        id: String,
        occurred_at: String,
    },
    /// The stream failed (`error`, or `next` carrying errors).
    Error(String),
    /// The stream ended.
    Complete,
    Other,
}

pub fn frame(message: &Message) -> Frame {
    let Message::Text(text) = message else {
        return Frame::Other;
    };
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Frame::Other;
    };
    match message["type"].as_str() {
        Some("next") => {
            if let Some(errors) = message["payload"].get("errors") {
                return Frame::Error(errors.to_string());
            }
            let event = &message["payload"]["data"]["events"];
            match event["id"].as_str() {
                Some(id) => Frame::Event {
                    id: id.to_owned(),
                    occurred_at: event["occurredAt"].as_str().unwrap_or_default().to_owned(),
                },
                None => Frame::Error(format!("event without an id: {message}")),
            }
        }
        Some("error") => Frame::Error(message["payload"].to_string()),
        Some("complete") => Frame::Complete,
        _ => Frame::Other,
    }
}
