//! `just bench-webhooks`: outbound webhook deliveries per second.
//!
//! Registers 20 endpoints (receivers in this process, each on a port of its
//! own on 127.0.0.1) and queues 1,000 events for each through the outbox
//! (`events::record`, as a change would), with no server running: 20,000
//! deliveries wait. Then it starts the release `keyledger` binary and counts
//! deliveries/s from the first delivery received to the last, checking that
//! each endpoint got its events once each and in order.
//!
//! Environment: `BENCH_DATABASE_URL` (a PostgreSQL admin URL: a database is
//! created and dropped; unset: a SQLite file), `BENCH_EVENTS` (default
//! 1000), `BENCH_ENDPOINTS` (default 20). Output: a markdown row on stdout
//! and `bench/results/webhooks-{sqlite,postgres}.json`.
use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use keyledger::events::{self, EventKind, NewEvent, cursor::Cursor};
use sea_orm::{ActiveModelTrait, ConnectionTrait, Database, TransactionTrait};
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// What one receiver saw.
#[derive(Default)]
struct Seen {
    /// Cursors in arrival order.
    ids: Mutex<Vec<Cursor>>,
}

struct Totals {
    received: AtomicUsize,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

async fn take(
    State((seen, totals)): State<(Arc<Seen>, Arc<Totals>)>,
    headers: HeaderMap,
    _body: axum::body::Bytes,
) -> &'static str {
    let now = Instant::now();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Cursor>().ok())
        .unwrap_or_default();
    seen.ids.lock().unwrap().push(id);
    totals.first.lock().unwrap().get_or_insert(now);
    *totals.last.lock().unwrap() = Some(now);
    totals.received.fetch_add(1, Ordering::Relaxed);
    "ok"
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let events_count: usize = env_or("BENCH_EVENTS", "1000").parse()?;
    let endpoints_count: usize = env_or("BENCH_ENDPOINTS", "20").parse()?;
    let dir = tempfile::tempdir()?;
    let pg_admin = std::env::var("BENCH_DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"));
    let name = format!("kl_bench_hooks_{}", std::process::id());
    let (backend, database_url) = match &pg_admin {
        Some(admin_url) => {
            let admin = Database::connect(admin_url).await?;
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await?;
            let mut url = url::Url::parse(admin_url)?;
            url.set_path(&format!("/{name}"));
            ("postgres", url.to_string())
        }
        None => (
            "sqlite",
            format!("sqlite://{}?mode=rwc", dir.path().join("kl.db").display()),
        ),
    };

    let result = run(&database_url, dir.path(), events_count, endpoints_count).await;

    if let Some(admin_url) = &pg_admin {
        let admin = Database::connect(admin_url).await?;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .ok();
    }
    let (rate, wall, out_of_order, duplicates) = result?;
    let deliveries = events_count * endpoints_count;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!();
    println!(
        "## Webhook deliveries ({backend}, {profile} build, {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| endpoints | events queued | deliveries | deliveries/s | start → last | out of order | twice |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {endpoints_count} | {events_count} | {deliveries} | {rate:.0} | {:.2} s | {out_of_order} | {duplicates} |",
        wall.as_secs_f64()
    );
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(
        results.join(format!("webhooks-{backend}.json")),
        serde_json::to_string_pretty(&json!({
            "backend": backend,
            "profile": profile,
            "endpoints": endpoints_count,
            "events": events_count,
            "deliveries": deliveries,
            "deliveries_per_second": rate.round(),
            "start_to_last_seconds": wall.as_secs_f64(),
            "out_of_order": out_of_order,
            "duplicates": duplicates,
        }))?,
    )?;
    Ok(())
}

async fn run(
    database_url: &str,
    dir: &std::path::Path,
    events_count: usize,
    endpoints_count: usize,
) -> Result<(f64, Duration, usize, usize), Error> {
    // Receivers.
    let totals = Arc::new(Totals {
        received: AtomicUsize::new(0),
        first: Mutex::new(None),
        last: Mutex::new(None),
    });
    let mut receivers = Vec::new();
    for _ in 0..endpoints_count {
        let seen = Arc::new(Seen::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/hook", post(take))
            .with_state((seen.clone(), totals.clone()));
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        receivers.push((addr, seen));
    }

    // Endpoints and queued events, written as keyledger writes them.
    let db = keyledger::db::connect(database_url).await?;
    let now = chrono::Utc::now();
    for (addr, _) in &receivers {
        entity::webhook_endpoint::ActiveModel {
            url: sea_orm::ActiveValue::Set(format!("http://{addr}/hook")),
            description: sea_orm::ActiveValue::Set("bench".into()),
            event_kinds: sea_orm::ActiveValue::Set(String::new()),
            enabled: sea_orm::ActiveValue::Set(true),
            secret: sea_orm::ActiveValue::Set(keyledger::webhooks::signature::new_secret()),
            previous_secret: sea_orm::ActiveValue::Set(None),
            previous_secret_until: sea_orm::ActiveValue::Set(None),
            failing_since: sea_orm::ActiveValue::Set(None),
            created_at: sea_orm::ActiveValue::Set(now),
            updated_at: sea_orm::ActiveValue::Set(now),
            ..Default::default()
        }
        .insert(&db)
        .await?;
    }
    for chunk in 0..events_count.div_ceil(100) {
        let txn = db.begin().await?;
        for i in chunk * 100..((chunk + 1) * 100).min(events_count) {
            let mut event = NewEvent::new(EventKind::OrderPaid, None);
            event.order_id = Some(i as i64 + 1);
            event.changes = json!({"after": {"status": "PAID"}});
            events::record(&txn, now, event)
                .await
                .map_err(|e| e.detail())?;
        }
        txn.commit().await?;
    }
    db.close().await?;

    // The server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg("serve")
        .current_dir(dir)
        .env("DATABASE_URL", database_url)
        .env_remove("REDIS_URL")
        .env("BIND_ADDR", addr.to_string())
        .env("MAIL_DIR", dir.join("mail"))
        .env("RUST_LOG", "warn")
        .env("WEBHOOK_ALLOW_PRIVATE", "true")
        // PostgreSQL requires a signing key; any will do here.
        .env("LICENSE_SIGNING_KEY", signing_key_in(dir)?)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let expected = events_count * endpoints_count;
    let deadline = Instant::now() + Duration::from_secs(300);
    while totals.received.load(Ordering::Relaxed) < expected {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {expected} deliveries arrived",
                totals.received.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed();
    // Anything sent twice arrives within a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = child.kill().await;

    let first = totals.first.lock().unwrap().ok_or("no delivery")?;
    let last = totals.last.lock().unwrap().ok_or("no delivery")?;
    let rate = (expected - 1) as f64 / (last - first).as_secs_f64();
    let mut out_of_order = 0;
    let mut duplicates = 0;
    for (_, seen) in &receivers {
        let ids = seen.ids.lock().unwrap();
        out_of_order += ids.windows(2).filter(|w| w[1] < w[0]).count();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        duplicates += ids.len() - sorted.len();
    }
    Ok((rate, wall, out_of_order, duplicates))
}

/// A new license signing key in `dir` (PostgreSQL requires one).
fn signing_key_in(dir: &std::path::Path) -> Result<std::path::PathBuf, Error> {
    let path = dir.join("license-signing.pem");
    std::fs::write(&path, keyledger::signing::generate_pem()?)?;
    Ok(path)
}
