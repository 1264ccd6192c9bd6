//! Floating licenses (heartbeats), seats under contention, and suspension.
use std::time::Duration;

use chrono::Duration as Span;
use serde_json::{Value, json};

use crate::{
    harness::{Options, TestApp, TestDb},
    offline::{ACTIVATE, CHECK_OUT, assigned_keys},
};

const HEARTBEAT: &str =
    "mutation($k:String!,$f:String!){ heartbeatLicense(key:$k, fingerprint:$f){ valid code } }";
const VALIDATE: &str =
    "query($k:String!,$f:String){ validateLicense(key:$k, fingerprint:$f){ valid code } }";
const HISTORY: &str =
    "query($l:ID!){ license(id:$l){ suspended history(first:100){ edges { node { kind } } } } }";
const SET_HEARTBEAT: &str =
    "mutation($o:ID!,$s:Int){ setOrderHeartbeat(orderId:$o, seconds:$s){ heartbeatSeconds } }";

fn options() -> Options {
    Options {
        configure: Box::new(|c| c.device_rate_per_minute = 100_000),
        ..Options::default()
    }
}

async fn app() -> TestApp {
    TestApp::spawn_with(options()).await
}

async fn heartbeat(app: &TestApp, key: &str, fingerprint: &str) -> String {
    app.ok(None, HEARTBEAT, json!({"k": key, "f": fingerprint}))
        .await["heartbeatLicense"]["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn kinds(app: &TestApp, token: &str, license: &str) -> Vec<String> {
    app.ok(Some(token), HISTORY, json!({"l": license})).await["license"]["history"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("OK")
}

#[tokio::test]
async fn a_device_that_stops_reporting_loses_its_seat() {
    let app = app().await;
    let (buyer, _order, ids, keys) = assigned_keys(&app, 2, 1, Some(60)).await;
    let key = &keys[0];
    app.ok(None, ACTIVATE, json!({"k": key, "f": "a"})).await;
    assert_eq!(heartbeat(&app, key, "a").await, "VALID");
    // Reporting within the interval keeps it alive, however long.
    for _ in 0..5 {
        app.clock.advance(Span::seconds(55));
        assert_eq!(heartbeat(&app, key, "a").await, "VALID");
    }
    // The seat is taken meanwhile.
    let full = app.gql(None, ACTIVATE, json!({"k": key, "f": "b"})).await;
    assert_eq!(code(&full), "CONFLICT");
    // Silent for longer than the interval (and its quarter of slack): gone.
    app.clock.advance(Span::seconds(80));
    assert_eq!(heartbeat(&app, key, "a").await, "NOT_ACTIVATED");
    let validation = app.ok(None, VALIDATE, json!({"k": key, "f": "a"})).await;
    assert_eq!(validation["validateLicense"]["code"], "NOT_ACTIVATED");
    // Its seat is free for another device.
    app.ok(None, ACTIVATE, json!({"k": key, "f": "b"})).await;
    assert_eq!(heartbeat(&app, key, "b").await, "VALID");
    assert!(
        kinds(&app, &buyer, &ids[0])
            .await
            .contains(&"DEVICE_EXPIRED".to_owned())
    );

    // The sweeper expires a silent device by itself.
    app.ok(None, ACTIVATE, json!({"k": keys[1], "f": "c"}))
        .await;
    app.clock.advance(Span::seconds(80));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if kinds(&app, &buyer, &ids[1])
            .await
            .contains(&"DEVICE_EXPIRED".to_owned())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweeper expired no device"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let devices = app
        .ok(
            Some(&buyer),
            "query($l:ID!){ license(id:$l){ activations { fingerprint } } }",
            json!({"l": ids[1]}),
        )
        .await;
    assert_eq!(devices["license"]["activations"], json!([]));
    // A dead device's heartbeat does not bring it back.
    assert_eq!(heartbeat(&app, &keys[1], "c").await, "NOT_ACTIVATED");
    assert_eq!(heartbeat(&app, &keys[1], "c").await, "NOT_ACTIVATED");
}

/// Heartbeats arriving together are answered together (on PostgreSQL, one
/// statement per round): each still gets its own device's answer.
#[tokio::test]
async fn heartbeats_sent_together_each_get_their_own_answer() {
    let app = app().await;
    let (_, _, _, keys) = assigned_keys(&app, 4, 1, Some(60)).await;
    for (key, fingerprint) in keys.iter().zip(["a", "b"]) {
        app.ok(None, ACTIVATE, json!({"k": key, "f": fingerprint}))
            .await;
    }
    // Activated devices, the same keys on devices never activated, keys
    // with no device, and a key that does not exist, all at once.
    let mut sent = vec![
        (keys[0].clone(), "a", "VALID"),
        (keys[1].clone(), "b", "VALID"),
        (keys[0].clone(), "b", "NOT_ACTIVATED"),
        (keys[1].clone(), "a", "NOT_ACTIVATED"),
        (keys[2].clone(), "c", "NOT_ACTIVATED"),
        (keys[3].clone(), "d", "NOT_ACTIVATED"),
        ("ZZZZ-ZZZZ-ZZZZ-ZZZZ".to_owned(), "a", "NOT_FOUND"),
    ];
    sent.extend(sent.clone());
    let answers = futures_util::future::join_all(
        sent.iter()
            .map(|(key, fingerprint, _)| heartbeat(&app, key, fingerprint)),
    )
    .await;
    let expected: Vec<&str> = sent.iter().map(|(_, _, code)| *code).collect();
    assert_eq!(answers, expected);
}

#[tokio::test]
async fn heartbeat_settings_are_bounded_and_apply_to_active_devices() {
    let app = app().await;
    let (buyer, order, _ids, keys) = assigned_keys(&app, 1, 1, None).await;
    app.ok(None, ACTIVATE, json!({"k": keys[0], "f": "a"}))
        .await;
    // No heartbeat on this order: the device stays whatever the time.
    app.clock.advance(Span::days(10));
    assert_eq!(heartbeat(&app, &keys[0], "a").await, "VALID");
    for bad in [59, 0, -5, 7_776_001, i32::MAX] {
        let body = app
            .gql(Some(&buyer), SET_HEARTBEAT, json!({"o": order, "s": bad}))
            .await;
        assert_eq!(code(&body), "VALIDATION", "{bad}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "seconds");
        let body = app
            .gql(
                Some(&buyer),
                "mutation($h:Int){ createOrder(input:{product:\"keyledger-pro\", quantity:1, heartbeatSeconds:$h}){ id } }",
                json!({"h": bad}),
            )
            .await;
        assert_eq!(code(&body), "VALIDATION", "{bad}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "heartbeatSeconds");
    }
    let set = app
        .ok(Some(&buyer), SET_HEARTBEAT, json!({"o": order, "s": 60}))
        .await;
    assert_eq!(set["setOrderHeartbeat"]["heartbeatSeconds"], 60);
    // The active device got a full interval from the change.
    app.clock.advance(Span::seconds(59));
    assert_eq!(heartbeat(&app, &keys[0], "a").await, "VALID");
    app.clock.advance(Span::seconds(100));
    assert_eq!(heartbeat(&app, &keys[0], "a").await, "NOT_ACTIVATED");
    // Back to none.
    let set = app
        .ok(Some(&buyer), SET_HEARTBEAT, json!({"o": order, "s": null}))
        .await;
    assert_eq!(set["setOrderHeartbeat"]["heartbeatSeconds"], Value::Null);
    // Heartbeats answer like validation for unknown keys and devices.
    assert_eq!(
        heartbeat(&app, "AAAA-AAAA-AAAA-AAAA", "a").await,
        "NOT_FOUND"
    );
    assert_eq!(heartbeat(&app, "not a key", "a").await, "NOT_FOUND");
    assert_eq!(heartbeat(&app, &keys[0], "unknown").await, "NOT_ACTIVATED");
    let long = app
        .gql(None, HEARTBEAT, json!({"k": keys[0], "f": "x".repeat(201)}))
        .await;
    assert_eq!(code(&long), "VALIDATION");
}

/// 50 devices race for the 5 seats of one key, through two instances
/// sharing the database: exactly 5 get one.
#[tokio::test]
async fn fifty_devices_contending_for_five_seats_get_five() {
    let db = std::sync::Arc::new(TestDb::create().await);
    let spawn = || {
        let mut options = options();
        options.db = Some(db.clone());
        TestApp::spawn_with(options)
    };
    let a = spawn().await;
    let b = spawn().await;
    let (buyer, _order, ids, keys) = assigned_keys(&a, 1, 5, Some(60)).await;
    let attempts = (0..50).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let key = keys[0].clone();
        async move {
            let body = app
                .gql(
                    None,
                    ACTIVATE,
                    json!({"k": key, "f": format!("device-{i}")}),
                )
                .await;
            code(&body).to_owned()
        }
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let won = outcomes.iter().filter(|c| *c == "OK").count();
    assert_eq!(won, 5, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|c| c == "OK" || c == "CONFLICT"),
        "{outcomes:?}"
    );
    let devices = a
        .ok(
            Some(&buyer),
            "query($l:ID!){ license(id:$l){ activations { fingerprint } } }",
            json!({"l": ids[0]}),
        )
        .await;
    assert_eq!(
        devices["license"]["activations"].as_array().unwrap().len(),
        5
    );
}

#[tokio::test]
async fn a_suspended_key_does_nothing_until_resumed() {
    let app = app().await;
    let (buyer, _order, ids, keys) = assigned_keys(&app, 1, 3, Some(600)).await;
    let key = &keys[0];
    app.ok(None, ACTIVATE, json!({"k": key, "f": "a"})).await;
    let suspend = "mutation($l:ID!){ suspendLicense(licenseId:$l){ suspended } }";
    let resume = "mutation($l:ID!){ resumeLicense(licenseId:$l){ suspended } }";
    let done = app.ok(Some(&buyer), suspend, json!({"l": ids[0]})).await;
    assert_eq!(done["suspendLicense"]["suspended"], true);
    // Suspending again changes nothing.
    app.ok(Some(&buyer), suspend, json!({"l": ids[0]})).await;

    let validation = app.ok(None, VALIDATE, json!({"k": key, "f": "a"})).await;
    assert_eq!(
        validation["validateLicense"],
        json!({"valid": false, "code": "SUSPENDED"})
    );
    let validation = app.ok(None, VALIDATE, json!({"k": key})).await;
    assert_eq!(validation["validateLicense"]["code"], "SUSPENDED");
    for (query, variables) in [
        (ACTIVATE, json!({"k": key, "f": "b"})),
        (ACTIVATE, json!({"k": key, "f": "a"})),
        (HEARTBEAT, json!({"k": key, "f": "a"})),
        (CHECK_OUT, json!({"k": key, "f": "a"})),
    ] {
        let body = app.gql(None, query, variables).await;
        assert_eq!(code(&body), "CONFLICT", "{query}: {body}");
    }

    let done = app.ok(Some(&buyer), resume, json!({"l": ids[0]})).await;
    assert_eq!(done["resumeLicense"]["suspended"], false);
    let validation = app.ok(None, VALIDATE, json!({"k": key, "f": "a"})).await;
    assert_eq!(validation["validateLicense"]["code"], "VALID");
    assert_eq!(heartbeat(&app, key, "a").await, "VALID");
    app.ok(None, CHECK_OUT, json!({"k": key, "f": "a"})).await;
    app.ok(None, ACTIVATE, json!({"k": key, "f": "b"})).await;

    let history = kinds(&app, &buyer, &ids[0]).await;
    let suspended = history.iter().filter(|k| *k == "LICENSE_SUSPENDED").count();
    let resumed = history.iter().filter(|k| *k == "LICENSE_RESUMED").count();
    assert_eq!((suspended, resumed), (1, 1), "{history:?}");
}

/// A suspension on one instance reaches the cached validations of another.
#[tokio::test]
#[ignore = "needs Redis"]
async fn a_suspension_reaches_validations_on_every_instance() {
    async fn validate(app: &TestApp, key: &str) -> String {
        app.ok(None, VALIDATE, json!({"k": key})).await["validateLicense"]["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }
    let redis = crate::harness::require_redis();
    let (a, b) = TestApp::two_on_redis(&redis, |c| c.device_rate_per_minute = 100_000).await;
    let (buyer, _order, ids, keys) = assigned_keys(&a, 1, 1, None).await;
    // b caches VALID.
    assert_eq!(validate(&b, &keys[0]).await, "VALID");
    assert_eq!(validate(&b, &keys[0]).await, "VALID");
    a.ok(
        Some(&buyer),
        "mutation($l:ID!){ suspendLicense(licenseId:$l){ id } }",
        json!({"l": ids[0]}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if validate(&b, &keys[0]).await == "SUSPENDED" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b still answers VALID"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
