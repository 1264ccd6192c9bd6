//! API tokens: scopes, revocation (over HTTP and websockets, across
//! instances), expiry, bounds, and the scope table covering the schema.
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    events::{Protocol, Sub, wait_subscribers},
    harness::{TestApp, unique},
    introspect::Schema,
};

fn email(tag: &str) -> String {
    format!("{}@tokens.example.com", unique(tag))
}

const CREATE: &str = "mutation($n:String!,$s:[ApiScope!]!,$d:Int!){ createApiToken(input:{name:$n, scopes:$s, expiresInDays:$d}){ token apiToken { id name scopes createdAt lastUsedAt expiresAt } } }";
const REVOKE: &str = "mutation($id:ID!){ revokeApiToken(id:$id) }";
const ORDERS: &str = "{ orders { edges { node { id } } } }";

/// A token of `session`'s account with `scopes`; returns (secret, id).
pub(crate) async fn token(app: &TestApp, session: &str, scopes: &[&str]) -> (String, String) {
    let data = app
        .ok(
            Some(session),
            CREATE,
            json!({"n": "ci", "s": scopes, "d": 30}),
        )
        .await;
    let created = &data["createApiToken"];
    (
        created["token"].as_str().unwrap().to_owned(),
        created["apiToken"]["id"].as_str().unwrap().to_owned(),
    )
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("NONE")
}

