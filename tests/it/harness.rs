//! Black-box test harness: each test starts the real application on an
//! ephemeral port with its own database (a SQLite file, or a fresh PostgreSQL
//! database when `TEST_DATABASE_URL` is set), its own mail folder and, when
//! `TEST_REDIS_URL` is set, Redis on a channel of its own. Tests then speak
//! GraphQL over HTTP and websockets like any client.
use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use keyledger::{
    app::{App, Overrides},
    clock::Clock,
    config::Config,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot};

/// A password that passes the rules.
pub const PASSWORD: &str = "correct horse battery";

/// The catalog product [`TestApp::paid_order`] buys (created on first use).
pub const PRODUCT: &str = "keyledger-pro";
/// Its name in the catalog.
pub const PRODUCT_NAME: &str = "Keyledger Pro";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique name for this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// A migrated PostgreSQL database of this test process, copied for each test
/// (`CREATE DATABASE … TEMPLATE`), which is much faster than migrating each.
static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Create and migrate this process's template; drop templates left by test
/// processes that are gone.
async fn migrated_template(admin_url: &str) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let admin = sea_orm::Database::connect(admin_url)
        .await
        .expect("TEST_DATABASE_URL must be reachable");
    let backend = admin.get_database_backend();
    let leftovers = admin
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT datname FROM pg_database WHERE datname LIKE 'kl_tpl_%'",
        ))
        .await
        .unwrap_or_default();
    for row in leftovers {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        let pid = name.trim_start_matches("kl_tpl_");
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
    let name = format!("kl_tpl_{}", std::process::id());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create template database");
    admin.close().await.ok();
    let db = keyledger::db::connect(&database_url(admin_url, &name))
        .await
        .expect("migrate the template database");
    db.close().await.ok();
    name
}

/// A database of the test's own, dropped (PostgreSQL) or deleted (SQLite) at
/// the end, with the directory its instances write emails to: instances that
/// share a database share one mail queue, and whichever of them sends a
/// message, it lands in the same place (as with one SMTP server).
pub struct TestDb {
    pub url: String,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
    pub mail: tempfile::TempDir,
}

impl TestDb {
    /// A migrated database.
    pub async fn create() -> TestDb {
        Self::new(true).await
    }

    /// The database at `url` (a cluster of the test's own, which the test
    /// deletes as a whole); the app migrates it when it starts.
    pub fn at(url: String) -> TestDb {
        TestDb {
            url,
            admin_url: None,
            name: String::new(),
            _dir: None,
            mail: tempfile::tempdir().expect("mail dir"),
        }
    }

    /// A database without any table (for tests of the migrations).
    pub async fn empty() -> TestDb {
        Self::new(false).await
    }

