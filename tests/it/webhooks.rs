//! Outbound webhooks: a small receiver in the test takes the deliveries;
//! signatures are checked here with code of the test's own.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::harness::{Options, TestApp, TestDb, require_postgres, require_redis};

/// A request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: i64,
    signature: String,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Inner {
    got: Mutex<Vec<Received>>,
    /// Statuses to answer with, in turn; 200 once empty.
    plan: Mutex<VecDeque<u16>>,
}

/// A webhook receiver on a free port of 127.0.0.1.
#[derive(Clone)]
struct Receiver {
    url: String,
    inner: Arc<Inner>,
}

async fn take(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    inner.got.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let status = inner.plan.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    async fn start(plan: &[u16]) -> Receiver {
        let inner = Arc::new(Inner::default());
        inner.plan.lock().unwrap().extend(plan);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hook", post(take))
            .with_state(inner.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            inner,
        }
    }

    fn got(&self) -> Vec<Received> {
        self.inner.got.lock().unwrap().clone()
    }

    /// Wait (up to 20 s) until `count` requests arrived; all of them.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.got();
            if got.len() >= count {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited for {count} deliveries, got {}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Standard Webhooks verification, written from the specification: one of
/// the space-separated `v1,` signatures must be the HMAC-SHA256, keyed by
/// the decoded secret, of `id.timestamp.body`.
fn verifies(secret: &str, got: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", got.id, got.timestamp, got.body).as_bytes());
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    got.signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

fn hooks_config(config: &mut keyledger::config::Config) {
    config.webhook_allow_private = true;
    config.webhook_retry_schedule = "1,1,1".parse().unwrap();
}

fn hooks_options(db: Option<Arc<TestDb>>) -> Options {
    Options {
        db,
        configure: Box::new(hooks_config),
        ..Options::default()
    }
}

const CREATE: &str = "mutation($u:String!,$k:[EventKind!]!,$d:String){ createWebhookEndpoint(input:{url:$u, eventKinds:$k, description:$d}){ endpoint { id url eventKinds enabled } secret } }";

/// Register `url` for `kinds`; its id and secret.
async fn endpoint(app: &TestApp, admin: &str, url: &str, kinds: &[&str]) -> (String, String) {
    let data = app
        .ok(
            Some(admin),
            CREATE,
            json!({"u": url, "k": kinds, "d": "test receiver"}),
        )
        .await;
    let created = &data["createWebhookEndpoint"];
    assert_eq!(created["endpoint"]["enabled"], true);
    assert_eq!(created["endpoint"]["eventKinds"], json!(kinds));
    (
        created["endpoint"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// The delivery log of every endpoint, newest first per endpoint.
async fn deliveries(app: &TestApp, admin: &str) -> Vec<Value> {
    let data = app
        .ok(
            Some(admin),
            "{ admin { webhookEndpoints { id url eventKinds enabled deliveries(first: 100) { edges { node { id eventId attempt status responseStatus responseExcerpt nextAttemptAt } } } } } }",
            json!({}),
        )
        .await;
    data["admin"]["webhookEndpoints"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["deliveries"]["edges"].as_array().unwrap().clone())
        .map(|e| e["node"].clone())
        .collect()
}

/// One `ORDER_PAID` event: `buyer` orders a key and `admin` marks it paid.
async fn paid(app: &TestApp, admin: &str, buyer: &str) -> String {
    let order = app.order(buyer, 1).await;
    app.ok(
        Some(admin),
        "mutation($o:ID!){ markOrderPaid(orderId:$o){ status } }",
        json!({"o": order}),
    )
    .await;
    order
}

#[tokio::test]
async fn a_claim_is_delivered_signed_with_ids_and_no_key() {
    let app = TestApp::spawn_with(hooks_options(None)).await;
    let receiver = Receiver::start(&[]).await;
    let admin = app.admin().await;
    let (_, secret) = endpoint(&app, &admin, &receiver.url, &["CLAIM_CREATED"]).await;
    assert!(secret.starts_with("whsec_"));
    let key_bytes = STANDARD.decode(&secret[6..]).unwrap().len();
    assert!((24..=32).contains(&key_bytes), "{key_bytes}");

    let (buyer, _) = app.verified_user("hook-buyer@example.com").await;
    let (_, _, keys) = app.paid_order(&buyer, 1).await;
    let (claimer, _) = app.verified_user("hook-claimer@example.com").await;
    let claimed = app
        .ok(
            Some(&claimer),
            "mutation($k:String!){ claimLicense(key:$k){ claim { id } license { id } } }",
            json!({"k": keys[0]}),
        )
        .await;

    let got = receiver.wait_for(1).await;
    let delivery = &got[0];
    assert!(verifies(&secret, delivery), "the signature verifies");
    assert!(!verifies(
        &keyledger::webhooks::signature::new_secret(),
        delivery
    ));
    let now = chrono::Utc::now().timestamp();
    assert!((now - delivery.timestamp).abs() < 60);
    let body = delivery.json();
    assert_eq!(body["type"], "claim.created");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        body["data"]["claimId"],
        claimed["claimLicense"]["claim"]["id"]
    );
    assert_eq!(
        body["data"]["licenseId"],
        claimed["claimLicense"]["license"]["id"]
    );
    assert!(!delivery.body.contains(&keys[0]), "no key string");
    // `webhook-id` is the event's id as the API shows it.
    assert!(app.event_ids(&claimer).await.contains(&delivery.id));

    // The log says so; nothing else was sent (only CLAIM_CREATED asked for).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.got().len(), 1);
    let log = deliveries(&app, &admin).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["eventId"], delivery.id.as_str());
    assert_eq!(log[0]["status"], "SUCCEEDED");
    assert_eq!(log[0]["attempt"], 1);
    assert_eq!(log[0]["responseStatus"], 200);
    assert!(log[0]["nextAttemptAt"].is_null());
}

#[tokio::test]
async fn failures_are_retried_in_order_then_given_up() {
    let app = TestApp::spawn_with(hooks_options(None)).await;
    // The first event fails once; then everything succeeds.
    let receiver = Receiver::start(&[500]).await;
    let admin = app.admin().await;
    endpoint(&app, &admin, &receiver.url, &["ORDER_PAID"]).await;
    let (buyer, _) = app.verified_user("hook-orders@example.com").await;
    for _ in 0..3 {
        paid(&app, &admin, &buyer).await;
    }
    let got = receiver.wait_for(4).await;
    let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids[0], ids[1], "a retry keeps its webhook-id: {ids:?}");
    let events = app.event_ids(&buyer).await;
    let created: Vec<&String> = events
        .iter()
        .filter(|id| ids.contains(&id.as_str()))
        .collect();
    assert_eq!(
        ids[1..].to_vec(),
        created.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "in event order"
    );
    // The receiver answers before the attempt's outcome is written (in a
    // batch): wait for the record, then check it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let retried = loop {
        let log = deliveries(&app, &admin).await;
        let retried = log.iter().find(|d| d["eventId"] == ids[0]).unwrap().clone();
        if retried["status"] == "SUCCEEDED" || tokio::time::Instant::now() >= deadline {
            break retried;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(retried["attempt"], 2);
    assert_eq!(retried["status"], "SUCCEEDED");

    // An endpoint that always fails: 1 + 3 attempts, then FAILED, and the
    // next delivery goes out (also failing).
    let failing = Receiver::start(&[500; 4]).await;
    endpoint(&app, &admin, &failing.url, &["ORDER_PAID"]).await;
    paid(&app, &admin, &buyer).await;
    paid(&app, &admin, &buyer).await;
    let got = failing.wait_for(5).await;
    assert!(got[..4].iter().all(|r| r.id == got[0].id), "{got:?}");
    assert_ne!(got[4].id, got[0].id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = deliveries(&app, &admin).await;
        // (The first endpoint got the same event, and took it.)
        let failed = log
            .iter()
            .filter(|d| d["eventId"] == got[0].id.as_str())
            .find(|d| d["status"] == "FAILED");
        if let Some(failed) = failed {
            assert_eq!(failed["attempt"], 4);
            assert_eq!(failed["responseStatus"], 500);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_delivery_pending_when_keyledger_stops_goes_out_after_restart() {
    let db = Arc::new(TestDb::create().await);
    let first = TestApp::spawn_with(Options {
        db: Some(db.clone()),
        configure: Box::new(|config| {
            config.webhook_allow_private = true;
            config.webhook_retry_schedule = "3".parse().unwrap();
        }),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start(&[500]).await;
    let admin = first.admin().await;
    endpoint(&first, &admin, &receiver.url, &["ORDER_PAID"]).await;
    let (buyer, _) = first.verified_user("hook-restart@example.com").await;
    paid(&first, &admin, &buyer).await;
    receiver.wait_for(1).await;
    // Once the failure is recorded, stop this instance (its tasks end).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while deliveries(&first, &admin).await[0]["attempt"] != 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
    let second = TestApp::spawn_with(hooks_options(Some(db))).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[0].id, got[1].id);
    // The result is written once the receiver has answered: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = deliveries(&second, &admin).await;
        if log[0]["status"] != "PENDING" {
            break log;
        }
        assert!(tokio::time::Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(log[0]["status"], "SUCCEEDED");
    assert_eq!(log[0]["attempt"], 2);
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis"]
async fn two_instances_send_each_attempt_once_in_order() {
    require_postgres();
    let redis = require_redis();
    let (a, b) = TestApp::two_on_redis(&redis, hooks_config).await;
    let receiver = Receiver::start(&[500, 200, 500]).await;
    let admin = a.admin().await;
    endpoint(&a, &admin, &receiver.url, &["ORDER_PAID"]).await;
    let (buyer, _) = a.verified_user("hook-two@example.com").await;
    let mut writers = Vec::new();
    for app in [&a, &b] {
        let token = buyer.clone();
        let admin = &admin;
        writers.push(async move {
            for _ in 0..15 {
                paid(app, admin, &token).await;
            }
        });
    }
    futures_util::future::join_all(writers).await;
    let got = receiver.wait_for(32).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_after = receiver.got();
    assert_eq!(got_after.len(), 32, "30 events, 2 retries: {got:?}");
    // Distinct in order, each id once except the two retried.
    let mut ids: Vec<String> = got_after.iter().map(|r| r.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 30, "{ids:?}");
    let events = a.event_ids(&buyer).await;
    let created: Vec<String> = events.into_iter().filter(|id| ids.contains(id)).collect();
    assert_eq!(ids, created, "in event order");
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "https://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[fd00:ec2::254]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "ftp://93.184.215.14/hook",
        "https://user:pass@93.184.215.14/hook",
        "not a url",
    ] {
        let error = app
            .error(Some(&admin), CREATE, json!({"u": url, "k": ["ORDER_PAID"]}))
            .await;
        assert_eq!(error["extensions"]["code"], "VALIDATION", "{url}: {error}");
        assert_eq!(error["extensions"]["field"], "url", "{url}: {error}");
    }
    // A public literal is accepted, and cannot be moved to a private one.
    let (id, _) = endpoint(&app, &admin, "https://93.184.215.14/hook", &["ORDER_PAID"]).await;
    let error = app
        .error(
            Some(&admin),
            "mutation($i:ID!){ updateWebhookEndpoint(id:$i, input:{url:\"http://127.0.0.1/\"}){ id } }",
            json!({"i": id}),
        )
        .await;
    assert_eq!(error["extensions"]["field"], "url");
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one_for_a_day() {
    let app = TestApp::spawn_with(hooks_options(None)).await;
    let receiver = Receiver::start(&[]).await;
    let admin = app.admin().await;
    let (id, old) = endpoint(&app, &admin, &receiver.url, &["ORDER_PAID"]).await;
    let rotated = app
        .ok(
            Some(&admin),
            "mutation($i:ID!){ rotateWebhookSecret(id:$i){ secret } }",
            json!({"i": id}),
        )
        .await;
    let new = rotated["rotateWebhookSecret"]["secret"].as_str().unwrap();
    assert_ne!(new, old);
    let (buyer, _) = app.verified_user("hook-rotate@example.com").await;
    paid(&app, &admin, &buyer).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(
        got[0].signature.split(' ').count(),
        2,
        "{}",
        got[0].signature
    );
    assert!(verifies(&old, &got[0]) && verifies(new, &got[0]));

    app.clock.advance(chrono::Duration::hours(25));
    paid(&app, &admin, &buyer).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].signature.split(' ').count(), 1);
    assert!(verifies(new, &got[1]) && !verifies(&old, &got[1]));
}

#[tokio::test]
async fn a_delivery_can_be_sent_again() {
    let app = TestApp::spawn_with(hooks_options(None)).await;
    let receiver = Receiver::start(&[]).await;
    let admin = app.admin().await;
    endpoint(&app, &admin, &receiver.url, &["ORDER_PAID"]).await;
    let (buyer, _) = app.verified_user("hook-again@example.com").await;
    paid(&app, &admin, &buyer).await;
    receiver.wait_for(1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let delivery = loop {
        let log = deliveries(&app, &admin).await;
        if log[0]["status"] == "SUCCEEDED" {
            break log[0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let again = app
        .ok(
            Some(&admin),
            "mutation($d:ID!){ redeliverWebhook(deliveryId:$d){ id eventId attempt status } }",
            json!({"d": delivery["id"]}),
        )
        .await;
    assert_eq!(again["redeliverWebhook"]["eventId"], delivery["eventId"]);
    assert_eq!(again["redeliverWebhook"]["status"], "PENDING");
    let got = receiver.wait_for(2).await;
    assert_eq!(got[0].id, got[1].id);
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(deliveries(&app, &admin).await.len(), 2);
}

#[tokio::test]
async fn an_endpoint_failing_for_five_days_is_disabled_and_admins_told() {
    let app = TestApp::spawn_with(hooks_options(None)).await;
    let receiver = Receiver::start(&[500; 100]).await;
    let admin = app.admin().await;
    let (id, _) = endpoint(&app, &admin, &receiver.url, &["ORDER_PAID"]).await;
    let (buyer, _) = app.verified_user("hook-down@example.com").await;
    paid(&app, &admin, &buyer).await;
    receiver.wait_for(1).await;
    // The failure is recorded (the endpoint failing since now) before the
    // clock moves; moved first, the failures would start 5 days later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while deliveries(&app, &admin).await[0]["responseStatus"] != 500 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.clock
        .advance(chrono::Duration::days(5) + chrono::Duration::minutes(1));
    // Generous: only a hang should reach it, on a loaded machine too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let data = app
            .ok(
                Some(&admin),
                "{ admin { webhookEndpoints { id enabled } } }",
                json!({}),
            )
            .await;
        if data["admin"]["webhookEndpoints"][0]["enabled"] == false {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{data}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin_email = {
        let me = app.ok(Some(&admin), "{ me { email } }", json!({})).await;
        me["me"]["email"].as_str().unwrap().to_owned()
    };
    let mail = app
        .wait_mail(&admin_email, "endpoint disabled", |m| {
            m.subject.contains("webhook endpoint was disabled")
        })
        .await;
    assert!(mail.body.contains(&receiver.url));
    // Enabling it again sends what waited.
    receiver.inner.plan.lock().unwrap().clear();
    let before = receiver.got().len();
    app.ok(
        Some(&admin),
        "mutation($i:ID!){ updateWebhookEndpoint(id:$i, input:{enabled:true}){ enabled } }",
        json!({"i": id}),
    )
    .await;
    receiver.wait_for(before + 1).await;
}

#[tokio::test]
async fn hostile_webhook_inputs_are_refused() {
    let app = TestApp::spawn_with(hooks_options(None)).await;
    let admin = app.admin().await;
    let long_url = format!("https://93.184.215.14/{}", "a".repeat(2048));
    let error = app
        .error(Some(&admin), CREATE, json!({"u": long_url, "k": []}))
        .await;
    assert_eq!(error["extensions"]["field"], "url", "{error}");
    let error = app
        .error(
            Some(&admin),
            CREATE,
            json!({"u": "https://93.184.215.14/", "k": [], "d": "d".repeat(501)}),
        )
        .await;
    assert_eq!(error["extensions"]["field"], "description", "{error}");
    let error = app
        .error(
            Some(&admin),
            CREATE,
            json!({"u": "https://93.184.215.14/", "k": ["NOT_A_KIND"]}),
        )
        .await;
    assert_eq!(error["extensions"]["code"], "VALIDATION", "{error}");
    for (query, id) in [
        (
            "mutation($i:ID!){ updateWebhookEndpoint(id:$i, input:{enabled:false}){ id } }",
            "x",
        ),
        (
            "mutation($i:ID!){ deleteWebhookEndpoint(id:$i) }",
            "99999999",
        ),
        (
            "mutation($i:ID!){ rotateWebhookSecret(id:$i){ secret } }",
            "-1",
        ),
        (
            "mutation($i:ID!){ redeliverWebhook(deliveryId:$i){ id } }",
            "1e99",
        ),
    ] {
        assert_eq!(
            app.err(Some(&admin), query, json!({"i": id})).await,
            "NOT_FOUND",
            "{query}"
        );
    }
    // At most 100 endpoints.
    for i in 0..100 {
        let url = format!("https://93.184.215.14/{i}");
        app.ok(Some(&admin), CREATE, json!({"u": url, "k": ["ORDER_PAID"]}))
            .await;
    }
    assert_eq!(
        app.err(
            Some(&admin),
            "{ admin { webhookEndpoints { deliveries(first: 1000) { edges { node { id } } } } } }",
            json!({})
        )
        .await,
        "VALIDATION"
    );
    assert_eq!(
        app.err(
            Some(&admin),
            CREATE,
            json!({"u": "https://93.184.215.14/101", "k": []})
        )
        .await,
        "CONFLICT"
    );
}
