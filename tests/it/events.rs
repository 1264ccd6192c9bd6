//! Live events over real websockets: both sub-protocols, isolation between
//! accounts, resume, the seam between replay and live, sign-out and expiry,
//! two instances through Redis, and a Redis outage (on a Redis server of the
//! test's own that it kills and restarts).
use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use crate::harness::{Options, OwnRedis, TestApp, TestDb, unique};

fn email(tag: &str) -> String {
    format!("{}@events.example.com", unique(tag))
}

const SUBSCRIPTION: &str =
    "subscription($after: ID){ events(after: $after){ id kind license { id } order { id } } }";

/// How long a test waits for something that should happen. Generous: a
/// Redis reconnect alone may take a few seconds.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long a test waits to be reasonably sure that nothing arrives.
const QUIET: Duration = Duration::from_millis(700);

#[derive(Clone, Copy, Debug)]
pub(crate) enum Protocol {
    /// `graphql-transport-ws` (the graphql-ws library).
    TransportWs,
    /// Legacy `graphql-ws` (subscriptions-transport-ws).
    LegacyWs,
}

/// One websocket carrying one `events` subscription.
pub(crate) struct Sub {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: Protocol,
}

impl Sub {
    /// Connect, authenticate with `token`, subscribe after `after`, and wait
    /// until `app` counts `expect_total` live subscriptions (streams start
    /// lazily: a mutation fired before that could be missed by the test's
    /// assumptions, not by the server).
    pub(crate) async fn open(
        app: &TestApp,
        token: &str,
        protocol: Protocol,
        after: Option<&str>,
        expect_total: usize,
    ) -> Sub {
        let mut sub = Sub::connect(app, token, protocol).await;
        sub.subscribe(after).await;
        wait_subscribers(app, expect_total).await;
        sub
    }

    pub(crate) async fn connect(app: &TestApp, token: &str, protocol: Protocol) -> Sub {
        let name = match protocol {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::LegacyWs => "graphql-ws",
        };
        let socket = app.websocket(name).await;
        let mut sub = Sub { socket, protocol };
        sub.send(json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}}))
            .await;
        let ack = sub.message(PATIENCE).await.expect("connection_ack");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        sub
    }

    async fn subscribe(&mut self, after: Option<&str>) {
        let kind = match self.protocol {
            Protocol::TransportWs => "subscribe",
            Protocol::LegacyWs => "start",
        };
        self.send(json!({
            "type": kind,
            "id": "1",
            "payload": {"query": SUBSCRIPTION, "variables": {"after": after}},
        }))
        .await;
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("websocket send");
    }

    /// The next protocol message other than keep-alives, or `None` if none
    /// arrives `within` (or the socket closed).
    pub(crate) async fn message(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match frame.expect("websocket frame") {
                Message::Text(text) => {
                    let message: Value = serde_json::from_str(&text).expect("JSON message");
                    match message["type"].as_str() {
                        Some("ka") | Some("pong") => continue,
                        Some("ping") => {
                            self.send(json!({"type": "pong"})).await;
                            continue;
                        }
                        _ => return Some(message),
                    }
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next event; fails on anything else.
    pub(crate) async fn event(&mut self) -> Value {
        let message = self.message(PATIENCE).await.expect("an event arrives");
        let data_type = match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::LegacyWs => "data",
        };
        assert_eq!(message["type"], data_type, "{message}");
        assert_eq!(message["id"], "1", "{message}");
        assert!(
            message["payload"]["errors"].is_null(),
            "unexpected errors: {message}"
        );
        message["payload"]["data"]["events"].clone()
    }

    /// The next `n` events.
    async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.event().await);
        }
        events
    }

    /// Assert that no message arrives for a while.
    async fn quiet(&mut self) {
        self.quiet_for(QUIET).await;
    }

    async fn quiet_for(&mut self, within: Duration) {
        if let Some(message) = self.message(within).await {
            panic!("nothing expected, got {message}");
        }
    }

    /// The stream's end: its error's `extensions.code`, after which the
    /// subscription is complete.
    pub(crate) async fn ended_with(&mut self) -> String {
        self.ended_after(0).await
    }

    /// [`Sub::ended_with`], after at most `events` events.
    async fn ended_after(&mut self, events: usize) -> String {
        let mut message = self.message(PATIENCE).await.expect("the stream ends");
        for _ in 0..events {
            let event = matches!(message["type"].as_str(), Some("next" | "data"))
                && message["payload"]["errors"].is_null();
            if !event {
                break;
            }
            message = self.message(PATIENCE).await.expect("the stream ends");
        }
        let errors = match message["type"].as_str() {
            Some("next") | Some("data") => message["payload"]["errors"].clone(),
            Some("error") => message["payload"].clone(),
            _ => panic!("expected an error, got {message}"),
        };
        let code = errors[0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("an error with extensions.code: {message}"))
            .to_owned();
        let complete = self.message(PATIENCE).await.expect("complete");
        assert_eq!(complete["type"], "complete", "{complete}");
        code
    }
}