#[tokio::test]
async fn a_read_token_reads_orders_and_is_refused_the_rest() {
    let app = TestApp::spawn().await;
    let (session, _) = app.verified_user(&email("buyer")).await;
    let (order_id, _, _) = app.paid_order(&session, 1).await;
    let (secret, id) = token(&app, &session, &["ORDERS_READ"]).await;
    assert!(secret.starts_with("kl_") && secret.len() >= 46, "{secret}");

    let orders = app.ok(Some(&secret), ORDERS, json!({})).await;
    assert_eq!(orders["orders"]["edges"][0]["node"]["id"], order_id);
    let me = app
        .ok(Some(&secret), "{ me { id email } }", json!({}))
        .await;
    assert!(me["me"]["email"].is_string());

    // A mutation outside the scopes: FORBIDDEN, naming the missing scope,
    // and nothing happens.
    let refused = app
        .gql(
            Some(&secret),
            "mutation{ createOrder(input:{product:\"keyledger-pro\", quantity:1}){ id } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    assert_eq!(refused["errors"][0]["extensions"]["scope"], "orders:write");
    let after = app.ok(Some(&session), ORDERS, json!({})).await;
    assert_eq!(after["orders"]["edges"].as_array().unwrap().len(), 1);
    // Through a fragment, or beside an allowed field, too.
    let sneaky = app
        .gql(
            Some(&secret),
            "query { orders { edges { node { id } } } ...F } fragment F on Query { license(id:\"1\") { key } }",
            json!({}),
        )
        .await;
    assert_eq!(sneaky["errors"][0]["extensions"]["scope"], "licenses:read");
    // However deep in fragments.
    let mut deep = String::from("mutation { ...F0 }");
    for n in 0..20 {
        deep += &format!(" fragment F{n} on Mutation {{ ...F{} }}", n + 1);
    }
    deep += " fragment F20 on Mutation { createOrder(input:{product:\"keyledger-pro\", quantity:1}){ id } }";
    let refused = app.gql(Some(&secret), &deep, json!({})).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["scope"], "orders:write",
        "{refused}"
    );
    let after = app.ok(Some(&session), ORDERS, json!({})).await;
    assert_eq!(after["orders"]["edges"].as_array().unwrap().len(), 1);
    let events = app
        .gql(
            Some(&secret),
            "{ events { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(events["errors"][0]["extensions"]["scope"], "events:read");

    // A token never manages tokens, sessions or its account.
    for (query, variables) in [
        (CREATE, json!({"n": "x", "s": ["ORDERS_READ"], "d": 1})),
        (REVOKE, json!({"id": id})),
        ("mutation{ signOut }", json!({})),
        (
            "mutation{ changePassword(current:\"correct horse battery\", new:\"another good password\") }",
            json!({}),
        ),
    ] {
        let body = app.gql(Some(&secret), query, variables).await;
        assert_eq!(code(&body), "FORBIDDEN", "{query}: {body}");
        assert!(body["errors"][0]["extensions"]["scope"].is_null());
    }
    let listed = app
        .gql(Some(&secret), "{ me { apiTokens { id } } }", json!({}))
        .await;
    assert_eq!(code(&listed), "FORBIDDEN", "{listed}");

    // The person sees the token (never its secret), used by now.
    let mine = app
        .ok(
            Some(&session),
            "{ me { apiTokens { id name scopes lastUsedAt expiresAt } sessions { id } } }",
            json!({}),
        )
        .await;
    let listed = &mine["me"]["apiTokens"];
    assert_eq!(listed.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["scopes"], json!(["ORDERS_READ"]));
    assert!(listed[0]["lastUsedAt"].is_string(), "{mine}");
    assert!(!mine.to_string().contains(&secret));
    // Tokens are not sessions.
    assert!(
        mine["me"]["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["id"] != id)
    );
    assert_eq!(
        app.err(
            Some(&session),
            "mutation($id:ID!){ revokeSession(id:$id) }",
            json!({"id": id})
        )
        .await,
        "NOT_FOUND"
    );

    // Only the hash is stored.
    let db = &app.app.state.ctx.db;
    let row = entity::session::Entity::find_by_id(id.parse::<i64>().unwrap())
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.token_hash, keyledger::auth::token::hash(&secret));
    assert_ne!(row.token_hash, secret);

    // Revoked: UNAUTHENTICATED at once.
    app.ok(Some(&session), REVOKE, json!({"id": id})).await;
    assert_eq!(
        app.err(Some(&secret), ORDERS, json!({})).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        app.err(Some(&session), REVOKE, json!({"id": id})).await,
        "NOT_FOUND"
    );
}

use sea_orm::EntityTrait as _;

#[tokio::test]
async fn someone_elses_token_is_not_found() {
    let app = TestApp::spawn().await;
    let (alice, _) = app.verified_user(&email("alice")).await;
    let (bob, _) = app.verified_user(&email("bob")).await;
    let (secret, id) = token(&app, &alice, &["ORDERS_READ"]).await;
    assert_eq!(
        app.err(Some(&bob), REVOKE, json!({"id": id})).await,
        "NOT_FOUND"
    );
    app.ok(Some(&secret), ORDERS, json!({})).await;
}

#[tokio::test]
async fn an_expired_token_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let (session, _) = app.verified_user(&email("expiring")).await;
    let data = app
        .ok(
            Some(&session),
            CREATE,
            json!({"n": "short", "s": ["ORDERS_READ"], "d": 1}),
        )
        .await;
    let secret = data["createApiToken"]["token"].as_str().unwrap();
    app.ok(Some(secret), ORDERS, json!({})).await;
    app.clock.advance(chrono::Duration::hours(25));
    assert_eq!(
        app.err(Some(secret), ORDERS, json!({})).await,
        "UNAUTHENTICATED"
    );
    // And it is no longer listed.
    let mine = app
        .ok(Some(&session), "{ me { apiTokens { id } } }", json!({}))
        .await;
    assert_eq!(mine["me"]["apiTokens"], json!([]));
}

