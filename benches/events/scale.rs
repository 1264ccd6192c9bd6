//! `scale`: two instances (one database, one Redis channel) with
//! `BENCH_SCALE_PER_INSTANCE` (19,000) idle subscribers on each, 38,000 in
//! all. One process may hold at most its hard limit of descriptors (20,000
//! here), so the idle subscribers live in child processes of this bench
//! (itself, run again with `BENCH_EVENTS_CHILD` set), each holding at most
//! `BENCH_SCALE_PER_CHILD` (9,500) sockets bound to a loopback address of its
//! own (127.0.0.2, .3, …), whose ephemeral ports are its own. Reports the
//! memory per idle subscriber (each instance's RSS delta), the server CPU
//! per connection and while idle, the delivery latency of a measured
//! subscriber on A for a mutation on B, and a projection to
//! `BENCH_SCALE_PROJECT` (100,000) subscribers on one instance.
use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Stdio,
    time::{Duration, Instant},
};

use chrono::Utc;
use entity::account;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{
    client,
    common::{
        BenchDb, Env, Error, Launch, Outcome, Server, descriptor_hard_limit, env_f64, env_or,
        env_usize, round2, seed_accounts,
    },
    idle::{Probe, latency_table},
};

/// Goals: p99 of the measured delivery, and memory per idle subscriber.
const GOAL_P99_MS: f64 = 50.0;
const GOAL_BYTES: f64 = 8000.0;

/// Descriptors a server keeps beyond its client connections here (pool,
/// Redis, listener, files): what `MAX_CONNECTIONS` leaves below the limit.
const SERVER_RESERVE: u64 = 256;
/// Descriptors a child keeps beyond its sockets.
const CHILD_RESERVE: u64 = 64;

/// The child role's environment.
pub const CHILD_ROLE: &str = "BENCH_EVENTS_CHILD";
const CHILD_SERVER: &str = "BENCH_EVENTS_CHILD_SERVER";
const CHILD_SOURCE: &str = "BENCH_EVENTS_CHILD_SOURCE";
const CHILD_CONCURRENCY: &str = "BENCH_EVENTS_CHILD_CONCURRENCY";

struct Config {
    per_instance: usize,
    per_child: usize,
    idle_seconds: f64,
    samples: usize,
    project: usize,
    /// Handshakes in flight per child.
    concurrency: usize,
}

impl Config {
    fn read() -> Result<Config, Error> {
        Ok(Config {
            per_instance: env_usize("BENCH_SCALE_PER_INSTANCE", 19_000)?.max(1),
            per_child: env_usize("BENCH_SCALE_PER_CHILD", 9_500)?.max(1),
            idle_seconds: env_f64("BENCH_SCALE_IDLE_SECONDS", 10.0)?,
            samples: env_usize("BENCH_SAMPLES", 300)?.max(1),
            project: env_usize("BENCH_SCALE_PROJECT", 100_000)?.max(1),
            concurrency: env_usize("BENCH_SCALE_CONNECT_CONCURRENCY", 64)?.max(1),
        })
    }
}

pub async fn run(env: &Env) -> Result<Outcome, Error> {
    let config = Config::read()?;
    let hard = descriptor_hard_limit();
    if config.per_instance as u64 + SERVER_RESERVE > hard {
        return Err(format!(
            "{} subscribers per instance need {} descriptors in each server; the hard limit is {hard}",
            config.per_instance,
            config.per_instance as u64 + SERVER_RESERVE
        )
        .into());
    }
    if config.per_child as u64 + CHILD_RESERVE > hard {
        return Err(format!(
            "BENCH_SCALE_PER_CHILD {} is over the hard limit of {hard} descriptors",
            config.per_child
        )
        .into());
    }
    let db = BenchDb::create(env, "scale").await?;
    let result = scenario(env, &db, &config, hard).await;
    db.drop().await;
    result
}

/// A generator process holding idle subscriptions.
struct Child {
    process: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    count: usize,
}

