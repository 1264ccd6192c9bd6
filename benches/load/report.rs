//! The results: one markdown table (printed, and written with the raw figures
//! as JSON under `bench/results/`).
//!
//! Rows measured elsewhere join the same table: event delivery is measured
//! by `benches/events/` (`just bench-events`), which writes
//! `bench/results/events.json`; [`external_rows`] turns its latency and
//! memory figures into rows here, or one row saying they were not measured
//! (or could not be read). `validateLicense` is measured here, by
//! `validate_scenario` in `main.rs`.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One line of the table. `throughput` is per second; latencies in ms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub concurrency: String,
    pub throughput: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    #[serde(default)]
    pub notes: String,
}

impl Row {
    pub fn new(scenario: impl Into<String>, concurrency: impl ToString) -> Row {
        Row {
            scenario: scenario.into(),
            concurrency: concurrency.to_string(),
            throughput: None,
            p50_ms: None,
            p99_ms: None,
            notes: String::new(),
        }
    }

    pub fn with_stats(mut self, stats: &crate::measure::Stats) -> Row {
        self.throughput = Some(stats.throughput);
        self.p50_ms = Some(stats.p50_ms);
        self.p99_ms = Some(stats.p99_ms);
        self.note(format!(
            "machine CPU {:.0}% busy",
            stats.machine_busy_percent
        ));
        if stats.errors > 0 {
            self.note(format!(
                "{} errors, first: {}",
                stats.errors,
                stats.first_error.as_deref().unwrap_or("?")
            ));
        }
        self
    }

    pub fn note(&mut self, note: impl AsRef<str>) {
        if !self.notes.is_empty() {
            self.notes.push_str("; ");
        }
        self.notes.push_str(note.as_ref());
    }
}

pub struct Report {
    pub machine: Value,
    pub rows: Vec<Row>,
    /// Goal checks, one line each, printed under the table.
    pub goals: Vec<String>,
    /// Raw figures (every run's full statistics), for the JSON file.
    pub raw: serde_json::Map<String, Value>,
}

fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results")
}

/// The event-delivery rows, from the last `just bench-events`
/// (`bench/results/events.json`, written by `benches/events/`).
pub fn external_rows() -> Vec<Row> {
    let path = results_dir().join("events.json");
    let unavailable = |why: String| {
        let mut row = Row::new("event delivery", "—");
        row.note(why);
        vec![row]
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return unavailable("not measured yet: run `just bench-events`".into());
    };
    #[derive(Deserialize)]
    struct Events {
        date: String,
        latency: Vec<Latency>,
        /// Absent when only other scenarios than `idle` were run.
        #[serde(default)]
        memory: Vec<Memory>,
    }
    #[derive(Deserialize)]
    struct Latency {
        name: String,
        instances: u64,
        idle_subscribers: u64,
        p50_ms: f64,
        p99_ms: f64,
        /// The row's own run (rows of a scenario run alone); else `date`.
        date: Option<String>,
    }
    #[derive(Deserialize)]
    struct Memory {
        idle_subscribers: u64,
        bytes_per_idle_subscriber: f64,
    }
    let events: Events = match serde_json::from_str(&text) {
        Ok(events) => events,
        Err(error) => return unavailable(format!("{} unreadable: {error}", path.display())),
    };
    let date = events.date.get(..10).unwrap_or(&events.date).to_owned();
    let bytes = |subscribers| {
        events
            .memory
            .iter()
            .find(|m| m.idle_subscribers == subscribers)
            .map(|m| {
                format!(
                    "; {:.1} KB per idle subscription",
                    m.bytes_per_idle_subscriber / 1000.0
                )
            })
            .unwrap_or_default()
    };
    events
        .latency
        .iter()
        .map(|l| {
            let mut row = Row::new(
                format!("event delivery, {} (`just bench-events`)", l.name),
                format!("{} idle", l.idle_subscribers),
            );
            row.p50_ms = Some(l.p50_ms);
            row.p99_ms = Some(l.p99_ms);
            let date = l
                .date
                .as_deref()
                .map(|d| d.get(..10).unwrap_or(d))
                .unwrap_or(&date);
            row.note(format!(
                "mutation sent → event received, run of {date}{}",
                if l.instances == 1 {
                    bytes(l.idle_subscribers)
                } else {
                    String::new()
                }
            ));
            row
        })
        .collect()
}

fn cell(value: Option<f64>, digits: usize) -> String {
    match value {
        Some(v) => format!("{v:.digits$}"),
        None => "—".into(),
    }
}

impl Report {
    pub fn new(machine: Value) -> Report {
        Report {
            machine,
            rows: Vec::new(),
            goals: Vec::new(),
            raw: serde_json::Map::new(),
        }
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "Measured {} on {} cores ({}), {} GiB; {}; PostgreSQL {}; Redis {}; commit {}; load average at start {}.\n\n",
            m["date"].as_str().unwrap_or("?"),
            m["cores"],
            m["cpu"].as_str().unwrap_or("?"),
            m["memory_gib"],
            m["rustc"].as_str().unwrap_or("?"),
            m["postgresql"].as_str().unwrap_or("?"),
            m["redis"].as_str().unwrap_or("?"),
            m["commit"].as_str().unwrap_or("?"),
            m["load_average_1m_at_start"].as_str().unwrap_or("?"),
        );
        out.push_str("| scenario | concurrency | throughput /s | p50 ms | p99 ms | notes |\n");
        out.push_str("| --- | ---: | ---: | ---: | ---: | --- |\n");
        for row in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                row.scenario,
                row.concurrency,
                cell(row.throughput, 0),
                cell(row.p50_ms, 2),
                cell(row.p99_ms, 2),
                row.notes.replace('|', "\\|"),
            ));
        }
        if !self.goals.is_empty() {
            out.push('\n');
            for goal in &self.goals {
                out.push_str(&format!("- {goal}\n"));
            }
        }
        out
    }

    /// Write `bench/results/NAME.{json,md}` and a dated copy of the JSON in
    /// `bench/results/history/` (git-ignored; `NAME.*` is what gets committed).
    pub fn write(&self, name: &str) -> std::io::Result<PathBuf> {
        let dir = results_dir();
        std::fs::create_dir_all(&dir)?;
        let json = json!({
            "machine": self.machine,
            "rows": self.rows,
            "goals": self.goals,
            "raw": self.raw,
        });
        let text = serde_json::to_string_pretty(&json)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        std::fs::create_dir_all(dir.join("history"))?;
        std::fs::write(dir.join(format!("history/{name}-{stamp}.json")), &text)?;
        std::fs::write(dir.join(format!("{name}.json")), &text)?;
        std::fs::write(dir.join(format!("{name}.md")), self.markdown())?;
        Ok(dir.join(format!("{name}.json")))
    }
}