/// Wait until `app` counts exactly `n` live subscriptions.
pub(crate) async fn wait_subscribers(app: &TestApp, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let count = app.metric("keyledger_subscribers").await as usize;
        if count == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} subscriber(s), /metrics says {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A verified buyer with a paid order of `keys` keys (and so one
/// `ORDER_PAID` event). Returns (token, license ids).
async fn buyer(app: &TestApp, keys: i32) -> (String, Vec<String>) {
    let (token, _) = app.verified_user(&email("buyer")).await;
    let (_, licenses, _) = app.paid_order(&token, keys).await;
    (token, licenses)
}

/// Assign `license` to a fresh address: one `LICENSE_ASSIGNED` event for its owner.
async fn assign(app: &TestApp, token: &str, license: &str) {
    app.ok(
        Some(token),
        "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l, email:$e}){ id } }",
        json!({"l": license, "e": email("assignee")}),
    )
    .await;
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// An event's place in the delivery order: its id is the cursor `tx:id`.
fn position(event: &Value) -> (i64, i64) {
    let (tx, id) = event["id"].as_str().unwrap().split_once(':').unwrap();
    (tx.parse().unwrap(), id.parse().unwrap())
}

async fn receives_an_assignment_over(protocol: Protocol) {
    let app = TestApp::spawn().await;
    let (token, licenses) = buyer(&app, 1).await;
    let mut sub = Sub::open(&app, &token, protocol, None, 1).await;
    let paid = sub.event().await;
    assert_eq!(paid["kind"], "ORDER_PAID");

    assign(&app, &token, &licenses[0]).await;
    let assigned = sub.event().await;
    assert_eq!(assigned["kind"], "LICENSE_ASSIGNED");
    assert_eq!(assigned["license"]["id"], licenses[0]);
    assert!(position(&assigned) > position(&paid));
    assert_eq!(ids(&[paid, assigned]), app.event_ids(&token).await);
    sub.quiet().await;
}

#[tokio::test]
async fn an_event_reaches_a_graphql_transport_ws_subscriber() {
    receives_an_assignment_over(Protocol::TransportWs).await;
}

#[tokio::test]
async fn an_event_reaches_a_legacy_graphql_ws_subscriber() {
    receives_an_assignment_over(Protocol::LegacyWs).await;
}

#[tokio::test]
async fn a_subscriber_receives_only_its_own_accounts_events() {
    let app = TestApp::spawn().await;
    let (alice, alice_keys) = buyer(&app, 1).await;
    let (bob, bob_keys) = buyer(&app, 1).await;
    let alice_feed = app.event_ids(&alice).await;
    let bob_feed = app.event_ids(&bob).await;
    let mut alice_sub = Sub::open(
        &app,
        &alice,
        Protocol::TransportWs,
        alice_feed.last().map(String::as_str),
        1,
    )
    .await;
    let mut bob_sub = Sub::open(
        &app,
        &bob,
        Protocol::LegacyWs,
        bob_feed.last().map(String::as_str),
        2,
    )
    .await;

    assign(&app, &alice, &alice_keys[0]).await;
    let event = alice_sub.event().await;
    assert_eq!(event["license"]["id"], alice_keys[0]);
    bob_sub.quiet().await;

    // Bob's stream is alive: his own event is the first thing he gets.
    assign(&app, &bob, &bob_keys[0]).await;
    let event = bob_sub.event().await;
    assert_eq!(event["license"]["id"], bob_keys[0]);
    alice_sub.quiet().await;
}

#[tokio::test]
async fn resuming_after_a_cursor_replays_exactly_the_missed_events() {
    let app = TestApp::spawn().await;
    let (token, licenses) = buyer(&app, 5).await;
    let mut sub = Sub::open(&app, &token, Protocol::TransportWs, None, 1).await;
    let seen = sub.events(1).await;
    assign(&app, &token, &licenses[0]).await;
    let seen = [seen, sub.events(1).await].concat();
    let cursor = seen.last().unwrap()["id"].as_str().unwrap().to_owned();
    drop(sub);
    wait_subscribers(&app, 0).await;

    // Missed while away.
    for license in &licenses[1..4] {
        assign(&app, &token, license).await;
    }
    let mut sub = Sub::open(&app, &token, Protocol::LegacyWs, Some(&cursor), 1).await;
    let missed = sub.events(3).await;
    let licenses_missed: Vec<&Value> = missed.iter().map(|e| &e["license"]["id"]).collect();
    assert_eq!(licenses_missed, licenses[1..4].iter().collect::<Vec<_>>());
    // Then live, with nothing replayed twice.
    assign(&app, &token, &licenses[4]).await;
    let live = sub.event().await;
    assert_eq!(live["license"]["id"], licenses[4]);
    sub.quiet().await;

    let all = [seen, missed, vec![live]].concat();
    assert_eq!(
        ids(&all),
        app.event_ids(&token).await,
        "in order, once each"
    );
}

/// On PostgreSQL an event row gets its id at insert time, so an event can
/// commit after one with a larger id. Here a transaction writes an event and
/// stays open while a mutation commits another: the later one is held back
/// until the open one ends, then both arrive, in the order of their
/// transactions, and the feed agrees. (SQLite has one writer at a time: the
/// mutation could not commit while the transaction is open.)
#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn an_event_committed_behind_an_open_transaction_waits_for_it() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    crate::harness::require_postgres();
    // A cluster of its own: the open transaction below holds back the
    // events of every database of its cluster, other tests' included.
    let cluster = crate::pg_cluster::PgCluster::create();
    cluster.start();
    let app = TestApp::spawn_with(crate::harness::Options {
        db: Some(std::sync::Arc::new(crate::harness::TestDb::at(
            cluster.url("postgres"),
        ))),
        ..crate::harness::Options::default()
    })
    .await;
    assert!(app.db.url.starts_with("postgres"), "{}", app.db.url);
    let (token, licenses) = buyer(&app, 1).await;
    let me = app.ok(Some(&token), "{ me { id } }", json!({})).await;
    let account_id: i64 = me["me"]["id"].as_str().unwrap().parse().unwrap();
    let mut sub = Sub::open(&app, &token, Protocol::TransportWs, None, 1).await;
    let paid = sub.event().await;

    let db = sea_orm::Database::connect(&app.db.url).await.unwrap();
    let open = db.begin().await.unwrap();
    open.execute_unprepared(&format!(
        "WITH e AS (INSERT INTO events (kind, changes, occurred_at) \
         VALUES ('ORDER_CREATED', '{{}}', now()) RETURNING id) \
         INSERT INTO event_recipients (account_id, event_id) SELECT {account_id}, id FROM e"
    ))
    .await
    .unwrap();
    assign(&app, &token, &licenses[0]).await;
    // Were the later event let through, it would arrive before the earlier
    // one below.
    sub.quiet_for(Duration::from_millis(300)).await;
    // Nor does a replay (it would send the later event first).
    let mut replayed = Sub::open(&app, &token, Protocol::LegacyWs, None, 2).await;
    assert_eq!(
        ids(&replayed.events(1).await),
        ids(std::slice::from_ref(&paid))
    );

    open.commit().await.unwrap();
    let [early, late] = <[Value; 2]>::try_from(sub.events(2).await).unwrap();
    assert_eq!(
        early["kind"], "ORDER_CREATED",
        "the open transaction's event comes first"
    );
    assert_eq!(late["kind"], "LICENSE_ASSIGNED");
    assert!(position(&paid) < position(&early) && position(&early) < position(&late));
    let all = [paid, early, late];
    assert_eq!(ids(&replayed.events(2).await), ids(&all[1..]));
    assert_eq!(ids(&all), app.event_ids(&token).await);
    sub.quiet().await;
}

/// A database restored into another PostgreSQL cluster meets a transaction
/// counter behind its events (simulated by moving the stored events and the
/// relay's cursor far ahead). A new instance shifts new events after them,
/// so a client resuming from its cursor still gets them.
#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn events_stay_in_order_when_transaction_ids_went_backwards() {
    use sea_orm::ConnectionTrait;
    crate::harness::require_postgres();
    let db = Arc::new(TestDb::create().await);
    assert!(db.url.starts_with("postgres"), "{}", db.url);
    let options = || Options {
        db: Some(db.clone()),
        ..Options::default()
    };
    let before = TestApp::spawn_with(options()).await;
    let (token, licenses) = buyer(&before, 1).await;
    drop(before);
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    const AHEAD: i64 = 1 << 40;
    conn.execute_unprepared(&format!(
        "UPDATE events SET tx = tx + {AHEAD}; \
         UPDATE relay_state SET published_tx = published_tx + {AHEAD}"
    ))
    .await
    .unwrap();

    let app = TestApp::spawn_with(options()).await;
    let paid = app.event_ids(&token).await;
    assert_eq!(paid.len(), 1, "ORDER_PAID, from before the move");
    let mut sub = Sub::open(&app, &token, Protocol::TransportWs, Some(&paid[0]), 1).await;
    assign(&app, &token, &licenses[0]).await;
    let assigned = sub.event().await;
    assert_eq!(assigned["kind"], "LICENSE_ASSIGNED");
    let ahead = json!({ "id": paid[0] });
    assert!(position(&assigned) > position(&ahead));
    assert_eq!(
        app.event_ids(&token).await,
        [paid, ids(&[assigned])].concat()
    );

    // Once ahead, a later start changes nothing.
    let offset = || async {
        let row = conn
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT keyledger_tx_offset() AS offset_now",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "offset_now").unwrap()
    };
    let raised = offset().await;
    assert!(raised >= AHEAD, "raised past the stored events: {raised}");
    drop(app);
    let _again = TestApp::spawn_with(options()).await;
    assert_eq!(offset().await, raised);
}

#[tokio::test]
async fn subscriptions_started_while_events_are_produced_see_each_once() {
    const ROUNDS: usize = 30;
    let app = TestApp::spawn().await;
    let (token, licenses) = buyer(&app, 3).await;
    let started = tokio::sync::Semaphore::new(0);
    let producer = async {
        for round in 0..ROUNDS {
            assign(&app, &token, &licenses[round % licenses.len()]).await;
            if round % 10 == 4 {
                started.add_permits(1);
            }
        }
    };
    let consumer = async {
        let mut subs = Vec::new();
        for protocol in [
            Protocol::TransportWs,
            Protocol::LegacyWs,
            Protocol::TransportWs,
        ] {
            started.acquire().await.unwrap().forget();
            let mut sub = Sub::connect(&app, &token, protocol).await;
            sub.subscribe(None).await;
            subs.push(sub);
        }
        subs
    };
    let ((), subs) = tokio::join!(producer, consumer);
    let expected = app.event_ids(&token).await;
    assert_eq!(
        expected.len(),
        1 + ROUNDS,
        "ORDER_PAID and every assignment"
    );
    for mut sub in subs {
        let got = sub.events(expected.len()).await;
        assert_eq!(ids(&got), expected, "no gap, no duplicate at the seam");
        sub.quiet().await;
    }
}

/// `DATABASE_POOL_SIZE=1`: every request, the relay and the subscription's
/// catch-up take turns on one connection. Concurrent assignments all succeed
/// and their events arrive, so none of these paths holds one connection
/// while waiting for a second (that would wait out the pool's 30 s and
/// fail). On PostgreSQL the instance also holds no other connection to its
/// database.
#[tokio::test]
async fn one_pooled_connection_serves_concurrent_mutations_and_their_events() {
    use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
    const MUTATIONS: usize = 8;
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|c| c.db.database_pool_size = Some(1)),
        ..Options::default()
    })
    .await;
    let (token, licenses) = buyer(&app, MUTATIONS as i32).await;
    let mut sub = Sub::open(&app, &token, Protocol::TransportWs, None, 1).await;
    futures_util::future::join_all(licenses.iter().map(|license| assign(&app, &token, license)))
        .await;
    let got = sub.events(1 + MUTATIONS).await;
    assert_eq!(ids(&got), app.event_ids(&token).await);
    assert_eq!(got[0]["kind"], "ORDER_PAID");
    assert!(got[1..].iter().all(|e| e["kind"] == "LICENSE_ASSIGNED"));

    let db = &app.app.state.ctx.db;
    if db.get_database_backend() == DatabaseBackend::Postgres {
        let others = db
            .query_one_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                "SELECT count(*) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND backend_type = 'client backend'",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "n")
            .unwrap();
        assert_eq!(others, 0, "the pool is the instance's only connection");
    }
}