#[tokio::test]
async fn token_inputs_are_bounded() {
    let app = TestApp::spawn().await;
    let (session, _) = app.verified_user(&email("bounds")).await;
    let long = "n".repeat(101);
    for (name, scopes, days, field) in [
        ("", json!(["ORDERS_READ"]), 30, "name"),
        ("   ", json!(["ORDERS_READ"]), 30, "name"),
        (long.as_str(), json!(["ORDERS_READ"]), 30, "name"),
        ("tab\tname", json!(["ORDERS_READ"]), 30, "name"),
        ("ok", json!([]), 30, "scopes"),
        ("ok", json!(["ORDERS_READ"]), 0, "expiresInDays"),
        ("ok", json!(["ORDERS_READ"]), -5, "expiresInDays"),
        ("ok", json!(["ORDERS_READ"]), 3651, "expiresInDays"),
    ] {
        let error = app
            .error(
                Some(&session),
                CREATE,
                json!({"n": name, "s": scopes, "d": days}),
            )
            .await;
        assert_eq!(error["extensions"]["code"], "VALIDATION", "{error}");
        assert_eq!(error["extensions"]["field"], field, "{error}");
    }
    // Unknown scopes and absurd numbers are refused by GraphQL itself.
    for variables in [
        json!({"n": "ok", "s": ["orders:read"], "d": 1}),
        json!({"n": "ok", "s": ["ORDERS_READ"], "d": 1e12}),
    ] {
        assert_eq!(
            app.err(Some(&session), CREATE, variables).await,
            "VALIDATION"
        );
    }
    // Admin scope: administrators only.
    assert_eq!(
        app.err(
            Some(&session),
            CREATE,
            json!({"n": "root", "s": ["ADMIN"], "d": 1})
        )
        .await,
        "FORBIDDEN"
    );
    let admin = app.admin().await;
    let (admin_token, _) = token(&app, &admin, &["ADMIN"]).await;
    app.ok(
        Some(&admin_token),
        "{ admin { accounts { edges { node { id } } } } }",
        json!({}),
    )
    .await;
    // Unverified accounts make no tokens.
    let (unverified, _) = app.unverified_user(&email("unverified")).await;
    assert_eq!(
        app.err(
            Some(&unverified),
            CREATE,
            json!({"n": "x", "s": ["ORDERS_READ"], "d": 1})
        )
        .await,
        "EMAIL_NOT_VERIFIED"
    );
    // Bad ids.
    for id in ["abc", "-1", "99999999999999999999", ""] {
        assert_eq!(
            app.err(Some(&session), REVOKE, json!({"id": id})).await,
            "NOT_FOUND",
            "{id}"
        );
    }
    // At most 50 live tokens per account; a revoked one frees its place.
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(token(&app, &session, &["ORDERS_READ"]).await.1);
    }
    let variables = json!({"n": "one too many", "s": ["ORDERS_READ"], "d": 1});
    assert_eq!(
        app.err(Some(&session), CREATE, variables.clone()).await,
        "CONFLICT"
    );
    app.ok(Some(&session), REVOKE, json!({"id": ids[0]})).await;
    app.ok(Some(&session), CREATE, variables).await;
}

