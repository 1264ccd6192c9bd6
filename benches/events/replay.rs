//! `replay`: connect-and-replay after a restart. `BENCH_REPLAY_SUBSCRIBERS`
//! (10,000) subscribers are connected and have each received one event;
//! the server is killed (SIGKILL); `BENCH_REPLAY_EVENTS` (3) events per
//! subscriber are written while it is down (through the outbox,
//! `events::record`, each event to a group of `BENCH_REPLAY_GROUP` accounts);
//! the server starts again on the same address and every subscriber
//! reconnects at once with its last cursor (`BENCH_REPLAY_CONCURRENCY`, 256,
//! handshakes at a time), as a client library would. Reports the time until
//! every subscriber has received its replayed events, the peak SQL
//! statements/s (`/metrics` every 100 ms), PostgreSQL's transactions/s
//! (`pg_stat_database`) and CPU. A subscriber whose stream fails reconnects
//! with its cursor, and the failures are counted: an overload shows.
use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use entity::account;
use futures_util::StreamExt;
use keyledger::events::{self, EventKind, NewEvent, cursor::Cursor};
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, Statement, TransactionTrait};
use serde_json::json;
use tokio::{sync::Semaphore, task::JoinHandle};

use crate::{
    client::{self, Frame, Ws},
    common::{
        BenchDb, Env, Error, Launch, MachineCpu, Outcome, SHED, SQL_STATEMENTS, SUBSCRIBERS,
        Server, cores, env_f64, env_usize, parse_metrics, percentile, postgres_cpu, process_cpu,
        round2, seed_accounts,
    },
    idle::CONNECT_CONCURRENCY,
};

/// Reconnections come from this loopback address: the first connections'
/// ports may still be in `TIME_WAIT` on the server's side.
const RECONNECT_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// How often the sampler reads `/metrics`, PostgreSQL's counters and CPU.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

struct Config {
    subscribers: usize,
    events_each: usize,
    group: usize,
    concurrency: usize,
    timeout: Duration,
}

impl Config {
    fn read() -> Result<Config, Error> {
        Ok(Config {
            subscribers: env_usize("BENCH_REPLAY_SUBSCRIBERS", 10_000)?.max(1),
            events_each: env_usize("BENCH_REPLAY_EVENTS", 3)?.max(1),
            group: env_usize("BENCH_REPLAY_GROUP", 100)?.clamp(1, 1000),
            concurrency: env_usize("BENCH_REPLAY_CONCURRENCY", 256)?.max(1),
            timeout: Duration::from_secs_f64(env_f64("BENCH_REPLAY_TIMEOUT_SECONDS", 300.0)?),
        })
    }
}

pub async fn run(env: &Env) -> Result<Outcome, Error> {
    let config = Config::read()?;
    let db = BenchDb::create(env, "replay").await?;
    let result = scenario(env, &db, &config).await;
    db.drop().await;
    result
}

/// One event for each group of `group` accounts, in one transaction,
/// through the outbox as a change would write it.
async fn write_round(db: &DatabaseConnection, accounts: &[i64], group: usize) -> Result<(), Error> {
    let txn = db.begin().await?;
    for chunk in accounts.chunks(group) {
        let mut event = NewEvent::new(EventKind::LicenseAssigned, None);
        event.recipients = chunk.to_vec();
        events::record(&txn, Utc::now(), event)
            .await
            .map_err(|e| format!("recording an event: {e:?}"))?;
    }
    txn.commit().await?;
    Ok(())
}

/// Hold a subscription until its socket closes; its last cursor.
fn hold(mut ws: Ws, first: Arc<AtomicUsize>) -> JoinHandle<Option<Cursor>> {
    tokio::spawn(async move {
        let mut last: Option<Cursor> = None;
        while let Some(Ok(message)) = ws.next().await {
            if let Frame::Event { id, .. } = client::frame(&message)
                && let Ok(cursor) = id.parse::<Cursor>()
            {
                if last.is_none() {
                    first.fetch_add(1, Ordering::Relaxed);
                }
                last = Some(last.unwrap_or_default().max(cursor));
            }
        }
        last
    })
}

