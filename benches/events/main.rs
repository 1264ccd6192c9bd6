//! `just bench-events`: live event delivery on PostgreSQL + Redis.
//!
//! Each scenario starts `keyledger serve` processes (the build's own, or
//! `BENCH_SERVER`) on a database and Redis channel of its own, opens
//! `events` subscriptions over `graphql-transport-ws` (each its own account,
//! seeded straight in the database) and measures:
//! - `idle` ([`idle`]): one measured subscriber among 1,000 then
//!   `BENCH_IDLE` idle ones, on one then two instances; memory per idle
//!   subscription;
//! - `fanout` ([`fanout`]): an organization's 1,000 admins subscribed while
//!   its order changes 20 times a second: latency over every delivery, SQL
//!   statements the subscribers cost;
//! - `replay` ([`replay`]): 10,000 subscribers reconnecting with their
//!   cursor at once after the server was killed and restarted;
//! - `scale` ([`scale`]): 19,000 idle subscribers on each of two instances,
//!   held by child processes of this bench.
//!
//! `cargo bench --bench events -- NAME…` runs only those (in the order
//! above); no name runs them all. Sizes come from environment variables
//! (see each module and bench/README.md), so a small dev-profile run checks
//! that a scenario works. Services: `BENCH_DATABASE_URL` (an admin URL;
//! databases are created and dropped; default
//! `postgres://postgres@127.0.0.1:5432/test`), `BENCH_REDIS_URL` (default
//! `redis://127.0.0.1:6379`); `BENCH_WRAPPER` runs the server under a tool
//! (e.g. `valgrind --tool=massif`). Output: markdown on stdout and the
//! figures merged into `bench/results/events.json` (a scenario replaces its
//! own; `events.dev.json` for a build other than release).
mod client;
mod common;
mod fanout;
mod idle;
mod replay;
mod scale;

use std::time::Instant;

use chrono::Utc;
use serde_json::{Value, json};

use common::{Env, Error, Outcome, cores, kernel, load_average};

/// The scenarios, in the order they run.
const SCENARIOS: [&str; 4] = ["idle", "fanout", "replay", "scale"];

fn selected() -> Result<Vec<&'static str>, Error> {
    let mut chosen = Vec::new();
    for arg in std::env::args().skip(1) {
        // cargo passes `--bench` to every bench target.
        if arg == "--bench" {
            continue;
        }
        let name = arg.trim_start_matches("--");
        match SCENARIOS.iter().find(|s| **s == name) {
            Some(s) => chosen.push(*s),
            None => {
                return Err(format!(
                    "unknown scenario {arg:?}: expected some of {}",
                    SCENARIOS.join(", ")
                )
                .into());
            }
        }
    }
    Ok(SCENARIOS
        .into_iter()
        .filter(|s| chosen.is_empty() || chosen.contains(s))
        .collect())
}

async fn run() -> Result<(), Error> {
    let started = Instant::now();
    let scenarios = selected()?;
    // Thousands of websockets: as many descriptors as allowed.
    keyledger::http::listener::raise_descriptor_limit()?;
    let env = Env::read();
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    let header = format!(
        "## Live events (PostgreSQL + Redis, {profile} build, {} cores, load average {} at start)",
        cores(),
        load_average()
    );
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    for name in scenarios {
        eprintln!("events: scenario {name}…");
        let outcome = match name {
            "idle" => idle::run(&env).await,
            "fanout" => fanout::run(&env).await,
            "replay" => replay::run(&env).await,
            _ => scale::run(&env).await,
        };
        match outcome {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => {
                eprintln!("events: scenario {name} failed: {error}");
                failed.push(format!("{name}: {error}"));
            }
        }
    }

    println!();
    println!("{header}");
    for outcome in &outcomes {
        println!();
        print!("{}", outcome.markdown);
    }
    println!();
    println!("Whole run {:.0} s.", started.elapsed().as_secs_f64());

    if !outcomes.is_empty() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join(if profile == "release" {
            "events.json"
        } else {
            "events.dev.json"
        });
        let existing = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        let merged = merge(existing, &outcomes, profile);
        std::fs::write(&file, serde_json::to_string_pretty(&merged)? + "\n")?;
        eprintln!("wrote {}", file.display());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; ").into())
    }
}

/// The results file after this run: each scenario run replaces its own
/// figures (its `latency` rows and its sections), the others stay. `date`
/// is the `idle` rows' (the load bench's table shows them with it).
fn merge(existing: Option<Value>, outcomes: &[Outcome], profile: &str) -> Value {
    let mut results = match existing {
        Some(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let now = Utc::now().to_rfc3339();
    let mut latency: Vec<Value> = results
        .get("latency")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for outcome in outcomes {
        // Rows written before scenarios were named are the idle ones.
        latency.retain(|row| row["scenario"].as_str().unwrap_or("idle") != outcome.name);
        latency.extend(outcome.latency.iter().cloned());
        for (key, value) in &outcome.sections {
            results.insert(key.clone(), value.clone());
        }
        if outcome.name == "idle" || !results.contains_key("date") {
            results.insert("date".into(), json!(now));
        }
    }
    results.insert("latency".into(), json!(latency));
    results.insert("benchmark".into(), json!("events"));
    results.insert("backend".into(), json!("postgresql+redis"));
    results.insert("profile".into(), json!(profile));
    results.insert(
        "machine".into(),
        json!({ "cores": cores(), "kernel": kernel() }),
    );
    results.insert(
        "goals".into(),
        json!({
            "p99_ms_at_10000": 100,
            "bytes_per_idle_subscriber": 20000,
            "fanout_p99_ms": 50,
            "scale_p99_ms": 50,
            "scale_bytes_per_idle_subscriber": 8000,
        }),
    );
    Value::Object(results)
}

fn main() {
    // A child generator of the `scale` scenario.
    if std::env::var_os(scale::CHILD_ROLE).is_some() {
        std::process::exit(scale::child_main());
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` would run this
    // too, so do nothing unless asked to benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // reqwest is built without a crypto provider (the server's choice):
    // install ring's, as the server does, before any client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(error) = runtime.block_on(run()) {
        eprintln!("bench-events failed: {error}");
        std::process::exit(1);
    }
}