impl Child {
    /// Start a child holding one subscription per token on `server`, from
    /// the loopback address `source`.
    async fn spawn(
        server: SocketAddr,
        source: Ipv4Addr,
        tokens: &[String],
        concurrency: usize,
    ) -> Result<Child, Error> {
        let mut process = tokio::process::Command::new(std::env::current_exe()?)
            .arg("--bench")
            .env(CHILD_ROLE, "idle")
            .env(CHILD_SERVER, server.to_string())
            .env(CHILD_SOURCE, source.to_string())
            .env(CHILD_CONCURRENCY, concurrency.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = process.stdin.take().ok_or("child stdin")?;
        let stdout = BufReader::new(process.stdout.take().ok_or("child stdout")?).lines();
        let mut input = tokens.join("\n");
        input.push_str("\nopen\n");
        stdin.write_all(input.as_bytes()).await?;
        stdin.flush().await?;
        Ok(Child {
            process,
            stdin: Some(stdin),
            stdout,
            count: tokens.len(),
        })
    }

    /// Wait for the child's report that its subscriptions are open; the
    /// seconds it took.
    async fn opened(&mut self) -> Result<f64, Error> {
        let line = tokio::time::timeout(Duration::from_secs(1800), self.stdout.next_line())
            .await
            .map_err(|_| "a child generator did not report within 30 min")??
            .ok_or("a child generator exited")?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("opened"), Some(count), Some(seconds)) if count == self.count.to_string() => {
                Ok(seconds.parse()?)
            }
            _ => Err(format!("child generator: {line}").into()),
        }
    }

    /// Close its stdin: it drops its sockets and exits.
    async fn close(mut self) {
        self.stdin.take();
        if tokio::time::timeout(Duration::from_secs(60), self.process.wait())
            .await
            .is_err()
        {
            let _ = self.process.kill().await;
        }
    }
}

/// CPU seconds of both servers now.
fn cpus(a: &Server, b: &Server) -> [f64; 2] {
    [a.cpu(), b.cpu()]
}

