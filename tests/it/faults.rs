//! The fault test: two keyledger processes on a PostgreSQL cluster and a
//! Redis server of the test's own, writers on both and a subscriber per
//! account on each, while Redis is killed and restarted, one instance is
//! killed (SIGKILL) and restarted, and PostgreSQL is stopped and started.
//! Then every subscriber's stream equals the `events` query of its account,
//! every committed change has its event, every queued email was sent once,
//! no key changed hands without its event, and no key is active on more
//! devices than its order allows.
use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tokio::{sync::watch, time::Instant};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

use crate::{
    harness::{Mail, OwnRedis, PASSWORD, free_port},
    pg_cluster::PgCluster,
    smtp::SmtpServer,
};

/// How long anything the test waits for may take (an instance's start, a
/// stream catching up).
const PATIENCE: Duration = Duration::from_secs(30);

/// One keyledger process.
struct Instance {
    port: u16,
    base: String,
    env: Vec<(String, String)>,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Instance {
    async fn start(env: Vec<(String, String)>, dir: PathBuf) -> Instance {
        let port = free_port();
        let mut instance = Instance {
            port,
            base: format!("http://127.0.0.1:{port}"),
            env,
            dir,
            child: None,
        };
        instance.restart().await;
        instance
    }

    /// Start (again) on the same port; wait until it is ready.
    async fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("keyledger-{}.log", self.port)))
            .expect("log file");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
            .arg("serve")
            // No `.env` of a developer's is read.
            .current_dir(&self.dir)
            .env("BIND_ADDR", format!("127.0.0.1:{}", self.port))
            .env("PUBLIC_URL", &self.base)
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start keyledger");
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = http
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("keyledger exited: {status}; see {}", self.dir.display());
            }
            assert!(Instant::now() < deadline, "keyledger did not get ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL keyledger");
        }
    }
}

