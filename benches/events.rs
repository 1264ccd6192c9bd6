//! `just bench-events`: live event delivery on PostgreSQL + Redis.
//!
//! Starts the release `keyledger` binary (one or two processes, one database,
//! one Redis channel), opens 1,000 then 10,000 idle `events` subscriptions
//! (each its own account, over `graphql-transport-ws`) plus one measured
//! subscription, and times `assignLicense` → event received by that
//! subscriber. The server runs in its own process so that its RSS
//! (`/proc/PID/status`) counts only the server's side of the connections.
//!
//! Latency is measured from the moment the mutation is sent (an upper bound
//! of commit → receipt, since the commit happens during the request) and,
//! second, from the event's `occurredAt` (stamped at the start of the
//! mutation's transaction by the same machine's clock).
//!
//! Environment: `BENCH_DATABASE_URL` (an admin URL; a database is created and
//! dropped; default `postgres://postgres@127.0.0.1:5432/test`), `BENCH_REDIS_URL`
//! (default `redis://127.0.0.1:6379`), `BENCH_IDLE` (default 10000),
//! `BENCH_SAMPLES` (default 300), `BENCH_WRAPPER` (a command to run the
//! server under, e.g. `valgrind --tool=massif`). Output: a markdown table on stdout and
//! `bench/results/events.json`.
use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant, SystemTime},
};

use chrono::{DateTime, Utc};
use entity::{account, session};
use futures_util::{SinkExt, StreamExt, stream};
use keyledger::auth::token;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::mpsc};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig,
    },
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Error = Box<dyn std::error::Error + Send + Sync>;

