//! The benchmark's surroundings: a fresh PostgreSQL database, the release
//! `keyledger` binary started as a child process, a GraphQL client, and the
//! machine facts printed with the results.
use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// The PostgreSQL server's admin database (a database is created on it per run).
pub fn pg_admin_url() -> String {
    std::env::var("BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("BENCH_REDIS_URL")
        .or_else(|_| std::env::var("TEST_REDIS_URL"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// A name no other run of this machine uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// A PostgreSQL database of this run's own, dropped when this is dropped.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    pub name: String,
}

impl PgDatabase {
    pub async fn create() -> Result<PgDatabase, String> {
        use sea_orm::ConnectionTrait;
        let admin_url = pg_admin_url();
        let name = unique("kl_bench");
        let admin = sea_orm::Database::connect(&admin_url)
            .await
            .map_err(|e| format!("PostgreSQL at {admin_url}: {e}"))?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| format!("create database: {e}"))?;
        admin.close().await.ok();
        let mut url = url::Url::parse(&admin_url).map_err(|e| e.to_string())?;
        url.set_path(&format!("/{name}"));
        if !url.query_pairs().any(|(k, _)| k == "sslmode") {
            // The database is on this machine: TLS would only add CPU on both
            // ends (for the server and the ceiling alike). A URL that names
            // an `sslmode` keeps it.
            url.query_pairs_mut().append_pair("sslmode", "disable");
        }
        Ok(PgDatabase {
            url: url.to_string(),
            admin_url,
            name,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside async: a short-lived runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                use sea_orm::ConnectionTrait;
                if let Ok(admin) = sea_orm::Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    admin.close().await.ok();
                }
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}

/// A new license signing key in `dir` (PostgreSQL requires one).
pub fn signing_key_in(dir: &std::path::Path) -> Result<PathBuf, String> {
    let path = dir.join("license-signing.pem");
    let pem = keyledger::signing::generate_pem().map_err(|e| e.to_string())?;
    std::fs::write(&path, pem).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The `keyledger` binary cargo built for this bench, in the same (release)
/// profile, or `BENCH_SERVER` when set: another build to measure with the
/// same generator (the build before a change, say).
pub fn server_binary() -> PathBuf {
    std::env::var_os("BENCH_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_keyledger")))
}

/// A `keyledger serve` child process; killed when dropped.
pub struct Server {
    pub base: String,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

/// How to configure a server; everything else is the defaults.
pub struct ServerConfig<'a> {
    pub database_url: &'a str,
    pub redis_url: Option<&'a str>,
}

impl Server {
    pub async fn start(config: ServerConfig<'_>) -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let bind = format!("127.0.0.1:{port}");
        let mut command = tokio::process::Command::new(server_binary());
        command
            .arg("serve")
            .current_dir(dir.path())
            .env("DATABASE_URL", config.database_url)
            .env("BIND_ADDR", &bind)
            .env("MAIL_DIR", dir.path().join("mail"))
            .env("LICENSE_SIGNING_KEY", signing_key_in(dir.path())?)
            // All load comes from 127.0.0.1 and a few accounts: lift the
            // per-account and per-address claim limit out of the way.
            .env("CLAIM_RATE_PER_MINUTE", "1000000000")
            // Check-outs are counted per address like device changes.
            .env("DEVICE_RATE_PER_MINUTE", "1000000000")
            // The same for connections: the claims alone keep 256 open.
            .env("MAX_CONNECTIONS_PER_CLIENT", "1000000")
            // Connections opened beforehand sit idle while other rounds run
            // (the ceiling's, at PostgreSQL directly): keep them open.
            .env("HEADER_READ_TIMEOUT_SECS", "3600")
            // Background jobs run only when a commit wakes them, so they do
            // not add SQL statements to the read scenario's count.
            .env("JOB_INTERVAL_MS", "3600000")
            .env("RUST_LOG", "warn")
            .env_remove("SMTP_URL")
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(redis) = config.redis_url {
            command
                .env("REDIS_URL", redis)
                .env("REDIS_CHANNEL", unique("kl_bench_events"));
        }
        let child = command
            .spawn()
            .map_err(|e| format!("start {}: {e}", server_binary().display()))?;
        let server = Server {
            base: format!("http://{bind}"),
            child,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.get(format!("{}/readyz", server.base)).send().await
                && response.status().is_success()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err("keyledger did not become ready within 60 s".into());
            }
            // Fine enough to time a start (the admin scenario reports it).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stop the process.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// GraphQL over HTTP, like any client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    graphql: String,
    base: String,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .tcp_nodelay(true)
                .build()
                .expect("HTTP client"),
            graphql: format!("{base}/graphql"),
            base: base.to_owned(),
        }
    }

    /// `http://host:port` of the server.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `data` of a GraphQL answer; any error is an `Err` with its message and code.
    pub async fn gql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .post(&self.graphql)
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let mut body: Value = response.json().await.map_err(|e| e.to_string())?;
        if let Some(error) = body.get("errors").and_then(|e| e.get(0)) {
            return Err(format!(
                "{} ({})",
                error["message"].as_str().unwrap_or("?"),
                error["extensions"]["code"].as_str().unwrap_or("no code")
            ));
        }
        Ok(body["data"].take())
    }

    /// A counter (or gauge) from `GET /metrics`.
    pub async fn metric(&self, name: &str) -> Result<f64, String> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no metric {name}"))
    }
}

