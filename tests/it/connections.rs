//! Connections no anonymous client can hoard: the header deadline, the
//! global and per-client caps (on a server process of the test's own, so
//! that its sockets are not this process's), and the websocket gatekeeper's
//! refusals (init deadline, bad token, duplicate id, subscription cap,
//! subscribe before init).
use std::{
    net::{IpAddr, SocketAddr},
    process::Stdio,
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use crate::harness::{Options, TestApp, TestDb, signing_key_in, test_redis_url, unique};

/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(15);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Read until the peer closes; what it sent meanwhile. Fails after `within`.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close within {within:?}");
    String::from_utf8_lossy(&received).into_owned()
}

/// A TCP connection to `server` from the loopback address `from`. Retried:
/// the port picked at bind time, before the destination is known, may be
/// one still in TIME_WAIT towards the server.
async fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    let from: IpAddr = from.parse().expect("address");
    let mut attempts = 0;
    loop {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(SocketAddr::new(from, 0)).expect("bind");
        match socket.connect(server).await {
            Ok(stream) => return stream,
            Err(error) if attempts < 5 => {
                attempts += 1;
                eprintln!("connect from {from}: {error}; again");
            }
            Err(error) => panic!("connect from {from}: {error}"),
        }
    }
}

/// `GET path` on a connection of its own from `from`; the whole answer.
async fn get_from(from: &str, server: SocketAddr, path: &str) -> String {
    let mut stream = connect_from(from, server).await;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("request sent");
    read_to_close(&mut stream, PATIENCE).await
}

