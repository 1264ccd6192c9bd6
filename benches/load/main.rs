//! The load generator of `just bench` (`cargo bench --bench load`): starts the
//! release `keyledger` binary on a fresh PostgreSQL database with Redis, drives
//! GraphQL over HTTP at it, drives the same SQL work straight at PostgreSQL for
//! the ceiling, and prints one markdown table (also written as JSON under
//! `bench/results/`). `cargo bench --bench load -- keys` (`just bench-keys`)
//! runs only the key-generation timing, on PostgreSQL and SQLite; `-- claims`
//! only the claims and their ceiling; `-- validate` only `validateLicense`
//! and its floor; `-- licensing` only `checkOutLicense` and
//! `heartbeatLicense`; `-- read` only the dashboard's pages (an order's
//! keys, claims, license requests), over an order of its own.
//!
//! Settings: `BENCH_WARMUP` and `BENCH_SECONDS` (seconds of warm-up and of
//! measurement per run, default 1 and 3); `BENCH_FIXED_SECONDS` (measurement
//! of the fixed-rate runs, default 10: their p99 is a goal, and over 3 s it
//! rests on the slowest 1% of a few thousand requests, too few to be steady);
//! `BENCH_DATABASE_URL` (else
//! `TEST_DATABASE_URL`, else postgres://postgres@127.0.0.1:5432/test) is the
//! server a database is created on and dropped from; `BENCH_REDIS_URL` (else
//! `TEST_REDIS_URL`, else redis://127.0.0.1:6379), used on a channel of its own;
//! `BENCH_SERVER`, a `keyledger` binary to measure instead of this build's.
mod admin;
mod env;
mod http1;
mod measure;
mod report;

/// The generator uses the server's allocator too: it shares the 2 cores with
/// the server, and mimalloc costs it less CPU per request than glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    collections::HashMap,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use entity::{account, activation, claim, license, license_request, order, product, session};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
    sqlx::{self, postgres::PgPoolOptions},
};
use serde_json::json;

use bytes::Bytes;
use env::{Client, Cpu, PgDatabase, Server, ServerConfig};
use http1::Connections;
use measure::{Stats, Window, closed_loop, open_loop};
use report::{Report, Row};

const PASSWORD: &str = "correct horse battery";
/// Verified accounts that claim keys; a worker claims as `claimers[worker % CLAIMERS]`.
const CLAIMERS: usize = 128;
const CONCURRENCY: [usize; 4] = [1, 8, 32, 128];
/// Turns keyledger and the ceiling take at each concurrency.
const ROUNDS: u32 = 3;
/// Keys per order: the largest order there is.
const ORDER_KEYS: i32 = 100_000;
/// Orders paid (and timed) per backend.
const KEYGEN_RUNS: usize = 3;
/// Connections of the ceiling's pool: the same as the server's, which reads
/// `DATABASE_POOL_SIZE` from this process's environment too.
fn ceiling_pool() -> u32 {
    std::env::var("DATABASE_POOL_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| keyledger::db::default_pool_size("postgres://"))
}
const SQL_STATEMENTS: &str = "keyledger_sql_statements_total";

const CLAIM: &str = "mutation($k:String!){ claimLicense(key:$k){ outcome claim { id status } } }";
const READ: &str = "query($o:ID!,$n:Int!){ order(id:$o){ licenses(first:$n){ edges { node { key assigneeEmail assignee { email } } } } } }";
/// The dashboard's incoming claims (assets/dashboard/views/requests.js).
const READ_CLAIMS: &str = "query($n:Int!){ claimRequests(status: PENDING, first: $n){ edges { node { id createdAt claimer { email } license { id key order { number } } } } } }";
/// The dashboard's incoming license requests (assets/dashboard/views/requests.js).
const READ_REQUESTS: &str = "query($n:Int!){ licenseRequests(direction: INCOMING, status: PENDING, first: $n){ edges { node { id createdAt message requester { email } } } } }";
/// Pending claims and license requests addressed to the buyer, for the pages above.
const LISTED: usize = 100;
/// Keys of the order the read scenarios alone (`-- read`) pay for.
const READ_ORDER_KEYS: i32 = 1_000;
const VALIDATE: &str =
    "query($k:String!,$f:String){ validateLicense(key:$k,fingerprint:$f){ valid code } }";
const SIGN_IN: &str = "mutation($e:String!,$p:String!){ signIn(email:$e,password:$p){ token } }";

struct Options {
    keys_only: bool,
    /// Only the claims, their ceiling and the fixed-rate claim runs: the
    /// quick loop while working on the claim path.
    claims_only: bool,
    /// Only `validateLicense` and its floor (over keys assigned straight in
    /// the database): the quick loop while working on validation.
    validate_only: bool,
    /// Only the burst of 64 sign-ins and the server's memory during it.
    signin_only: bool,
    /// Only claims with and without an `Idempotency-Key`, turn about.
    idempotency_only: bool,
    /// Only the admin filters on a 1,000,000-key store (not part of a full run).
    admin_only: bool,
    /// Only `checkOutLicense` and `heartbeatLicense`.
    licensing_only: bool,
    /// Only the dashboard's pages (keys, claims, license requests), over an
    /// order of [`READ_ORDER_KEYS`] rather than the key generation's.
    read_only: bool,
    window: Window,
    /// The fixed-rate (open-loop) runs' window.
    fixed_window: Window,
}

fn options() -> Options {
    let mut keys_only = false;
    let mut claims_only = false;
    let mut validate_only = false;
    let mut signin_only = false;
    let mut idempotency_only = false;
    let mut admin_only = false;
    let mut licensing_only = false;
    let mut read_only = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            // cargo passes `--bench` to every bench target.
            "--bench" => {}
            "keys" | "--keys" => keys_only = true,
            "claims" | "--claims" => claims_only = true,
            "validate" | "--validate" => validate_only = true,
            "signin" | "--signin" => signin_only = true,
            "idempotency" | "--idempotency" => idempotency_only = true,
            "admin" | "--admin" => admin_only = true,
            "licensing" | "--licensing" => licensing_only = true,
            "read" | "--read" => read_only = true,
            other => eprintln!("ignoring argument {other:?}"),
        }
    }
    let seconds = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(default)
    };
    let warmup = Duration::from_secs_f64(seconds("BENCH_WARMUP", 1.0));
    Options {
        keys_only,
        claims_only,
        validate_only,
        signin_only,
        idempotency_only,
        admin_only,
        licensing_only,
        read_only,
        window: Window {
            warmup,
            measure: Duration::from_secs_f64(seconds("BENCH_SECONDS", 3.0)),
        },
        fixed_window: Window {
            warmup,
            measure: Duration::from_secs_f64(seconds("BENCH_FIXED_SECONDS", 10.0)),
        },
    }
}

fn main() -> ExitCode {
    // reqwest is built without a crypto provider (the server's choice):
    // install ring's, as the server does, before any client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(options())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn step(what: &str) {
    eprintln!("bench: {what}");
}

