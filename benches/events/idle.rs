//! `idle`: one measured subscriber among 1,000 then `BENCH_IDLE` (10,000)
//! idle ones on one instance, then with a second instance (mutation on B,
//! subscriber on A); latency of `assignLicense` → event received, and
//! memory per idle subscription as the server's RSS delta.
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use entity::account;
use futures_util::StreamExt;
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    client::{self, Frame, Ws},
    common::{
        BenchDb, Env, Error, Launch, Outcome, PUBLISHED, Server, env_usize, gql, percentile,
        round2, seed_accounts,
    },
};

const WARM_UP: usize = 30;
/// Parallel websocket handshakes while opening idle subscriptions.
pub const CONNECT_CONCURRENCY: usize = 128;

/// An event as the measured subscriber received it.
struct Received {
    at: Instant,
    at_wall: SystemTime,
    occurred_at: String,
}

/// Read the measured subscription on its own task, stamping each event.
fn spawn_reader(mut ws: Ws) -> mpsc::UnboundedReceiver<Received> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            let at = Instant::now();
            let at_wall = SystemTime::now();
            if let Frame::Event { occurred_at, .. } = client::frame(&message)
                && tx
                    .send(Received {
                        at,
                        at_wall,
                        occurred_at,
                    })
                    .is_err()
            {
                break;
            }
        }
    });
    rx
}

#[derive(Clone, serde::Serialize)]
pub struct Latency {
    /// The scenario that measured it (`idle`, `scale`).
    pub scenario: &'static str,
    pub name: String,
    pub instances: usize,
    pub idle_subscribers: usize,
    pub samples: usize,
    /// Mutation sent → event received.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Event's `occurredAt` (transaction start) → event received.
    pub p50_from_occurred_ms: f64,
    pub p99_from_occurred_ms: f64,
    pub date: String,
}

/// The measured subscriber (the owner of a one-key order) and the key it
/// changes.
pub struct Probe {
    /// The scenario its rows belong to.
    scenario: &'static str,
    owner_token: String,
    license_id: String,
    events: mpsc::UnboundedReceiver<Received>,
    round: u64,
}

