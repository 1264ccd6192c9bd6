//! Configuration: every setting is an environment variable (a `.env` file is
//! read if present) and also a flag of `keyledger serve` (api.md "Process").
use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "keyledger", version, about = "License-key management backend")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
// Parsed once at start: the size of the `serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the server (the default).
    Serve(Config),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Make the account with this email an administrator.
    GrantAdmin {
        #[command(flatten)]
        db: DatabaseArgs,
        email: String,
    },
    /// Print the GraphQL schema (SDL); `schema.graphql` is this output.
    PrintSchema,
    /// Print a new Ed25519 private key (PKCS#8 PEM) for `LICENSE_SIGNING_KEY`.
    Keygen,
}

impl Default for Command {
    fn default() -> Self {
        Command::Serve(Config::parse_from(["serve"]))
    }
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://FILE?mode=rwc` or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://keyledger.db?mode=rwc"
    )]
    pub database_url: String,
    /// Connections each instance keeps to the database at most; default 4
    /// per logical CPU on PostgreSQL (at most 32), 8 on SQLite. With several
    /// instances, keep their sum under PostgreSQL's `max_connections`.
    #[arg(long, env = "DATABASE_POOL_SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    pub database_pool_size: Option<u32>,
}

#[derive(Debug, Clone, Parser)]
pub struct Config {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Redis for fanning events out between instances; unset = in-process only.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis pub/sub channel of this deployment (several deployments may share a Redis).
    #[arg(long, env = "REDIS_CHANNEL", default_value = "keyledger:events")]
    pub redis_channel: String,
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8000")]
    pub bind_addr: SocketAddr,
    /// Base of links in emails; defaults to `http://BIND_ADDR`.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// SMTP server, e.g. `smtp://127.0.0.1:1025`; unset = `.eml` files in `MAIL_DIR`.
    #[arg(long, env = "SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Folder for `.eml` files when no SMTP server is configured.
    #[arg(long, env = "MAIL_DIR", default_value = "./mail")]
    pub mail_dir: PathBuf,
    /// Sender address of every email.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "keyledger <no-reply@keyledger.local>"
    )]
    pub mail_from: String,
    /// How long a session token stays valid, in hours.
    #[arg(long, env = "SESSION_TTL_HOURS", default_value_t = 24 * 30)]
    pub session_ttl_hours: i64,
    /// Claim attempts allowed per account and per client address, per minute.
    #[arg(long, env = "CLAIM_RATE_PER_MINUTE", default_value_t = 30)]
    pub claim_rate_per_minute: u32,
    /// Wrong passwords allowed per account (email address) per minute, at
    /// sign-in and on the transfer confirmation page (N at once, then one
    /// every 60/N s). The default is enough for a person unsure which of
    /// their passwords it is, while guessing one account is slowed to 14,400
    /// attempts a day, hopeless against a password of 10 or more characters
    /// that is not on the common lists (which the password rules keep out).
    #[arg(long, env = "SIGNIN_FAILURES_PER_MINUTE", default_value_t = 10)]
    pub signin_failures_per_minute: u32,
    /// Wrong passwords allowed per client address per minute, whatever the
    /// accounts tried: higher than per account, since several people may
    /// share an address (an office behind one NAT), yet low enough that
    /// trying common passwords across many accounts from one address
    /// (password spraying) goes no faster than 30 a minute.
    #[arg(
        long,
        env = "SIGNIN_FAILURES_PER_MINUTE_PER_ADDRESS",
        default_value_t = 30
    )]
    pub signin_failures_per_minute_per_address: u32,
    /// Device activations/deactivations allowed per client address, per minute.
    #[arg(long, env = "DEVICE_RATE_PER_MINUTE", default_value_t = 120)]
    pub device_rate_per_minute: u32,
    /// Emails each account may cause, and each address may receive, per hour,
    /// through actions whose recipient the caller chooses (sign-up,
    /// resending the verification email, license requests, order
    /// transfers). A person needs a handful; 10 an hour never stands in
    /// their way, and caps what anyone can aim at one mailbox.
    #[arg(long, env = "MAIL_RATE_PER_HOUR", default_value_t = 10)]
    pub mail_rate_per_hour: u32,
    /// The same emails per client address, per hour: higher, since many
    /// people may share one address (an office, a carrier's NAT).
    #[arg(long, env = "MAIL_CLIENT_RATE_PER_HOUR", default_value_t = 60)]
    pub mail_client_rate_per_hour: u32,
    /// Background jobs (mail sender, expiry sweeper, relay tick) run every this many ms.
    #[arg(long, env = "JOB_INTERVAL_MS", default_value_t = 1000)]
    pub job_interval_ms: u64,
    /// Connections (HTTP and websockets) open at once at most; default: the
    /// process's descriptor limit minus a reserve for the database pool,
    /// Redis, SMTP and files (a tenth of it, at least 512). Connections over
    /// the cap are closed as soon as they are accepted.
    #[arg(long, env = "MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Load balancers whose `X-Forwarded-For` is believed: comma-separated
    /// IPs or CIDRs. The client is then the rightmost address of that header
    /// that is not one of them; unset, the client is the TCP peer. Trusted
    /// proxies are exempt from the per-client connection cap (they carry
    /// many clients).
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    /// Connections one client address may hold open at once. 256 leaves room
    /// for many people behind one NAT or office proxy (a browser opens about
    /// 6 per site, plus its websockets) while one address holds at most
    /// ~1.4% of the default global cap (about 18,000 on a 20,000-descriptor
    /// machine), so a single host cannot exhaust it.
    #[arg(long, env = "MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_client: u64,
    /// Seconds a client has to send a request's headers once the connection
    /// is open or idle between requests; then it is closed, so that slow or
    /// silent clients cannot hold connections.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,
    /// Browser origins (`scheme://host[:port]`, comma-separated, exact)
    /// whose pages may call `/graphql` and open `/graphql/ws`; unset: pages
    /// of keyledger's own origin only. Checked at start.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: crate::origins::AllowedOrigins,
    /// The signing secret (`whsec_…`) of the Stripe webhook endpoint that
    /// posts to `/webhooks/stripe`; unset: that endpoint does not exist (404).
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<Secret>,
    /// Ed25519 private key (PKCS#8 PEM file) offline license certificates
    /// are signed with; required on PostgreSQL. Unset on SQLite: one is made
    /// beside the database file (`keyledger-signing.pem`) and reused.
    /// `keyledger keygen` prints a new one.
    #[arg(long, env = "LICENSE_SIGNING_KEY")]
    pub license_signing_key: Option<PathBuf>,
    /// Seconds between the attempts of an outbound webhook, comma-separated
    /// (each ±10%): a delivery that failed every one of them is marked
    /// failed, and the endpoint's next delivery goes out. The default
    /// retries for about 27.6 hours.
    #[arg(long, env = "WEBHOOK_RETRY_SCHEDULE", default_value = crate::webhooks::DEFAULT_RETRY_SCHEDULE)]
    pub webhook_retry_schedule: crate::webhooks::RetrySchedule,
    /// Let webhook endpoints be on loopback, private (RFC 1918, ULA),
    /// link-local, CGNAT or metadata addresses. Off: such URLs are refused
    /// when written and when sent (a name that later resolves to one too).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub webhook_allow_private: bool,
}

/// A secret setting: never shown by `Debug` (configuration may be logged).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if value.is_empty() {
            return Err("a secret cannot be empty (leave the variable unset instead)");
        }
        Ok(Secret(value.to_owned()))
    }
}

impl Config {
    /// The configuration with every default, pointing at `database_url`.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        let mut config = Config::parse_from(["serve"]);
        config.db.database_url = database_url.into();
        config
    }

    /// Base URL for links in emails, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.bind_addr),
        }
    }
}