async fn run(options: Options) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut report = Report::new(env::machine_facts().await);
    if options.admin_only {
        admin::run(&mut report, options.window).await?;
        return finish(report, "admin", started);
    }
    let password_hash = keyledger::auth::password::hash(PASSWORD.into())
        .await
        .map_err(|e| e.message())?;

    step("PostgreSQL: fresh database, keyledger (release) with Redis");
    let pg = PgDatabase::create().await?;
    let redis = env::redis_url();
    let server = Server::start(ServerConfig {
        database_url: &pg.url,
        redis_url: Some(&redis),
    })
    .await?;
    let client = Client::new(&server.base);
    let db = connect(&pg.url).await?;
    let accounts = seed_accounts(&db, &password_hash, CLAIMERS).await?;

    if options.signin_only {
        step("signIn burst");
        sign_in_burst(&mut report, &client, &server, &accounts).await?;
        server.stop().await;
        return finish(report, "signin", started);
    }

    if options.read_only {
        step("an order of 1,000 keys, its first 100 assigned; claims and requests");
        let order_id = read_order(&client, &accounts).await?;
        assign_first_keys(&db, order_id, &accounts).await?;
        seed_lists(&db, order_id, &accounts).await?;
        analyze(&db).await?;
        read_scenarios(
            &mut report,
            &client,
            (server.pid(), &pg.name),
            &accounts,
            order_id,
            options.window,
        )
        .await?;
        server.stop().await;
        return finish(report, "read", started);
    }

    step("key generation on PostgreSQL");
    let orders = keygen(&mut report, "PostgreSQL", &client, &accounts, Some(2.0)).await?;

    if options.keys_only {
        server.stop().await;
        drop(pg);
        keygen_sqlite(&mut report, &password_hash).await?;
        return finish(report, "keys", started);
    }

    // The key generation above bulk-loaded 300,000 rows: vacuum and analyze
    // now rather than let autovacuum do it in the middle of a measurement.
    vacuum(&db).await?;

    if options.licensing_only {
        step("checkOutLicense and heartbeatLicense");
        licensing_scenario(
            &mut report,
            &client,
            &db,
            (&orders, &accounts.claimers[0].email),
            (server.pid(), &pg.name),
            options.window,
            options.fixed_window,
        )
        .await?;
        server.stop().await;
        return finish(report, "licensing", started);
    }

    if options.validate_only {
        assign_for_validation(&db, orders[0], &accounts.claimers[0].email).await?;
        step("validateLicense");
        validate_scenario(
            &mut report,
            &client,
            &db,
            (server.pid(), &pg.name),
            options.window,
            options.fixed_window,
        )
        .await?;
        server.stop().await;
        return finish(report, "validate", started);
    }

    // The first order's keys are claimed through keyledger (in id order, so
    // its first page of keys gets assignees for the read scenario); the
    // other orders' keys are there in case the claims outrun the first.
    let mut claim_keys = Vec::new();
    for order_id in &orders {
        claim_keys.extend(order_keys(&db, *order_id).await?);
    }
    let app = ClaimLoad {
        connections: Connections::open(client.base(), CLAIM_CONNECTIONS).await?,
        keys: Arc::new(claim_keys),
        next: Arc::new(AtomicUsize::new(0)),
        tokens: Arc::new(accounts.claimers.iter().map(|a| a.token.clone()).collect()),
        done: Arc::new(AtomicU64::new(0)),
        linked: Arc::default(),
        keyed: false,
    };

    if options.idempotency_only {
        idempotency_cost(
            &mut report,
            &client,
            &db,
            &app,
            (server.pid(), &pg.name),
            options.window,
        )
        .await?;
        server.stop().await;
        return finish(report, "idempotency", started);
    }

    step("ceiling: a database of its own, seeded");
    let ceiling_db = PgDatabase::create().await?;
    let ceiling = Ceiling::seed(&ceiling_db.url, &password_hash).await?;

    // Each round's window: the closed-loop window shared among the rounds,
    // after a shorter warm-up (the connections are already open).
    let round_window = Window {
        warmup: options.window.warmup / 2,
        measure: options.window.measure / ROUNDS,
    };
    let mut claim_stats = Vec::new();
    for concurrency in CONCURRENCY {
        // keyledger and the ceiling take turns, a few short windows each: a
        // machine whose speed drifts (a neighbour, the host) then slows
        // both sides of the ratio alike. The ratio is the median of the
        // rounds'; the rows show the median round's figures.
        let mut rounds = Vec::new();
        let mut cpu_total = Cpu::default();
        let mut raw_cpu_total = Cpu::default();
        let (mut claims_total, mut raw_total, mut statements_total) = (0, 0, 0.0);
        for round in 1..=ROUNDS {
            step(&format!(
                "claimLicense at concurrency {concurrency}, round {round} of {ROUNDS}"
            ));
            analyze(&db).await?;
            settle(&client).await?;
            let before = client.metric(SQL_STATEMENTS).await?;
            let done_before = app.done.load(Ordering::Relaxed);
            let cpu_before = Cpu::now(server.pid(), &pg.name);
            let stats = closed_loop(concurrency, round_window, app.closed_op()).await;
            settle(&client).await?;
            let claims = app.done.load(Ordering::Relaxed) - done_before;
            cpu_total.add(&cpu_before.delta(&Cpu::now(server.pid(), &pg.name)));
            claims_total += claims;
            statements_total += client.metric(SQL_STATEMENTS).await? - before;

            step(&format!(
                "ceiling at concurrency {concurrency}, round {round} of {ROUNDS}"
            ));
            ceiling.analyze().await?;
            let done_before = ceiling.done.load(Ordering::Relaxed);
            let cpu_before = Cpu::now(None, &ceiling_db.name);
            let raw = closed_loop(concurrency, round_window, ceiling.op()).await;
            raw_cpu_total.add(&cpu_before.delta(&Cpu::now(None, &ceiling_db.name)));
            raw_total += ceiling.done.load(Ordering::Relaxed) - done_before;
            rounds.push((stats.throughput / raw.throughput, stats, raw));
        }
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let ratios: Vec<String> = rounds
            .iter()
            .map(|(ratio, _, _)| format!("{:.0}%", ratio * 100.0))
            .collect();
        let (ratio, stats, raw) = rounds.swap_remove(rounds.len() / 2);
        let cpu = cpu_total.per_op_ms(claims_total);
        let raw_cpu = raw_cpu_total.per_op_ms(raw_total);
        let statements = statements_total / claims_total.max(1) as f64;

        let mut row = Row::new("claimLicense", concurrency).with_stats(&stats);
        row.note(format!(
            "**{:.0}% of ceiling** (median of rounds: {}); {statements:.1} SQL statements per claim (relay included); CPU ms per claim: server {:.2}, PostgreSQL {:.2}, client {:.2}",
            ratio * 100.0,
            ratios.join(", "),
            cpu.server,
            cpu.postgres,
            cpu.client,
        ));
        report.rows.push(row);
        let mut row =
            Row::new("ceiling: a claim's SQL straight at PostgreSQL", concurrency).with_stats(&raw);
        row.note(format!(
            "{} statements in 1 transaction, pool of {}; CPU ms per claim: PostgreSQL {:.2}, client {:.2}",
            Ceiling::STATEMENTS,
            ceiling_pool(),
            raw_cpu.postgres,
            raw_cpu.client,
        ));
        report.rows.push(row);
        if concurrency == 32 {
            report.goals.push(format!(
                "claimLicense at concurrency 32: {:.0}% of the raw ceiling (goal ≥ 60%): {}",
                ratio * 100.0,
                verdict(ratio >= 0.6)
            ));
        }
        report.raw.insert(
            format!("claim_c{concurrency}"),
            json!({
                "keyledger": stats,
                "ceiling": raw,
                "statements_per_claim": statements,
                "cpu_ms_per_claim": cpu,
                "ceiling_cpu_ms_per_claim": raw_cpu,
            }),
        );
        claim_stats.push(stats);
    }
    let max = claim_stats
        .iter()
        .map(|s| s.throughput)
        .fold(0.0_f64, f64::max);
    let rate = max / 2.0;
    step(&format!(
        "claimLicense at a fixed {rate:.0}/s (half the max)"
    ));
    analyze(&db).await?;
    settle(&client).await?;
    let fixed = open_loop(rate, 1024, options.fixed_window, app.open_op()).await;
    report
        .rows
        .push(fixed_rate_row("claimLicense", "half the max", rate, &fixed));
    report.goals.push(format!(
        "claimLicense p99 at half the max throughput ({rate:.0}/s): {:.2} ms (goal < 10 ms): {}",
        fixed.p99_ms,
        verdict(fixed.p99_ms < 10.0 && fixed.errors == 0)
    ));
    // The same SQL straight at PostgreSQL at the same rate: the p99 that the
    // database and its disk (every claim waits for its commit's WAL flush)
    // give any client at this rate.
    step(&format!("ceiling at a fixed {rate:.0}/s"));
    settle(&client).await?;
    ceiling.analyze().await?;
    let raw_fixed = {
        let op = ceiling.op();
        open_loop(rate, 1024, options.fixed_window, move |seq| {
            op(seq as usize, seq)
        })
        .await
    };
    let mut row = Row::new("ceiling: a claim's SQL at the same fixed rate", "open loop")
        .with_stats(&raw_fixed);
    row.note("the p99 PostgreSQL and its disk give bare SQL at this rate");
    report.rows.push(row);
    drop(ceiling);
    drop(ceiling_db);
    report.raw.insert(
        "claim_fixed_rate".into(),
        json!({"rate": rate, "stats": fixed, "ceiling": raw_fixed}),
    );
    if options.claims_only {
        server.stop().await;
        return finish(report, "claims", started);
    }

    seed_lists(&db, *orders.last().ok_or("no order")?, &accounts).await?;
    analyze(&db).await?;
    read_scenarios(
        &mut report,
        &client,
        (server.pid(), &pg.name),
        &accounts,
        orders[0],
        options.window,
    )
    .await?;

    step("signIn");
    let sign_in = {
        let client = client.clone();
        let email = accounts.sign_in.email.clone();
        closed_loop(8, options.window, move |_, _| {
            let client = client.clone();
            let email = email.clone();
            async move {
                let data = client
                    .gql(None, SIGN_IN, json!({"e": email, "p": PASSWORD}))
                    .await?;
                data["signIn"]["token"]
                    .as_str()
                    .map(|_| ())
                    .ok_or_else(|| "no token".to_owned())
            }
        })
        .await
    };
    let mut row = Row::new("signIn (argon2id m=19 MiB t=2, by design)", 8).with_stats(&sign_in);
    row.note("each also writes a session row");
    report.rows.push(row);
    report.raw.insert("sign_in".into(), json!(sign_in));

    step("signIn burst");
    sign_in_burst(&mut report, &client, &server, &accounts).await?;

    analyze(&db).await?;
    step("validateLicense");
    validate_scenario(
        &mut report,
        &client,
        &db,
        (server.pid(), &pg.name),
        options.window,
        options.fixed_window,
    )
    .await?;

    server.stop().await;
    drop(pg);

    report.rows.extend(report::external_rows());

    keygen_sqlite(&mut report, &password_hash).await?;
    finish(report, "latest", started)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