#[tokio::test]
async fn signing_out_ends_the_subscription_with_unauthenticated() {
    let app = TestApp::spawn().await;
    let address = email("leaver");
    let (token, _) = app.verified_user(&address).await;
    let (other_session, _) = app.sign_in(&address).await;
    let (_, licenses, _) = app.paid_order(&token, 1).await;
    let mut leaving = Sub::open(&app, &token, Protocol::TransportWs, None, 1).await;
    let mut staying = Sub::open(&app, &other_session, Protocol::LegacyWs, None, 2).await;
    leaving.events(1).await;
    staying.events(1).await;

    app.ok(Some(&token), "mutation { signOut }", json!({}))
        .await;
    assert_eq!(leaving.ended_with().await, "UNAUTHENTICATED");
    wait_subscribers(&app, 1).await;

    // The account's other session keeps its stream.
    assign(&app, &other_session, &licenses[0]).await;
    assert_eq!(staying.event().await["kind"], "LICENSE_ASSIGNED");

    // A connection authenticated before the sign-out cannot start a new one.
    let (token, _) = app.sign_in(&address).await;
    let mut late = Sub::connect(&app, &token, Protocol::TransportWs).await;
    app.ok(Some(&token), "mutation { signOut }", json!({}))
        .await;
    late.subscribe(None).await;
    assert_eq!(late.ended_with().await, "UNAUTHENTICATED");
}