    async fn new(migrated: bool) -> TestDb {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(admin_url) if !admin_url.is_empty() => {
                use sea_orm::ConnectionTrait;
                let create = if migrated {
                    let template = TEMPLATE.get_or_init(|| migrated_template(&admin_url)).await;
                    format!("TEMPLATE {template}")
                } else {
                    String::new()
                };
                let name = unique("kl_test");
                let admin = sea_orm::Database::connect(&admin_url)
                    .await
                    .expect("TEST_DATABASE_URL must be reachable");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name} {create}"))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                TestDb {
                    url: database_url(&admin_url, &name),
                    admin_url: Some(admin_url),
                    name,
                    _dir: None,
                    mail: tempfile::tempdir().expect("mail dir"),
                }
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("keyledger.db");
                TestDb {
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                    admin_url: None,
                    name: String::new(),
                    _dir: Some(dir),
                    mail: tempfile::tempdir().expect("mail dir"),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(admin_url) = self.admin_url.clone() else {
            return;
        };
        let name = self.name.clone();
        // Drop runs outside async: use a short-lived runtime on its own thread.
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

/// The Redis URL for tests, when the suite runs against Redis.
pub fn test_redis_url() -> Option<String> {
    std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// `TEST_DATABASE_URL`, for a test marked `#[ignore = "needs PostgreSQL"]`:
/// run without it, such a test fails instead of passing having done nothing.
pub fn require_postgres() -> String {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .expect(
            "this test needs PostgreSQL: set TEST_DATABASE_URL=postgres://… \
             (it is ignored by a plain `cargo test`; .ci/run runs it)",
        )
}

/// `TEST_REDIS_URL`, for a test marked `#[ignore = "needs Redis"]`.
pub fn require_redis() -> String {
    test_redis_url().expect(
        "this test needs Redis: set TEST_REDIS_URL=redis://… \
         (it is ignored by a plain `cargo test`; .ci/run runs it)",
    )
}

/// A free TCP port on 127.0.0.1 (free when asked).
/// A new license signing key written in `dir` (what `LICENSE_SIGNING_KEY`
/// names; PostgreSQL requires one). Returns its path.
pub fn signing_key_in(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("license-signing.pem");
    if !path.exists() {
        std::fs::write(
            &path,
            keyledger::signing::generate_pem().expect("a new key"),
        )
        .expect("write the signing key");
    }
    path
}

/// True when the suite runs on PostgreSQL (`TEST_DATABASE_URL`).
pub fn test_database_is_postgres() -> bool {
    std::env::var("TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Redis server of the test's own, on a spare port, that it can kill.
pub struct OwnRedis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        let port = free_port();
        let mut redis = OwnRedis { port, child: None };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and wait until it answers PING.
    pub async fn restart(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("this test starts redis-server of its own: it must be on PATH");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Send `kill -SIG` to the server (`STOP` hangs it, `CONT` resumes it).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("running");
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }
}

/// A client websocket to a test app.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A running keyledger.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub base: String,
    pub clock: Clock,
    pub mail_dir: PathBuf,
    pub app: App,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    pub db: std::sync::Arc<TestDb>,
    /// The administrator who writes the catalog for [`TestApp::product`].
    catalog_admin: tokio::sync::OnceCell<String>,
}

/// How to start a test app.
pub struct Options {
    pub db: Option<std::sync::Arc<TestDb>>,
    pub redis_url: Option<String>,
    pub redis_channel: Option<String>,
    pub configure: Box<dyn FnOnce(&mut Config) + Send>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            db: None,
            redis_url: test_redis_url(),
            redis_channel: None,
            configure: Box::new(|_| {}),
        }
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> TestApp {
        let db = match options.db {
            Some(db) => db,
            None => std::sync::Arc::new(TestDb::create().await),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = Config::with_database(db.url.clone());
        config.bind_addr = addr;
        config.mail_dir = db.mail.path().to_path_buf();
        // PostgreSQL requires a signing key: one per database, so that
        // instances sharing it sign alike (SQLite makes its own beside the file).
        if db.url.starts_with("postgres") {
            config.license_signing_key = Some(signing_key_in(db.mail.path()));
        }
        config.redis_url = options.redis_url;
        config.redis_channel = options.redis_channel.unwrap_or_else(|| unique("kl_events"));
        // Workers are woken by commits; a long poll keeps test timing deterministic.
        config.job_interval_ms = 500;
        // Every test client is 127.0.0.1 and a test may sign up many people:
        // the mail limits stay out of the way unless a test configures them.
        config.mail_rate_per_hour = 100_000;
        config.mail_client_rate_per_hour = 100_000;
        (options.configure)(&mut config);
        let clock = Clock::default();
        let app = App::build(
            config,
            Overrides {
                clock: Some(clock.clone()),
                transport: None,
            },
        )
        .await
        .expect("app starts");
        let (tx, rx) = oneshot::channel::<()>();
        // The production accept loop (caps, header deadline), on the
        // router this test keeps a handle to.
        let serve = keyledger::http::listener::serve(
            listener,
            app.router.clone(),
            keyledger::http::listener::Limits::from_config(&app.state.config),
            app.state.metrics.clone(),
            async move {
                let _ = rx.await;
            },
        );
        tokio::spawn(async move {
            serve.await.ok();
        });
        TestApp {
            addr,
            base: format!("http://{addr}"),
            clock,
            mail_dir: db.mail.path().to_path_buf(),
            app,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            db,
            catalog_admin: tokio::sync::OnceCell::new(),
        }
    }

    /// POST a GraphQL request (no `Accept`: the default media type,
    /// `application/graphql-response+json`); asserts the HTTP exchange
    /// itself succeeded (200, or 400 for a request refused before it ran,
    /// with errors and no `data`, as that media type says), so no test can
    /// pass on a 500 or a dropped connection.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        assert_eq!(
            response.headers()["content-type"],
            "application/graphql-response+json; charset=utf-8"
        );
        let body: Value = response.json().await.expect("JSON body");
        match status {
            200 => {}
            400 => assert!(
                body["errors"].is_array() && body.get("data").is_none(),
                "a 400 is a request error without data: {body}"
            ),
            other => panic!("GraphQL over HTTP answered {other}: {body}"),
        }
        if let Some(errors) = body.get("errors").and_then(Value::as_array) {
            for error in errors {
                let code = error["extensions"]["code"].as_str();
                assert!(
                    code.is_some(),
                    "every error carries extensions.code: {error}"
                );
                let message = error["message"].as_str().unwrap_or_default().to_lowercase();
                for leak in [
                    "sql",
                    "insert into",
                    "violates",
                    "constraint",
                    "panicked",
                    "sqlx",
                    "database error",
                    "stack backtrace",
                ] {
                    assert!(
                        !message.contains(leak),
                        "error message leaks internals: {message}"
                    );
                }
            }
        }
        body
    }

    /// Run `query` and return `data`, failing the test on any error.
    pub async fn ok(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Run `query`, expect an error, return its `extensions.code`.
    pub async fn err(&self, token: Option<&str>, query: &str, variables: Value) -> String {
        let body = self.gql(token, query, variables).await;
        let code = body["errors"][0]["extensions"]["code"].as_str();
        assert!(code.is_some(), "expected an error: {body}");
        code.unwrap_or_default().to_owned()
    }

    /// Full first error object (for `extensions.field` etc.).
    pub async fn error(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body["errors"][0].is_object(), "expected an error: {body}");
        body["errors"][0].clone()
    }

    /// Emails delivered to `to` so far, oldest first.
    pub fn mails_to(&self, to: &str) -> Vec<Mail> {
        let mut mails: Vec<(std::time::SystemTime, Mail)> = std::fs::read_dir(&self.mail_dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .filter_map(|e| {
                        let modified = e.metadata().ok()?.modified().ok()?;
                        let raw = std::fs::read_to_string(e.path()).ok()?;
                        Some((modified, Mail::parse(&raw)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        mails.sort_by_key(|(t, _)| *t);
        mails
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m.to.eq_ignore_ascii_case(to))
            .collect()
    }

    /// Wait (up to 30 s) until the mail queue has no unsent message: every
    /// email queued by a change that committed before this call has been
    /// handed to the transport. A negative check ("no email to X") made after
    /// this proves something, where one made after a sleep may only prove
    /// that the worker was slow. Fails if a message cannot be sent.
    pub async fn wait_mail_drained(&self) {
        use entity::mail_queue;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let unsent = mail_queue::Entity::find()
                .filter(mail_queue::Column::SentAt.is_null())
                .all(&self.app.state.ctx.db)
                .await
                .expect("read the mail queue");
            if unsent.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the mail queue still holds unsent messages: {unsent:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait (up to 30 s) until `to` has received `count` emails; returns them.
    pub async fn wait_mails(&self, to: &str, count: usize) -> Vec<Mail> {
        for _ in 0..600 {
            let mails = self.mails_to(to);
            if mails.len() >= count {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{to} did not receive {count} email(s): got {:?}",
            self.mails_to(to)
        );
    }

    pub async fn sign_up(&self, email: &str) -> Value {
        self.ok(
            None,
            "mutation($e:String!,$p:String!){ signUp(email:$e,password:$p){ email } }",
            json!({"e": email, "p": PASSWORD}),
        )
        .await
    }

    /// Sign up, sign in, verify via the emailed token (signed in, as only
    /// the account's own session may). Returns (token, account id).
    pub async fn verified_user(&self, email: &str) -> (String, String) {
        self.sign_up(email).await;
        let (session, id) = self.sign_in(email).await;
        self.verify(&session, email).await;
        (session, id)
    }

    /// Verify the address of `session`'s account with the latest
    /// verification email sent to `email`.
    pub async fn verify(&self, session: &str, email: &str) {
        let token = self.verification_token(email).await;
        self.ok(
            Some(session),
            "mutation($t:String!){ verifyEmail(token:$t){ emailVerified } }",
            json!({"t": token}),
        )
        .await;
    }

    /// The latest email to `to` that `wanted` accepts, waiting (up to 30 s)
    /// for one to arrive; `what` names it if none does.
    pub async fn wait_mail(&self, to: &str, what: &str, wanted: impl Fn(&Mail) -> bool) -> Mail {
        for _ in 0..600 {
            if let Some(mail) = self.mails_to(to).into_iter().rev().find(|m| wanted(m)) {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {what} email for {to}");
    }

    /// The token of the latest verification email sent to `to` (waits for it).
    pub async fn verification_token(&self, to: &str) -> String {
        self.wait_mail(to, "verification", |m| {
            m.subject.starts_with("Confirm your email")
        })
        .await
        .verification_token()
    }

    /// The confirmation token of the latest transfer email sent to `to` (waits for it).
    pub async fn transfer_token(&self, to: &str) -> String {
        self.wait_mail(to, "transfer", |m| m.subject.contains("transfer"))
            .await
            .token_after("/transfers/confirm?token=")
    }

    /// Sign up and sign in without verifying. Returns (token, account id).
    pub async fn unverified_user(&self, email: &str) -> (String, String) {
        self.sign_up(email).await;
        self.sign_in(email).await
    }

    pub async fn sign_in(&self, email: &str) -> (String, String) {
        let data = self
            .ok(
                None,
                "mutation($e:String!,$p:String!){ signIn(email:$e,password:$p){ token account { id } } }",
                json!({"e": email, "p": PASSWORD}),
            )
            .await;
        (
            data["signIn"]["token"].as_str().expect("token").to_owned(),
            data["signIn"]["account"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        )
    }

    /// A verified admin (granted like `keyledger grant-admin` does). Returns its token.
    pub async fn admin(&self) -> String {
        let email = format!("{}@admin.example.com", unique("admin"));
        let (_, _) = self.verified_user(&email).await;
        keyledger::domain::accounts::grant_admin(&self.app.state.ctx.db, &email)
            .await
            .map_err(|e| e.message())
            .expect("grant admin");
        self.sign_in(&email).await.0
    }

    /// Make sure the catalog has a product `code` (named `name` when this
    /// creates it), as an administrator would; returns the code.
    pub async fn product(&self, code: &str, name: &str) -> String {
        let admin = self.catalog_admin.get_or_init(|| self.admin()).await;
        let body = self
            .gql(
                Some(admin),
                "mutation($c:String!,$n:String!){ createProduct(input:{code:$c, name:$n}){ code } }",
                json!({"c": code, "n": name}),
            )
            .await;
        if let Some(error) = body.get("errors") {
            assert_eq!(
                error[0]["extensions"]["code"], "CONFLICT",
                "create product {code}: {body}"
            );
        }
        code.to_owned()
    }

    /// Create an order of `quantity` keys of [`PRODUCT`] for `token`'s
    /// account (waiting for payment); returns its id.
    pub async fn order(&self, token: &str, quantity: i32) -> String {
        let product = self.product(PRODUCT, PRODUCT_NAME).await;
        let order = self
            .ok(
                Some(token),
                "mutation($p:String!,$q:Int!){ createOrder(input:{product:$p, quantity:$q}){ id } }",
                json!({"p": product, "q": quantity}),
            )
            .await;
        order["createOrder"]["id"]
            .as_str()
            .expect("order id")
            .to_owned()
    }

    /// Create and pay an order of `quantity` keys of [`PRODUCT`] for
    /// `token`'s account. Returns (order id, key ids, key strings).
    pub async fn paid_order(
        &self,
        token: &str,
        quantity: i32,
    ) -> (String, Vec<String>, Vec<String>) {
        let order_id = self.order(token, quantity).await;
        let admin = self.admin().await;
        self.ok(
            Some(&admin),
            "mutation($o:ID!){ markOrderPaid(orderId:$o){ status } }",
            json!({"o": order_id}),
        )
        .await;
        let data = self
            .ok(
                Some(token),
                "query($o:ID!){ order(id:$o){ licenses(first:100){ edges { node { id key } } } } }",
                json!({"o": order_id}),
            )
            .await;
        let edges = data["order"]["licenses"]["edges"]
            .as_array()
            .expect("edges")
            .clone();
        let ids = edges
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
            .collect();
        let keys = edges
            .iter()
            .map(|e| e["node"]["key"].as_str().unwrap().to_owned())
            .collect();
        (order_id, ids, keys)
    }

    /// A websocket to `/graphql/ws` speaking `protocol` (`graphql-transport-ws`
    /// or `graphql-ws`), not yet initialised; asserts the server chose it.
    pub async fn websocket(&self, protocol: &'static str) -> WebSocket {
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
        let mut request = format!("ws://{}/graphql/ws", self.addr)
            .into_client_request()
            .expect("a websocket request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        assert_eq!(
            response.headers().get("sec-websocket-protocol").unwrap(),
            protocol,
            "the server speaks the protocol asked for"
        );
        socket
    }

    /// Two instances on one database and one Redis channel, as behind a
    /// balancer; `configure` applies to both.
    pub async fn two_on_redis(redis_url: &str, configure: fn(&mut Config)) -> (TestApp, TestApp) {
        let db = std::sync::Arc::new(TestDb::create().await);
        let channel = unique("kl_events");
        let options = || Options {
            db: Some(db.clone()),
            redis_url: Some(redis_url.to_owned()),
            redis_channel: Some(channel.clone()),
            configure: Box::new(configure),
        };
        let a = TestApp::spawn_with(options()).await;
        let b = TestApp::spawn_with(options()).await;
        (a, b)
    }

    /// The text of the page at `path` (which must answer 200).
    pub async fn page(&self, path: &str) -> String {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 200, "GET {path}");
        response.text().await.expect("a text body")
    }

    /// The ids of the caller's events through the `events` query (the
    /// database's view), oldest first.
    pub async fn event_ids(&self, token: &str) -> Vec<String> {
        let data = self
            .ok(
                Some(token),
                "{ events(first: 100) { edges { node { id } } } }",
                json!({}),
            )
            .await;
        data["events"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"]["id"].as_str().expect("an id").to_owned())
            .collect()
    }

    /// `GET /readyz`: its status and JSON body.
    pub async fn readiness(&self) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .expect("readyz");
        let status = response.status().as_u16();
        (status, response.json().await.expect("readyz answers JSON"))
    }

    /// Wait (up to 30 s) until `/readyz` answers 200 (the Redis subscriber
    /// connects a moment after start-up); the last answer.
    pub async fn wait_ready(&self) -> (u16, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.readiness().await;
            if status == 200 || tokio::time::Instant::now() > deadline {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A counter from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An email read back from the mail folder.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    /// The decoded message text (quoted-printable soft breaks and `=3D` undone).
    pub body: String,
}

impl Mail {
    pub fn parse(raw: &str) -> Mail {
        let header = |name: &str| {
            raw.lines()
                .find(|l| {
                    l.to_lowercase()
                        .starts_with(&format!("{}:", name.to_lowercase()))
                })
                .map(|l| l[name.len() + 1..].trim().to_owned())
                .unwrap_or_default()
        };
        let to = header("To");
        let to = to
            .rsplit_once('<')
            .map(|(_, rest)| rest.trim_end_matches('>').to_owned())
            .unwrap_or(to);
        let body = raw
            .replace("=\r\n", "")
            .replace("=\n", "")
            .replace("=3D", "=");
        Mail {
            to,
            subject: header("Subject"),
            body,
        }
    }

    /// The 64-hex-digit token after `token=` in the body.
    pub fn verification_token(&self) -> String {
        self.token_after("token=")
    }

    pub fn token_after(&self, marker: &str) -> String {
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker} in {}", self.body))
            + marker.len();
        self.body[start..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect()
    }
}