fn finish(report: Report, name: &str, started: std::time::Instant) -> Result<(), String> {
    let path = report
        .write(name)
        .map_err(|e| format!("write results: {e}"))?;
    println!("{}", report.markdown());
    eprintln!(
        "bench: done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// Concurrency of the `Idempotency-Key` cost run in windows of each kind.
const IDEMPOTENCY_CONCURRENCY: usize = 32;
/// Rounds of each (plain and keyed claims take turns).
const IDEMPOTENCY_ROUNDS: u32 = 16;

/// The cost of an `Idempotency-Key` on `claimLicense` (goal < 10% of the
/// claims' throughput), claims without and with a key (a fresh one per
/// claim, so every claim runs: the insert of its row and the update with
/// its answer are the added work), measured two ways that each cancel the
/// machine's drift (a slow disk flush, a neighbour's load), which moves a
/// single window's throughput by 20 to 40 points on these machines:
/// - at concurrency 1, one client sends them in turn, request by request,
///   so that both kinds meet the same moments of the machine; with one
///   request at a time, claims per second is 1 / the mean time a claim
///   takes, so the cost is 1 − plain/keyed mean time;
/// - at concurrency 32, where the kinds would queue behind each other,
///   they take turns in short windows of equal length, each first in
///   every other round; the cost is 1 − keyed/plain claims over all the
///   windows.
async fn idempotency_cost(
    report: &mut Report,
    client: &Client,
    db: &DatabaseConnection,
    app: &ClaimLoad,
    pids: (Option<u32>, &str),
    window: Window,
) -> Result<(), String> {
    let round_window = Window {
        warmup: window.warmup / 4,
        measure: window.measure / 2,
    };
    // `BENCH_IDEMPOTENCY_AA=1`: the second kind without a key too, to see
    // what the method can tell apart (an A/A run; its cost should be 0).
    let keyed_app = ClaimLoad {
        keyed: std::env::var_os("BENCH_IDEMPOTENCY_AA").is_none(),
        done: Arc::new(AtomicU64::new(0)),
        linked: Arc::default(),
        ..app.clone()
    };
    idempotency_alternating(report, client, db, (app, &keyed_app), pids, round_window).await?;
    idempotency_windows(report, client, db, (app, &keyed_app), pids, round_window).await
}

/// Claims without and with a key sent in turn by one client
/// ([`idempotency_cost`]). Work a keyed claim does after its answer (the
/// answer's update, in a round of several about 20 ms later) runs beside
/// whichever claims are in flight then, about half of them plain ones: a
/// bias in the key's favour, on the other core at this concurrency.
async fn idempotency_alternating(
    report: &mut Report,
    client: &Client,
    db: &DatabaseConnection,
    (plain_app, keyed_app): (&ClaimLoad, &ClaimLoad),
    (server_pid, database): (Option<u32>, &str),
    round_window: Window,
) -> Result<(), String> {
    // Each round's window as long as both kinds' windows at 32, without a
    // warm-up: every claim a window starts counts, of both kinds alike.
    let window = Window {
        warmup: Duration::ZERO,
        measure: round_window.measure * 2,
    };
    let (plain_start, keyed_start) = (plain_app.tally(), keyed_app.tally());
    let mut cpu = CpuPerClaim::default();
    let mut rounds = Vec::new();
    let mut middle = None;
    let mut errors = 0;
    for round in 1..=IDEMPOTENCY_ROUNDS {
        step(&format!(
            "claims with and without Idempotency-Key in turn, round {round} of {IDEMPOTENCY_ROUNDS}"
        ));
        analyze(db).await?;
        settle(client).await?;
        let (plain_before, keyed_before) = (plain_app.tally(), keyed_app.tally());
        let (plain, keyed) = (plain_app.clone(), keyed_app.clone());
        // Plain first in odd rounds, keyed first in even ones.
        let plain_parity = (round as u64 + 1) % 2;
        let op = move |worker, seq: u64| {
            let load = if seq % 2 == plain_parity {
                &plain
            } else {
                &keyed
            };
            load.clone().claim(worker)
        };
        let before = Cpu::now(server_pid, database);
        let stats = closed_loop(1, window, op).await;
        errors += stats.errors;
        cpu.cpu.add(&before.delta(&Cpu::now(server_pid, database)));
        let (plain_after, keyed_after) = (plain_app.tally(), keyed_app.tally());
        cpu.claims +=
            (plain_after.claims - plain_before.claims) + (keyed_after.claims - keyed_before.claims);
        rounds.push(
            1.0 - plain_after.mean_ms_since(plain_before) / keyed_after.mean_ms_since(keyed_before),
        );
        if round == IDEMPOTENCY_ROUNDS / 2 {
            middle = Some(stats);
        }
    }
    let plain_ms = plain_app.tally().mean_ms_since(plain_start);
    let keyed_ms = keyed_app.tally().mean_ms_since(keyed_start);
    let cost = 1.0 - plain_ms / keyed_ms;
    rounds.sort_by(f64::total_cmp);
    let cpu = cpu.per_claim_ms();
    let mut row = Row::new(
        "claimLicense without and with an Idempotency-Key, in turn",
        1,
    )
    .with_stats(&middle.expect("ran"));
    row.note(format!(
        "a claim takes {plain_ms:.3} ms without a key, {keyed_ms:.3} ms with one: **{:.1}% fewer claims/s** over {IDEMPOTENCY_ROUNDS} rounds (each round's: {}); {errors} errors in all; CPU ms per claim, both kinds: server {:.3}, PostgreSQL {:.3}; latencies and throughput of the middle round, both kinds",
        cost * 100.0,
        percents(&rounds),
        cpu.server,
        cpu.postgres,
    ));
    report.rows.push(row);
    idempotency_goal(report, 1, cost, errors);
    report.raw.insert(
        "idempotency_c1".into(),
        json!({
            "plain_ms": plain_ms,
            "keyed_ms": keyed_ms,
            "cost": cost,
            "round_costs": rounds,
            "errors": errors,
            "cpu_ms_per_claim": {"server": cpu.server, "postgres": cpu.postgres},
        }),
    );
    Ok(())
}

/// Claims without and with a key in windows of their own, taking turns
/// ([`idempotency_cost`]).
async fn idempotency_windows(
    report: &mut Report,
    client: &Client,
    db: &DatabaseConnection,
    (app, keyed_app): (&ClaimLoad, &ClaimLoad),
    pids: (Option<u32>, &str),
    round_window: Window,
) -> Result<(), String> {
    let concurrency = IDEMPOTENCY_CONCURRENCY;
    let mut rounds = Vec::new();
    // CPU over all rounds, and the claims it served, without and with a
    // key: steadier than throughput, which a slow disk flush moves.
    let (mut plain_cpu, mut keyed_cpu) = (CpuPerClaim::default(), CpuPerClaim::default());
    for round in 1..=IDEMPOTENCY_ROUNDS {
        step(&format!(
            "claims with and without Idempotency-Key at concurrency {concurrency}, round {round} of {IDEMPOTENCY_ROUNDS}"
        ));
        analyze(db).await?;
        // Plain first in odd rounds, keyed first in even ones, so that
        // neither always runs right after the statistics' refresh.
        let mut plain = None;
        let mut keyed = None;
        for keyed_turn in [round % 2 == 0, round % 2 == 1] {
            settle(client).await?;
            let (load, cpu, stats) = if keyed_turn {
                (keyed_app, &mut keyed_cpu, &mut keyed)
            } else {
                (app, &mut plain_cpu, &mut plain)
            };
            *stats = Some(cpu.run(load, concurrency, round_window, pids).await);
        }
        let (plain, keyed) = (plain.expect("ran"), keyed.expect("ran"));
        rounds.push((1.0 - keyed.throughput / plain.throughput, plain, keyed));
    }
    // Windows are all as long: claims per second over all of them.
    let mean = |kind: fn(&(f64, Stats, Stats)) -> f64| {
        rounds.iter().map(kind).sum::<f64>() / rounds.len() as f64
    };
    let (plain_rate, keyed_rate) = (mean(|r| r.1.throughput), mean(|r| r.2.throughput));
    let cost = 1.0 - keyed_rate / plain_rate;
    let errors = rounds.iter().map(|(_, p, k)| p.errors + k.errors).sum();
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let costs: Vec<f64> = rounds.iter().map(|(cost, _, _)| *cost).collect();
    // Latencies as the median round saw them; throughput over all.
    let (median_round, mut plain, mut keyed) = rounds.swap_remove(rounds.len() / 2);
    (plain.throughput, keyed.throughput) = (plain_rate, keyed_rate);
    report
        .rows
        .push(Row::new("claimLicense", concurrency).with_stats(&plain));
    let mut row = Row::new("claimLicense with an Idempotency-Key", concurrency).with_stats(&keyed);
    let (plain_cpu, keyed_cpu) = (plain_cpu.per_claim_ms(), keyed_cpu.per_claim_ms());
    row.note(format!(
        "**{:.1}% fewer claims/s than without** over {IDEMPOTENCY_ROUNDS} rounds (each round's: {}); CPU ms per claim over all rounds, without → with a key: server {:.3} → {:.3}, PostgreSQL {:.3} → {:.3}",
        cost * 100.0,
        percents(&costs),
        plain_cpu.server,
        keyed_cpu.server,
        plain_cpu.postgres,
        keyed_cpu.postgres,
    ));
    report.rows.push(row);
    idempotency_goal(report, concurrency, cost, errors);
    report.raw.insert(
        format!("idempotency_c{concurrency}"),
        json!({
            "plain": plain,
            "keyed": keyed,
            "cost": cost,
            "median_round_cost": median_round,
            "cpu_ms_per_claim": {
                "plain": {"server": plain_cpu.server, "postgres": plain_cpu.postgres},
                "keyed": {"server": keyed_cpu.server, "postgres": keyed_cpu.postgres},
            },
        }),
    );
    Ok(())
}

/// The goal's line for an Idempotency-Key's `cost` at `concurrency`,
/// measured with `errors` failed claims (none for a verdict).
fn idempotency_goal(report: &mut Report, concurrency: usize, cost: f64, errors: u64) {
    report.goals.push(format!(
        "Idempotency-Key on claimLicense at concurrency {concurrency}: {:.1}% of the claims' throughput (goal < 10%), {errors} failed claims: {}",
        cost * 100.0,
        verdict(cost < 0.10 && errors == 0)
    ));
}

/// Rounds' costs, as percentages.
fn percents(costs: &[f64]) -> String {
    let costs: Vec<String> = costs.iter().map(|c| format!("{:.1}%", c * 100.0)).collect();
    costs.join(", ")
}

/// Keys validated by the `validateLicense` scenario, each on its own device.
const VALIDATED_KEYS: u64 = 1000;
/// The validations' throughput goal, and the rate their p99 goal is measured at.
const VALIDATE_GOAL_RATE: f64 = 10_000.0;
/// The validations' connections, so at most this many requests in flight
/// (the closed loop uses 32 of them).
const VALIDATE_IN_FLIGHT: usize = 256;

/// `validateLicense(key, fingerprint)` as the licensed software calls it (no
/// sign-in), closed loop at concurrency 32 over assigned keys (by the claim
/// scenario, or straight in the database with `-- validate`), each activated on one device (written straight to the database:
/// activating through the API is rate limited per client address). Every
/// answer must be `VALID`. Goals: ≥ 10,000 validations/s, p99 < 5 ms.
async fn validate_scenario(
    report: &mut Report,
    client: &Client,
    db: &DatabaseConnection,
    (server_pid, database): (Option<u32>, &str),
    window: Window,
    fixed_window: Window,
) -> Result<(), String> {
    let keys: Vec<(i64, String)> = license::Entity::find()
        .select_only()
        .column(license::Column::Id)
        .column(license::Column::Key)
        .filter(license::Column::AssigneeEmail.is_not_null())
        .order_by_asc(license::Column::Id)
        .limit(VALIDATED_KEYS)
        .into_tuple()
        .all(db)
        .await
        .map_err(|e| format!("assigned keys: {e}"))?;
    if keys.is_empty() {
        return Err("no assigned key to validate".into());
    }
    let now = Utc::now();
    activation::Entity::insert_many(keys.iter().map(|(id, _)| activation::ActiveModel {
        id: NotSet,
        license_id: Set(*id),
        fingerprint: Set(format!("bench-device-{id}")),
        name: Set("bench".into()),
        activated_at: Set(now),
        alive_until: Set(None),
    }))
    .exec_without_returning(db)
    .await
    .map_err(|e| format!("activations: {e}"))?;
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        keys.iter()
            .map(|(id, key)| {
                let variables = json!({"k": key, "f": format!("bench-device-{id}")});
                Bytes::from(json!({"query": VALIDATE, "variables": variables}).to_string())
            })
            .collect(),
    );
    // Bodies serialized once beforehand (as the licensed software would send
    // the same query over and over), raw answers: the client's own JSON work
    // would otherwise weigh on a measurement of sub-millisecond requests.
    let connections = Connections::open(client.base(), VALIDATE_IN_FLIGHT).await?;
    settle(client).await?;
    let statements_before = client.metric(SQL_STATEMENTS).await?;
    let cpu_before = Cpu::now(server_pid, database);
    let done = Arc::new(AtomicU64::new(0));
    // One validation of the next device in turn; counts every request sent.
    let validate = {
        let connections = connections.clone();
        let done = done.clone();
        let next = Arc::new(AtomicUsize::new(0));
        move || {
            done.fetch_add(1, Ordering::Relaxed);
            let connections = connections.clone();
            let body = bodies[next.fetch_add(1, Ordering::Relaxed) % bodies.len()].clone();
            async move {
                let answer = connections.post_json("/graphql", body, None).await?;
                // The one answer expected; anything else (another code, an
                // error) is shown whole.
                const VALID: &[u8] =
                    br#"{"data":{"validateLicense":{"valid":true,"code":"VALID"}}}"#;
                if answer == VALID {
                    Ok(())
                } else {
                    Err(format!(
                        "validateLicense answered {}",
                        String::from_utf8_lossy(&answer)
                    ))
                }
            }
        }
    };
    let stats = {
        let validate = validate.clone();
        closed_loop(32, window, move |_, _| validate()).await
    };
    if stats.ok == 0 {
        return Err(format!(
            "no validation succeeded: {}",
            stats.first_error.as_deref().unwrap_or("no answer")
        ));
    }
    let validations = done.load(Ordering::Relaxed);
    let cpu = cpu_before
        .delta(&Cpu::now(server_pid, database))
        .per_op_ms(validations);
    let statements =
        (client.metric(SQL_STATEMENTS).await? - statements_before) / validations.max(1) as f64;
    let mut row = Row::new("validateLicense (no sign-in)", 32).with_stats(&stats);
    row.note(format!(
        "{} keys, each active on one device; {statements:.2} SQL statements per validation; CPU ms per validation: server {:.3}, PostgreSQL {:.3}, client {:.3}",
        keys.len(),
        cpu.server,
        cpu.postgres,
        cpu.client,
    ));
    report.rows.push(row);
    // The closed loop's p99 is mostly its own queue (32 requests waiting on
    // 2 saturated cores); the latency a client sees is measured at fixed
    // rates. The goal is "≥ 10,000 validations/s, p99 < 5 ms": the p99 is
    // taken at that rate. Half the maximum, the rate the claims' p99 goal is
    // read at, is measured too, for comparison across machines.
    let at_goal = {
        let validate = validate.clone();
        open_loop(
            VALIDATE_GOAL_RATE,
            VALIDATE_IN_FLIGHT,
            fixed_window,
            move |_| validate(),
        )
        .await
    };
    report.rows.push(fixed_rate_row(
        "validateLicense",
        "the goal's 10,000/s",
        VALIDATE_GOAL_RATE,
        &at_goal,
    ));
    let rate = stats.throughput / 2.0;
    let fixed = open_loop(rate, VALIDATE_IN_FLIGHT, fixed_window, move |_| validate()).await;
    report.rows.push(fixed_rate_row(
        "validateLicense",
        "half the max",
        rate,
        &fixed,
    ));
    report.goals.push(format!(
        "validateLicense: {:.0}/s at most (goal ≥ 10,000/s): {}; p99 at 10,000/s {:.2} ms (goal < 5 ms): {}; p99 at half the max ({rate:.0}/s) {:.2} ms, in the saturated closed loop {:.2} ms",
        stats.throughput,
        verdict(stats.throughput >= VALIDATE_GOAL_RATE && stats.errors == 0),
        at_goal.p99_ms,
        verdict(at_goal.p99_ms < 5.0 && at_goal.errors == 0),
        fixed.p99_ms,
        stats.p99_ms,
    ));
    // The floor: the cheapest request there is, at the same rate. Its p99
    // is what this machine's scheduling (client, server and services on 2
    // cores) costs any request, whatever keyledger does.
    let floor = {
        open_loop(rate, VALIDATE_IN_FLIGHT, fixed_window, move |_| {
            let connections = connections.clone();
            async move { connections.get("/healthz").await.map(|_| ()) }
        })
        .await
    };
    let mut row =
        Row::new("floor: GET /healthz at the same fixed rate", "open loop").with_stats(&floor);
    row.note(
        "no database, no GraphQL: what the machine's scheduling costs any request at this rate",
    );
    report.rows.push(row);
    report.raw.insert(
        "validate_license".into(),
        json!({"stats": stats, "goal_rate": {"rate": VALIDATE_GOAL_RATE, "stats": at_goal}, "fixed_rate": {"rate": rate, "stats": fixed}, "floor": floor, "statements_per_validation": statements, "cpu_ms_per_validation": cpu}),
    );
    Ok(())
}

/// The row of an open-loop run of `operation` at `rate`, described as `at`
/// ("half the max", …).
fn fixed_rate_row(operation: &str, at: &str, rate: f64, stats: &Stats) -> Row {
    let mut row =
        Row::new(format!("{operation}, fixed rate at {at}"), "open loop").with_stats(stats);
    row.note(format!(
        "offered {rate:.0}/s; latency from each request's due time"
    ));
    row
}

async fn connect(url: &str) -> Result<DatabaseConnection, String> {
    let mut options = sea_orm::ConnectOptions::new(url);
    options.max_connections(4).sqlx_logging(false);
    sea_orm::Database::connect(options)
        .await
        .map_err(|e| format!("connect {url}: {e}"))
}

/// Fresh planner statistics: each scenario grows tables that were nearly
/// empty at the last analyze, and a 3-second run is too short for autovacuum
/// (a long-running server has it). Without this, PostgreSQL plans
/// sequential scans of "tiny" tables that hold thousands of rows by then.
async fn analyze(db: &DatabaseConnection) -> Result<(), String> {
    maintenance(db, "ANALYZE").await
}

async fn vacuum(db: &DatabaseConnection) -> Result<(), String> {
    maintenance(db, "VACUUM ANALYZE").await
}

async fn maintenance(db: &DatabaseConnection, sql: &str) -> Result<(), String> {
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(sql)
        .await
        .map(|_| ())
        .map_err(|e| format!("{sql}: {e}"))
}

/// Wait until the server's background work (relay) has gone quiet: no SQL
/// statement for 300 ms.
async fn settle(client: &Client) -> Result<(), String> {
    let mut last = client.metric(SQL_STATEMENTS).await?;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = client.metric(SQL_STATEMENTS).await?;
        if now == last {
            return Ok(());
        }
        last = now;
    }
    Err("the server never went quiet".into())
}