#[tokio::test]
async fn an_expired_session_ends_the_subscription_with_unauthenticated() {
    let app = TestApp::spawn().await;
    let (token, _) = buyer(&app, 1).await;
    let mut sub = Sub::open(&app, &token, Protocol::TransportWs, None, 1).await;
    sub.events(1).await;
    sub.quiet().await;
    // SESSION_TTL_HOURS is 720.
    app.clock.advance(chrono::Duration::hours(721));
    assert_eq!(sub.ended_with().await, "UNAUTHENTICATED");
    wait_subscribers(&app, 0).await;
}

/// A sign-out this instance never heard of (made in the database only, as
/// when its announcement was lost) ends the stream within seconds once
/// events flow to it; the account's other session keeps its stream.
#[tokio::test]
async fn a_sign_out_never_announced_ends_the_subscription_once_events_flow() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let app = TestApp::spawn().await;
    let address = email("unheard");
    let (token, _) = app.verified_user(&address).await;
    let (other_session, _) = app.sign_in(&address).await;
    let (_, licenses, _) = app.paid_order(&other_session, 2).await;
    let mut leaving = Sub::open(&app, &token, Protocol::TransportWs, None, 1).await;
    let mut staying = Sub::open(&app, &other_session, Protocol::LegacyWs, None, 2).await;
    leaving.events(1).await;
    staying.events(1).await;

    entity::session::Entity::update_many()
        .col_expr(
            entity::session::Column::RevokedAt,
            Expr::value(app.clock.now()),
        )
        .filter(entity::session::Column::TokenHash.eq(keyledger::auth::token::hash(&token)))
        .exec(&app.app.state.ctx.db)
        .await
        .unwrap();
    let signed_out = tokio::time::Instant::now();
    assign(&app, &other_session, &licenses[0]).await;
    // Its event may come first: the check after it finds the sign-out.
    assert_eq!(leaving.ended_after(1).await, "UNAUTHENTICATED");
    let recheck = keyledger::events::hub::SESSION_RECHECK;
    assert!(
        signed_out.elapsed() < recheck * 4,
        "ended {:?} after the sign-out",
        signed_out.elapsed()
    );
    wait_subscribers(&app, 1).await;

    assign(&app, &other_session, &licenses[1]).await;
    let events = staying.events(2).await;
    assert!(events.iter().all(|e| e["kind"] == "LICENSE_ASSIGNED"));
}