async fn scenario(
    env: &Env,
    bench_db: &BenchDb,
    config: &Config,
    hard: u64,
) -> Result<Outcome, Error> {
    let per_instance = config.per_instance;
    let mut launch = Launch::new(&bench_db.url, &env.redis_url, &env.channel("scale"));
    // The server's default cap keeps a tenth of its descriptors in reserve
    // (18,000 connections of 20,000): this scenario needs more of them.
    let max_connections = hard - SERVER_RESERVE;
    launch
        .extra
        .push(("MAX_CONNECTIONS".into(), max_connections.to_string()));
    let a = Server::start(launch.clone()).await?;
    let b = Server::start(launch).await?;
    let db = sea_orm::Database::connect(&bench_db.url).await?;
    let http = reqwest::Client::new();

    eprintln!("scale: seeding {} accounts…", 2 * per_instance);
    let mut probe = Probe::set_up("scale", &http, &a, &db).await?;
    let tokens: Vec<String> =
        seed_accounts(&db, "scale", 2 * per_instance, account::AccountRole::User)
            .await?
            .into_iter()
            .map(|s| s.token)
            .collect();
    a.wait_subscribers(&http, 1, Duration::from_secs(60))
        .await?;
    // Warm both servers (pools, allocator, Redis) before the baselines.
    probe.measure(&http, &b, "warm-up", 2, 0, 50).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The servers' own idle CPU (relay polls, sweepers), to tell the
    // subscribers' share from it.
    eprintln!(
        "scale: {:.0} s idle with no idle subscriber…",
        config.idle_seconds
    );
    let cpu_quiet = cpus(&a, &b);
    tokio::time::sleep(Duration::from_secs_f64(config.idle_seconds)).await;
    let cpu_quiet_end = cpus(&a, &b);

    let rss_before = [a.rss(), b.rss()];
    let cpu_before = cpus(&a, &b);
    eprintln!(
        "scale: opening {per_instance} idle subscriptions on each instance from child processes…"
    );
    let mut children = Vec::new();
    let mut source = 2u8;
    for (server, tokens) in [(&a, &tokens[..per_instance]), (&b, &tokens[per_instance..])] {
        for chunk in tokens.chunks(config.per_child) {
            if source == 255 {
                return Err("more than 253 child generators".into());
            }
            children.push(
                Child::spawn(
                    server.addr,
                    Ipv4Addr::new(127, 0, 0, source),
                    chunk,
                    config.concurrency,
                )
                .await?,
            );
            source += 1;
        }
    }
    let opened = Instant::now();
    let mut child_seconds = Vec::new();
    for child in &mut children {
        child_seconds.push(child.opened().await?);
    }
    a.wait_subscribers(&http, per_instance + 1, Duration::from_secs(300))
        .await?;
    b.wait_subscribers(&http, per_instance, Duration::from_secs(300))
        .await?;
    let open_seconds = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = [a.rss(), b.rss()];
    let cpu_opened = cpus(&a, &b);

    eprintln!(
        "scale: {:.0} s idle with {} subscribers…",
        config.idle_seconds,
        2 * per_instance
    );
    tokio::time::sleep(Duration::from_secs_f64(config.idle_seconds)).await;
    let cpu_idle = cpus(&a, &b);

    eprintln!("scale: measuring delivery (mutation on B, subscriber on A)…");
    let latency = probe
        .measure(
            &http,
            &b,
            &format!(
                "2 instances via Redis, {per_instance} idle on each (mutation on B, subscriber on A)"
            ),
            2,
            2 * per_instance,
            config.samples,
        )
        .await?;

    for child in children {
        child.close().await;
    }
    db.close().await.ok();
    b.stop().await;
    a.stop().await;

    let count = per_instance as f64;
    let per_sub = |i: usize| rss_after[i].saturating_sub(rss_before[i]) as f64 / count;
    let connect_ms = |i: usize| 1000.0 * (cpu_opened[i] - cpu_before[i]) / count;
    // CPU while idle with the subscribers, less the same time without them
    // (CPU times tick in 10 ms: at small counts this is noise, even < 0).
    let idle_us_per_s = |i: usize| {
        let with = cpu_idle[i] - cpu_opened[i];
        let without = cpu_quiet_end[i] - cpu_quiet[i];
        1e6 * (with - without) / config.idle_seconds / count
    };
    let instances: Vec<serde_json::Value> = (0..2)
        .map(|i| {
            let name = ["A", "B"][i];
            json!({
                "instance": name,
                "idle_subscribers": per_instance + usize::from(i == 0),
                "rss_before_bytes": rss_before[i],
                "rss_after_bytes": rss_after[i],
                "bytes_per_idle_subscriber": per_sub(i).round(),
                "server_cpu_ms_per_connection": round2(connect_ms(i)),
                "server_cpu_us_per_s_per_idle_subscriber": (idle_us_per_s(i) * 1000.0).round() / 1000.0,
            })
        })
        .collect();

    // The projection, from instance A's figures.
    let target = config.project as f64;
    let memory = rss_before[0] as f64 + target * per_sub(0);
    let idle_core = target * idle_us_per_s(0).max(0.0) / 1e6;
    let reconnect_core_s = target * connect_ms(0) / 1000.0;
    let descriptors = config.project as u64 + SERVER_RESERVE;
    let projection = [
        format!(
            "memory: {:.1} MiB before + {} × {:.0} B = {:.2} GiB",
            rss_before[0] as f64 / 1048576.0,
            config.project,
            per_sub(0),
            memory / 1073741824.0
        ),
        format!(
            "idle CPU: {} × {:.3} µs/s = {:.2}% of a core (the servers' own idle CPU \
             subtracted, measured over {:.0} s before the subscribers came)",
            config.project,
            idle_us_per_s(0),
            100.0 * idle_core,
            config.idle_seconds
        ),
        format!(
            "reconnecting all (a restart): {} × {:.3} ms of server CPU = {:.1} s of one core",
            config.project,
            connect_ms(0),
            reconnect_core_s
        ),
        format!(
            "descriptors: {} + {SERVER_RESERVE} reserve = {descriptors} (hard limit ≥ {descriptors}, \
             MAX_CONNECTIONS = {})",
            config.project, config.project
        ),
        "delivery: an event wakes only its recipients' subscriptions (a map lookup per \
         recipient), so idle subscribers add memory, not work per event; the latency measured \
         here is at the counts above"
            .to_owned(),
    ];
    let p99_met = latency.p99_ms <= GOAL_P99_MS;
    let bytes_met = (0..2).all(|i| per_sub(i) <= GOAL_BYTES);

    let mut md = format!(
        "### {} idle subscribers on two instances (`-- scale`)\n\n",
        2 * per_instance
    );
    md.push_str(&latency_table(std::slice::from_ref(&latency)));
    md.push_str(
        "\n| instance | idle subscribers | RSS before | after | per idle subscriber | server CPU per connection | idle server CPU per subscriber |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for i in 0..2 {
        md.push_str(&format!(
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.1} KB | {:.3} ms | {:.3} µs/s |\n",
            ["A", "B"][i],
            per_instance,
            rss_before[i] as f64 / 1048576.0,
            rss_after[i] as f64 / 1048576.0,
            per_sub(i) / 1000.0,
            connect_ms(i),
            idle_us_per_s(i)
        ));
    }
    md.push_str(&format!(
        "\n{} child generators ({} sockets each at most, from 127.0.0.2–127.0.0.{}), all open in \
         {open_seconds:.1} s; servers with MAX_CONNECTIONS={max_connections} (hard limit {hard}).\n\n\
         Projection to {} subscribers on one instance (from A):\n\n{}\n\n\
         Goals: p99 ≤ {GOAL_P99_MS} ms: {}; ≤ {} KB per idle subscriber on each instance: {}.\n",
        child_seconds.len(),
        config.per_child,
        source - 1,
        config.project,
        projection
            .iter()
            .map(|line| format!("- {line}"))
            .collect::<Vec<_>>()
            .join("\n"),
        if p99_met { "met" } else { "**not met**" },
        GOAL_BYTES / 1000.0,
        if bytes_met { "met" } else { "**not met**" },
    ));

    let mut sections = serde_json::Map::new();
    sections.insert(
        "scale".into(),
        json!({
            "date": Utc::now().to_rfc3339(),
            "per_instance": per_instance,
            "children": child_seconds.len(),
            "per_child": config.per_child,
            "child_open_seconds": child_seconds.iter().map(|s| round2(*s)).collect::<Vec<_>>(),
            "open_seconds": round2(open_seconds),
            "max_connections": max_connections,
            "descriptor_hard_limit": hard,
            "idle_seconds": config.idle_seconds,
            "instances": instances,
            "latency": latency,
            "projection": { "subscribers": config.project, "notes": projection,
                "memory_bytes": memory.round(), "idle_cpu_share_of_one_core": idle_core,
                "reconnect_cpu_seconds": round2(reconnect_core_s), "descriptors": descriptors },
            "goals": { "p99_ms": GOAL_P99_MS, "bytes_per_idle_subscriber": GOAL_BYTES },
        }),
    );
    Ok(Outcome {
        name: "scale",
        markdown: md,
        latency: vec![serde_json::to_value(&latency)?],
        sections,
    })
}