struct Account {
    id: i64,
    email: String,
    token: String,
}

struct Accounts {
    admin: Account,
    buyer: Account,
    sign_in: Account,
    claimers: Vec<Account>,
}

/// Verified accounts with sessions, written straight to the database (signing
/// up through the API would only add argon2 time): an admin, the buyer (who
/// turned "email me when a key is claimed" off, so claims queue no email),
/// one account to sign in as, and `claimers`.
async fn seed_accounts(
    db: &DatabaseConnection,
    password_hash: &str,
    claimers: usize,
) -> Result<Accounts, String> {
    let now = Utc::now();
    let mut emails = vec![
        (
            "admin@bench.example.com".to_owned(),
            account::AccountRole::Admin,
            true,
        ),
        (
            "buyer@bench.example.com".to_owned(),
            account::AccountRole::User,
            false,
        ),
        (
            "signin@bench.example.com".to_owned(),
            account::AccountRole::User,
            true,
        ),
    ];
    emails.extend((0..claimers).map(|i| {
        (
            format!("claimer-{i}@bench.example.com"),
            account::AccountRole::User,
            true,
        )
    }));
    account::Entity::insert_many(
        emails
            .iter()
            .map(|(email, role, notify)| account::ActiveModel {
                id: NotSet,
                email: Set(email.clone()),
                password_hash: Set(password_hash.to_owned()),
                email_verified_at: Set(Some(now)),
                role: Set(*role),
                require_manual_approval: Set(false),
                allow_override_assignee: Set(false),
                notify_on_claim: Set(*notify),
                allow_assignee_organization: Set(false),
                created_at: Set(now),
                disabled_at: Set(None),
            }),
    )
    .exec(db)
    .await
    .map_err(|e| format!("seed accounts: {e}"))?;
    let ids: HashMap<String, i64> = account::Entity::find()
        .all(db)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|a| (a.email, a.id))
        .collect();
    let mut all: Vec<Account> = emails
        .iter()
        .map(|(email, _, _)| Account {
            id: ids[email],
            email: email.clone(),
            token: keyledger::auth::token::generate(),
        })
        .collect();
    session::Entity::insert_many(all.iter().map(|a| session::ActiveModel {
        id: NotSet,
        account_id: Set(a.id),
        token_hash: Set(keyledger::auth::token::hash(&a.token)),
        created_at: Set(now),
        expires_at: Set(now + chrono::Duration::days(1)),
        revoked_at: Set(None),
        user_agent: Set(None),
        client_addr: Set(None),
        name: Set(None),
        scopes: Set(None),
        last_used_at: Set(None),
    }))
    .exec(db)
    .await
    .map_err(|e| format!("seed sessions: {e}"))?;
    let claimers = all.split_off(3);
    let mut fixed = all.into_iter();
    let mut next = || fixed.next().expect("three fixed accounts");
    Ok(Accounts {
        admin: next(),
        buyer: next(),
        sign_in: next(),
        claimers,
    })
}

