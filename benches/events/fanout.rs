//! `fanout`: one organization whose `BENCH_FANOUT_SUBSCRIBERS` (1,000)
//! admins each hold one `events` subscription, while its order's keys change
//! at a fixed `BENCH_FANOUT_RATE` (20/s: `assignLicense` and
//! `unassignLicense` in turn, sent by the owner) for `BENCH_FANOUT_SECONDS`
//! (10): every change is an event for every admin (`rights::order_managers`),
//! 20,000 deliveries/s. Reports the delivery latency over all deliveries
//! (mutation sent → event received at each subscriber), the deliveries/s
//! received, the server's and PostgreSQL's CPU, and the SQL statements the
//! subscribers cost per mutation: the same mutations are first sent with no
//! subscriber (`BENCH_FANOUT_BASELINE_SECONDS`, 3) and the statements per
//! mutation then are the write path's own.
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use entity::{
    account, event, event::EventKind, organization, organization_member,
    organization_member::OrganizationRole,
};
use futures_util::StreamExt;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder,
};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    client::{self, Frame, Ws},
    common::{
        BenchDb, DELIVERED, Env, Error, Launch, MachineCpu, Outcome, PUBLISHED, SQL_STATEMENTS,
        Server, cores, env_f64, env_usize, gql, percentile, postgres_cpu, process_cpu, round2,
        seed_accounts,
    },
    idle::CONNECT_CONCURRENCY,
};

/// Goal: p99 of mutation sent → event received, over all deliveries.
const GOAL_P99_MS: f64 = 50.0;

/// Time given the relay and the mail worker (which sends each change's
/// email) after a window before its statements are read.
const SETTLE: Duration = Duration::from_millis(1500);

struct Config {
    subscribers: usize,
    rate: f64,
    seconds: f64,
    baseline_seconds: f64,
    /// Keys changed in turn: each is changed once per `licenses / rate`
    /// seconds, long after its previous change committed.
    licenses: usize,
    /// Longest wait for the last deliveries after the last mutation answered.
    drain: Duration,
}

impl Config {
    fn read() -> Result<Config, Error> {
        let rate = env_f64("BENCH_FANOUT_RATE", 20.0)?;
        Ok(Config {
            subscribers: env_usize("BENCH_FANOUT_SUBSCRIBERS", 1000)?.max(1),
            rate,
            seconds: env_f64("BENCH_FANOUT_SECONDS", 10.0)?,
            baseline_seconds: env_f64("BENCH_FANOUT_BASELINE_SECONDS", 3.0)?,
            licenses: (rate.ceil() as usize).clamp(2, 100),
            drain: Duration::from_secs_f64(env_f64("BENCH_FANOUT_DRAIN_SECONDS", 60.0)?),
        })
    }
}

pub async fn run(env: &Env) -> Result<Outcome, Error> {
    let config = Config::read()?;
    let db = BenchDb::create(env, "fanout").await?;
    let result = scenario(env, &db, &config).await;
    db.drop().await;
    result
}

const ASSIGN: &str =
    "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l, email:$e}){ id } }";
const UNASSIGN: &str = "mutation($l:ID!){ unassignLicense(licenseId:$l){ id } }";

/// The email mutation `n` assigns a key to; the event names it, which is
/// how a received event is traced back to its mutation.
fn assignee(n: usize) -> String {
    format!("m{n}@bench.example.com")
}

fn assignee_number(email: &Value) -> Option<usize> {
    email
        .as_str()?
        .strip_prefix('m')?
        .split_once('@')?
        .0
        .parse()
        .ok()
}

/// Mutation `n` changes key `n % L`: its `k`-th change (`k = n / L`)
/// assigns it when `k` is even, unassigns it when odd.
async fn mutate(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    licenses: &[String],
    n: usize,
) -> Result<(), Error> {
    let license = &licenses[n % licenses.len()];
    if (n / licenses.len()).is_multiple_of(2) {
        gql(
            http,
            base,
            token,
            ASSIGN,
            json!({"l": license, "e": assignee(n)}),
        )
        .await?;
    } else {
        gql(http, base, token, UNASSIGN, json!({"l": license})).await?;
    }
    Ok(())
}

/// One mutation of a fixed-rate run.
struct Sent {
    n: usize,
    at: Instant,
    took: Duration,
    result: Result<(), String>,
}