/// One subscriber's way back after the restart.
#[derive(Default)]
struct Resumed {
    /// Since the reconnections started.
    connected: Option<Duration>,
    done: Option<Duration>,
    attempts: u32,
    received: usize,
    duplicates: usize,
    /// Failed attempts (handshakes refused, streams that failed or ended).
    failures: usize,
    /// The first few failures' messages.
    errors: Vec<String>,
    /// Kept open until every subscriber is done.
    ws: Option<Ws>,
}

impl Resumed {
    fn failed(&mut self, error: String) {
        self.failures += 1;
        if self.errors.len() < 3 {
            self.errors.push(error);
        }
    }
}

/// Reconnect with `cursor` until `want` events after it have arrived (a
/// stream that fails is reconnected with the cursor reached), or `deadline`.
#[allow(clippy::too_many_arguments)]
async fn resume(
    addr: std::net::SocketAddr,
    token: String,
    mut cursor: Cursor,
    want: usize,
    t0: Instant,
    deadline: tokio::time::Instant,
    permits: Arc<Semaphore>,
    done: Arc<AtomicUsize>,
) -> Resumed {
    let mut r = Resumed::default();
    while tokio::time::Instant::now() < deadline {
        r.attempts += 1;
        let handshake = {
            let Ok(_permit) = permits.acquire().await else {
                break;
            };
            let after = cursor.to_string();
            tokio::time::timeout_at(
                deadline,
                client::subscribe(addr, Some(RECONNECT_SOURCE), &token, Some(&after)),
            )
            .await
        };
        let mut ws = match handshake {
            Ok(Ok(ws)) => ws,
            Ok(Err(error)) => {
                r.failed(format!("connect: {error}"));
                tokio::time::sleep(backoff(r.attempts)).await;
                continue;
            }
            Err(_) => break,
        };
        r.connected.get_or_insert(t0.elapsed());
        loop {
            if r.received >= want {
                r.done = Some(t0.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
                r.ws = Some(ws);
                return r;
            }
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => return r,
                Ok(Some(Ok(message))) => match client::frame(&message) {
                    Frame::Event { id, .. } => match id.parse::<Cursor>() {
                        Ok(c) if c > cursor => {
                            cursor = c;
                            r.received += 1;
                        }
                        Ok(_) => r.duplicates += 1,
                        Err(_) => r.failed(format!("bad event id {id}")),
                    },
                    Frame::Error(error) => {
                        r.failed(format!("stream: {error}"));
                        break;
                    }
                    Frame::Complete => {
                        r.failed("stream completed".into());
                        break;
                    }
                    Frame::Other => {}
                },
                Ok(Some(Err(error))) => {
                    r.failed(format!("socket: {error}"));
                    break;
                }
                Ok(None) => {
                    r.failed("socket closed".into());
                    break;
                }
            }
        }
        tokio::time::sleep(backoff(r.attempts)).await;
    }
    r
}

/// A client's pause before its next attempt: 100 ms more each time, at
/// most 2 s.
fn backoff(attempts: u32) -> Duration {
    Duration::from_millis((100 * u64::from(attempts)).min(2000))
}

/// One reading of the sampler.
#[derive(Clone, Copy)]
struct Sample {
    /// Seconds since the reconnections started.
    at: f64,
    statements: f64,
    subscribers: f64,
    server_cpu: f64,
    postgres_cpu: f64,
    /// Committed and rolled back transactions of the database
    /// (`pg_stat_database`, which backends flush about once a second).
    transactions: f64,
}