/// `data` of a GraphQL request over HTTP, or why not (an error code, or the
/// transport's failure).
async fn gql(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Result<Value, String> {
    let mut request = http
        .post(format!("{base}/graphql"))
        .timeout(Duration::from_secs(5))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    match body["errors"][0]["extensions"]["code"].as_str() {
        Some(code) => Err(code.to_owned()),
        None if body.get("errors").is_some() => Err(body.to_string()),
        None => Ok(body["data"].clone()),
    }
}

/// The same, while nothing fails: any error fails the test.
async fn ok(base: &str, token: Option<&str>, query: &str, variables: Value) -> Value {
    gql(
        &reqwest::Client::new(),
        base,
        token,
        query,
        variables.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("{query} {variables}: {e}"))
}

async fn sign_in(base: &str, email: &str) -> String {
    let data = ok(
        base,
        None,
        "mutation($e:String!,$p:String!){ signIn(email:$e,password:$p){ token } }",
        json!({"e": email, "p": PASSWORD}),
    )
    .await;
    data["signIn"]["token"].as_str().expect("token").to_owned()
}

/// Sign up, sign in, verify with the emailed token (signed in, as only who
/// set the password may): the token.
async fn verified_user(base: &str, smtp: &SmtpServer, email: &str) -> String {
    ok(
        base,
        None,
        "mutation($e:String!,$p:String!){ signUp(email:$e,password:$p){ email } }",
        json!({"e": email, "p": PASSWORD}),
    )
    .await;
    let session = sign_in(base, email).await;
    let received = smtp.wait_for(email).await;
    let token = Mail::parse(&received.data).verification_token();
    ok(
        base,
        Some(&session),
        "mutation($t:String!){ verifyEmail(token:$t){ emailVerified } }",
        json!({"t": token}),
    )
    .await;
    session
}

/// A small xorshift: the writers' choices, reproducible per writer.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[derive(Clone)]
struct Key {
    id: String,
    key: String,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    /// Answers by operation and code, for the report.
    codes: Mutex<HashMap<String, u64>>,
}

/// What one writer does: an order's owner (assign, unassign, devices), or
/// a claimer (claims, devices).
#[derive(Clone)]
enum Role {
    Owner { keys: Vec<Key> },
    Claimer { keys: Vec<Key> },
}

const ASSIGN: &str =
    "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l, email:$e}){ id } }";
const UNASSIGN: &str = "mutation($l:ID!){ unassignLicense(licenseId:$l){ id } }";
const ACTIVATE: &str = "mutation($k:String!,$f:String!){ activateLicense(key:$k, fingerprint:$f, name:\"laptop\"){ fingerprint } }";
const DEACTIVATE: &str =
    "mutation($k:String!,$f:String!){ deactivateLicense(key:$k, fingerprint:$f){ fingerprint } }";
const CLAIM: &str = "mutation($k:String!){ claimLicense(key:$k){ claim { id } } }";

async fn writer(
    base: String,
    token: String,
    role: Role,
    assignees: Vec<String>,
    seed: u64,
    tally: Arc<Tally>,
    stop: watch::Receiver<bool>,
) {
    let http = reqwest::Client::new();
    let mut rng = Rng(seed.max(1));
    let fingerprints = ["fp-a", "fp-b", "fp-c"];
    while !*stop.borrow() {
        let (query, variables) = match &role {
            Role::Owner { keys } => {
                let key = &keys[rng.below(keys.len())];
                let fp = fingerprints[rng.below(fingerprints.len())];
                match rng.below(4) {
                    0 => (
                        ASSIGN,
                        json!({"l": key.id, "e": assignees[rng.below(assignees.len())]}),
                    ),
                    1 => (UNASSIGN, json!({"l": key.id})),
                    2 => (ACTIVATE, json!({"k": key.key, "f": fp})),
                    _ => (DEACTIVATE, json!({"k": key.key, "f": fp})),
                }
            }
            Role::Claimer { keys } => {
                let key = &keys[rng.below(keys.len())];
                let fp = fingerprints[rng.below(fingerprints.len())];
                match rng.below(3) {
                    0 => (CLAIM, json!({"k": key.key})),
                    1 => (ACTIVATE, json!({"k": key.key, "f": fp})),
                    _ => (DEACTIVATE, json!({"k": key.key, "f": fp})),
                }
            }
        };
        let answer = gql(&http, &base, Some(&token), query, variables).await;
        let operation = query
            .split_once('{')
            .and_then(|(_, rest)| rest.split('(').next())
            .unwrap_or_default()
            .trim();
        let code = match &answer {
            Ok(_) => "ok",
            Err(code) if code.len() < 30 => code.as_str(),
            Err(_) => "transport",
        };
        *tally
            .codes
            .lock()
            .unwrap()
            .entry(format!("{operation} {code}"))
            .or_default() += 1;
        let counter = match answer {
            Ok(_) => &tally.ok,
            // The domain's refusals: the change was not for now.
            Err(code)
                if ["CONFLICT", "DEVICE_ACTIVE", "NOT_FOUND", "FORBIDDEN"]
                    .contains(&code.as_str()) =>
            {
                &tally.refused
            }
            // An outage (INTERNAL, a refused connection, a timeout).
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                &tally.failed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// What a subscriber saw.
#[derive(Default)]
struct Seen {
    /// Event ids, in the order they arrived, over every connection.
    ids: Mutex<Vec<String>>,
    connections: AtomicUsize,
}

/// A client of the `events` subscription as api.md describes it: when its
/// socket or stream ends, it connects again and resumes after the last
/// event it got.
async fn subscriber(addr: String, token: String, seen: Arc<Seen>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let after = seen.ids.lock().unwrap().last().cloned();
        tokio::select! {
            _ = subscribe_once(&addr, &token, after, &seen) => {}
            _ = stop.changed() => return,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One connection's subscription, until it ends.
async fn subscribe_once(addr: &str, token: &str, after: Option<String>, seen: &Seen) {
    let Ok(mut request) = format!("ws://{addr}/graphql/ws").into_client_request() else {
        return;
    };
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let connect = tokio::time::timeout(
        Duration::from_secs(3),
        tokio_tungstenite::connect_async(request),
    );
    let Ok(Ok((mut socket, _))) = connect.await else {
        return;
    };
    let init =
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
    let subscribe = json!({
        "type": "subscribe",
        "id": "1",
        "payload": {
            "query": "subscription($a: ID){ events(after: $a){ id } }",
            "variables": {"a": after},
        },
    });
    if socket.send(Message::text(init.to_string())).await.is_err() {
        return;
    }
    let mut acknowledged = false;
    loop {
        // Without an acknowledgement in time, start over.
        let within = if acknowledged {
            Duration::MAX
        } else {
            Duration::from_secs(5)
        };
        let frame = match tokio::time::timeout(within, socket.next()).await {
            Ok(Some(Ok(frame))) => frame,
            _ => return,
        };
        let Message::Text(text) = frame else {
            if matches!(frame, Message::Close(_)) {
                return;
            }
            continue;
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        match message["type"].as_str() {
            Some("connection_ack") => {
                acknowledged = true;
                seen.connections.fetch_add(1, Ordering::Relaxed);
                if socket
                    .send(Message::text(subscribe.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Some("ping") => {
                let _ = socket
                    .send(Message::text(json!({"type": "pong"}).to_string()))
                    .await;
            }
            Some("next") => match message["payload"]["data"]["events"]["id"].as_str() {
                Some(id) => seen.ids.lock().unwrap().push(id.to_owned()),
                // An error ends the stream (the server completes it).
                None => return,
            },
            Some("ka") | Some("pong") => {}
            _ => return,
        }
    }
}

/// Every event of `token`'s account, by the `events` query, oldest first.
async fn events_of(base: &str, token: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = ok(
            base,
            Some(token),
            "query($a: ID){ events(after: $a, first: 100){ edges { node { id } } pageInfo { hasNextPage endCursor } } }",
            json!({"a": after}),
        )
        .await;
        let page = &data["events"];
        for edge in page["edges"].as_array().expect("edges") {
            ids.push(edge["node"]["id"].as_str().expect("id").to_owned());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return ids;
        }
        after = ids.last().cloned();
    }
}

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// No key changed hands without its event: per key, in the order they
/// were written, each assignment event starts from where the previous one
/// ended, the first from nobody, and the last ends at the key's assignee.
async fn check_assignments(db: &DatabaseConnection) -> usize {
    let mut current: HashMap<i64, Value> = HashMap::new();
    for row in rows(
        db,
        "SELECT id, assignee_email, organization_name, organization_siret FROM licenses",
    )
    .await
    {
        let id: i64 = row.try_get("", "id").unwrap();
        let assignment = json!({
            "assigneeEmail": row.try_get::<Option<String>>("", "assignee_email").unwrap(),
            "organizationName": row.try_get::<Option<String>>("", "organization_name").unwrap(),
            "organizationSiret": row.try_get::<Option<String>>("", "organization_siret").unwrap(),
        });
        current.insert(id, assignment);
    }
    let nobody =
        json!({"assigneeEmail": null, "organizationName": null, "organizationSiret": null});
    let mut chains: HashMap<i64, Value> = HashMap::new();
    let events = rows(
        db,
        "SELECT id, license_id, changes FROM events \
         WHERE kind IN ('LICENSE_ASSIGNED', 'LICENSE_UNASSIGNED') ORDER BY id",
    )
    .await;
    for row in &events {
        let event: i64 = row.try_get("", "id").unwrap();
        let license: i64 = row.try_get("", "license_id").unwrap();
        let changes: Value =
            serde_json::from_str(&row.try_get::<String>("", "changes").unwrap()).unwrap();
        let before = chains.get(&license).unwrap_or(&nobody);
        assert_eq!(
            &changes["before"], before,
            "event {event}: key {license} changed hands without an event"
        );
        chains.insert(license, changes["after"].clone());
    }
    for (license, assignment) in &current {
        assert_eq!(
            chains.get(license).unwrap_or(&nobody),
            assignment,
            "key {license}: its last assignment event is not its assignee"
        );
    }
    events.len()
}

/// Every device change has its event, and no key was ever active on more
/// devices than its order allows.
async fn check_devices(db: &DatabaseConnection) -> usize {
    let mut limits: HashMap<i64, usize> = HashMap::new();
    for row in rows(
        db,
        "SELECT l.id, o.device_limit FROM licenses l JOIN orders o ON o.id = l.order_id",
    )
    .await
    {
        let limit: i32 = row.try_get("", "device_limit").unwrap();
        limits.insert(row.try_get("", "id").unwrap(), limit as usize);
    }
    let mut active: HashMap<i64, HashSet<String>> = HashMap::new();
    let events = rows(
        db,
        "SELECT id, kind, license_id, changes FROM events \
         WHERE kind IN ('DEVICE_ACTIVATED', 'DEVICE_DEACTIVATED') ORDER BY id",
    )
    .await;
    for row in &events {
        let event: i64 = row.try_get("", "id").unwrap();
        let license: i64 = row.try_get("", "license_id").unwrap();
        let changes: Value =
            serde_json::from_str(&row.try_get::<String>("", "changes").unwrap()).unwrap();
        let devices = active.entry(license).or_default();
        if row.try_get::<String>("", "kind").unwrap() == "DEVICE_ACTIVATED" {
            let fp = changes["after"]["fingerprint"].as_str().unwrap().to_owned();
            assert!(devices.insert(fp), "event {event}: activated twice");
            assert!(
                devices.len() <= limits[&license],
                "event {event}: key {license} over its device limit"
            );
        } else {
            let fp = changes["before"]["fingerprint"].as_str().unwrap();
            assert!(
                devices.remove(fp),
                "event {event}: deactivated while inactive"
            );
        }
    }
    let mut now: HashMap<i64, HashSet<String>> = HashMap::new();
    for row in rows(db, "SELECT license_id, fingerprint FROM activations").await {
        now.entry(row.try_get("", "license_id").unwrap())
            .or_default()
            .insert(row.try_get("", "fingerprint").unwrap());
    }
    for license in limits.keys() {
        let (events, rows) = (
            active.get(license).cloned().unwrap_or_default(),
            now.get(license).cloned().unwrap_or_default(),
        );
        assert_eq!(
            events, rows,
            "key {license}: devices and their events differ"
        );
        assert!(
            rows.len() <= limits[license],
            "key {license} over its device limit"
        );
    }
    events.len()
}

/// Each queued email was received once (by its Message-ID, made from its
/// queue row), and nothing else was. The one exception allowed: a message
/// the killed instance held (leased) when it died, which waits for its
/// lease to end; it was received at most once.
async fn check_mail(db: &DatabaseConnection, smtp: &SmtpServer) -> usize {
    let deadline = Instant::now() + PATIENCE;
    let (queued, unsent) = loop {
        let queued = rows(db, "SELECT id, sent_at IS NULL AS unsent, next_attempt_at > now() AS leased FROM mail_queue").await;
        let unsent: Vec<(i64, bool)> = queued
            .iter()
            .filter(|r| r.try_get::<bool>("", "unsent").unwrap())
            .map(|r| {
                (
                    r.try_get::<i64>("", "id").unwrap(),
                    r.try_get::<bool>("", "leased").unwrap(),
                )
            })
            .collect();
        if unsent.iter().all(|(_, leased)| *leased) && unsent.len() <= 1 {
            break (queued, unsent);
        }
        assert!(Instant::now() < deadline, "unsent messages: {unsent:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut received: HashMap<i64, usize> = HashMap::new();
    for message in smtp.messages() {
        let id = message
            .data
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("message-id")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no Message-ID: {}", message.data));
        let row: i64 = id
            .trim_start_matches('<')
            .split('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a Message-ID of keyledger's: {id}"));
        *received.entry(row).or_default() += 1;
    }
    let ids: HashSet<i64> = queued
        .iter()
        .map(|r| r.try_get("", "id").unwrap())
        .collect();
    for (row, count) in &received {
        assert!(ids.contains(row), "message {row} received but never queued");
        assert_eq!(*count, 1, "message {row} sent {count} times");
    }
    for row in &ids {
        let leased_by_the_dead = unsent.iter().any(|(id, _)| id == row);
        assert!(
            received.contains_key(row) || leased_by_the_dead,
            "message {row} never sent"
        );
    }
    queued.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL tools and redis-server"]
async fn outages_lose_nothing_and_duplicate_nothing() {
    let started = Instant::now();
    let cluster = PgCluster::create();
    cluster.start();
    let admin_db = sea_orm::Database::connect(cluster.url("postgres"))
        .await
        .expect("connect to the test cluster");
    admin_db
        .execute_unprepared("CREATE DATABASE keyledger")
        .await
        .expect("create the database");
    admin_db.close().await.ok();
    let database_url = cluster.url("keyledger");
    let mut redis = OwnRedis::start().await;
    let smtp = SmtpServer::start().await;
    let workdir = tempfile::tempdir().expect("work directory");
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", database_url.clone()),
        (
            "LICENSE_SIGNING_KEY",
            crate::harness::signing_key_in(workdir.path())
                .display()
                .to_string(),
        ),
        ("DATABASE_POOL_SIZE", "8".into()),
        ("REDIS_URL", redis.url()),
        ("SMTP_URL", format!("smtp://{}", smtp.addr)),
        (
            "MAIL_DIR",
            workdir.path().join("mail").display().to_string(),
        ),
        ("JOB_INTERVAL_MS", "200".into()),
        ("CLAIM_RATE_PER_MINUTE", "1000000".into()),
        ("DEVICE_RATE_PER_MINUTE", "1000000".into()),
        ("MAIL_RATE_PER_HOUR", "1000000".into()),
        ("MAIL_CLIENT_RATE_PER_HOUR", "1000000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let a = Instance::start(env.clone(), workdir.path().to_path_buf()).await;
    let mut b = Instance::start(env.clone(), workdir.path().to_path_buf()).await;

    // Accounts: an administrator (granted by the command line), two owners
    // with a paid order of four keys, two devices per key, and two claimers.
    let domain = format!("{}.faults.example.com", std::process::id());
    let admin_email = format!("admin@{domain}");
    verified_user(&a.base, &smtp, &admin_email).await;
    let granted = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["grant-admin", &admin_email])
        .current_dir(workdir.path())
        .env("DATABASE_URL", &database_url)
        .output()
        .expect("keyledger grant-admin");
    assert!(granted.status.success(), "{granted:?}");
    let admin = sign_in(&a.base, &admin_email).await;
    ok(
        &a.base,
        Some(&admin),
        "mutation{ createProduct(input:{code:\"pro\", name:\"Pro\"}){ code } }",
        json!({}),
    )
    .await;
    let mut owners = Vec::new();
    for n in 0..2 {
        let email = format!("owner{n}@{domain}");
        let token = verified_user(&a.base, &smtp, &email).await;
        let order = ok(
            &a.base,
            Some(&token),
            "mutation{ createOrder(input:{product:\"pro\", quantity:4, deviceLimit:2}){ id } }",
            json!({}),
        )
        .await["createOrder"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        ok(
            &b.base,
            Some(&admin),
            "mutation($o:ID!){ markOrderPaid(orderId:$o){ status } }",
            json!({"o": order}),
        )
        .await;
        let data = ok(
            &a.base,
            Some(&token),
            "query($o:ID!){ order(id:$o){ licenses(first:10){ edges { node { id key } } } } }",
            json!({"o": order}),
        )
        .await;
        let keys: Vec<Key> = data["order"]["licenses"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| Key {
                id: e["node"]["id"].as_str().unwrap().to_owned(),
                key: e["node"]["key"].as_str().unwrap().to_owned(),
            })
            .collect();
        assert_eq!(keys.len(), 4);
        owners.push((token, keys));
    }
    let mut claimers = Vec::new();
    for n in 0..2 {
        let email = format!("claimer{n}@{domain}");
        claimers.push((email.clone(), verified_user(&b.base, &smtp, &email).await));
    }
    let mut assignees: Vec<String> = claimers.iter().map(|(e, _)| e.clone()).collect();
    assignees.push(format!("someone@{domain}"));
    let all_keys: Vec<Key> = owners.iter().flat_map(|(_, k)| k.clone()).collect();

    // A subscriber per account on each instance; writers on both.
    let (stop_writers, writers_stop) = watch::channel(false);
    let (stop_subscribers, subscribers_stop) = watch::channel(false);
    let tally = Arc::new(Tally::default());
    let mut streams = Vec::new();
    let mut subscriber_tasks = Vec::new();
    let tokens: Vec<String> = owners
        .iter()
        .map(|(t, _)| t.clone())
        .chain(claimers.iter().map(|(_, t)| t.clone()))
        .collect();
    for token in &tokens {
        for instance in [&a, &b] {
            let seen = Arc::new(Seen::default());
            streams.push((token.clone(), seen.clone()));
            subscriber_tasks.push(tokio::spawn(subscriber(
                format!("127.0.0.1:{}", instance.port),
                token.clone(),
                seen,
                subscribers_stop.clone(),
            )));
        }
    }
    let mut writer_tasks = Vec::new();
    let mut seed = 1;
    for instance in [&a, &b] {
        let roles = owners
            .iter()
            .map(|(token, keys)| (token.clone(), Role::Owner { keys: keys.clone() }))
            .chain(claimers.iter().map(|(_, token)| {
                (
                    token.clone(),
                    Role::Claimer {
                        keys: all_keys.clone(),
                    },
                )
            }));
        for (token, role) in roles {
            seed += 1;
            writer_tasks.push(tokio::spawn(writer(
                instance.base.clone(),
                token,
                role,
                assignees.clone(),
                seed * 7919,
                tally.clone(),
                writers_stop.clone(),
            )));
        }
    }

    // The faults. 0–5 s: steady.
    let pause = |secs: u64| tokio::time::sleep(Duration::from_secs(secs));
    pause(5).await;
    let before_faults = tally.ok.load(Ordering::Relaxed);
    redis.kill().await;
    pause(4).await;
    redis.restart().await;
    pause(3).await;
    b.kill().await;
    pause(1).await;
    b.restart().await;
    pause(3).await;
    cluster.stop();
    pause(3).await;
    cluster.start();
    let after_faults = tally.ok.load(Ordering::Relaxed);
    pause(6).await;
    stop_writers.send_replace(true);
    for task in writer_tasks {
        task.await.expect("writer");
    }
    let done = tally.ok.load(Ordering::Relaxed);
    eprintln!(
        "writers: {done} changes made ({} before the faults, {} after), {} refused, {} failed",
        before_faults,
        done - after_faults,
        tally.refused.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    let codes = tally.codes.lock().unwrap().clone();
    eprintln!("answers: {codes:?}");
    for (answer, n) in &codes {
        assert!(
            [
                "ok",
                "CONFLICT",
                "DEVICE_ACTIVE",
                "NOT_FOUND",
                "INTERNAL",
                "transport"
            ]
            .iter()
            .any(|code| answer.ends_with(code)),
            "{n} × {answer}: not a refusal or an outage"
        );
    }
    assert!(
        before_faults > 20 && done - after_faults > 20,
        "the writers made changes before and after the faults"
    );

    // Every stream catches up with its account's events, exactly.
    for (token, seen) in &streams {
        let expected = events_of(&a.base, token).await;
        assert_eq!(
            expected,
            events_of(&b.base, token).await,
            "both instances agree"
        );
        let deadline = Instant::now() + PATIENCE;
        while seen.ids.lock().unwrap().len() < expected.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A moment for anything extra (a duplicate) to arrive too.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = seen.ids.lock().unwrap().clone();
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "an event delivered twice");
        assert_eq!(got, expected, "the stream is the events query, in order");
        assert!(seen.connections.load(Ordering::Relaxed) >= 1);
    }
    stop_subscribers.send_replace(true);
    for task in subscriber_tasks {
        task.await.expect("subscriber");
    }
    let reconnects: usize = streams
        .iter()
        .map(|(_, s)| s.connections.load(Ordering::Relaxed))
        .sum();
    assert!(
        reconnects > streams.len(),
        "the subscribers on the killed instance reconnected"
    );

    let db = sea_orm::Database::connect(&database_url)
        .await
        .expect("connect to the database");
    let assignments = check_assignments(&db).await;
    let devices = check_devices(&db).await;
    let paid = rows(
        &db,
        "SELECT o.id, (SELECT count(*) FROM events e WHERE e.order_id = o.id AND e.kind = 'ORDER_PAID') AS n \
         FROM orders o WHERE o.status = 'PAID'",
    )
    .await;
    assert_eq!(paid.len(), 2);
    for row in &paid {
        assert_eq!(
            row.try_get::<i64>("", "n").unwrap(),
            1,
            "one ORDER_PAID per order"
        );
    }
    let mails = check_mail(&db, &smtp).await;
    db.close().await.ok();
    eprintln!(
        "{assignments} assignment and {devices} device events, {mails} emails, \
         {reconnects} subscriptions for {} subscribers, in {:?}",
        streams.len(),
        started.elapsed()
    );
    drop(b);
    drop(a);
}