/// The catalog product every order of the benchmarks buys.
const PRODUCT: &str = "keyledger-pro";
const PRODUCT_NAME: &str = "Keyledger Pro";

/// Add [`PRODUCT`] to the catalog, as an administrator, unless it is there.
async fn ensure_product(client: &Client, admin_token: &str) -> Result<(), String> {
    let created = client
        .gql(
            Some(admin_token),
            "mutation($c:String!,$n:String!){ createProduct(input:{code:$c, name:$n}){ code } }",
            json!({"c": PRODUCT, "n": PRODUCT_NAME}),
        )
        .await;
    match created {
        Err(error) if !error.ends_with("(CONFLICT)") => Err(format!("createProduct: {error}")),
        _ => Ok(()),
    }
}

/// Pay `KEYGEN_RUNS` orders of `ORDER_KEYS` keys through the API, timing each
/// `markOrderPaid`; returns the orders' ids.
async fn keygen(
    report: &mut Report,
    backend: &str,
    client: &Client,
    accounts: &Accounts,
    goal_seconds: Option<f64>,
) -> Result<Vec<i64>, String> {
    let mut orders = Vec::new();
    let mut times = Vec::new();
    ensure_product(client, &accounts.admin.token).await?;
    for _ in 0..KEYGEN_RUNS {
        let data = client
            .gql(
                Some(&accounts.buyer.token),
                "mutation($p:String!,$q:Int!){ createOrder(input:{product:$p, quantity:$q}){ id } }",
                json!({"p": PRODUCT, "q": ORDER_KEYS}),
            )
            .await?;
        let id = data["createOrder"]["id"]
            .as_str()
            .and_then(|id| id.parse::<i64>().ok())
            .ok_or("createOrder returned no id")?;
        let started = std::time::Instant::now();
        client
            .gql(
                Some(&accounts.admin.token),
                "mutation($o:ID!){ markOrderPaid(orderId:$o){ status } }",
                json!({"o": id.to_string()}),
            )
            .await?;
        times.push(started.elapsed().as_secs_f64());
        orders.push(id);
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mut row = Row::new(format!("markOrderPaid, 100,000 keys ({backend})"), 1);
    row.throughput = Some(ORDER_KEYS as f64 / median);
    row.p50_ms = Some(median * 1000.0);
    row.note(format!(
        "throughput in keys/s; p50 = median of {} orders: {}",
        times.len(),
        times
            .iter()
            .map(|t| format!("{t:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    report.rows.push(row);
    if let Some(goal) = goal_seconds {
        report.goals.push(format!(
            "markOrderPaid of 100,000 keys on {backend}: {median:.2} s median (goal < {goal} s): {}",
            verdict(median < goal)
        ));
    }
    report.raw.insert(
        format!("keygen_{}", backend.to_lowercase()),
        json!({"seconds": times}),
    );
    Ok(orders)
}

/// Key generation on SQLite: its own server process on a temporary file.
async fn keygen_sqlite(report: &mut Report, password_hash: &str) -> Result<(), String> {
    step("key generation on SQLite");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let server = Server::start(ServerConfig {
        database_url: &url,
        redis_url: None,
    })
    .await?;
    let db = connect(&url).await?;
    let accounts = seed_accounts(&db, password_hash, 0).await?;
    keygen(
        report,
        "SQLite",
        &Client::new(&server.base),
        &accounts,
        None,
    )
    .await?;
    db.close().await.ok();
    server.stop().await;
    Ok(())
}

async fn order_keys(db: &DatabaseConnection, order_id: i64) -> Result<Vec<String>, String> {
    license::Entity::find()
        .select_only()
        .column(license::Column::Key)
        .filter(license::Column::OrderId.eq(order_id))
        .order_by_asc(license::Column::Id)
        .into_tuple::<String>()
        .all(db)
        .await
        .map_err(|e| e.to_string())
}

/// Assign the order's first keys straight in the database, as the claims
/// would have, for a run of the validation scenario alone.
async fn assign_for_validation(
    db: &DatabaseConnection,
    order_id: i64,
    email: &str,
) -> Result<(), String> {
    let first: Vec<i64> = license::Entity::find()
        .select_only()
        .column(license::Column::Id)
        .filter(license::Column::OrderId.eq(order_id))
        .order_by_asc(license::Column::Id)
        .limit(VALIDATED_KEYS)
        .into_tuple()
        .all(db)
        .await
        .map_err(|e| format!("keys to assign: {e}"))?;
    license::Entity::update_many()
        .col_expr(license::Column::AssigneeEmail, Expr::value(email))
        .col_expr(license::Column::AssignedAt, Expr::value(Utc::now()))
        .filter(license::Column::Id.is_in(first))
        .exec(db)
        .await
        .map_err(|e| format!("assign keys: {e}"))?;
    Ok(())
}

const CHECK_OUT: &str = "mutation($k:String!,$f:String!){ checkOutLicense(key:$k,fingerprint:$f,ttlSeconds:86400){ certificate expiresAt } }";
const HEARTBEAT: &str =
    "mutation($k:String!,$f:String!){ heartbeatLicense(key:$k,fingerprint:$f){ valid code } }";
/// Devices of the heartbeat run: 10,000 reporting every 60 s.
const HEARTBEAT_DEVICES: u64 = 10_000;
const HEARTBEAT_SECONDS: i32 = 60;

/// The first `count` keys of `order_id`, assigned to `email` and each
/// activated on its device `bench-device-{id}` (straight in the database:
/// activating through the API is rate limited per client address), with
/// `heartbeat` as the order's interval; every device's deadline is one
/// interval away, so that each heartbeat writes (the costliest case).
async fn licensed_devices(
    db: &DatabaseConnection,
    order_id: i64,
    email: &str,
    count: u64,
    heartbeat: Option<i32>,
) -> Result<Vec<Bytes>, String> {
    let keys: Vec<(i64, String)> = license::Entity::find()
        .select_only()
        .column(license::Column::Id)
        .column(license::Column::Key)
        .filter(license::Column::OrderId.eq(order_id))
        .order_by_asc(license::Column::Id)
        .limit(count)
        .into_tuple()
        .all(db)
        .await
        .map_err(|e| format!("keys to license: {e}"))?;
    let ids: Vec<i64> = keys.iter().map(|(id, _)| *id).collect();
    let now = Utc::now();
    for chunk in ids.chunks(5_000) {
        license::Entity::update_many()
            .col_expr(license::Column::AssigneeEmail, Expr::value(email))
            .col_expr(license::Column::AssignedAt, Expr::value(now))
            .filter(license::Column::Id.is_in(chunk.to_vec()))
            .exec(db)
            .await
            .map_err(|e| format!("assign keys: {e}"))?;
    }
    order::Entity::update_many()
        .col_expr(order::Column::HeartbeatSeconds, Expr::value(heartbeat))
        .filter(order::Column::Id.eq(order_id))
        .exec(db)
        .await
        .map_err(|e| format!("heartbeat: {e}"))?;
    let alive_until = heartbeat.map(|s| now + chrono::Duration::seconds(s.into()));
    for chunk in ids.chunks(5_000) {
        activation::Entity::insert_many(chunk.iter().map(|id| activation::ActiveModel {
            id: NotSet,
            license_id: Set(*id),
            fingerprint: Set(format!("bench-device-{id}")),
            name: Set("bench".into()),
            activated_at: Set(now),
            alive_until: Set(alive_until),
        }))
        .exec_without_returning(db)
        .await
        .map_err(|e| format!("activations: {e}"))?;
    }
    Ok(keys
        .iter()
        .map(|(id, key)| {
            let variables = json!({"k": key, "f": format!("bench-device-{id}")});
            let query = if heartbeat.is_some() {
                HEARTBEAT
            } else {
                CHECK_OUT
            };
            Bytes::from(json!({"query": query, "variables": variables}).to_string())
        })
        .collect())
}

/// The licensed software beyond validation. `checkOutLicense` closed loop
/// at concurrency 32 over 1,000 activated devices (goal ≥ 5,000/s); then
/// `heartbeatLicense` from 10,000 devices of a 60 s heartbeat order, each
/// once a minute (≈ 167/s, at fixed rate), with the server's CPU over the
/// run (goal: the machine under 10% busy).
async fn licensing_scenario(
    report: &mut Report,
    client: &Client,
    db: &DatabaseConnection,
    (orders, email): (&[i64], &str),
    (server_pid, database): (Option<u32>, &str),
    window: Window,
    fixed_window: Window,
) -> Result<(), String> {
    let check_outs = Arc::new(licensed_devices(db, orders[0], email, VALIDATED_KEYS, None).await?);
    let heartbeats = Arc::new(
        licensed_devices(
            db,
            orders[1],
            email,
            HEARTBEAT_DEVICES,
            Some(HEARTBEAT_SECONDS),
        )
        .await?,
    );
    analyze(db).await?;
    let connections = Connections::open(client.base(), VALIDATE_IN_FLIGHT).await?;
    settle(client).await?;
    let op = |bodies: Arc<Vec<Bytes>>, expected: &'static [u8], what: &'static str| {
        let connections = connections.clone();
        let done = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let counter = done.clone();
        let op = move || {
            counter.fetch_add(1, Ordering::Relaxed);
            let connections = connections.clone();
            let body = bodies[next.fetch_add(1, Ordering::Relaxed) % bodies.len()].clone();
            async move {
                let answer = connections.post_json("/graphql", body, None).await?;
                if answer.starts_with(expected) {
                    Ok(())
                } else {
                    Err(format!(
                        "{what} answered {}",
                        String::from_utf8_lossy(&answer)
                    ))
                }
            }
        };
        (op, done)
    };

    let (check_out, done) = op(
        check_outs.clone(),
        br#"{"data":{"checkOutLicense":{"certificate":""#,
        "checkOutLicense",
    );
    let statements_before = client.metric(SQL_STATEMENTS).await?;
    let cpu_before = Cpu::now(server_pid, database);
    let stats = closed_loop(32, window, move |_, _| check_out()).await;
    if stats.ok == 0 {
        return Err(format!(
            "no check-out succeeded: {}",
            stats.first_error.as_deref().unwrap_or("no answer")
        ));
    }
    let count = done.load(Ordering::Relaxed);
    let cpu = cpu_before
        .delta(&Cpu::now(server_pid, database))
        .per_op_ms(count);
    let statements =
        (client.metric(SQL_STATEMENTS).await? - statements_before) / count.max(1) as f64;
    let mut row = Row::new("checkOutLicense (no sign-in, Ed25519 JWS)", 32).with_stats(&stats);
    row.note(format!(
        "{} keys, each active on one device; {statements:.3} SQL statements per check-out; CPU ms per check-out: server {:.3}, PostgreSQL {:.3}, client {:.3}; goal ≥ 5,000/s",
        check_outs.len(),
        cpu.server,
        cpu.postgres,
        cpu.client,
    ));
    report.rows.push(row);

    settle(client).await?;
    let (heartbeat, done) = op(
        heartbeats.clone(),
        br#"{"data":{"heartbeatLicense":{"valid":true,"code":"VALID"}}}"#,
        "heartbeatLicense",
    );
    let rate = HEARTBEAT_DEVICES as f64 / f64::from(HEARTBEAT_SECONDS);
    let statements_before = client.metric(SQL_STATEMENTS).await?;
    let cpu_before = Cpu::now(server_pid, database);
    let started = std::time::Instant::now();
    let stats = open_loop(rate, VALIDATE_IN_FLIGHT, fixed_window, move |_| heartbeat()).await;
    let elapsed = started.elapsed().as_secs_f64();
    let count = done.load(Ordering::Relaxed);
    let used = cpu_before.delta(&Cpu::now(server_pid, database));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let statements =
        (client.metric(SQL_STATEMENTS).await? - statements_before) / count.max(1) as f64;
    let mut row = fixed_rate_row(
        "heartbeatLicense, 10,000 devices every 60 s",
        "167/s",
        rate,
        &stats,
    );
    row.note(format!(
        "{statements:.2} SQL statements per heartbeat (every one moves its device's deadline); CPU over the run, share of the machine's {cores:.0} cores: server {:.1}%, PostgreSQL {:.1}%, client {:.1}%; goal: machine < 10% busy",
        used.server / elapsed / cores * 100.0,
        used.postgres / elapsed / cores * 100.0,
        used.client / elapsed / cores * 100.0,
    ));
    report.rows.push(row);
    Ok(())
}

/// The CPU that runs of a claim load used, and the claims they served.
#[derive(Default)]
struct CpuPerClaim {
    cpu: Cpu,
    claims: u64,
}

impl CpuPerClaim {
    /// A closed-loop run of `load`, its CPU and claims added.
    async fn run(
        &mut self,
        load: &ClaimLoad,
        concurrency: usize,
        window: Window,
        (server_pid, database): (Option<u32>, &str),
    ) -> Stats {
        let (before, claims) = (
            Cpu::now(server_pid, database),
            load.done.load(Ordering::Relaxed),
        );
        let stats = closed_loop(concurrency, window, load.closed_op()).await;
        self.cpu.add(&before.delta(&Cpu::now(server_pid, database)));
        self.claims += load.done.load(Ordering::Relaxed) - claims;
        stats
    }

    /// Milliseconds of CPU per claim served.
    fn per_claim_ms(&self) -> Cpu {
        self.cpu.per_op_ms(self.claims)
    }
}

/// Connections the claims go over: enough for the largest concurrency, and
/// for a fixed-rate run's backlog after a stall.
const CLAIM_CONNECTIONS: usize = 256;

/// Claims through keyledger, each of a key nobody claimed before.
#[derive(Clone)]
struct ClaimLoad {
    connections: Arc<Connections>,
    keys: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    tokens: Arc<Vec<String>>,
    /// Claims answered (inside or outside a measurement window).
    done: Arc<AtomicU64>,
    /// Claims answered `LINKED`, and the time they took.
    linked: Arc<ClaimTally>,
    /// Send each claim with an `Idempotency-Key` of its own.
    keyed: bool,
}

/// Claims a [`ClaimLoad`] had answered `LINKED`, and the microseconds
/// they took, summed.
#[derive(Default)]
struct ClaimTally {
    claims: AtomicU64,
    micros: AtomicU64,
}

/// A [`ClaimTally`] read at one moment.
#[derive(Clone, Copy)]
struct TallyAt {
    claims: u64,
    micros: u64,
}

impl TallyAt {
    /// Milliseconds a claim took on average between `earlier` and this.
    fn mean_ms_since(self, earlier: TallyAt) -> f64 {
        let claims = (self.claims - earlier.claims).max(1);
        (self.micros - earlier.micros) as f64 / 1000.0 / claims as f64
    }
}

impl ClaimLoad {
    fn tally(&self) -> TallyAt {
        TallyAt {
            claims: self.linked.claims.load(Ordering::Relaxed),
            micros: self.linked.micros.load(Ordering::Relaxed),
        }
    }

    async fn claim(self, claimer: usize) -> Result<(), String> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let key = self.keys.get(index).ok_or("ran out of fresh keys")?;
        let token = &self.tokens[claimer % self.tokens.len()];
        let body = json!({"query": CLAIM, "variables": {"k": key}}).to_string();
        let idempotency_key = self.keyed.then(|| format!("claim-{index}"));
        let sent = std::time::Instant::now();
        let result = self
            .connections
            .post_json_keyed(
                "/graphql",
                body.into(),
                Some(token),
                idempotency_key.as_deref(),
            )
            .await;
        let took = sent.elapsed().as_micros() as u64;
        self.done.fetch_add(1, Ordering::Relaxed);
        // The answer expected begins so (the claim's id follows); anything
        // else (another outcome, an error) is shown whole.
        const LINKED: &[u8] = br#"{"data":{"claimLicense":{"outcome":"LINKED","#;
        let answer = result?;
        if answer.starts_with(LINKED) {
            self.linked.micros.fetch_add(took, Ordering::Relaxed);
            self.linked.claims.fetch_add(1, Ordering::Relaxed);
            Ok(())
        } else {
            Err(format!(
                "claimLicense answered {}",
                String::from_utf8_lossy(&answer)
            ))
        }
    }

    fn closed_op(
        &self,
    ) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
    + Clone
    + Send
    + Sync
    + 'static {
        let load = self.clone();
        move |worker, _| Box::pin(load.clone().claim(worker))
    }

    fn open_op(
        &self,
    ) -> impl Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
    + Clone
    + Send
    + Sync
    + 'static {
        let load = self.clone();
        move |seq| Box::pin(load.clone().claim(seq as usize))
    }
}

/// The ceiling: what a claim needs from PostgreSQL, hand-written, in its own
/// database (same schema, migrated by keyledger) so its rows never reach the
/// server's relay.
struct Ceiling {
    pool: sqlx::PgPool,
    keys: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    claimers: Arc<Vec<(i64, String)>>,
    /// Claims answered (inside or outside a measurement window).
    done: Arc<AtomicU64>,
}

impl Ceiling {
    const STATEMENTS: usize = 5;

    async fn seed(url: &str, password_hash: &str) -> Result<Ceiling, String> {
        let db = keyledger::db::connect(url)
            .await
            .map_err(|e| format!("migrate ceiling database: {e}"))?;
        let accounts = seed_accounts(&db, password_hash, CLAIMERS).await?;
        let now = Utc::now();
        product::Entity::insert(product::ActiveModel {
            code: Set(PRODUCT.into()),
            name: Set(PRODUCT_NAME.into()),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        })
        .exec(&db)
        .await
        .map_err(|e| format!("ceiling product: {e}"))?;
        let order = order::Entity::insert(order::ActiveModel {
            id: NotSet,
            owner_id: Set(accounts.buyer.id),
            organization_id: Set(None),
            product: Set(PRODUCT.into()),
            quantity: Set(ORDER_KEYS),
            status: Set(order::OrderStatus::Paid),
            require_manual_approval: Set(None),
            device_limit: Set(1),
            created_at: Set(now),
            paid_at: Set(Some(now)),
            ..Default::default()
        })
        .exec(&db)
        .await
        .map_err(|e| format!("ceiling order: {e}"))?
        .last_insert_id;
        let keys: Vec<String> = (0..ORDER_KEYS)
            .map(|_| keyledger::domain::keys::generate())
            .collect();
        for chunk in keys.chunks(10_000) {
            license::Entity::insert_many(chunk.iter().map(|key| license::ActiveModel {
                order_id: Set(order),
                key: Set(key.clone()),
                created_at: Set(now),
                ..Default::default()
            }))
            .exec_without_returning(&db)
            .await
            .map_err(|e| format!("ceiling keys: {e}"))?;
        }
        vacuum(&db).await?;
        db.close().await.ok();
        let pool = PgPoolOptions::new()
            .max_connections(ceiling_pool())
            // No health-check round trip per checkout: the raw database.
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Ceiling {
            pool,
            keys: Arc::new(keys),
            next: Arc::new(AtomicUsize::new(0)),
            claimers: Arc::new(
                accounts
                    .claimers
                    .into_iter()
                    .map(|a| (a.id, a.email))
                    .collect(),
            ),
            done: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Fresh planner statistics, as for the server's database before each
    /// scenario. Without them a connection could keep the plan it made of
    /// the foreign-key check on `events` while the table was empty (a scan,
    /// ≈ 10 ms per insert after a few runs).
    async fn analyze(&self) -> Result<(), String> {
        let db = sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(self.pool.clone());
        analyze(&db).await
    }

    fn op(
        &self,
    ) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
    + Clone
    + Send
    + Sync
    + 'static {
        let pool = self.pool.clone();
        let keys = self.keys.clone();
        let next = self.next.clone();
        let claimers = self.claimers.clone();
        let done = self.done.clone();
        move |worker, _| {
            let pool = pool.clone();
            let keys = keys.clone();
            let done = done.clone();
            let index = next.fetch_add(1, Ordering::Relaxed);
            let (claimer_id, email) = claimers[worker % claimers.len()].clone();
            Box::pin(async move {
                let key = keys.get(index).ok_or("ran out of fresh keys")?;
                let result = Ceiling::claim(&pool, key, claimer_id, &email).await;
                done.fetch_add(1, Ordering::Relaxed);
                result.map_err(|e| e.to_string())
            })
        }
    }

    /// The SQL work of one claim that links the key at once (what every
    /// benchmarked claim does): lock the key with its order and owner's
    /// settings, write the claim unless the same person has one pending, the
    /// CLAIM_CREATED event and its recipients, assign the key, the
    /// LICENSE_ASSIGNED event and its recipients; commit.
    async fn claim(
        pool: &sqlx::PgPool,
        key: &str,
        claimer_id: i64,
        email: &str,
    ) -> Result<(), sqlx::Error> {
        use sqlx::Row as _;
        let now = Utc::now();
        let mut tx = pool.begin().await?;
        let row = sqlx::query(
            "SELECT l.id, l.order_id, l.assignee_email, o.owner_id, o.product, \
                    o.require_manual_approval, a.require_manual_approval AS owner_manual, \
                    a.allow_override_assignee, a.notify_on_claim, a.email \
             FROM licenses l JOIN orders o ON o.id = l.order_id JOIN accounts a ON a.id = o.owner_id \
             WHERE l.key = $1 FOR UPDATE OF l",
        )
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        let license_id: i64 = row.try_get("id")?;
        let order_id: i64 = row.try_get("order_id")?;
        let owner_id: i64 = row.try_get("owner_id")?;
        // The claimer's own pending claim is checked in the insert, as the
        // server does: no row back means there is one.
        let claim_id: i64 = sqlx::query_scalar(
            "INSERT INTO claims (license_id, claimer_id, status, created_at, decided_at) \
             SELECT $1, $2, 'APPROVED', $3, $3 WHERE NOT EXISTS (SELECT 1 FROM claims \
             WHERE license_id = $1 AND claimer_id = $2 AND status = 'PENDING' AND created_at > $4) \
             RETURNING id",
        )
        .bind(license_id)
        .bind(claimer_id)
        .bind(now)
        .bind(now - chrono::Duration::days(7))
        .fetch_one(&mut *tx)
        .await?;
        let changes = json!({"after": {"status": "APPROVED", "claimer": email}}).to_string();
        Ceiling::event(
            &mut tx,
            "CLAIM_CREATED",
            claimer_id,
            order_id,
            license_id,
            Some(claim_id),
            &changes,
            now,
            owner_id,
        )
        .await?;
        sqlx::query(
            "UPDATE licenses SET assignee_email = $1, assigned_at = $2, \
             organization_name = NULL, organization_siret = NULL WHERE id = $3",
        )
        .bind(email)
        .bind(now)
        .bind(license_id)
        .execute(&mut *tx)
        .await?;
        let changes = json!({
            "before": {"assigneeEmail": null, "organizationName": null, "organizationSiret": null},
            "after": {"assigneeEmail": email, "organizationName": null, "organizationSiret": null},
        })
        .to_string();
        Ceiling::event(
            &mut tx,
            "LICENSE_ASSIGNED",
            claimer_id,
            order_id,
            license_id,
            None,
            &changes,
            now,
            owner_id,
        )
        .await?;
        tx.commit().await
    }

    /// An event row and its two recipients (owner and claimer).
    #[allow(clippy::too_many_arguments)]
    async fn event(
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        kind: &str,
        actor_id: i64,
        order_id: i64,
        license_id: i64,
        claim_id: Option<i64>,
        changes: &str,
        now: chrono::DateTime<Utc>,
        owner_id: i64,
    ) -> Result<(), sqlx::Error> {
        // The event and its recipients in one statement, as the server
        // writes them on PostgreSQL.
        sqlx::query(
            "WITH e AS (INSERT INTO events (kind, actor_id, order_id, license_id, claim_id, changes, occurred_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id) \
             INSERT INTO event_recipients (account_id, event_id) \
             SELECT t.account_id, e.id FROM e, (VALUES ($8::bigint), ($9::bigint)) AS t(account_id)",
        )
        .bind(kind)
        .bind(actor_id)
        .bind(order_id)
        .bind(license_id)
        .bind(claim_id)
        .bind(changes)
        .bind(now)
        .bind(owner_id)
        .bind(actor_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// An order of [`READ_ORDER_KEYS`] keys, paid, for the read scenarios alone.
async fn read_order(client: &Client, accounts: &Accounts) -> Result<i64, String> {
    ensure_product(client, &accounts.admin.token).await?;
    let data = client
        .gql(
            Some(&accounts.buyer.token),
            "mutation($p:String!,$q:Int!){ createOrder(input:{product:$p, quantity:$q}){ id } }",
            json!({"p": PRODUCT, "q": READ_ORDER_KEYS}),
        )
        .await?;
    let id = data["createOrder"]["id"]
        .as_str()
        .and_then(|id| id.parse::<i64>().ok())
        .ok_or("createOrder returned no id")?;
    client
        .gql(
            Some(&accounts.admin.token),
            "mutation($o:ID!){ markOrderPaid(orderId:$o){ status } }",
            json!({"o": id.to_string()}),
        )
        .await?;
    Ok(id)
}

/// Assign the order's first 100 keys straight in the database, each to a
/// claimer of its own, as the claims of a full run would have.
async fn assign_first_keys(
    db: &DatabaseConnection,
    order_id: i64,
    accounts: &Accounts,
) -> Result<(), String> {
    let first: Vec<i64> = license::Entity::find()
        .select_only()
        .column(license::Column::Id)
        .filter(license::Column::OrderId.eq(order_id))
        .order_by_asc(license::Column::Id)
        .limit(100)
        .into_tuple()
        .all(db)
        .await
        .map_err(|e| format!("keys to assign: {e}"))?;
    for (id, claimer) in first.iter().zip(accounts.claimers.iter().cycle()) {
        license::Entity::update_many()
            .col_expr(license::Column::AssigneeEmail, Expr::value(&claimer.email))
            .col_expr(license::Column::AssignedAt, Expr::value(Utc::now()))
            .filter(license::Column::Id.eq(*id))
            .exec(db)
            .await
            .map_err(|e| format!("assign keys: {e}"))?;
    }
    Ok(())
}

/// [`LISTED`] pending claims on the last keys of `order_id`, and as many
/// pending license requests addressed to the buyer, each from a claimer of
/// its own (written straight to the database: requests through the API are
/// rate limited and send mail).
async fn seed_lists(
    db: &DatabaseConnection,
    order_id: i64,
    accounts: &Accounts,
) -> Result<(), String> {
    let now = Utc::now();
    let last: Vec<i64> = license::Entity::find()
        .select_only()
        .column(license::Column::Id)
        .filter(license::Column::OrderId.eq(order_id))
        .filter(license::Column::AssigneeEmail.is_null())
        .order_by_desc(license::Column::Id)
        .limit(LISTED as u64)
        .into_tuple()
        .all(db)
        .await
        .map_err(|e| format!("keys to claim: {e}"))?;
    claim::Entity::insert_many(last.iter().zip(accounts.claimers.iter().cycle()).map(
        |(license_id, claimer)| claim::ActiveModel {
            id: NotSet,
            license_id: Set(*license_id),
            claimer_id: Set(claimer.id),
            status: Set(claim::ApprovalStatus::Pending),
            created_at: Set(now),
            decided_at: Set(None),
            decided_by: Set(None),
        },
    ))
    .exec(db)
    .await
    .map_err(|e| format!("seed claims: {e}"))?;
    license_request::Entity::insert_many(accounts.claimers.iter().cycle().take(LISTED).map(
        |requester| license_request::ActiveModel {
            id: NotSet,
            requester_id: Set(requester.id),
            buyer_email: Set(accounts.buyer.email.clone()),
            message: Set("Could our team have a key for the new laptop, please?".into()),
            status: Set(claim::ApprovalStatus::Pending),
            license_id: Set(None),
            created_at: Set(now),
            decided_at: Set(None),
        },
    ))
    .exec(db)
    .await
    .map_err(|e| format!("seed license requests: {e}"))?;
    Ok(())
}

/// A page the dashboard reads, at concurrency 32 as the buyer.
struct PageRead {
    /// What the row is called, and its key in the JSON results.
    name: &'static str,
    key: &'static str,
    query: &'static str,
    variables: serde_json::Value,
    /// The connection's path in `data`.
    path: &'static [&'static str],
}

/// What [`page_load`] measured.
struct PageLoad {
    stats: Stats,
    cpu: Cpu,
    statements: f64,
}

/// `page` in a closed loop at concurrency 32: its latency, and the CPU and SQL
/// statements per request of the server and PostgreSQL (warm-up included,
/// in both the time and the count).
async fn page_load(
    client: &Client,
    (server_pid, database): (Option<u32>, &str),
    token: &str,
    page: &PageRead,
    window: Window,
) -> Result<PageLoad, String> {
    settle(client).await?;
    let cpu_before = Cpu::now(server_pid, database);
    let statements_before = client.metric(SQL_STATEMENTS).await?;
    let done = Arc::new(AtomicU64::new(0));
    let stats: Stats = {
        let client = client.clone();
        let done = done.clone();
        let token = token.to_owned();
        let (query, variables, path) = (page.query, page.variables.clone(), page.path);
        closed_loop(32, window, move |_, _| {
            done.fetch_add(1, Ordering::Relaxed);
            let client = client.clone();
            let token = token.clone();
            let variables = variables.clone();
            async move {
                let data = client.gql(Some(&token), query, variables).await?;
                let connection = path.iter().fold(&data, |value, field| &value[*field]);
                match connection["edges"].as_array() {
                    Some(edges) if edges.len() == 100 => Ok(()),
                    _ => Err("not 100 edges".to_owned()),
                }
            }
        })
        .await
    };
    let requests = done.load(Ordering::Relaxed);
    let cpu = cpu_before
        .delta(&Cpu::now(server_pid, database))
        .per_op_ms(requests);
    let statements =
        (client.metric(SQL_STATEMENTS).await? - statements_before) / requests.max(1) as f64;
    Ok(PageLoad {
        stats,
        cpu,
        statements,
    })
}

/// The dashboard's pages as the buyer: `order(id) { licenses(first: 100) {
/// … assignee { email } } }` (SQL statements per request counted by the
/// server at two page sizes, then throughput), then a page of 100 incoming
/// claims and one of 100 incoming license requests.
async fn read_scenarios(
    report: &mut Report,
    client: &Client,
    server: (Option<u32>, &str),
    accounts: &Accounts,
    order_id: i64,
    window: Window,
) -> Result<(), String> {
    step("read: an order's first 100 keys with their assignees");
    settle(client).await?;
    let token = accounts.buyer.token.clone();
    let order = order_id.to_string();
    let first = client
        .gql(Some(&token), READ, json!({"o": order, "n": 100}))
        .await?;
    let edges = first["order"]["licenses"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let assigned = edges
        .iter()
        .filter(|e| !e["node"]["assignee"]["email"].is_null())
        .count();
    let mut per_request = Vec::new();
    for page in [100, 10] {
        const REQUESTS: usize = 20;
        let before = client.metric(SQL_STATEMENTS).await?;
        for _ in 0..REQUESTS {
            client
                .gql(Some(&token), READ, json!({"o": order, "n": page}))
                .await?;
        }
        let after = client.metric(SQL_STATEMENTS).await?;
        per_request.push((page, (after - before) / REQUESTS as f64));
    }
    let keys = PageRead {
        name: "read: order { licenses(first: 100) { key assigneeEmail assignee { email } } }",
        key: "read",
        query: READ,
        variables: json!({"o": order, "n": 100}),
        path: &["order", "licenses"],
    };
    let load = page_load(client, server, &token, &keys, window).await?;
    let mut row = Row::new(keys.name, 32).with_stats(&load.stats);
    row.note(format!(
        "{} of 100 keys assigned; CPU ms per request: server {:.2}, PostgreSQL {:.2}; SQL statements per request: {:.1} under this load, one at a time {}",
        assigned,
        load.cpu.server,
        load.cpu.postgres,
        load.statements,
        per_request
            .iter()
            .map(|(page, n)| format!("{n:.1} at first: {page}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    report.rows.push(row);
    // Whole statements: a stray background statement during the count shows as a fraction.
    let constant = per_request
        .windows(2)
        .all(|w| w[0].1.round() == w[1].1.round());
    report.goals.push(format!(
        "read query: {:.2} SQL statements per request for 100 keys, {:.2} for 10 (goal: constant): {}",
        per_request[0].1,
        per_request[1].1,
        verdict(constant)
    ));
    report.raw.insert(
        keys.key.into(),
        json!({"stats": load.stats, "statements_per_request": per_request, "statements_per_request_under_load": load.statements, "assigned_of_100": assigned, "cpu_ms_per_request": load.cpu}),
    );
    read_goal(report, keys.name, &load);

    for page in [
        PageRead {
            name: "read: claimRequests(first: 100) { claimer { email } license { key order { number } } }",
            key: "read_claims",
            query: READ_CLAIMS,
            variables: json!({"n": 100}),
            path: &["claimRequests"],
        },
        PageRead {
            name: "read: licenseRequests(first: 100) { message requester { email } }",
            key: "read_license_requests",
            query: READ_REQUESTS,
            variables: json!({"n": 100}),
            path: &["licenseRequests"],
        },
    ] {
        step(page.name);
        let load = page_load(client, server, &token, &page, window).await?;
        let mut row = Row::new(page.name, 32).with_stats(&load.stats);
        row.note(format!(
            "CPU ms per request: server {:.2}, PostgreSQL {:.2}; SQL statements per request: {:.1}",
            load.cpu.server, load.cpu.postgres, load.statements,
        ));
        report.rows.push(row);
        report.raw.insert(
            page.key.into(),
            json!({"stats": load.stats, "statements_per_request_under_load": load.statements, "cpu_ms_per_request": load.cpu}),
        );
        read_goal(report, page.name, &load);
    }
    Ok(())
}

/// The read goal: at most 0.4 ms of server CPU per page, p99 at most 30 ms.
fn read_goal(report: &mut Report, name: &str, load: &PageLoad) {
    let page = name.trim_start_matches("read: ");
    report.goals.push(format!(
        "{page} at concurrency 32: server CPU {:.2} ms per request (goal ≤ 0.4), p99 {:.2} ms (goal ≤ 30): {}",
        load.cpu.server,
        load.stats.p99_ms,
        verdict(load.cpu.server <= 0.4 && load.stats.p99_ms <= 30.0 && load.stats.errors == 0)
    ));
}

/// The server's resident memory in bytes (`VmRSS`), or 0 where `/proc` has none.
pub fn resident_bytes(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// 64 requests at once that would each hash a password, twice: 20 aliased
/// `signIn`s per request (refused whole by the one-password-per-request
/// limit), then one `signIn` each with the right password (queued for the
/// hashing permits). Reports the server's peak resident memory above its
/// level before the burst: bounded by the permits, not by the requests.
async fn sign_in_burst(
    report: &mut Report,
    client: &Client,
    server: &Server,
    accounts: &Accounts,
) -> Result<(), String> {
    const REQUESTS: usize = 64;
    let aliased = format!(
        "mutation($e:String!,$p:String!){{ {} }}",
        (0..20)
            .map(|i| format!("s{i}: signIn(email:$e,password:$p){{ token }} "))
            .collect::<String>()
    );
    for (label, aliases) in [("64 × 20 aliased signIn", true), ("64 × 1 signIn", false)] {
        let pid = server.pid();
        let before = resident_bytes(pid);
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let sampling = sampling.clone();
            tokio::spawn(async move {
                let mut peak = 0;
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(resident_bytes(pid));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                peak
            })
        };
        let started = std::time::Instant::now();
        let answers = futures_util::future::join_all((0..REQUESTS).map(|i| {
            let email = accounts.claimers[i % accounts.claimers.len()].email.clone();
            let query = if aliases {
                aliased.clone()
            } else {
                SIGN_IN.to_owned()
            };
            async move {
                client
                    .gql(None, &query, json!({"e": email, "p": PASSWORD}))
                    .await
            }
        }))
        .await;
        let elapsed = started.elapsed();
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.await.map_err(|e| e.to_string())?;
        let refused = answers.iter().filter(|a| a.is_err()).count();
        let mut row = Row::new(format!("signIn burst: {label}"), REQUESTS);
        row.note(format!(
            "all answered in {:.2} s; {refused} refused; server resident memory +{:.0} MiB at peak ({:.0} MiB before)",
            elapsed.as_secs_f64(),
            peak.saturating_sub(before) as f64 / 1048576.0,
            before as f64 / 1048576.0
        ));
        report.rows.push(row);
        report.raw.insert(
            format!("sign_in_burst_{}", if aliases { "aliased" } else { "single" }),
            json!({"seconds": elapsed.as_secs_f64(), "refused": refused, "rss_before": before, "rss_peak": peak}),
        );
    }
    Ok(())
}