#[tokio::test]
async fn metrics_count_subscribers_and_events() {
    let app = TestApp::spawn().await;
    let (token, licenses) = buyer(&app, 1).await;
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "keyledger_subscribers",
        "keyledger_events_published_total",
        "keyledger_events_delivered_total",
        "keyledger_relay_lag_milliseconds",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l[name.len()..].starts_with(' ')),
            "/metrics exposes {name}:\n{text}"
        );
    }
    // ORDER_PAID goes out (the relay publishes after the commit, asynchronously).
    let mut published = 0.0;
    for _ in 0..100 {
        published = app.metric("keyledger_events_published_total").await;
        if published >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(published >= 1.0, "published: {published}");
    let delivered = app.metric("keyledger_events_delivered_total").await;

    let mut first = Sub::open(&app, &token, Protocol::TransportWs, None, 1).await;
    let mut second = Sub::open(&app, &token, Protocol::LegacyWs, None, 2).await;
    first.events(1).await;
    second.events(1).await;
    assign(&app, &token, &licenses[0]).await;
    first.event().await;
    second.event().await;
    // One live event, handed to two subscriptions (more only if a publish
    // timed out after Redis took it: subscribers drop the duplicate).
    assert!(app.metric("keyledger_events_delivered_total").await >= delivered + 2.0);
    drop(first);
    wait_subscribers(&app, 1).await;
    drop(second);
    wait_subscribers(&app, 0).await;
}

