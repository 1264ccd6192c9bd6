//! The results: one markdown table (printed, and written with the raw figures
//! as JSON under `bench/results/`).
//!
//! EXTENSION POINTS. Rows measured elsewhere join the same table:
//! - Event delivery (issue 6) is measured by `benches/events.rs`
//!   (`just bench-events`), built on another branch. When that bench writes
//!   `bench/results/events.json` as `{"rows": [Row, …]}` (the [`Row`] fields
//!   below), [`external_rows`] adds its rows here; until then the table says
//!   they were not measured.
//! - `validateLicense` (issue 8) does not exist yet: see `validate_license` in
//!   `main.rs` for where its scenario goes; the table says "not built yet".
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

/// Rows another bench left in `bench/results/events.json` (issue 6), if any.
pub fn external_rows() -> Vec<Row> {
    let path = results_dir().join("events.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        let mut row = Row::new("event delivery (issue 6)", "—");
        row.note("not measured by this bench: `just bench-events` (benches/events.rs) writes bench/results/events.json, not built on this branch yet");
        return vec![row];
    };
    #[derive(Deserialize)]
    struct External {
        rows: Vec<Row>,
    }
    match serde_json::from_str::<External>(&text) {
        Ok(external) => external
            .rows
            .into_iter()
            .map(|mut row| {
                row.note(format!("from {}", path.display()));
                row
            })
            .collect(),
        Err(error) => {
            let mut row = Row::new("event delivery (issue 6)", "—");
            row.note(format!("{} unreadable: {error}", path.display()));
            vec![row]
        }
    }
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