/// A token over the websocket: allowed with `events:read`, refused
/// without it, and its stream ends when it is revoked; a revoked token
/// cannot open a connection.
#[tokio::test]
async fn tokens_on_websockets_follow_scopes_and_revocation() {
    let app = TestApp::spawn().await;
    let (session, _) = app.verified_user(&email("ws")).await;
    app.paid_order(&session, 1).await;
    let (reader, reader_id) = token(&app, &session, &["EVENTS_READ"]).await;
    let (other, _) = token(&app, &session, &["ORDERS_READ"]).await;

    let mut sub = Sub::open(&app, &reader, Protocol::TransportWs, None, 1).await;
    assert_eq!(sub.event().await["kind"], "ORDER_PAID");

    // Without events:read the subscription is refused.
    let mut socket = app.websocket("graphql-transport-ws").await;
    send(
        &mut socket,
        json!({"type":"connection_init","payload":{"authorization": format!("Bearer {other}")}}),
    )
    .await;
    assert!(next_text(&mut socket).await.contains("connection_ack"));
    send(
        &mut socket,
        json!({"type":"subscribe","id":"1","payload":{"query":"subscription { events { id } }"}}),
    )
    .await;
    let refused: Value = serde_json::from_str(&next_text(&mut socket).await).unwrap();
    let errors = match refused["type"].as_str() {
        Some("error") => &refused["payload"],
        Some("next") => &refused["payload"]["errors"],
        _ => panic!("expected a refusal: {refused}"),
    };
    assert_eq!(errors[0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    assert_eq!(errors[0]["extensions"]["scope"], "events:read");

    app.ok(Some(&session), REVOKE, json!({"id": reader_id}))
        .await;
    assert_eq!(sub.ended_with().await, "UNAUTHENTICATED");
    wait_subscribers(&app, 0).await;
    assert_eq!(refused_at_init(&app, &reader).await, 4403);
}

async fn send(socket: &mut crate::harness::WebSocket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

async fn next_text(socket: &mut crate::harness::WebSocket) -> String {
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("a message")
            .expect("open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            if text.contains("\"ping\"") || text.contains("\"ka\"") {
                continue;
            }
            return text.to_string();
        }
    }
}

/// The close code of a connection initialised with `secret`.
async fn refused_at_init(app: &TestApp, secret: &str) -> u16 {
    let mut socket = app.websocket("graphql-transport-ws").await;
    send(
        &mut socket,
        json!({"type":"connection_init","payload":{"authorization": format!("Bearer {secret}")}}),
    )
    .await;
    match tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => u16::from(frame.code),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Two instances behind a balancer: a token revoked on one is refused at
/// once by the other, which had just let it in (it keeps callers for a
/// moment), over HTTP and at a websocket's `connection_init`.
#[tokio::test]
#[ignore = "needs Redis"]
async fn a_token_revoked_on_one_instance_is_refused_by_the_other() {
    let redis_url = crate::harness::require_redis();
    let (a, b) = TestApp::two_on_redis(&redis_url, |_| {}).await;
    let (session, _) = b.verified_user(&email("two")).await;
    let (secret, id) = token(&b, &session, &["ORDERS_READ", "EVENTS_READ"]).await;
    let mut sub = Sub::open(&a, &secret, Protocol::LegacyWs, None, 1).await;
    a.ok(Some(&secret), ORDERS, json!({})).await;
    b.ok(Some(&session), REVOKE, json!({"id": id})).await;
    assert_eq!(sub.ended_with().await, "UNAUTHENTICATED");
    assert_eq!(
        a.err(Some(&secret), ORDERS, json!({})).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(refused_at_init(&a, &secret).await, 4403);
}

/// Every root operation of the served schema has a row in the scope table
/// (`src/auth/scopes.rs`), and every row names an operation that exists.
#[tokio::test]
async fn every_operation_declares_what_a_token_needs() {
    let app = TestApp::spawn().await;
    let schema = Schema::load(&app).await;
    let mut served = Vec::new();
    for root in [
        schema.query.as_str(),
        schema.mutation.as_str(),
        "Subscription",
    ] {
        if let Some(ty) = schema.types.get(root) {
            served.extend(ty.fields.iter().map(|f| (root.to_owned(), f.name.clone())));
        }
    }
    let missing: Vec<String> = served
        .iter()
        .filter(|(root, field)| keyledger::auth::scopes::need(root, field).is_none())
        .map(|(root, field)| format!("{root}.{field}"))
        .collect();
    assert!(
        missing.is_empty(),
        "operations without a row in OPERATIONS (src/auth/scopes.rs): {missing:?}"
    );
    let stale: Vec<String> = keyledger::auth::scopes::OPERATIONS
        .iter()
        .filter(|(root, field, _)| !served.iter().any(|(r, f)| r == root && f == field))
        .map(|(root, field, _)| format!("{root}.{field}"))
        .collect();
    assert!(stale.is_empty(), "rows for operations gone: {stale:?}");
}