/// The child generator: hold one idle subscription per token read from
/// stdin (until a line `open`), then report `opened COUNT SECONDS` on stdout
/// and keep them until stdin closes (the parent is done, or gone).
pub fn child_main() -> i32 {
    match child() {
        Ok(()) => 0,
        Err(error) => {
            println!("failed {}", error.to_string().replace('\n', " "));
            1
        }
    }
}

fn child() -> Result<(), Error> {
    keyledger::http::listener::raise_descriptor_limit()?;
    let server: SocketAddr = env_or(CHILD_SERVER, "").parse()?;
    let source: IpAddr = env_or(CHILD_SOURCE, "").parse()?;
    let concurrency = env_usize(CHILD_CONCURRENCY, 64)?;
    let mut lines = std::io::stdin().lines();
    let mut tokens = Vec::new();
    for line in lines.by_ref() {
        let line = line?;
        if line == "open" {
            break;
        }
        tokens.push(line);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (sockets, took) = runtime.block_on(client::open_idle(
        server,
        Some(source),
        &tokens,
        None,
        concurrency,
    ))?;
    println!("opened {} {:.2}", sockets.len(), took.as_secs_f64());
    std::io::stdout().flush()?;
    // Hold them (idle: nothing to read) until stdin closes.
    for line in lines {
        line?;
    }
    drop(sockets);
    drop(runtime);
    Ok(())
}