#[tokio::test]
async fn a_half_sent_request_line_is_closed_at_the_header_deadline() {
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|config| config.header_read_timeout_secs = 1),
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    let mut half = TcpStream::connect(app.addr).await.expect("connect");
    half.write_all(b"GET /healthz HT").await.expect("write");
    let mut silent = TcpStream::connect(app.addr).await.expect("connect");
    read_to_close(&mut half, Duration::from_secs(5)).await;
    read_to_close(&mut silent, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the deadline: {:?}",
        started.elapsed()
    );
    // A client that sends its request in time is served as before.
    let answer = get_from("127.0.0.1", app.addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A `keyledger serve` process of the test's own; killed when dropped.
struct ServerProcess {
    addr: SocketAddr,
    _child: tokio::process::Child,
    _db: TestDb,
}

impl ServerProcess {
    async fn start(env: &[(&str, &str)]) -> ServerProcess {
        let db = TestDb::create().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyledger"));
        command
            .arg("serve")
            .current_dir(db.mail.path())
            .env("DATABASE_URL", &db.url)
            .env("BIND_ADDR", addr.to_string())
            .env("MAIL_DIR", db.mail.path())
            .env("LICENSE_SIGNING_KEY", signing_key_in(db.mail.path()))
            .env("RUST_LOG", "warn")
            .env_remove("SMTP_URL")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(redis) = test_redis_url() {
            command
                .env("REDIS_URL", redis)
                .env("REDIS_CHANNEL", unique("kl_events"));
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start keyledger");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Ok(mut stream)) =
                tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
            {
                let request = b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
                if stream.write_all(request).await.is_ok()
                    && read_to_close(&mut stream, PATIENCE)
                        .await
                        .starts_with("HTTP/1.1 200")
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the server did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ServerProcess {
            addr,
            _child: child,
            _db: db,
        }
    }

    /// `keyledger_connections` from `/metrics`, asked from 127.0.0.9; `None`
    /// when the question itself is shed (closed connections not yet counted).
    async fn open_connections(&self) -> Option<u64> {
        let answer = get_from("127.0.0.9", self.addr, "/metrics").await;
        if answer.starts_with("HTTP/1.1 503") {
            return None;
        }
        let open = answer
            .lines()
            .find(|l| l.starts_with("keyledger_connections "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok());
        assert!(open.is_some(), "no keyledger_connections in {answer}");
        open
    }

    /// Wait until the server counts `n` open connections (the one asking included).
    async fn wait_open(&self, n: u64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let open = self.open_connections().await;
            if open == Some(n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} open connections, /metrics says {open:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Opened from `from`, the connection is closed at once with a 503.
async fn assert_shed(from: &str, server: SocketAddr) {
    let mut stream = connect_from(from, server).await;
    let answer = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "a connection over the cap is shed: {answer:?}"
    );
}

#[tokio::test]
async fn idle_connections_are_capped_per_client_and_overall() {
    const PER_CLIENT: usize = 200;
    const TOTAL: usize = 260;
    let server = ServerProcess::start(&[
        ("MAX_CONNECTIONS_PER_CLIENT", &PER_CLIENT.to_string()),
        ("MAX_CONNECTIONS", &TOTAL.to_string()),
        // Idle sockets stay open for the whole test.
        ("HEADER_READ_TIMEOUT_SECS", "60"),
    ])
    .await;
    let addr = server.addr;

    // One client fills its share with silent sockets.
    let mut idle = Vec::new();
    for _ in 0..PER_CLIENT {
        idle.push(connect_from("127.0.0.1", addr).await);
    }
    server.wait_open(PER_CLIENT as u64 + 1).await;
    // Its next connections are shed...
    for _ in 0..5 {
        assert_shed("127.0.0.1", addr).await;
    }
    // ...while its open ones still work and another client is served.
    let first = idle.first_mut().expect("a socket");
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(PATIENCE, first.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("answer");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "an admitted socket is served"
    );
    let answer = get_from("127.0.0.2", addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Another client takes what is left of the global cap: everyone else is shed.
    let mut others = Vec::new();
    for _ in PER_CLIENT..TOTAL {
        others.push(connect_from("127.0.0.2", addr).await);
    }
    server.wait_full().await;
    assert_shed("127.0.0.3", addr).await;

    // Closed connections give their places back.
    others.truncate(others.len() - 10);
    idle.truncate(idle.len() - 10);
    server.wait_open(TOTAL as u64 - 20 + 1).await;
    let answer = get_from("127.0.0.3", addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = get_from("127.0.0.1", addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

impl ServerProcess {
    /// Wait until the server has accepted every connection opened so far
    /// and the global cap is full: probe until a probe is shed.
    async fn wait_full(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut stream = connect_from("127.0.0.9", self.addr).await;
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .ok();
            let answer = read_to_close(&mut stream, PATIENCE).await;
            if answer.starts_with("HTTP/1.1 503") {
                return;
            }
            assert!(Instant::now() < deadline, "the global cap never filled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A websocket speaking `protocol`, not yet initialised.
async fn ws(app: &TestApp, protocol: &'static str) -> Ws {
    app.websocket(protocol).await
}

async fn send(socket: &mut Ws, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("websocket send");
}

/// What arrives next: a protocol message, or the close code and reason.
#[derive(Debug)]
enum Next {
    Message(Value),
    Closed(u16, String),
}

async fn next(socket: &mut Ws, within: Duration) -> Next {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("something arrives in time");
        match frame {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text).expect("JSON message");
                if matches!(message["type"].as_str(), Some("ka" | "pong")) {
                    continue;
                }
                return Next::Message(message);
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                return Next::Closed(frame.code.into(), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                return Next::Closed(1005, String::new());
            }
            Some(Ok(_)) => continue,
        }
    }
}

/// The close code and reason that end the socket (messages before it skipped).
async fn closed(socket: &mut Ws) -> (u16, String) {
    loop {
        if let Next::Closed(code, reason) = next(socket, PATIENCE).await {
            return (code, reason);
        }
    }
}

async fn init(socket: &mut Ws, token: Option<&str>) {
    let payload = match token {
        Some(token) => json!({"authorization": format!("Bearer {token}")}),
        None => json!({}),
    };
    send(
        socket,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    match next(socket, PATIENCE).await {
        Next::Message(m) if m["type"] == "connection_ack" => {}
        other => panic!("expected connection_ack, got {other:?}"),
    }
}

const EVENTS: &str = "subscription { events { id kind } }";

async fn subscribe(socket: &mut Ws, id: &str) {
    send(
        socket,
        json!({"type": "subscribe", "id": id, "payload": {"query": EVENTS}}),
    )
    .await;
}

#[tokio::test]
async fn a_websocket_without_connection_init_is_closed_after_3_seconds() {
    let app = TestApp::spawn().await;
    let started = Instant::now();
    let mut socket = ws(&app, "graphql-transport-ws").await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 4408, "{reason}");
    assert_eq!(reason, "Connection initialisation timeout");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2900) && elapsed < Duration::from_secs(8),
        "closed after {elapsed:?}"
    );
}

#[tokio::test]
async fn a_bad_token_in_connection_init_is_forbidden() {
    let app = TestApp::spawn().await;
    let mut socket = ws(&app, "graphql-transport-ws").await;
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": {"authorization": "Bearer nope"}}),
    )
    .await;
    assert_eq!(closed(&mut socket).await, (4403, "Forbidden".to_owned()));

    // The legacy protocol is told why before the close.
    let mut socket = ws(&app, "graphql-ws").await;
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": {"authorization": "Bearer nope"}}),
    )
    .await;
    match next(&mut socket, PATIENCE).await {
        Next::Message(m) => assert_eq!(m["type"], "connection_error", "{m}"),
        other => panic!("expected connection_error, got {other:?}"),
    }
    assert_eq!(closed(&mut socket).await.0, 4403);

    // No token at all stays anonymous and is acknowledged.
    let mut socket = ws(&app, "graphql-transport-ws").await;
    init(&mut socket, None).await;
}

#[tokio::test]
async fn subscribing_before_connection_init_is_unauthorized() {
    let app = TestApp::spawn().await;
    let mut socket = ws(&app, "graphql-transport-ws").await;
    subscribe(&mut socket, "1").await;
    assert_eq!(closed(&mut socket).await, (4401, "Unauthorized".to_owned()));
}

#[tokio::test]
async fn a_subscription_id_in_use_closes_the_socket() {
    let app = TestApp::spawn().await;
    let (token, _) = app
        .verified_user(&format!("{}@conn.example.com", unique("dup")))
        .await;
    let mut socket = ws(&app, "graphql-transport-ws").await;
    init(&mut socket, Some(&token)).await;
    subscribe(&mut socket, "same").await;
    subscribe(&mut socket, "same").await;
    assert_eq!(
        closed(&mut socket).await,
        (4409, "Subscriber for same already exists".to_owned())
    );
}

/// The next `error` message (the `complete` of a stopped subscription skipped).
async fn error(socket: &mut Ws) -> Value {
    loop {
        match next(socket, PATIENCE).await {
            Next::Message(m) if m["type"] == "complete" => continue,
            Next::Message(m) => return m,
            other => panic!("expected an error message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_socket_holds_at_most_100_subscriptions() {
    let app = TestApp::spawn().await;
    let (token, _) = app
        .verified_user(&format!("{}@conn.example.com", unique("many")))
        .await;
    let mut socket = ws(&app, "graphql-transport-ws").await;
    init(&mut socket, Some(&token)).await;
    for i in 1..=100 {
        subscribe(&mut socket, &i.to_string()).await;
    }
    subscribe(&mut socket, "101").await;
    let refused = error(&mut socket).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "101", "{refused}");
    let extensions = &refused["payload"][0]["extensions"];
    assert_eq!(extensions["code"], "VALIDATION", "{refused}");
    assert_eq!(extensions["field"], "query", "{refused}");
    assert_eq!(extensions["limit"], "subscriptions", "{refused}");

    // The client's complete frees an id: the next subscription is accepted
    // (the cap would refuse it at once otherwise).
    send(&mut socket, json!({"type": "complete", "id": "1"})).await;
    subscribe(&mut socket, "102").await;
    subscribe(&mut socket, "103").await;
    let refused = error(&mut socket).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "103", "only the one over the cap: {refused}");
}

#[tokio::test]
async fn an_upgraded_websocket_keeps_its_connection_slot_until_it_closes() {
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|config| config.max_connections_per_client = 2),
        ..Options::default()
    })
    .await;
    let mut first = ws(&app, "graphql-transport-ws").await;
    init(&mut first, None).await;
    let mut second = ws(&app, "graphql-transport-ws").await;
    init(&mut second, None).await;
    // Both slots are the websockets', long after their HTTP requests ended.
    assert_shed("127.0.0.1", app.addr).await;
    first.close(None).await.expect("close");
    drop(first);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = get_from("127.0.0.1", app.addr, "/healthz").await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
}
