//! What the scenarios share: the settings, a database of their own, the
//! `keyledger serve` processes, seeding, GraphQL over HTTP and readings of
//! `/proc` and `/metrics`.
use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use chrono::Utc;
use entity::{account, session};
use keyledger::auth::token;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::{Value, json};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Counter names on `/metrics` (prometheus-client adds `_total` to counters).
pub const SQL_STATEMENTS: &str = "keyledger_sql_statements_total";
pub const SUBSCRIBERS: &str = "keyledger_subscribers";
pub const DELIVERED: &str = "keyledger_events_delivered_total";
pub const PUBLISHED: &str = "keyledger_events_published_total";
pub const SHED: &str = "keyledger_connections_shed_total";

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A size or count from the environment, with a message naming the variable
/// when it does not parse.
pub fn env_usize(name: &str, default: usize) -> Result<usize, Error> {
    env_or(name, &default.to_string())
        .parse()
        .map_err(|e| format!("{name}: {e}").into())
}

pub fn env_f64(name: &str, default: f64) -> Result<f64, Error> {
    let value: f64 = env_or(name, &default.to_string())
        .parse()
        .map_err(|e| format!("{name}: {e}"))?;
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("{name} must be a positive number").into())
    }
}

/// Where the run's services are.
#[derive(Clone)]
pub struct Env {
    /// A PostgreSQL URL allowed to create databases.
    pub admin_url: String,
    pub redis_url: String,
}

impl Env {
    pub fn read() -> Env {
        Env {
            admin_url: env_or(
                "BENCH_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
            redis_url: env_or("BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
        }
    }

    /// A Redis channel of the scenario's own.
    pub fn channel(&self, tag: &str) -> String {
        format!("kl_bench_{}_{tag}", std::process::id())
    }
}

/// A fresh PostgreSQL database for one scenario, dropped at its end.
pub struct BenchDb {
    admin: DatabaseConnection,
    pub name: String,
    pub url: String,
}

impl BenchDb {
    pub async fn create(env: &Env, tag: &str) -> Result<BenchDb, Error> {
        let name = format!("kl_bench_{}_{tag}", std::process::id());
        let admin = Database::connect(&env.admin_url).await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        let mut url = url::Url::parse(&env.admin_url)?;
        url.set_path(&format!("/{name}"));
        Ok(BenchDb {
            admin,
            name,
            url: url.to_string(),
        })
    }

    pub async fn drop(self) {
        self.admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .ok();
        self.admin.close().await.ok();
    }
}

/// How a server process is started (kept to start it again after a kill).
#[derive(Clone)]
pub struct Launch {
    pub database_url: String,
    pub redis_url: String,
    pub channel: String,
    /// More environment for the server (e.g. `MAX_CONNECTIONS`).
    pub extra: Vec<(String, String)>,
}

impl Launch {
    pub fn new(database_url: &str, redis_url: &str, channel: &str) -> Launch {
        Launch {
            database_url: database_url.into(),
            redis_url: redis_url.into(),
            channel: channel.into(),
            extra: Vec::new(),
        }
    }
}

/// A `keyledger serve` process. The server runs in its own process so that
/// its RSS (`/proc/PID/status`) and CPU count only the server's side.
pub struct Server {
    child: Option<tokio::process::Child>,
    pub addr: SocketAddr,
    pub base: String,
    dir: tempfile::TempDir,
    launch: Launch,
}

impl Server {
    pub async fn start(launch: Launch) -> Result<Server, Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("license-signing.pem"),
            keyledger::signing::generate_pem()?,
        )?;
        let mut server = Server {
            child: None,
            addr,
            base: format!("http://{addr}"),
            dir,
            launch,
        };
        server.spawn()?;
        server.wait_ready().await?;
        Ok(server)
    }