const WARM_UP: usize = 30;
/// Parallel websocket handshakes while opening idle subscriptions.
const CONNECT_CONCURRENCY: usize = 128;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A `keyledger serve` process.
struct Server {
    child: tokio::process::Child,
    addr: SocketAddr,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(database_url: &str, redis_url: &str, channel: &str) -> Result<Server, Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let dir = tempfile::tempdir()?;
        // BENCH_WRAPPER runs the server under a tool, e.g. `valgrind --tool=massif`.
        let wrapper = env_or("BENCH_WRAPPER", "");
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(tool) => {
                let mut command = tokio::process::Command::new(tool);
                command.args(words).arg(env!("CARGO_BIN_EXE_keyledger"));
                command
            }
            None => tokio::process::Command::new(env!("CARGO_BIN_EXE_keyledger")),
        };
        let child = command
            .arg("serve")
            .current_dir(dir.path())
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url)
            .env("REDIS_CHANNEL", channel)
            .env("BIND_ADDR", addr.to_string())
            .env("MAIL_DIR", dir.path().join("mail"))
            .env("LICENSE_SIGNING_KEY", {
                let path = dir.path().join("license-signing.pem");
                std::fs::write(&path, keyledger::signing::generate_pem()?)?;
                path
            })
            .env("RUST_LOG", "warn")
            // Every subscriber connects from 127.0.0.1: lift the
            // per-client connection cap out of the way.
            .env("MAX_CONNECTIONS_PER_CLIENT", "1000000")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let server = Server {
            child,
            addr,
            base: format!("http://{addr}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", server.base)).send().await
                && r.status() == 200
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err("server did not become ready".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait for the graceful shutdown (a tool in
    /// `BENCH_WRAPPER` writes its report at exit); SIGKILL after 60 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Resident memory of the server process, in bytes.
    fn rss(&self) -> u64 {
        let pid = self.child.id().unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    async fn metric(&self, http: &reqwest::Client, name: &str) -> f64 {
        let text = match http.get(format!("{}/metrics", self.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    async fn wait_subscribers(&self, http: &reqwest::Client, n: usize) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let count = self.metric(http, "keyledger_subscribers").await as usize;
            if count >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{count} of {n} subscriptions registered").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn gql(
    http: &reqwest::Client,
    server: &Server,
    token: &str,
    query: &str,
    variables: Value,
) -> Result<Value, Error> {
    let body: Value = http
        .post(format!("{}/graphql", server.base))
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if let Some(errors) = body.get("errors") {
        return Err(format!("GraphQL errors: {errors}").into());
    }
    Ok(body["data"].clone())
}

/// Accounts (verified) with a session each, written straight to the
/// database: signing up 10,000 people through argon2 would take minutes.
/// Returns their session tokens.
async fn seed_accounts(
    db: &DatabaseConnection,
    prefix: &str,
    count: usize,
    role: account::AccountRole,
) -> Result<Vec<String>, Error> {
    let now = Utc::now();
    let mut tokens = Vec::with_capacity(count);
    for chunk_start in (0..count).step_by(1000) {
        let chunk = chunk_start..(chunk_start + 1000).min(count);
        let emails: Vec<String> = chunk
            .clone()
            .map(|i| format!("{prefix}{i}@bench.example.com"))
            .collect();
        account::Entity::insert_many(emails.iter().map(|email| account::ActiveModel {
            email: Set(email.clone()),
            password_hash: Set("-".into()),
            email_verified_at: Set(Some(now)),
            role: Set(role),
            require_manual_approval: Set(false),
            allow_override_assignee: Set(false),
            notify_on_claim: Set(false),
            allow_assignee_organization: Set(false),
            created_at: Set(now),
            ..Default::default()
        }))
        .exec(db)
        .await?;
        let ids: Vec<i64> = account::Entity::find()
            .select_only()
            .column(account::Column::Id)
            .filter(account::Column::Email.is_in(emails))
            .order_by_asc(account::Column::Id)
            .into_tuple()
            .all(db)
            .await?;
        let chunk_tokens: Vec<String> = ids.iter().map(|_| token::generate()).collect();
        session::Entity::insert_many(ids.iter().zip(&chunk_tokens).map(|(id, t)| {
            session::ActiveModel {
                account_id: Set(*id),
                token_hash: Set(token::hash(t)),
                created_at: Set(now),
                expires_at: Set(now + chrono::Duration::days(1)),
                revoked_at: Set(None),
                ..Default::default()
            }
        }))
        .exec(db)
        .await?;
        tokens.extend(chunk_tokens);
    }
    Ok(tokens)
}

const SUBSCRIPTION: &str = "subscription($after: ID){ events(after: $after){ id occurredAt } }";

/// Open a `graphql-transport-ws` connection, authenticate and subscribe.
async fn subscribe(addr: SocketAddr, token: &str, after: Option<&str>) -> Result<Ws, Error> {
    let mut request = format!("ws://{addr}/graphql/ws").into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    // Small client buffers: 10,000 idle clients live in this process.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
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

/// Open `tokens.len()` idle subscriptions on `server`.
async fn open_idle(server: &Server, tokens: &[String]) -> Result<(Vec<Ws>, Duration), Error> {
    let started = Instant::now();
    let addr = server.addr;
    let sockets: Vec<Result<Ws, Error>> = stream::iter(tokens.iter().cloned())
        .map(|t| async move { subscribe(addr, &t, None).await })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let sockets = sockets.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((sockets, started.elapsed()))
}

/// An event as the measured subscriber received it.
struct Received {
    at: Instant,
    at_wall: SystemTime,
    event: Value,
}

/// Read the measured subscription on its own task, stamping each event.
fn spawn_reader(mut ws: Ws) -> mpsc::UnboundedReceiver<Received> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            let at = Instant::now();
            let at_wall = SystemTime::now();
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(message) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if message["type"] == "next" {
                let event = message["payload"]["data"]["events"].clone();
                if tx.send(Received { at, at_wall, event }).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

#[derive(Clone, serde::Serialize)]
struct Scenario {
    name: String,
    instances: usize,
    idle_subscribers: usize,
    samples: usize,
    /// Mutation sent → event received.
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Event's `occurredAt` (transaction start) → event received.
    p50_from_occurred_ms: f64,
    p99_from_occurred_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Context of the measured subscriber and the key it changes.
struct Probe {
    owner_token: String,
    license_id: String,
    events: mpsc::UnboundedReceiver<Received>,
    round: u64,
}

impl Probe {
    /// Assign the key through `via` `samples` times (after a warm-up), one at
    /// a time, and time each event's arrival at the measured subscriber.
    async fn measure(
        &mut self,
        http: &reqwest::Client,
        via: &Server,
        name: &str,
        instances: usize,
        idle: usize,
        samples: usize,
    ) -> Result<Scenario, Error> {
        let mut from_send = Vec::with_capacity(samples);
        let mut from_occurred = Vec::with_capacity(samples);
        for i in 0..WARM_UP + samples {
            self.round += 1;
            let email = format!("assignee{}@bench.example.com", self.round);
            let sent = Instant::now();
            gql(
                http,
                via,
                &self.owner_token,
                "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l, email:$e}){ id } }",
                json!({"l": self.license_id, "e": email}),
            )
            .await?;
            let received = tokio::time::timeout(Duration::from_secs(10), self.events.recv())
                .await
                .map_err(|_| "event not received within 10 s")?
                .ok_or("subscription closed")?;
            if i < WARM_UP {
                continue;
            }
            from_send.push(received.at.duration_since(sent).as_secs_f64() * 1000.0);
            let occurred: DateTime<Utc> = received.event["occurredAt"]
                .as_str()
                .ok_or("occurredAt")?
                .parse()?;
            let at: DateTime<Utc> = received.at_wall.into();
            from_occurred.push((at - occurred).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
        from_send.sort_by(f64::total_cmp);
        from_occurred.sort_by(f64::total_cmp);
        Ok(Scenario {
            name: name.into(),
            instances,
            idle_subscribers: idle,
            samples,
            p50_ms: round2(percentile(&from_send, 50.0)),
            p99_ms: round2(percentile(&from_send, 99.0)),
            max_ms: round2(from_send.last().copied().unwrap_or(f64::NAN)),
            p50_from_occurred_ms: round2(percentile(&from_occurred, 50.0)),
            p99_from_occurred_ms: round2(percentile(&from_occurred, 99.0)),
        })
    }
}

#[derive(serde::Serialize)]
struct Memory {
    idle_subscribers: usize,
    rss_before_bytes: u64,
    rss_after_bytes: u64,
    bytes_per_idle_subscriber: u64,
    open_seconds: f64,
}

async fn run() -> Result<(), Error> {
    let total_started = Instant::now();
    let admin_url = env_or(
        "BENCH_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let redis_url = env_or("BENCH_REDIS_URL", "redis://127.0.0.1:6379");
    let idle_max: usize = env_or("BENCH_IDLE", "10000").parse()?;
    let samples: usize = env_or("BENCH_SAMPLES", "300").parse()?;
    let idle_small = idle_max.min(1000);

    let name = format!("kl_bench_{}", std::process::id());
    let admin = Database::connect(&admin_url).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut url = url::Url::parse(&admin_url)?;
    url.set_path(&format!("/{name}"));
    let database_url = url.to_string();
    let channel = format!("kl_bench_{}", std::process::id());

    let result = async {
        let a = Server::start(&database_url, &redis_url, &channel).await?;
        let db = Database::connect(&database_url).await?;
        let http = reqwest::Client::new();

        eprintln!("seeding {idle_max} accounts…");
        let owner = seed_accounts(&db, "owner", 1, account::AccountRole::User)
            .await?
            .remove(0);
        let admin_token = seed_accounts(&db, "admin", 1, account::AccountRole::Admin)
            .await?
            .remove(0);
        let idle_tokens = seed_accounts(&db, "idle", idle_max, account::AccountRole::User).await?;
        gql(
            &http,
            &a,
            &admin_token,
            "mutation{ createProduct(input:{code:\"bench\", name:\"Bench\"}){ code } }",
            json!({}),
        )
        .await?;
        let order = gql(
            &http,
            &a,
            &owner,
            "mutation{ createOrder(input:{product:\"bench\", quantity:1}){ id } }",
            json!({}),
        )
        .await?;
        let order_id = order["createOrder"]["id"].clone();
        gql(
            &http,
            &a,
            &admin_token,
            "mutation($o:ID!){ markOrderPaid(orderId:$o){ status } }",
            json!({"o": order_id}),
        )
        .await?;
        let licenses = gql(
            &http,
            &a,
            &owner,
            "query($o:ID!){ order(id:$o){ licenses(first:1){ edges { node { id } } } } }",
            json!({"o": order_id}),
        )
        .await?;
        let license_id = licenses["order"]["licenses"]["edges"][0]["node"]["id"]
            .as_str()
            .ok_or("license id")?
            .to_owned();
        let feed = gql(
            &http,
            &a,
            &owner,
            "{ events(first: 100){ edges { node { id } } } }",
            json!({}),
        )
        .await?;
        let after = feed["events"]["edges"]
            .as_array()
            .and_then(|e| e.last())
            .and_then(|e| e["node"]["id"].as_str())
            .map(str::to_owned);

        let measured = subscribe(a.addr, &owner, after.as_deref()).await?;
        a.wait_subscribers(&http, 1).await?;
        let mut probe = Probe {
            owner_token: owner,
            license_id,
            events: spawn_reader(measured),
            round: 0,
        };
        let mut scenarios = Vec::new();
        let mut memory = Vec::new();

        // Warm the server (pools, allocator) before the memory baseline.
        probe.measure(&http, &a, "warm-up", 1, 0, 50).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;

        let rss_before = a.rss();
        eprintln!("opening {idle_small} idle subscriptions…");
        let (mut idle, took) = open_idle(&a, &idle_tokens[..idle_small]).await?;
        a.wait_subscribers(&http, idle_small + 1).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_after = a.rss();
        memory.push(Memory {
            idle_subscribers: idle_small,
            rss_before_bytes: rss_before,
            rss_after_bytes: rss_after,
            bytes_per_idle_subscriber: rss_after.saturating_sub(rss_before) / idle_small as u64,
            open_seconds: round2(took.as_secs_f64()),
        });
        scenarios.push(
            probe
                .measure(&http, &a, "1 instance", 1, idle_small, samples)
                .await?,
        );

        if idle_max > idle_small {
            eprintln!("opening {} more idle subscriptions…", idle_max - idle_small);
            let (more, took_more) = open_idle(&a, &idle_tokens[idle_small..]).await?;
            idle.extend(more);
            a.wait_subscribers(&http, idle_max + 1).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let rss_after = a.rss();
            memory.push(Memory {
                idle_subscribers: idle_max,
                rss_before_bytes: rss_before,
                rss_after_bytes: rss_after,
                bytes_per_idle_subscriber: rss_after.saturating_sub(rss_before) / idle_max as u64,
                open_seconds: round2((took + took_more).as_secs_f64()),
            });
            scenarios.push(
                probe
                    .measure(&http, &a, "1 instance", 1, idle_max, samples)
                    .await?,
            );
        }

        eprintln!("starting a second instance…");
        let b = Server::start(&database_url, &redis_url, &channel).await?;
        scenarios.push(
            probe
                .measure(
                    &http,
                    &b,
                    "2 instances via Redis (mutation on B, subscriber on A)",
                    2,
                    idle.len(),
                    samples,
                )
                .await?,
        );
        let published = a.metric(&http, "keyledger_events_published_total").await
            + b.metric(&http, "keyledger_events_published_total").await;
        drop(idle);
        db.close().await.ok();
        b.stop().await;
        a.stop().await;
        Ok::<_, Error>((scenarios, memory, published))
    }
    .await;

    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .ok();
    let (scenarios, memory, published) = result?;

    println!();
    println!(
        "## Live events (PostgreSQL + Redis, release build, {} cores)",
        cores()
    );
    println!();
    println!(
        "| scenario | idle subscribers | samples | p50 ms | p99 ms | max ms | p50 from occurredAt | p99 from occurredAt |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for s in &scenarios {
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            s.name,
            s.idle_subscribers,
            s.samples,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.p50_from_occurred_ms,
            s.p99_from_occurred_ms
        );
    }
    println!();
    println!(
        "| idle subscribers | server RSS before | after | per idle subscriber | time to open |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for m in &memory {
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.1} KB | {:.1} s |",
            m.idle_subscribers,
            m.rss_before_bytes as f64 / 1048576.0,
            m.rss_after_bytes as f64 / 1048576.0,
            m.bytes_per_idle_subscriber as f64 / 1000.0,
            m.open_seconds
        );
    }
    println!();
    println!(
        "Latency: mutation sent → event received by the measured subscriber (an upper bound of commit → receipt); \
         goals: p99 < 100 ms with 10,000 subscribers, < 20 KB per idle subscriber. Whole run {:.0} s.",
        total_started.elapsed().as_secs_f64()
    );

    let results = json!({
        "benchmark": "events",
        "date": Utc::now().to_rfc3339(),
        "machine": { "cores": cores(), "kernel": kernel() },
        "backend": "postgresql+redis",
        "latency": scenarios,
        "memory": memory,
        "events_published": published,
        "goals": { "p99_ms_at_10000": 100, "bytes_per_idle_subscriber": 20000 },
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("events.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    eprintln!("wrote bench/results/events.json");
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would run this
    // too, so do nothing unless asked to benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(error) = runtime.block_on(run()) {
        eprintln!("bench-events failed: {error}");
        std::process::exit(1);
    }
}