/// Two instances on one database and one Redis channel: a change made through
/// one reaches a subscriber of the other.
#[tokio::test]
#[ignore = "needs Redis"]
async fn a_mutation_on_one_instance_reaches_a_subscriber_on_another() {
    let redis_url = crate::harness::require_redis();
    let db = Arc::new(TestDb::create().await);
    let channel = unique("kl_events");
    let options = || Options {
        db: Some(db.clone()),
        redis_url: Some(redis_url.clone()),
        redis_channel: Some(channel.clone()),
        ..Options::default()
    };
    let a = TestApp::spawn_with(options()).await;
    let b = TestApp::spawn_with(options()).await;
    let (token, licenses) = buyer(&b, 2).await;
    let mut on_a = Sub::open(&a, &token, Protocol::TransportWs, None, 1).await;
    let mut on_b = Sub::open(&b, &token, Protocol::LegacyWs, None, 1).await;
    assert_eq!(on_a.event().await["kind"], "ORDER_PAID");
    assert_eq!(on_b.event().await["kind"], "ORDER_PAID");

    assign(&b, &token, &licenses[0]).await;
    assert_eq!(on_a.event().await["license"]["id"], licenses[0]);
    assert_eq!(on_b.event().await["license"]["id"], licenses[0]);
    assign(&a, &token, &licenses[1]).await;
    assert_eq!(on_a.event().await["license"]["id"], licenses[1]);
    assert_eq!(on_b.event().await["license"]["id"], licenses[1]);
    on_a.quiet().await;
    on_b.quiet().await;

    // A sign-out on one instance ends the stream on the other.
    b.ok(Some(&token), "mutation { signOut }", json!({})).await;
    assert_eq!(on_a.ended_with().await, "UNAUTHENTICATED");
    assert_eq!(on_b.ended_with().await, "UNAUTHENTICATED");
    // A had just let the token in (it keeps sessions for a moment): the
    // sign-out's message, which ended A's stream, made it forget them.
    assert_eq!(
        a.err(Some(&token), "{ me { id } }", json!({})).await,
        "UNAUTHENTICATED"
    );
}