    /// Start the process (on the same address, in the same directory, when
    /// started again).
    fn spawn(&mut self) -> Result<(), Error> {
        // BENCH_SERVER: another build to measure with the same generator.
        let binary = env_or("BENCH_SERVER", env!("CARGO_BIN_EXE_keyledger"));
        // BENCH_WRAPPER runs the server under a tool, e.g. `valgrind --tool=massif`.
        let wrapper = env_or("BENCH_WRAPPER", "");
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(tool) => {
                let mut command = tokio::process::Command::new(tool);
                command.args(words).arg(&binary);
                command
            }
            None => tokio::process::Command::new(&binary),
        };
        let dir = self.dir.path();
        command
            .arg("serve")
            .current_dir(dir)
            .env("DATABASE_URL", &self.launch.database_url)
            .env("REDIS_URL", &self.launch.redis_url)
            .env("REDIS_CHANNEL", &self.launch.channel)
            .env("BIND_ADDR", self.addr.to_string())
            .env("MAIL_DIR", dir.join("mail"))
            .env("LICENSE_SIGNING_KEY", dir.join("license-signing.pem"))
            .env("RUST_LOG", "warn")
            // Every subscriber connects from a loopback address: lift the
            // per-client connection cap out of the way.
            .env("MAX_CONNECTIONS_PER_CLIENT", "1000000");
        for (name, value) in &self.launch.extra {
            command.env(name, value);
        }
        self.child = Some(command.stdout(Stdio::null()).kill_on_drop(true).spawn()?);
        Ok(())
    }

    async fn wait_ready(&self) -> Result<(), Error> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("server did not become ready".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, as a crash would: no graceful shutdown.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Start again after [`Server::kill`], on the same address.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.spawn()?;
        self.wait_ready().await
    }

    /// SIGTERM, then wait for the graceful shutdown (a tool in
    /// `BENCH_WRAPPER` writes its report at exit); SIGKILL after 60 s.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss(&self) -> u64 {
        let pid = self.pid().unwrap_or(0);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// CPU time of the server process so far, in seconds.
    pub fn cpu(&self) -> f64 {
        self.pid().and_then(process_cpu).unwrap_or(0.0)
    }

    /// Every unlabelled figure on `/metrics`.
    pub async fn metrics(&self, http: &reqwest::Client) -> HashMap<String, f64> {
        let text = match http.get(format!("{}/metrics", self.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        parse_metrics(&text)
    }

    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> f64 {
        self.metrics(http).await.get(name).copied().unwrap_or(0.0)
    }

    /// Wait until `n` subscriptions are registered on this instance.
    pub async fn wait_subscribers(
        &self,
        http: &reqwest::Client,
        n: usize,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.metric(http, SUBSCRIBERS).await as usize;
            if count >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{count} of {n} subscriptions registered").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A GraphQL request over HTTP to the server at `base`; GraphQL errors are errors.
pub async fn gql(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> Result<Value, Error> {
    let body: Value = http
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if let Some(errors) = body.get("errors") {
        return Err(format!("GraphQL errors: {errors}").into());
    }
    Ok(body["data"].clone())
}

/// An account written by [`seed_accounts`].
pub struct Seeded {
    pub id: i64,
    pub email: String,
    /// A session token of its own.
    pub token: String,
}

/// Accounts (verified) with a session each, written straight to the
/// database: signing up 10,000 people through argon2 would take minutes.
/// Emails are `{prefix}{i}@bench.example.com`.
pub async fn seed_accounts(
    db: &DatabaseConnection,
    prefix: &str,
    count: usize,
    role: account::AccountRole,
) -> Result<Vec<Seeded>, Error> {
    let now = Utc::now();
    let mut seeded = Vec::with_capacity(count);
    for chunk_start in (0..count).step_by(1000) {
        let chunk = chunk_start..(chunk_start + 1000).min(count);
        let emails: Vec<String> = chunk
            .clone()
            .map(|i| format!("{prefix}{i}@bench.example.com"))
            .collect();
        account::Entity::insert_many(emails.iter().map(|email| account::ActiveModel {
            email: Set(email.clone()),
            password_hash: Set("-".into()),
            email_verified_at: Set(Some(now)),
            role: Set(role),
            require_manual_approval: Set(false),
            allow_override_assignee: Set(false),
            notify_on_claim: Set(false),
            allow_assignee_organization: Set(false),
            created_at: Set(now),
            ..Default::default()
        }))
        .exec(db)
        .await?;
        let rows: Vec<(i64, String)> = account::Entity::find()
            .select_only()
            .column(account::Column::Id)
            .column(account::Column::Email)
            .filter(account::Column::Email.is_in(emails))
            .order_by_asc(account::Column::Id)
            .into_tuple()
            .all(db)
            .await?;
        let tokens: Vec<String> = rows.iter().map(|_| token::generate()).collect();
        session::Entity::insert_many(rows.iter().zip(&tokens).map(|((id, _), t)| {
            session::ActiveModel {
                account_id: Set(*id),
                token_hash: Set(token::hash(t)),
                created_at: Set(now),
                expires_at: Set(now + chrono::Duration::days(1)),
                revoked_at: Set(None),
                ..Default::default()
            }
        }))
        .exec(db)
        .await?;
        seeded.extend(
            rows.into_iter()
                .zip(tokens)
                .map(|((id, email), token)| Seeded { id, email, token }),
        );
    }
    Ok(seeded)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// The hard limit on open descriptors of this process (servers and child
/// generators inherit it).
pub fn descriptor_hard_limit() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}

/// Linux reports process times in USER_HZ, 100 per second on every
/// architecture Rust targets here.
const USER_HZ: f64 = 100.0;

/// CPU time (user + system) of a process so far, in seconds.
pub fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// CPU time of the PostgreSQL backends connected to `database` (their
/// process title names it), autovacuum excluded. A backend that exited
/// takes its time with it: read it over windows in which the pool stays.
pub fn postgres_cpu(database: &str) -> f64 {
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
                    title.starts_with("postgres: ")
                        && title.contains(&needle)
                        && !title.contains("autovacuum")
                })
                .unwrap_or(false)
        })
        .filter_map(process_cpu)
        .sum()
}

/// The whole machine's CPU time (`/proc/stat`), busy and in all, in ticks:
/// what share of its cores a window kept busy, whoever used them.
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
        // user nice system idle iowait irq softirq steal
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

/// What a scenario hands back: its markdown (printed) and its figures
/// (merged into the results file).
pub struct Outcome {
    pub name: &'static str,
    pub markdown: String,
    /// Rows for the results' `latency` list (read by the load bench's table).
    pub latency: Vec<Value>,
    /// Other top-level keys of the results file this scenario owns.
    pub sections: serde_json::Map<String, Value>,
}
