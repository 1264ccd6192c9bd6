//! `Idempotency-Key` on `POST /graphql`: one effect per caller and key,
//! the first answer replayed, conflicts, refusals, and what is not kept.
use serde_json::{Value, json};

use crate::harness::{Options, TestApp, unique};

fn email(tag: &str) -> String {
    format!("{}@idempotency.example.com", unique(tag))
}

const CREATE_ORDER: &str =
    "mutation($p:String!){ createOrder(input:{product:$p, quantity:2}){ id number } }";
const ORDERS: &str = "{ orders { edges { node { id } } } }";

/// POST `query` with `key`; returns (status, replayed header, body).
async fn keyed(
    app: &TestApp,
    token: Option<&str>,
    key: &str,
    query: &str,
    variables: Value,
) -> (u16, bool, Value) {
    let mut request = app
        .http
        .post(format!("{}/graphql", app.base))
        .header("idempotency-key", key)
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let replayed = match response.headers().get("idempotent-replayed") {
        None => false,
        Some(value) => {
            assert_eq!(value, "true");
            true
        }
    };
    (status, replayed, response.json().await.expect("JSON body"))
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("NONE")
}

async fn order_count(app: &TestApp, token: &str) -> usize {
    app.ok(Some(token), ORDERS, json!({})).await["orders"]["edges"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_retry_gets_the_first_answer_and_no_second_effect() {
    let app = TestApp::spawn().await;
    let (token, _) = app.verified_user(&email("buyer")).await;
    let product = app.product("idem-pro", "Idem Pro").await;
    let variables = json!({"p": product});
    let (status, replayed, first) = keyed(
        &app,
        Some(&token),
        "order-1",
        CREATE_ORDER,
        variables.clone(),
    )
    .await;
    assert_eq!((status, replayed), (200, false), "{first}");
    assert!(first["data"]["createOrder"]["id"].is_string(), "{first}");
    let (status, replayed, again) = keyed(
        &app,
        Some(&token),
        "order-1",
        CREATE_ORDER,
        variables.clone(),
    )
    .await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, first);
    assert_eq!(order_count(&app, &token).await, 1);

    // The same key with another body: CONFLICT, nothing done.
    let (_, replayed, other) = keyed(
        &app,
        Some(&token),
        "order-1",
        "mutation($p:String!){ createOrder(input:{product:$p, quantity:3}){ id } }",
        variables.clone(),
    )
    .await;
    assert!(!replayed);
    assert_eq!(code(&other), "CONFLICT", "{other}");
    assert_eq!(order_count(&app, &token).await, 1);

    // Keys are the caller's own: another account's same key is its own.
    let (stranger, _) = app.verified_user(&email("stranger")).await;
    let (_, replayed, theirs) = keyed(
        &app,
        Some(&stranger),
        "order-1",
        CREATE_ORDER,
        variables.clone(),
    )
    .await;
    assert!(!replayed, "{theirs}");
    assert_ne!(
        theirs["data"]["createOrder"]["id"],
        first["data"]["createOrder"]["id"]
    );

    // An API token of the account shares its keys.
    let (secret, _) = crate::api_tokens::token(&app, &token, &["ORDERS_WRITE"]).await;
    let (_, replayed, by_token) = keyed(
        &app,
        Some(&secret),
        "order-1",
        CREATE_ORDER,
        variables.clone(),
    )
    .await;
    assert!(replayed);
    assert_eq!(by_token, first);

    // Without a key, every request runs.
    app.ok(Some(&token), CREATE_ORDER, variables).await;
    assert_eq!(order_count(&app, &token).await, 2);
}

#[tokio::test]
async fn concurrent_attempts_with_one_key_have_one_effect() {
    let app = TestApp::spawn().await;
    let (token, _) = app.verified_user(&email("racer")).await;
    let product = app.product("idem-pro", "Idem Pro").await;
    let variables = json!({"p": product});
    let attempts = (0..5).map(|_| async {
        let sent = std::time::Instant::now();
        let answer = keyed(&app, Some(&token), "race", CREATE_ORDER, variables.clone()).await;
        (answer, sent.elapsed())
    });
    let answers = futures_util::future::join_all(attempts).await;
    // The attempts that meet the first one running wait for its answer (up
    // to a second, far more than a createOrder takes) and replay it; only
    // one that waited that long in vain is told to retry.
    let mut ids = Vec::new();
    for ((status, _, body), took) in &answers {
        assert_eq!(*status, 200, "{body}");
        match code(body) {
            "NONE" => ids.push(body["data"]["createOrder"]["id"].clone()),
            "CONFLICT" => {
                assert_eq!(body["errors"][0]["extensions"]["retryAfter"], 1, "{body}");
                assert!(
                    *took >= std::time::Duration::from_millis(900),
                    "told to retry after {took:?}, without waiting for the answer"
                );
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!ids.is_empty(), "one attempt ran: {answers:?}");
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    // Retried until answered, every attempt gets the same order.
    let (_, replayed, again) = keyed(&app, Some(&token), "race", CREATE_ORDER, variables).await;
    assert!(replayed);
    assert_eq!(again["data"]["createOrder"]["id"], ids[0]);
    assert_eq!(order_count(&app, &token).await, 1);
}

/// Keys sent at once are written together (on PostgreSQL, one statement
/// per round): each must still run once and keep its own answer.
#[tokio::test]
async fn many_keys_at_once_each_keep_their_own_answer() {
    const CREATE_SIZED: &str = "mutation($p:String!,$q:Int!){ createOrder(input:{product:$p, quantity:$q}){ id quantity } }";
    let app = TestApp::spawn().await;
    let (token, _) = app.verified_user(&email("crowd")).await;
    let product = app.product("idem-crowd", "Idem Crowd").await;
    let sizes = 1..=12;
    let send = |q: i32| {
        let (app, token, product) = (&app, &token, &product);
        async move {
            let key = format!("crowd-{q}");
            let variables = json!({"p": product, "q": q});
            keyed(app, Some(token), &key, CREATE_SIZED, variables).await
        }
    };
    let mut first = Vec::new();
    let answers = futures_util::future::join_all(sizes.clone().map(send)).await;
    for ((status, replayed, body), q) in answers.into_iter().zip(sizes.clone()) {
        assert_eq!((status, replayed), (200, false), "{body}");
        assert_eq!(body["data"]["createOrder"]["quantity"], q, "{body}");
        first.push(body["data"]["createOrder"]["id"].clone());
    }
    let mut again = Vec::new();
    for (_, replayed, body) in futures_util::future::join_all(sizes.map(send)).await {
        assert!(replayed, "{body}");
        again.push(body["data"]["createOrder"]["id"].clone());
    }
    assert_eq!(again, first);
    let distinct: std::collections::HashSet<String> = first.iter().map(Value::to_string).collect();
    assert_eq!(distinct.len(), first.len(), "{first:?}");
    assert_eq!(order_count(&app, &token).await, first.len());
}

#[tokio::test]
async fn a_claim_retried_with_its_key_claims_once() {
    let app = TestApp::spawn().await;
    let (buyer, _) = app.verified_user(&email("owner")).await;
    let (_, _, keys) = app.paid_order(&buyer, 1).await;
    let (claimer, _) = app.verified_user(&email("claimer")).await;
    let claim = "mutation($k:String!){ claimLicense(key:$k){ outcome license { id } } }";
    let variables = json!({"k": keys[0]});
    let attempts = (0..5).map(|_| keyed(&app, Some(&claimer), "claim-1", claim, variables.clone()));
    let answers = futures_util::future::join_all(attempts).await;
    let ran = answers
        .iter()
        .filter(|(_, replayed, body)| !replayed && code(body) == "NONE")
        .count();
    assert_eq!(ran, 1, "{answers:?}");
    let history = app
        .ok(
            Some(&claimer),
            "{ myClaims { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert!(history["myClaims"]["edges"].as_array().unwrap().len() <= 1);
}

#[tokio::test]
async fn refusals_and_ignored_requests() {
    let app = TestApp::spawn().await;
    let (token, _) = app.verified_user(&email("refusals")).await;
    // Secret-bearing mutations, even behind a fragment, however deep.
    let mut deep = String::from("mutation{ ...F0 }");
    for n in 0..20 {
        deep += &format!(" fragment F{n} on Mutation {{ ...F{} }}", n + 1);
    }
    deep += " fragment F20 on Mutation { createApiToken(input:{name:\"n\", scopes:[ORDERS_READ], expiresInDays:1}){ token } }";
    for query in [
        deep.as_str(),
        "mutation{ signIn(email:\"a@example.com\", password:\"correct horse battery\"){ token } }",
        "mutation{ createApiToken(input:{name:\"n\", scopes:[ORDERS_READ], expiresInDays:1}){ token } }",
        "mutation{ ...F } fragment F on Mutation { createApiToken(input:{name:\"n\", scopes:[ORDERS_READ], expiresInDays:1}){ token } }",
    ] {
        let (status, _, body) = keyed(&app, Some(&token), "k", query, json!({})).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(code(&body), "VALIDATION", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "idempotencyKey");
    }
    let mine = app
        .ok(Some(&token), "{ me { apiTokens { id } } }", json!({}))
        .await;
    assert_eq!(mine["me"]["apiTokens"], json!([]), "nothing was created");
    // Malformed keys.
    let long = "k".repeat(256);
    for key in [long.as_str(), "", "with space", "é"] {
        let request = app
            .http
            .post(format!("{}/graphql", app.base))
            .header("idempotency-key", key.as_bytes())
            .bearer_auth(&token)
            .json(&json!({"query": "mutation{ updateClaimSettings(input:{}){ id } }"}));
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{key:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["field"], "idempotencyKey",
            "{body}"
        );
    }
    let (status, _, fine) = keyed(
        &app,
        Some(&token),
        &"k".repeat(255),
        "mutation{ updateClaimSettings(input:{}){ id } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{fine}");
    // Queries ignore the key: run every time, never replayed.
    for _ in 0..2 {
        let (status, replayed, body) =
            keyed(&app, Some(&token), "query-key", "{ me { id } }", json!({})).await;
        assert_eq!((status, replayed), (200, false), "{body}");
    }
}

/// Anonymous keys are scoped by the body: the same body replays, another
/// body with the same key is someone else's request.
#[tokio::test]
async fn anonymous_keys_are_scoped_by_body() {
    let app = TestApp::spawn().await;
    let reset = "mutation($e:String!){ requestPasswordReset(email:$e) }";
    let a = json!({"e": email("a")});
    let (_, replayed, _) = keyed(&app, None, "anon", reset, a.clone()).await;
    assert!(!replayed);
    let (_, replayed, _) = keyed(&app, None, "anon", reset, a).await;
    assert!(replayed);
    let (_, replayed, other) = keyed(&app, None, "anon", reset, json!({"e": email("b")})).await;
    assert!(!replayed);
    assert_eq!(code(&other), "NONE", "{other}");
}

/// An app whose callers may claim once a minute: a second claim is
/// `RATE_LIMITED`.
async fn one_claim_a_minute() -> TestApp {
    TestApp::spawn_with(Options {
        configure: Box::new(|c| c.claim_rate_per_minute = 1),
        ..Options::default()
    })
    .await
}

/// `RATE_LIMITED` answers are not kept (a retry runs again); error answers
/// of the rules are; keys go after 24 h.
#[tokio::test]
async fn what_is_kept_and_for_how_long() {
    let app = one_claim_a_minute().await;
    let (claimer, _) = app.verified_user(&email("limited")).await;
    let claim = "mutation($k:String!){ claimLicense(key:$k){ outcome } }";
    // A rule's refusal (an unknown key) is an answer: kept and replayed.
    let unknown = json!({"k": "AAAA-AAAA-AAAA-AAAA"});
    let (_, _, first) = keyed(&app, Some(&claimer), "c1", claim, unknown.clone()).await;
    assert_eq!(code(&first), "NOT_FOUND", "{first}");
    let (_, replayed, again) = keyed(&app, Some(&claimer), "c1", claim, unknown).await;
    assert!(replayed);
    assert_eq!(again, first);
    // The next attempt is over the limit: not kept.
    let other = json!({"k": "BBBB-BBBB-BBBB-BBBB"});
    for _ in 0..2 {
        let (_, replayed, limited) = keyed(&app, Some(&claimer), "c2", claim, other.clone()).await;
        assert!(!replayed);
        assert_eq!(code(&limited), "RATE_LIMITED", "{limited}");
    }
    // After 24 h the sweeper forgets the key: it runs again.
    app.clock.advance(chrono::Duration::hours(25));
    keyledger::domain::expiry::sweep(&app.app.state.ctx)
        .await
        .map_err(|e| e.detail())
        .unwrap();
    use sea_orm::{EntityTrait as _, PaginatorTrait as _};
    let left = entity::idempotency_key::Entity::find()
        .count(&app.app.state.ctx.db)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// The heartbeat writes outside a transaction, so it takes its key on its
/// own before it writes; a retry is answered from the first attempt.
#[tokio::test]
async fn a_heartbeat_sent_with_a_key_is_answered_once() {
    let app = TestApp::spawn().await;
    let beat =
        "mutation($k:String!){ heartbeatLicense(key:$k, fingerprint:\"fp-1\"){ valid code } }";
    let variables = json!({"k": "AAAA-AAAA-AAAA-AAAA"});
    let (_, replayed, first) = keyed(&app, None, "beat-1", beat, variables.clone()).await;
    assert!(!replayed, "{first}");
    assert_eq!(
        first["data"]["heartbeatLicense"]["code"], "NOT_FOUND",
        "{first}"
    );
    let (_, replayed, again) = keyed(&app, None, "beat-1", beat, variables).await;
    assert!(replayed, "{again}");
    assert_eq!(again, first);
}

/// Once a change committed, the answer is kept even when a later field is
/// refused `RATE_LIMITED`: a retry must not repeat the change.
#[tokio::test]
async fn an_answer_is_kept_once_a_change_committed() {
    let app = one_claim_a_minute().await;
    let (token, _) = app.verified_user(&email("half")).await;
    let product = app.product("idem-half", "Idem Half").await;
    // Spend the claims' budget.
    let claim = "mutation{ claimLicense(key:\"AAAA-AAAA-AAAA-AAAA\"){ outcome } }";
    let spent = app.gql(Some(&token), claim, json!({})).await;
    assert_eq!(code(&spent), "NOT_FOUND", "{spent}");
    let both = "mutation($p:String!){ createOrder(input:{product:$p, quantity:1}){ id } \
                claimLicense(key:\"BBBB-BBBB-BBBB-BBBB\"){ outcome } }";
    let variables = json!({"p": product});
    let (_, replayed, first) = keyed(&app, Some(&token), "half", both, variables.clone()).await;
    assert!(!replayed, "{first}");
    assert_eq!(code(&first), "RATE_LIMITED", "{first}");
    assert_eq!(order_count(&app, &token).await, 1);
    let (_, replayed, again) = keyed(&app, Some(&token), "half", both, variables).await;
    assert!(replayed, "{again}");
    assert_eq!(again, first);
    assert_eq!(
        order_count(&app, &token).await,
        1,
        "the retry made no second order"
    );
}

/// Another instance's attempt holding `key` in a transaction not yet
/// committed: an attempt waits for it, and writes nothing if that attempt
/// commits its key (it is answered with that attempt's answer), or takes
/// the key and runs if it rolls back. PostgreSQL only: on SQLite a write
/// transaction held open elsewhere holds back every write.
#[tokio::test]
async fn a_key_held_by_an_unfinished_attempt_elsewhere_holds_the_change_back() {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement, TransactionTrait};
    if !crate::harness::test_database_is_postgres() {
        return;
    }
    let app = TestApp::spawn().await;
    let address = email("held");
    let (token, _) = app.verified_user(&address).await;
    let product = app.product("idem-held", "Idem Held").await;
    let elsewhere = Database::connect(app.db.url.as_str()).await.unwrap();
    let account = elsewhere
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT id FROM accounts WHERE email = $1",
            [address.clone().into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "id")
        .unwrap();
    let body = json!({"query": CREATE_ORDER, "variables": {"p": product}}).to_string();
    let body_hash = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(body.as_bytes()))
    };
    let recorded = r#"{"data":{"createOrder":{"id":"elsewhere","number":"elsewhere"}}}"#;

    for commit_elsewhere in [true, false] {
        let key = format!("held-{commit_elsewhere}");
        let txn = elsewhere.begin().await.unwrap();
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO idempotency_keys \
               (caller, key, body_hash, state, response, created_at, expires_at) \
             VALUES ($1, $2, $3, 'done', $4, now(), now() + interval '1 day')",
            [
                format!("account:{account}").into(),
                key.clone().into(),
                body_hash.clone().into(),
                recorded.into(),
            ],
        ))
        .await
        .unwrap();
        let before = order_count(&app, &token).await;
        let attempt = {
            let (http, base, token, key, body) = (
                app.http.clone(),
                app.base.clone(),
                token.clone(),
                key.clone(),
                body.clone(),
            );
            tokio::spawn(async move {
                let response = http
                    .post(format!("{base}/graphql"))
                    .bearer_auth(token)
                    .header("idempotency-key", key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let replayed = response.headers().contains_key("idempotent-replayed");
                (replayed, response.text().await.unwrap())
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert!(!attempt.is_finished(), "the attempt waits for the key");
        assert_eq!(order_count(&app, &token).await, before, "nothing committed");
        if commit_elsewhere {
            txn.commit().await.unwrap();
        } else {
            txn.rollback().await.unwrap();
        }
        let (replayed, answer) = attempt.await.unwrap();
        if commit_elsewhere {
            assert!(replayed, "{answer}");
            assert_eq!(answer, recorded);
            assert_eq!(order_count(&app, &token).await, before, "no order made");
        } else {
            assert!(!replayed, "{answer}");
            let answer: Value = serde_json::from_str(&answer).unwrap();
            assert!(answer["data"]["createOrder"]["id"].is_string(), "{answer}");
            assert_eq!(order_count(&app, &token).await, before + 1);
        }
    }
}