/// Readiness follows Redis and this instance's subscriber: ready once
/// subscribed, not ready while Redis is down, ready again once resubscribed.
#[tokio::test]
#[ignore = "needs redis-server"]
async fn readiness_reports_redis() {
    let mut redis = OwnRedis::start().await;
    let app = TestApp::spawn_with(Options {
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await;
    let (status, body) = app.wait_ready().await;
    assert_eq!((status, &body["redis"]), (200, &json!("ok")), "{body}");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["subscriber"], "ok");
    redis.kill().await;
    let (status, body) = app.readiness().await;
    assert_eq!(
        (status, &body["redis"]),
        (503, &json!("unavailable")),
        "{body}"
    );
    assert_eq!(body["database"], "ok");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = app.readiness().await;
        if body["subscriber"] == "disconnected" {
            assert_eq!(status, 503);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.restart().await;
    let (status, body) = app.wait_ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subscriber"], "ok");

    let local = TestApp::spawn_with(Options {
        redis_url: None,
        ..Options::default()
    })
    .await;
    let (status, body) = local.readiness().await;
    assert_eq!((status, &body["redis"]), (200, &json!("not configured")));
    assert_eq!(body["subscriber"], "not configured");
}

/// Redis dies while changes are made on two instances, then comes back:
/// the changes succeed meanwhile, and each subscriber ends with every event,
/// in order, once.
#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_redis_outage_loses_no_event() {
    let mut redis = OwnRedis::start().await;
    let db = Arc::new(TestDb::create().await);
    let channel = unique("kl_events");
    let options = || Options {
        db: Some(db.clone()),
        redis_url: Some(redis.url()),
        redis_channel: Some(channel.clone()),
        ..Options::default()
    };
    let a = TestApp::spawn_with(options()).await;
    let b = TestApp::spawn_with(options()).await;
    let (token, licenses) = buyer(&a, 3).await;
    let mut on_a = Sub::open(&a, &token, Protocol::TransportWs, None, 1).await;
    let mut on_b = Sub::open(&b, &token, Protocol::LegacyWs, None, 1).await;
    let mut seen_a = on_a.events(1).await;
    let mut seen_b = on_b.events(1).await;
    assign(&a, &token, &licenses[0]).await;
    seen_a.extend(on_a.events(1).await);
    seen_b.extend(on_b.events(1).await);

    redis.kill().await;
    let (status, _) = a.readiness().await;
    assert_eq!(status, 503);
    for round in 0..6 {
        let instance = if round % 2 == 0 { &a } else { &b };
        assign(instance, &token, &licenses[round % licenses.len()]).await;
    }
    redis.restart().await;
    assign(&b, &token, &licenses[2]).await;

    let expected = a.event_ids(&token).await;
    assert_eq!(expected.len(), 1 + 1 + 6 + 1);
    seen_a.extend(on_a.events(expected.len() - seen_a.len()).await);
    seen_b.extend(on_b.events(expected.len() - seen_b.len()).await);
    assert_eq!(
        ids(&seen_a),
        expected,
        "instance A: every event, in order, once"
    );
    assert_eq!(
        ids(&seen_b),
        expected,
        "instance B: every event, in order, once"
    );
    on_a.quiet().await;
    on_b.quiet().await;

    // And the bus carries new events again.
    assign(&a, &token, &licenses[0]).await;
    assert_eq!(on_b.event().await["license"]["id"], licenses[0]);
    assert_eq!(on_a.event().await["license"]["id"], licenses[0]);
    let (status, _) = b.wait_ready().await;
    assert_eq!(status, 200);
}

/// Redis hangs (stopped, its connections open but silent): mutations stay
/// fast, because no write waits for the bus, and nothing is lost
/// once Redis answers again.
#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_hung_redis_slows_no_mutation() {
    let mut redis = OwnRedis::start().await;
    let app = TestApp::spawn_with(Options {
        redis_url: Some(redis.url()),
        ..Options::default()
    })
    .await;
    let (token, licenses) = buyer(&app, 3).await;
    let mut sub = Sub::open(&app, &token, Protocol::TransportWs, None, 1).await;
    let mut seen = sub.events(1).await;

    redis.signal("STOP");
    for license in &licenses {
        let started = std::time::Instant::now();
        assign(&app, &token, license).await;
        // Publishing to a silent Redis gives up after 1 s: a mutation must
        // not wait for it (it took 2 s when publishing held the relay's lock).
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "a mutation took {:?} while Redis hung",
            started.elapsed()
        );
    }
    redis.signal("CONT");

    let expected = app.event_ids(&token).await;
    assert_eq!(expected.len(), 1 + licenses.len());
    seen.extend(sub.events(expected.len() - seen.len()).await);
    assert_eq!(ids(&seen), expected, "every event, in order, once");
    sub.quiet().await;
    redis.kill().await;
}