async fn pg_transactions(db: &DatabaseConnection) -> f64 {
    let statement = Statement::from_string(
        DatabaseBackend::Postgres,
        "SELECT (xact_commit + xact_rollback)::bigint AS n FROM pg_stat_database \
         WHERE datname = current_database()",
    );
    match db.query_one_raw(statement).await {
        Ok(Some(row)) => row.try_get::<i64>("", "n").map(|n| n as f64).unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Sample every [`SAMPLE_EVERY`] until `stop`.
fn spawn_sampler(
    http: reqwest::Client,
    base: String,
    server_pid: Option<u32>,
    database: String,
    db: DatabaseConnection,
    t0: Instant,
    stop: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let text = match tokio::time::timeout(
                Duration::from_secs(2),
                http.get(format!("{base}/metrics")).send(),
            )
            .await
            {
                Ok(Ok(r)) => r.text().await.unwrap_or_default(),
                _ => String::new(),
            };
            let metrics = parse_metrics(&text);
            let transactions = pg_transactions(&db).await;
            if let Some(&statements) = metrics.get(SQL_STATEMENTS) {
                samples.push(Sample {
                    at: t0.elapsed().as_secs_f64(),
                    statements,
                    subscribers: metrics.get(SUBSCRIBERS).copied().unwrap_or(0.0),
                    server_cpu: server_pid.and_then(process_cpu).unwrap_or(0.0),
                    postgres_cpu: postgres_cpu(&database),
                    transactions,
                });
            }
            if *stop.borrow() {
                break;
            }
        }
        samples
    })
}

/// The highest rate of `value` over any span of at least `span` seconds
/// between two samples.
fn peak_rate(samples: &[Sample], span: f64, value: impl Fn(&Sample) -> f64) -> f64 {
    let mut peak: f64 = 0.0;
    for (i, start) in samples.iter().enumerate() {
        if let Some(end) = samples[i + 1..].iter().find(|s| s.at - start.at >= span) {
            peak = peak.max((value(end) - value(start)) / (end.at - start.at));
        }
    }
    peak
}

