//! Accounts: sign-up, verification, sign-in/out, tokens, limits.
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{PASSWORD, TestApp, unique};

const ME: &str = "{ me { id email emailVerified role } }";

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

#[tokio::test]
async fn full_account_journey_sign_up_verify_sign_in_me_sign_out() {
    let app = TestApp::spawn().await;
    let address = email("Ada");
    let data = app
        .sign_up(&format!("  {}  ", address.to_uppercase()))
        .await;
    assert_eq!(data["signUp"], json!({"email": address.to_lowercase()}));

    let mail = app.wait_mails(&address.to_lowercase(), 1).await.remove(0);
    assert_eq!(mail.subject, "Confirm your email address");
    let token = mail.verification_token();
    assert_eq!(token.len(), 64);

    let (session, _) = app.sign_in(&address).await;
    let me = app.ok(Some(&session), ME, json!({})).await;
    assert_eq!(me["me"]["emailVerified"], false);

    app.ok(
        Some(&session),
        "mutation($t:String!){ verifyEmail(token:$t){ emailVerified } }",
        json!({"t": token}),
    )
    .await;
    let me = app.ok(Some(&session), ME, json!({})).await;
    assert_eq!(me["me"]["emailVerified"], true);
    assert_eq!(me["me"]["role"], "USER");

    app.ok(Some(&session), "mutation { signOut }", json!({}))
        .await;
    assert_eq!(
        app.err(Some(&session), ME, json!({})).await,
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn me_is_null_without_a_token() {
    let app = TestApp::spawn().await;
    let data = app.ok(None, ME, json!({})).await;
    assert!(data["me"].is_null());
}

#[tokio::test]
async fn sign_up_rejects_bad_input() {
    let app = TestApp::spawn().await;
    let q = "mutation($e:String!,$p:String!){ signUp(email:$e,password:$p){ email } }";
    for bad in ["not-an-email", "a@", "@b.com", "a b@c.com", ""] {
        let error = app.error(None, q, json!({"e": bad, "p": PASSWORD})).await;
        assert_eq!(error["extensions"]["code"], "VALIDATION", "{bad}");
        assert_eq!(error["extensions"]["field"], "email");
    }
    for weak in ["short", "123456789", "aaaaaaaaaaaaaaaa", &"x".repeat(129)] {
        let error = app
            .error(None, q, json!({"e": email("weak"), "p": weak}))
            .await;
        assert_eq!(error["extensions"]["code"], "VALIDATION", "{weak}");
        assert_eq!(error["extensions"]["field"], "password");
    }
}

#[tokio::test]
async fn concurrent_duplicate_sign_ups_create_one_account() {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let app = TestApp::spawn().await;
    let address = email("race");
    let q = "mutation($e:String!,$p:String!){ signUp(email:$e,password:$p){ email } }";
    let results = futures_util::future::join_all(
        (0..8).map(|_| app.gql(None, q, json!({"e": address, "p": PASSWORD}))),
    )
    .await;
    for r in &results {
        assert_eq!(r, &json!({"data": {"signUp": {"email": address}}}));
    }
    let accounts = entity::account::Entity::find()
        .filter(entity::account::Column::Email.eq(&address))
        .count(&app.app.state.ctx.db)
        .await
        .unwrap();
    assert_eq!(accounts, 1);
    app.sign_in(&address).await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_answer_alike() {
    let app = TestApp::spawn().await;
    let address = email("pw");
    app.sign_up(&address).await;
    let q = "mutation($e:String!,$p:String!){ signIn(email:$e,password:$p){ token } }";
    let wrong = app
        .error(None, q, json!({"e": address, "p": "wrong password!!"}))
        .await;
    let unknown = app
        .error(None, q, json!({"e": email("nobody"), "p": PASSWORD}))
        .await;
    let malformed = app
        .error(None, q, json!({"e": "nope", "p": PASSWORD}))
        .await;
    assert_eq!(wrong["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, malformed);
}

#[tokio::test]
async fn verification_tokens_are_single_use_expiring_and_unforgeable() {
    let app = TestApp::spawn().await;
    let q = "mutation($t:String!){ verifyEmail(token:$t){ emailVerified } }";
    let used = email("used");
    let (session, _) = app.unverified_user(&used).await;
    assert_eq!(
        app.err(Some(&session), q, json!({"t": "0".repeat(64)}))
            .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(Some(&session), q, json!({"t": "forged"})).await,
        "NOT_FOUND"
    );
    let token = app.wait_mails(&used, 1).await[0].verification_token();
    app.ok(Some(&session), q, json!({"t": token})).await;
    assert_eq!(
        app.err(Some(&session), q, json!({"t": token})).await,
        "CONFLICT"
    );

    let late = email("late");
    let (session, _) = app.unverified_user(&late).await;
    let token = app.wait_mails(&late, 1).await[0].verification_token();
    app.clock.advance(chrono::Duration::hours(49));
    assert_eq!(
        app.err(Some(&session), q, json!({"t": token})).await,
        "EXPIRED"
    );
}

#[tokio::test]
async fn missing_expired_revoked_and_garbage_tokens_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let q = "{ orders { edges { node { id } } } }";
    assert_eq!(app.err(None, q, json!({})).await, "UNAUTHENTICATED");
    assert_eq!(
        app.err(Some("garbage"), q, json!({})).await,
        "UNAUTHENTICATED"
    );
    let (token, _) = app.verified_user(&email("tok")).await;
    app.ok(Some(&token), q, json!({})).await;
    app.clock.advance(chrono::Duration::days(31));
    assert_eq!(app.err(Some(&token), q, json!({})).await, "UNAUTHENTICATED");

    let (revoked, _) = app.verified_user(&email("revoked")).await;
    app.ok(Some(&revoked), "mutation { signOut }", json!({}))
        .await;
    assert_eq!(
        app.err(Some(&revoked), q, json!({})).await,
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn over_deep_over_complex_and_alias_heavy_queries_are_refused() {
    let app = TestApp::spawn().await;
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(12),
        "} ".repeat(12)
    );
    let body = app.gql(None, &deep, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["limit"], "depth", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION");
    let syntax = app.gql(None, "{ me { id ", json!({})).await;
    assert_eq!(syntax["errors"][0]["extensions"]["code"], "VALIDATION");
    let complex = "{ orders(first: 100) { edges { node { licenses(first: 100) { edges { node { id key assigneeEmail } } } } } } }";
    let body = app.gql(None, complex, json!({})).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("complex"),
        "{body}"
    );
    let aliases: String = (0..40).map(|i| format!("a{i}: me {{ id }} ")).collect();
    // Twice: the second document comes from the parse cache, and the limit
    // still applies to it.
    for _ in 0..2 {
        let body = app.gql(None, &format!("{{ {aliases} }}"), json!({})).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "VALIDATION",
            "{body}"
        );
    }
}

#[tokio::test]
async fn websocket_connection_init_authenticates_the_subscription() {
    let app = TestApp::spawn().await;
    let (token, _) = app.verified_user(&email("ws")).await;
    let mut socket = app.websocket("graphql-transport-ws").await;

    // A bad token is refused at connection_init.
    socket
        .send(Message::text(
            json!({"type":"connection_init","payload":{"authorization":"Bearer nope"}}).to_string(),
        ))
        .await
        .unwrap();
    // Refused with graphql-ws's 4403 Forbidden, not merely dropped.
    let refused = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
        .await
        .expect("the server answers a bad token");
    match refused {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4403, "{frame:?}");
            assert_eq!(frame.reason.as_str(), "Forbidden", "{frame:?}");
        }
        other => panic!("bad token: expected a 4403 close frame, got {other:?}"),
    }

    let mut socket = app.websocket("graphql-transport-ws").await;
    socket
        .send(Message::text(
            json!({"type":"connection_init","payload":{"authorization": format!("Bearer {token}")}}).to_string(),
        ))
        .await
        .unwrap();
    let ack = socket.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
}

#[tokio::test]
async fn grant_admin_command_makes_an_admin() {
    let app = TestApp::spawn().await;
    let address = email("boss");
    app.sign_up(&address).await;
    // tokio's Command: a blocking wait would stall this test's runtime, which
    // also runs the app, while the command waits on the app's database.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["grant-admin", &address])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .await
        .expect("run grant-admin");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (token, _) = app.sign_in(&address).await;
    let me = app.ok(Some(&token), ME, json!({})).await;
    assert_eq!(me["me"]["role"], "ADMIN");

    let unknown = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["grant-admin", "nobody@example.com"])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .await
        .unwrap();
    assert!(!unknown.status.success());
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (status, body) = app.wait_ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], "ok");
    let graphiql = app
        .http
        .get(format!("{}/graphql", app.base))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(graphiql.text().await.unwrap().contains("graphiql"));
}