/// Send mutations `first..` at `rate` for `seconds`, each at its due time
/// whether or not the previous ones answered (open loop).
async fn drive(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    licenses: &Arc<Vec<String>>,
    first: usize,
    rate: f64,
    seconds: f64,
) -> Vec<Sent> {
    let count = (rate * seconds).round().max(1.0) as usize;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let (http, base, token, licenses) = (
            http.clone(),
            base.to_owned(),
            token.to_owned(),
            licenses.clone(),
        );
        let n = first + i;
        tasks.push(tokio::spawn(async move {
            let at = Instant::now();
            let result = mutate(&http, &base, &token, &licenses, n)
                .await
                .map_err(|e| e.to_string());
            Sent {
                n,
                at,
                took: at.elapsed(),
                result,
            }
        }));
    }
    let mut sent = Vec::with_capacity(count);
    for task in tasks {
        if let Ok(s) = task.await {
            sent.push(s);
        }
    }
    sent
}

/// An event as one subscriber received it.
struct Delivery {
    id: String,
    at: Instant,
}

/// What one subscriber heard until told to stop.
#[derive(Default)]
struct Heard {
    deliveries: Vec<Delivery>,
    errors: Vec<String>,
    ended: bool,
}

fn listen(
    mut ws: Ws,
    received: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Heard> {
    tokio::spawn(async move {
        let mut heard = Heard::default();
        loop {
            tokio::select! {
                message = ws.next() => match message {
                    Some(Ok(message)) => match client::frame(&message) {
                        Frame::Event { id, .. } => {
                            heard.deliveries.push(Delivery { id, at: Instant::now() });
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        Frame::Error(error) => heard.errors.push(error),
                        Frame::Complete => {
                            heard.ended = true;
                            break;
                        }
                        Frame::Other => {}
                    },
                    _ => {
                        heard.ended = true;
                        break;
                    }
                },
                _ = stop.changed() => break,
            }
        }
        heard
    })
}

/// CPU readings at one moment: the server, PostgreSQL's backends of this
/// database, this generator, the machine.
struct CpuAt {
    server: f64,
    postgres: f64,
    client: f64,
    machine: MachineCpu,
}

impl CpuAt {
    fn now(server: &Server, database: &str) -> CpuAt {
        CpuAt {
            server: server.cpu(),
            postgres: postgres_cpu(database),
            client: process_cpu(std::process::id()).unwrap_or(0.0),
            machine: MachineCpu::now(),
        }
    }
}

/// The last event's cursor so far (subscribers start after it).
async fn last_cursor(db: &DatabaseConnection) -> Result<Option<String>, Error> {
    Ok(event::Entity::find()
        .order_by_desc(event::Column::Tx)
        .order_by_desc(event::Column::Id)
        .one(db)
        .await?
        .map(|e| format!("{}:{}", e.tx, e.id)))
}

async fn scenario(env: &Env, bench_db: &BenchDb, config: &Config) -> Result<Outcome, Error> {
    let n_subscribers = config.subscribers;
    let server = Server::start(Launch::new(
        &bench_db.url,
        &env.redis_url,
        &env.channel("fanout"),
    ))
    .await?;
    let db = sea_orm::Database::connect(&bench_db.url).await?;
    let http = reqwest::Client::new();
    let base = server.base.clone();

    eprintln!("fanout: seeding an organization of {n_subscribers} admins…");
    let owner = seed_accounts(&db, "owner", 1, account::AccountRole::User)
        .await?
        .remove(0);
    let admin = seed_accounts(&db, "admin", 1, account::AccountRole::Admin)
        .await?
        .remove(0);
    let members = seed_accounts(&db, "orgadmin", n_subscribers, account::AccountRole::User).await?;
    // The organization and its memberships straight in the database, as
    // the accounts: the owner and every subscriber are its admins.
    let now = Utc::now();
    let org = organization::ActiveModel {
        name: Set("Bench SAS".into()),
        siret: Set("73282932000074".into()),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&db)
    .await?;
    let emails: Vec<&String> = std::iter::once(&owner.email)
        .chain(members.iter().map(|m| &m.email))
        .collect();
    for chunk in emails.chunks(1000) {
        organization_member::Entity::insert_many(chunk.iter().map(|email| {
            organization_member::ActiveModel {
                organization_id: Set(org.id),
                email: Set((*email).clone()),
                role: Set(OrganizationRole::Admin),
                created_at: Set(now),
            }
        }))
        .exec(&db)
        .await?;
    }
    gql(
        &http,
        &base,
        &admin.token,
        "mutation{ createProduct(input:{code:\"bench\", name:\"Bench\"}){ code } }",
        json!({}),
    )
    .await?;
    let order = gql(
        &http,
        &base,
        &owner.token,
        "mutation($q:Int!,$org:ID!){ createOrder(input:{product:\"bench\", quantity:$q, organizationId:$org}){ id } }",
        json!({"q": config.licenses, "org": org.id.to_string()}),
    )
    .await?;
    let order_id = order["createOrder"]["id"]
        .as_str()
        .ok_or("order id")?
        .to_owned();
    gql(
        &http,
        &base,
        &admin.token,
        "mutation($o:ID!){ markOrderPaid(orderId:$o){ status } }",
        json!({"o": order_id}),
    )
    .await?;
    let page = gql(
        &http,
        &base,
        &owner.token,
        "query($o:ID!,$n:Int!){ order(id:$o){ licenses(first:$n){ edges { node { id } } } } }",
        json!({"o": order_id, "n": config.licenses}),
    )
    .await?;
    let licenses: Vec<String> = page["order"]["licenses"]["edges"]
        .as_array()
        .ok_or("licenses")?
        .iter()
        .filter_map(|e| e["node"]["id"].as_str().map(str::to_owned))
        .collect();
    if licenses.len() != config.licenses {
        return Err(format!(
            "{} keys listed, {} expected",
            licenses.len(),
            config.licenses
        )
        .into());
    }
    let licenses = Arc::new(licenses);

    // Baseline: the same mutations with nobody subscribed.
    eprintln!(
        "fanout: {:.0} s of {}/s with no subscriber…",
        config.baseline_seconds, config.rate
    );
    tokio::time::sleep(SETTLE).await;
    let statements = server.metric(&http, SQL_STATEMENTS).await;
    let baseline = drive(
        &http,
        &base,
        &owner.token,
        &licenses,
        0,
        config.rate,
        config.baseline_seconds,
    )
    .await;
    tokio::time::sleep(SETTLE).await;
    let baseline_statements = server.metric(&http, SQL_STATEMENTS).await - statements;
    let baseline_ok = baseline.iter().filter(|s| s.result.is_ok()).count();
    if baseline_ok == 0 {
        let error = baseline
            .iter()
            .find_map(|s| s.result.as_ref().err().cloned())
            .unwrap_or_default();
        return Err(format!("every baseline mutation failed: {error}").into());
    }
    let baseline_per_mutation = baseline_statements / baseline_ok as f64;

    // The subscribers, after every event so far.
    eprintln!("fanout: opening {n_subscribers} subscriptions…");
    let after = last_cursor(&db).await?;
    let tokens: Vec<String> = members.iter().map(|m| m.token.clone()).collect();
    let (sockets, open_took) = client::open_idle(
        server.addr,
        None,
        &tokens,
        after.as_deref(),
        CONNECT_CONCURRENCY,
    )
    .await?;
    server
        .wait_subscribers(&http, n_subscribers, Duration::from_secs(120))
        .await?;
    let received = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let listeners: Vec<JoinHandle<Heard>> = sockets
        .into_iter()
        .map(|ws| listen(ws, received.clone(), stopped.clone()))
        .collect();
    tokio::time::sleep(SETTLE).await;

    eprintln!(
        "fanout: {:.0} s of {}/s to {n_subscribers} subscribers…",
        config.seconds, config.rate
    );
    let before = server.metrics(&http).await;
    let cpu_before = CpuAt::now(&server, &bench_db.name);
    let t0 = Instant::now();
    let sent = drive(
        &http,
        &base,
        &owner.token,
        &licenses,
        baseline.len(),
        config.rate,
        config.seconds,
    )
    .await;
    let sending = t0.elapsed();
    let ok: Vec<&Sent> = sent.iter().filter(|s| s.result.is_ok()).collect();
    let failed = sent.len() - ok.len();
    let first_error = sent.iter().find_map(|s| s.result.as_ref().err().cloned());
    let expected = ok.len() * n_subscribers;
    let drain_deadline = Instant::now() + config.drain;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let window = t0.elapsed();
    let machine_busy = cpu_before.machine.busy_since();
    let cpu_after = CpuAt::now(&server, &bench_db.name);
    tokio::time::sleep(SETTLE).await;
    let after_metrics = server.metrics(&http).await;
    let _ = stop.send(true);
    let mut heard = Vec::with_capacity(listeners.len());
    for listener in listeners {
        heard.push(listener.await.unwrap_or_default());
    }

    // Trace every delivery back to its mutation, by the events' rows.
    let order_number: i64 = order_id.parse()?;
    let rows = event::Entity::find()
        .filter(event::Column::OrderId.eq(order_number))
        .all(&db)
        .await?;
    let mut mutation_of: HashMap<String, usize> = HashMap::new();
    for row in rows {
        let changes: Value = serde_json::from_str(&row.changes).unwrap_or_default();
        let n = match row.kind {
            EventKind::LicenseAssigned => assignee_number(&changes["after"]["assigneeEmail"]),
            EventKind::LicenseUnassigned => {
                assignee_number(&changes["before"]["assigneeEmail"]).map(|n| n + licenses.len())
            }
            _ => None,
        };
        if let Some(n) = n {
            mutation_of.insert(format!("{}:{}", row.tx, row.id), n);
        }
    }
    let sent_at: HashMap<usize, Instant> = ok.iter().map(|s| (s.n, s.at)).collect();
    let mut latencies = Vec::with_capacity(expected);
    let (mut duplicates, mut unknown, mut missing) = (0usize, 0usize, 0usize);
    let mut last_receipt = t0;
    let mut stream_errors = 0usize;
    let mut first_stream_error = None;
    let mut ended = 0usize;
    for h in &heard {
        let mut seen = HashSet::new();
        for d in &h.deliveries {
            match mutation_of
                .get(&d.id)
                .and_then(|n| sent_at.get(n).map(|at| (*n, *at)))
            {
                Some((n, at)) => {
                    if !seen.insert(n) {
                        duplicates += 1;
                        continue;
                    }
                    latencies.push(d.at.saturating_duration_since(at).as_secs_f64() * 1000.0);
                    last_receipt = last_receipt.max(d.at);
                }
                None => unknown += 1,
            }
        }
        missing += ok.len() - seen.len().min(ok.len());
        stream_errors += h.errors.len();
        if first_stream_error.is_none() {
            first_stream_error = h.errors.first().cloned();
        }
        ended += usize::from(h.ended);
    }
    latencies.sort_by(f64::total_cmp);
    let delivered = latencies.len();
    let receiving = last_receipt.saturating_duration_since(t0).as_secs_f64();
    let last_sent = ok.iter().map(|s| s.at).max().unwrap_or(t0);
    let drain = last_receipt.saturating_duration_since(last_sent);
    let mut mutation_ms: Vec<f64> = ok.iter().map(|s| s.took.as_secs_f64() * 1000.0).collect();
    mutation_ms.sort_by(f64::total_cmp);

    let metric = |name: &str| {
        after_metrics.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    let statements = metric(SQL_STATEMENTS);
    let per_mutation = statements / ok.len().max(1) as f64;
    let for_subscribers = per_mutation - baseline_per_mutation;
    let wall = window.as_secs_f64();
    let share = |seconds: f64| 100.0 * seconds / wall;
    let server_cpu = share(cpu_after.server - cpu_before.server);
    let postgres = share(cpu_after.postgres - cpu_before.postgres);
    let client_cpu = share(cpu_after.client - cpu_before.client);
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);

    let results = json!({
        "date": Utc::now().to_rfc3339(),
        "subscribers": n_subscribers,
        "rate_per_s": config.rate,
        "seconds": config.seconds,
        "keys_changed_in_turn": licenses.len(),
        "open_seconds": round2(open_took.as_secs_f64()),
        "mutations": { "sent": sent.len(), "failed": failed, "first_error": first_error,
            "all_answered_seconds": round2(sending.as_secs_f64()),
            "p50_ms": round2(percentile(&mutation_ms, 50.0)),
            "p99_ms": round2(percentile(&mutation_ms, 99.0)) },
        "deliveries": { "expected": expected, "received": delivered, "duplicates": duplicates,
            "missing": missing, "unknown": unknown, "stream_errors": stream_errors,
            "first_stream_error": first_stream_error, "streams_ended": ended,
            "per_s": round2(delivered as f64 / receiving.max(1e-9)),
            "offered_per_s": round2(expected as f64 / config.seconds),
            "drain_seconds": round2(drain.as_secs_f64()) },
        "latency_ms": { "p50": round2(p50), "p90": round2(percentile(&latencies, 90.0)),
            "p99": round2(p99), "max": round2(latencies.last().copied().unwrap_or(f64::NAN)) },
        "cpu_percent_of_one_core": { "server": round2(server_cpu), "postgres": round2(postgres),
            "generator": round2(client_cpu) },
        "machine_busy_percent": round2(machine_busy),
        "window_seconds": round2(wall),
        "sql": { "statements": statements, "per_mutation": round2(per_mutation),
            "per_mutation_without_subscribers": round2(baseline_per_mutation),
            "baseline_mutations": baseline_ok,
            "for_subscribers_per_mutation": round2(for_subscribers),
            "for_subscribers_per_delivery": (for_subscribers / n_subscribers as f64 * 1000.0).round() / 1000.0 },
        "events_published": metric(PUBLISHED),
        "events_handed_to_subscriptions": metric(DELIVERED),
        // Every counter's change over the window, whatever the server exports.
        "counters": after_metrics
            .keys()
            .filter(|name| name.ends_with("_total"))
            .map(|name| (name.clone(), json!(metric(name))))
            .collect::<serde_json::Map<String, Value>>(),
        "goal_p99_ms": GOAL_P99_MS,
    });

    let mut md = String::from("### Organization fan-out (`-- fanout`)\n\n");
    md.push_str(
        "| scenario | subscribers | mutations/s | deliveries/s | p50 ms | p99 ms | max ms | notes |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    let mut notes = vec![format!(
        "{delivered} of {expected} deliveries received ({duplicates} twice, {unknown} unknown, \
         last {:.2} s after the last mutation)",
        drain.as_secs_f64()
    )];
    if failed > 0 {
        notes.push(format!(
            "**{failed} mutations failed**, first: {}",
            first_error.as_deref().unwrap_or("?")
        ));
    }
    if stream_errors > 0 || ended > 0 {
        notes.push(format!(
            "**{stream_errors} stream errors, {ended} streams ended**, first: {}",
            first_stream_error.as_deref().unwrap_or("-")
        ));
    }
    notes.push(format!(
        "CPU % of one core: server {server_cpu:.0}, PostgreSQL {postgres:.0}, generator \
         {client_cpu:.0}; machine {machine_busy:.0}% busy ({} cores)",
        cores()
    ));
    notes.push(format!(
        "SQL statements per mutation: {per_mutation:.1} with the subscribers, \
         {baseline_per_mutation:.1} without, so {for_subscribers:.1} for {n_subscribers} \
         subscribers ({:.3} per delivery)",
        for_subscribers / n_subscribers as f64
    ));
    notes.push(format!(
        "mutation p50 {:.1} ms, p99 {:.1} ms",
        percentile(&mutation_ms, 50.0),
        percentile(&mutation_ms, 99.0)
    ));
    md.push_str(&format!(
        "| 1 organization, its admins subscribed | {n_subscribers} | {:.0} | {:.0} | {p50:.2} | {p99:.2} | {:.2} | {} |\n",
        ok.len() as f64 / config.seconds,
        delivered as f64 / receiving.max(1e-9),
        latencies.last().copied().unwrap_or(f64::NAN),
        notes.join("; ")
    ));
    md.push_str(&format!(
        "\nLatency: mutation sent → event received, over every delivery. Goal p99 ≤ {GOAL_P99_MS} ms: {}.\n",
        if p99 <= GOAL_P99_MS && missing == 0 {
            "met"
        } else {
            "**not met**"
        }
    ));

    db.close().await.ok();
    server.stop().await;
    let mut sections = serde_json::Map::new();
    sections.insert("fanout".into(), results);
    Ok(Outcome {
        name: "fanout",
        markdown: md,
        latency: Vec::new(),
        sections,
    })
}