/// Facts about the machine and software the figures were measured on.
pub async fn machine_facts() -> Value {
    use sea_orm::ConnectionTrait;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map(|kib| (kib / 1024.0 / 1024.0).round())
        .unwrap_or(0.0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    let rustc = command_line("rustc", &["--version"]);
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]);
    let postgres = match sea_orm::Database::connect(pg_admin_url()).await {
        Ok(db) => {
            let version = db
                .query_one_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    "SHOW server_version",
                ))
                .await
                .ok()
                .flatten()
                .and_then(|row| row.try_get_by_index::<String>(0).ok())
                .unwrap_or_default();
            db.close().await.ok();
            version
        }
        Err(_) => String::new(),
    };
    let redis = redis_version().await.unwrap_or_default();
    json!({
        "date": chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        "cores": cores,
        "cpu": cpu,
        "memory_gib": memory_gib,
        "load_average_1m_at_start": load,
        "rustc": rustc,
        "postgresql": postgres,
        "redis": redis,
        "commit": commit,
        "os": std::env::consts::OS,
    })
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

async fn redis_version() -> Option<String> {
    let client = redis::Client::open(redis_url()).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(|v| v.trim().to_owned())
}

/// CPU time (user + system, seconds) of the processes taking part in a run,
/// read from /proc: how the work splits between the server, PostgreSQL's
/// backends serving this run's database, and this load generator.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Cpu {
    pub server: f64,
    pub postgres: f64,
    pub client: f64,
}

impl Cpu {
    pub fn now(server: Option<u32>, database: &str) -> Cpu {
        Cpu {
            server: server.and_then(process_cpu).unwrap_or(0.0),
            postgres: postgres_cpu(database),
            client: process_cpu(std::process::id()).unwrap_or(0.0),
        }
    }

    /// CPU time spent between `self` and `later`.
    pub fn delta(&self, later: &Cpu) -> Cpu {
        Cpu {
            server: later.server - self.server,
            postgres: later.postgres - self.postgres,
            client: later.client - self.client,
        }
    }

    pub fn add(&mut self, other: &Cpu) {
        self.server += other.server;
        self.postgres += other.postgres;
        self.client += other.client;
    }

    /// Milliseconds of CPU per operation, `self` being the CPU time of `ops` operations.
    pub fn per_op_ms(&self, ops: u64) -> Cpu {
        let per = |seconds: f64| seconds * 1000.0 / ops.max(1) as f64;
        Cpu {
            server: per(self.server),
            postgres: per(self.postgres),
            client: per(self.client),
        }
    }
}

/// The whole machine's CPU time (`/proc/stat`), busy and in all, in USER_HZ
/// ticks: what share of its cores a run kept busy, whoever used them.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    pub fn now() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .filter(|line| line.starts_with("cpu "))
            .map(|line| {
                line.split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // user nice system idle iowait irq softirq steal (guest time is
        // counted in user already).
        let total: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        MachineCpu {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// Share of the machine's CPU time that was busy since `self`, in percent.
    pub fn busy_since(&self) -> f64 {
        let now = MachineCpu::now();
        let total = now.total.saturating_sub(self.total);
        100.0 * now.busy.saturating_sub(self.busy) as f64 / total.max(1) as f64
    }
}

/// Linux reports process times in USER_HZ, 100 per second on every architecture Rust targets here.
const USER_HZ: f64 = 100.0;

fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// PostgreSQL backends connected to `database` (their process title names it),
/// autovacuum excluded.
fn postgres_cpu(database: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let needle = format!(" {database} ");
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let title = String::from_utf8_lossy(&c).replace('\0', " ");
                    // Backends serving connections, not autovacuum (which the
                    // bench's bulk inserts set off on its own schedule).
                    title.starts_with("postgres: ")
                        && title.contains(&needle)
                        && !title.contains("autovacuum")
                })
                .unwrap_or(false)
        })
        .filter_map(process_cpu)
        .sum()
}