impl Probe {
    /// Seed the owner and an administrator, create a paid one-key order
    /// through `server`, and subscribe the owner on `server` after the
    /// events so far.
    pub async fn set_up(
        scenario: &'static str,
        http: &reqwest::Client,
        server: &Server,
        db: &DatabaseConnection,
    ) -> Result<Probe, Error> {
        let owner = seed_accounts(db, "owner", 1, account::AccountRole::User)
            .await?
            .remove(0)
            .token;
        let admin = seed_accounts(db, "admin", 1, account::AccountRole::Admin)
            .await?
            .remove(0)
            .token;
        let base = &server.base;
        gql(
            http,
            base,
            &admin,
            "mutation{ createProduct(input:{code:\"bench\", name:\"Bench\"}){ code } }",
            json!({}),
        )
        .await?;
        let order = gql(
            http,
            base,
            &owner,
            "mutation{ createOrder(input:{product:\"bench\", quantity:1}){ id } }",
            json!({}),
        )
        .await?;
        let order_id = order["createOrder"]["id"].clone();
        gql(
            http,
            base,
            &admin,
            "mutation($o:ID!){ markOrderPaid(orderId:$o){ status } }",
            json!({"o": order_id}),
        )
        .await?;
        let licenses = gql(
            http,
            base,
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
            http,
            base,
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
        let measured = client::subscribe(server.addr, None, &owner, after.as_deref()).await?;
        Ok(Probe {
            scenario,
            owner_token: owner,
            license_id,
            events: spawn_reader(measured),
            round: 0,
        })
    }

    /// Assign the key through `via` `samples` times (after a warm-up), one at
    /// a time, and time each event's arrival at the measured subscriber.
    pub async fn measure(
        &mut self,
        http: &reqwest::Client,
        via: &Server,
        name: &str,
        instances: usize,
        idle: usize,
        samples: usize,
    ) -> Result<Latency, Error> {
        let mut from_send = Vec::with_capacity(samples);
        let mut from_occurred = Vec::with_capacity(samples);
        for i in 0..WARM_UP + samples {
            self.round += 1;
            let email = format!("assignee{}@bench.example.com", self.round);
            let sent = Instant::now();
            gql(
                http,
                &via.base,
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
            let occurred: DateTime<Utc> = received.occurred_at.parse()?;
            let at: DateTime<Utc> = received.at_wall.into();
            from_occurred.push((at - occurred).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
        from_send.sort_by(f64::total_cmp);
        from_occurred.sort_by(f64::total_cmp);
        Ok(Latency {
            scenario: self.scenario,
            name: name.into(),
            instances,
            idle_subscribers: idle,
            samples,
            p50_ms: round2(percentile(&from_send, 50.0)),
            p99_ms: round2(percentile(&from_send, 99.0)),
            max_ms: round2(from_send.last().copied().unwrap_or(f64::NAN)),
            p50_from_occurred_ms: round2(percentile(&from_occurred, 50.0)),
            p99_from_occurred_ms: round2(percentile(&from_occurred, 99.0)),
            date: Utc::now().to_rfc3339(),
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

pub async fn run(env: &Env) -> Result<Outcome, Error> {
    let idle_max = env_usize("BENCH_IDLE", 10_000)?;
    let samples = env_usize("BENCH_SAMPLES", 300)?.max(1);
    let db = BenchDb::create(env, "idle").await?;
    let result = scenario(env, &db, idle_max, samples).await;
    db.drop().await;
    result
}

async fn scenario(
    env: &Env,
    bench_db: &BenchDb,
    idle_max: usize,
    samples: usize,
) -> Result<Outcome, Error> {
    let idle_small = idle_max.min(1000);
    let launch = Launch::new(&bench_db.url, &env.redis_url, &env.channel("idle"));
    let a = Server::start(launch.clone()).await?;
    let db = sea_orm::Database::connect(&bench_db.url).await?;
    let http = reqwest::Client::new();

    eprintln!("idle: seeding {idle_max} accounts…");
    let mut probe = Probe::set_up("idle", &http, &a, &db).await?;
    let idle_tokens: Vec<String> = seed_accounts(&db, "idle", idle_max, account::AccountRole::User)
        .await?
        .into_iter()
        .map(|s| s.token)
        .collect();
    a.wait_subscribers(&http, 1, Duration::from_secs(60))
        .await?;
    let mut scenarios = Vec::new();
    let mut memory = Vec::new();

    // Warm the server (pools, allocator) before the memory baseline.
    probe.measure(&http, &a, "warm-up", 1, 0, 50).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rss_before = a.rss();
    eprintln!("idle: opening {idle_small} idle subscriptions…");
    let (mut idle, took) = client::open_idle(
        a.addr,
        None,
        &idle_tokens[..idle_small],
        None,
        CONNECT_CONCURRENCY,
    )
    .await?;
    a.wait_subscribers(&http, idle_small + 1, Duration::from_secs(60))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = a.rss();
    memory.push(Memory {
        idle_subscribers: idle_small,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        bytes_per_idle_subscriber: rss_after.saturating_sub(rss_before) / idle_small.max(1) as u64,
        open_seconds: round2(took.as_secs_f64()),
    });
    scenarios.push(
        probe
            .measure(&http, &a, "1 instance", 1, idle_small, samples)
            .await?,
    );

    if idle_max > idle_small {
        eprintln!(
            "idle: opening {} more idle subscriptions…",
            idle_max - idle_small
        );
        let (more, took_more) = client::open_idle(
            a.addr,
            None,
            &idle_tokens[idle_small..],
            None,
            CONNECT_CONCURRENCY,
        )
        .await?;
        idle.extend(more);
        a.wait_subscribers(&http, idle_max + 1, Duration::from_secs(60))
            .await?;
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

    eprintln!("idle: starting a second instance…");
    let b = Server::start(launch).await?;
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
    let published = a.metric(&http, PUBLISHED).await + b.metric(&http, PUBLISHED).await;
    drop(idle);
    db.close().await.ok();
    b.stop().await;
    a.stop().await;

    let mut md = String::new();
    md.push_str("### Idle subscribers (`-- idle`)\n\n");
    md.push_str(&latency_table(&scenarios));
    md.push('\n');
    md.push_str(
        "| idle subscribers | server RSS before | after | per idle subscriber | time to open |\n",
    );
    md.push_str("| ---: | ---: | ---: | ---: | ---: |\n");
    for m in &memory {
        md.push_str(&format!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.1} KB | {:.1} s |\n",
            m.idle_subscribers,
            m.rss_before_bytes as f64 / 1048576.0,
            m.rss_after_bytes as f64 / 1048576.0,
            m.bytes_per_idle_subscriber as f64 / 1000.0,
            m.open_seconds
        ));
    }
    md.push_str(
        "\nLatency: mutation sent → event received by the measured subscriber (an upper bound \
         of commit → receipt); goals: p99 < 100 ms with 10,000 subscribers, < 20 KB per idle \
         subscriber.\n",
    );
    let mut sections = serde_json::Map::new();
    sections.insert("memory".into(), serde_json::to_value(&memory)?);
    sections.insert("events_published".into(), json!(published));
    Ok(Outcome {
        name: "idle",
        markdown: md,
        latency: scenarios
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<Value>, _>>()?,
        sections,
    })
}

/// The latency rows as a markdown table.
pub fn latency_table(rows: &[Latency]) -> String {
    let mut md = String::from(
        "| scenario | idle subscribers | samples | p50 ms | p99 ms | max ms | p50 from occurredAt | p99 from occurredAt |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for s in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            s.name,
            s.idle_subscribers,
            s.samples,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.p50_from_occurred_ms,
            s.p99_from_occurred_ms
        ));
    }
    md
}