async fn scenario(env: &Env, bench_db: &BenchDb, config: &Config) -> Result<Outcome, Error> {
    let n = config.subscribers;
    let mut server = Server::start(Launch::new(
        &bench_db.url,
        &env.redis_url,
        &env.channel("replay"),
    ))
    .await?;
    let db = sea_orm::Database::connect(&bench_db.url).await?;
    let http = reqwest::Client::new();

    eprintln!("replay: seeding {n} accounts…");
    let accounts = seed_accounts(&db, "replay", n, account::AccountRole::User).await?;
    let ids: Vec<i64> = accounts.iter().map(|a| a.id).collect();
    let tokens: Vec<String> = accounts.iter().map(|a| a.token.clone()).collect();

    eprintln!("replay: opening {n} subscriptions…");
    let (sockets, _) =
        client::open_idle(server.addr, None, &tokens, None, CONNECT_CONCURRENCY).await?;
    server
        .wait_subscribers(&http, n, Duration::from_secs(120))
        .await?;
    let first = Arc::new(AtomicUsize::new(0));
    let holders: Vec<JoinHandle<Option<Cursor>>> = sockets
        .into_iter()
        .map(|ws| hold(ws, first.clone()))
        .collect();
    // One event each, delivered live (the relay finds events written by
    // another process at its next poll): each subscriber has a cursor.
    write_round(&db, &ids, config.group).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while first.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {n} subscribers received their first event",
                first.load(Ordering::Relaxed)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    eprintln!("replay: killing the server…");
    let killed = Instant::now();
    server.kill().await;
    let mut cursors = Vec::with_capacity(n);
    for holder in holders {
        let cursor = tokio::time::timeout(Duration::from_secs(60), holder)
            .await
            .map_err(|_| "a subscription stayed open after the kill")?
            .map_err(|e| format!("holder: {e}"))?;
        cursors.push(cursor.ok_or("a subscriber had no event before the kill")?);
    }
    for _ in 0..config.events_each {
        write_round(&db, &ids, config.group).await?;
    }
    eprintln!("replay: starting the server again…");
    server.restart().await?;
    let down = killed.elapsed();

    eprintln!("replay: {n} subscribers reconnect…");
    let machine = MachineCpu::now();
    let t0 = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sampler = spawn_sampler(
        http.clone(),
        server.base.clone(),
        server.pid(),
        bench_db.name.clone(),
        db.clone(),
        t0,
        stopped,
    );
    let deadline = tokio::time::Instant::now() + config.timeout;
    let permits = Arc::new(Semaphore::new(config.concurrency));
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<JoinHandle<Resumed>> = tokens
        .iter()
        .zip(cursors)
        .map(|(token, cursor)| {
            tokio::spawn(resume(
                server.addr,
                token.clone(),
                cursor,
                config.events_each,
                t0,
                deadline,
                permits.clone(),
                done.clone(),
            ))
        })
        .collect();
    let mut resumed = Vec::with_capacity(n);
    for task in tasks {
        resumed.push(task.await.unwrap_or_default());
    }
    let window = t0.elapsed();
    let machine_busy = machine.busy_since();
    let _ = stop.send(true);
    let samples = sampler.await.unwrap_or_default();
    let shed = server.metric(&http, SHED).await;

    let complete: Vec<f64> = {
        let mut v: Vec<f64> = resumed
            .iter()
            .filter_map(|r| r.done.map(|d| d.as_secs_f64()))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let mut connected: Vec<f64> = resumed
        .iter()
        .filter_map(|r| r.connected.map(|d| d.as_secs_f64()))
        .collect();
    connected.sort_by(f64::total_cmp);
    let incomplete = n - complete.len();
    let retries: u32 = resumed.iter().map(|r| r.attempts.saturating_sub(1)).sum();
    let failures: usize = resumed.iter().map(|r| r.failures).sum();
    let duplicates: usize = resumed.iter().map(|r| r.duplicates).sum();
    let first_errors: Vec<String> = resumed
        .iter()
        .flat_map(|r| r.errors.iter())
        .take(3)
        .cloned()
        .collect();
    let all_done = complete.last().copied();

    let (first_sample, last_sample) = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => return Err("no sample of /metrics".into()),
    };
    let span = (last_sample.at - first_sample.at).max(1e-9);
    let statements = last_sample.statements - first_sample.statements;
    let transactions = last_sample.transactions - first_sample.transactions;
    let postgres = last_sample.postgres_cpu - first_sample.postgres_cpu;
    let server_cpu = last_sample.server_cpu - first_sample.server_cpu;
    let peak_statements_100ms =
        peak_rate(&samples, SAMPLE_EVERY.as_secs_f64() * 0.5, |s| s.statements);
    let peak_statements_1s = peak_rate(&samples, 1.0, |s| s.statements);
    let peak_transactions_1s = peak_rate(&samples, 1.0, |s| s.transactions);
    let peak_postgres_1s = peak_rate(&samples, 1.0, |s| s.postgres_cpu);
    let peak_server_1s = peak_rate(&samples, 1.0, |s| s.server_cpu);
    let peak_subscribers = samples.iter().map(|s| s.subscribers).fold(0.0, f64::max);
    let replayed_events: usize = resumed.iter().map(|r| r.received).sum();
    drop(resumed);

    let results = json!({
        "date": Utc::now().to_rfc3339(),
        "subscribers": n,
        "events_each": config.events_each,
        "recipients_per_event": config.group,
        "connect_concurrency": config.concurrency,
        "kill_to_ready_seconds": round2(down.as_secs_f64()),
        "all_connected_seconds": connected.last().map(|s| round2(*s)),
        "all_replayed_seconds": all_done.map(round2),
        "replayed_p50_seconds": round2(percentile(&complete, 50.0)),
        "replayed_p99_seconds": round2(percentile(&complete, 99.0)),
        "incomplete": incomplete,
        "events_replayed": replayed_events,
        "duplicates": duplicates,
        "retries": retries,
        "failures": failures,
        "first_failures": first_errors,
        "connections_shed": shed,
        "window_seconds": round2(window.as_secs_f64()),
        "sql": { "statements": statements,
            "per_subscriber": round2(statements / n as f64),
            "peak_per_s_over_100ms": peak_statements_100ms.round(),
            "peak_per_s_over_1s": peak_statements_1s.round(),
            "mean_per_s": (statements / span).round() },
        "postgres": { "transactions": transactions,
            "peak_transactions_per_s_over_1s": peak_transactions_1s.round(),
            "cpu_percent_of_one_core_mean": round2(100.0 * postgres / span),
            "cpu_percent_of_one_core_peak_1s": round2(100.0 * peak_postgres_1s) },
        "server": { "cpu_percent_of_one_core_mean": round2(100.0 * server_cpu / span),
            "cpu_percent_of_one_core_peak_1s": round2(100.0 * peak_server_1s),
            "peak_subscribers": peak_subscribers },
        "machine_busy_percent": round2(machine_busy),
        "samples": samples.iter().map(|s| json!([round2(s.at), s.statements, s.subscribers,
            round2(s.server_cpu), round2(s.postgres_cpu), s.transactions])).collect::<Vec<_>>(),
        "sample_columns": ["seconds", "sql_statements", "subscribers", "server_cpu_s",
            "postgres_cpu_s", "pg_transactions"],
    });

    let mut md = String::from("### Connect and replay after a restart (`-- replay`)\n\n");
    md.push_str(
        "| subscribers | events each | kill → ready | all connected | all replayed | peak SQL/s (100 ms) | peak SQL/s (1 s) | PostgreSQL CPU | notes |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    let mut notes = vec![format!(
        "{:.1} SQL statements per subscriber; PostgreSQL {:.0} transactions/s at peak (1 s), \
         CPU {:.0}% of a core at peak (1 s); server CPU {:.0}% of a core on average, {:.0}% at \
         peak; machine {machine_busy:.0}% busy ({} cores); replay p50 {:.2} s, p99 {:.2} s",
        statements / n as f64,
        peak_transactions_1s,
        100.0 * peak_postgres_1s,
        100.0 * server_cpu / span,
        100.0 * peak_server_1s,
        cores(),
        percentile(&complete, 50.0),
        percentile(&complete, 99.0),
    )];
    if incomplete > 0 || failures > 0 || duplicates > 0 || shed > 0.0 {
        notes.push(format!(
            "**{incomplete} subscribers incomplete after {:.0} s, {failures} failed attempts \
             ({retries} retries), {duplicates} events twice, {shed} connections shed**; first: {}",
            config.timeout.as_secs_f64(),
            first_errors.join(" / ")
        ));
    }
    let seconds = |s: Option<f64>| s.map_or("—".to_owned(), |s| format!("{s:.2} s"));
    md.push_str(&format!(
        "| {n} | {} | {:.2} s | {} | {} | {:.0} | {:.0} | {:.0}% of a core | {} |\n",
        config.events_each,
        down.as_secs_f64(),
        seconds(connected.last().copied()),
        if incomplete == 0 {
            seconds(all_done)
        } else {
            "not all".to_owned()
        },
        peak_statements_100ms,
        peak_statements_1s,
        100.0 * postgres / span,
        notes.join("; ")
    ));
    md.push_str(
        "\nTimes from the start of the reconnections (the server ready again); PostgreSQL's \
         CPU is its backends serving this database, averaged over the reconnections.\n",
    );

    db.close().await.ok();
    server.stop().await;
    let mut sections = serde_json::Map::new();
    sections.insert("replay".into(), results);
    Ok(Outcome {
        name: "replay",
        markdown: md,
        latency: Vec::new(),
        sections,
    })
}
