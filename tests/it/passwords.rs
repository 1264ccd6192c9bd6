//! Wrong-password limits of `signIn`, per account and per client address
//! (every request of these tests comes from 127.0.0.1, so each test sets the
//! limit it does not test out of reach), and sign-in under a burst.
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Options, PASSWORD, TestApp, unique};

const SIGN_IN: &str = "mutation($e:String!,$p:String!){ signIn(email:$e,password:$p){ token } }";

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

async fn app_with_limits(per_account: u32, per_address: u32) -> TestApp {
    TestApp::spawn_with(Options {
        configure: Box::new(move |c| {
            c.signin_failures_per_minute = per_account;
            c.signin_failures_per_minute_per_address = per_address;
        }),
        ..Options::default()
    })
    .await
}

/// The first error of a sign-in, or `Null` when it succeeded.
async fn sign_in_error(app: &TestApp, email: &str, password: &str) -> Value {
    let body = app
        .gql(None, SIGN_IN, json!({"e": email, "p": password}))
        .await;
    body["errors"][0].clone()
}

fn assert_rate_limited(error: &Value, most_secs: u64) {
    assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{error}");
    let retry = error["extensions"]["retryAfter"].as_u64().unwrap_or(0);
    assert!((1..=most_secs).contains(&retry), "retryAfter: {error}");
}

#[tokio::test]
async fn wrong_passwords_are_limited_per_account() {
    let app = app_with_limits(3, 10_000).await;
    let ada = email("ada");
    let bob = email("bob");
    app.sign_up(&ada).await;
    app.sign_up(&bob).await;
    // Right passwords use nothing up.
    for _ in 0..5 {
        assert!(sign_in_error(&app, &ada, PASSWORD).await.is_null());
    }
    for _ in 0..3 {
        let error = sign_in_error(&app, &ada, "wrong password!!").await;
        assert_eq!(error["extensions"]["code"], "UNAUTHENTICATED", "{error}");
    }
    // The address as typed in any case is the same account; past the limit,
    // even the right password waits (else the limit would not stop guessing).
    let shouted = ada.to_uppercase();
    assert_rate_limited(&sign_in_error(&app, &shouted, "wrong again!!").await, 20);
    assert_rate_limited(&sign_in_error(&app, &ada, PASSWORD).await, 20);
    // Another account from the same address is not concerned.
    assert!(sign_in_error(&app, &bob, PASSWORD).await.is_null());
    let bob_wrong = sign_in_error(&app, &bob, "wrong password!!").await;
    assert_eq!(bob_wrong["extensions"]["code"], "UNAUTHENTICATED");
    // An unknown address is limited exactly like a known one.
    let nobody = email("nobody");
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(sign_in_error(&app, &nobody, "wrong password!!").await);
    }
    assert_eq!(answers[0], bob_wrong);
    assert_eq!(answers[2], bob_wrong);
    assert_rate_limited(&answers[3], 20);
    for _ in 0..2 {
        assert_eq!(
            sign_in_error(&app, &bob, "wrong password!!").await,
            bob_wrong
        );
    }
    assert_rate_limited(&sign_in_error(&app, &bob, "wrong password!!").await, 20);
}

#[tokio::test]
async fn wrong_passwords_are_limited_per_client_address() {
    let app = app_with_limits(10_000, 3).await;
    let ada = email("ada");
    app.sign_up(&ada).await;
    for _ in 0..5 {
        assert!(sign_in_error(&app, &ada, PASSWORD).await.is_null());
    }
    // Three accounts, one wrong password each: the address is spent.
    for _ in 0..3 {
        let error = sign_in_error(&app, &email("other"), "wrong password!!").await;
        assert_eq!(error["extensions"]["code"], "UNAUTHENTICATED", "{error}");
    }
    assert_rate_limited(
        &sign_in_error(&app, &email("next"), "wrong!!!!!!").await,
        20,
    );
    assert_rate_limited(&sign_in_error(&app, &ada, PASSWORD).await, 20);
}

/// 64 sign-ins with wrong passwords at once (real accounts and unknown
/// addresses, default limits): every one gets its answer, refused or
/// limited, never an internal error, within a generous deadline (argon2
/// runs a few at a time, the rest wait their turn).
#[tokio::test]
async fn a_burst_of_sign_ins_all_get_an_answer() {
    let app = TestApp::spawn().await;
    let accounts: Vec<String> = (0..8).map(|_| email("burst")).collect();
    for account in &accounts {
        app.sign_up(account).await;
    }
    let attempts = (0..64).map(|i| {
        let address = match accounts.get(i % 16) {
            Some(account) => account.clone(),
            None => email("unknown"),
        };
        let app = &app;
        async move { sign_in_error(app, &address, "wrong password!!").await }
    });
    let answers = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(attempts),
    )
    .await
    .expect("every sign-in answered within 60 s");
    let count = |code: &str| {
        answers
            .iter()
            .filter(|e| e["extensions"]["code"] == code)
            .count()
    };
    let (refused, limited) = (count("UNAUTHENTICATED"), count("RATE_LIMITED"));
    assert_eq!(refused + limited, 64, "{answers:?}");
    // 30 wrong passwords per address and minute by default.
    assert!(
        refused >= 30 && limited > 0,
        "{refused} refused, {limited} limited"
    );
}

/// With Redis, instances count wrong passwords in the same buckets: spread
/// over two instances (and over both doors, `signIn` and the transfer
/// confirmation form), they hit the limit at the same total as on one.
#[tokio::test]
#[ignore = "needs Redis"]
async fn instances_sharing_redis_share_the_wrong_password_limits() {
    let redis_url = crate::harness::require_redis();
    let (a, b) = TestApp::two_on_redis(&redis_url, |c| {
        c.signin_failures_per_minute = 4;
        c.signin_failures_per_minute_per_address = 6;
    })
    .await;
    let ada = email("ada");
    let bob = email("bob");
    a.sign_up(&ada).await;
    a.sign_up(&bob).await;
    // The form checks the password before the token: a wrong one counts.
    let form = |app: &TestApp, email: &str| {
        app.http
            .post(format!("{}/transfers/confirm", app.base))
            .form(&[
                ("token", "not-a-token"),
                ("email", email),
                ("password", "wrong password!!"),
            ])
            .send()
    };
    let wrong = form(&b, &ada).await.unwrap();
    assert_eq!(wrong.status(), 200);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong email or password")
    );
    for app in [&a, &b, &a] {
        let error = sign_in_error(app, &ada, "wrong password!!").await;
        assert_eq!(error["extensions"]["code"], "UNAUTHENTICATED", "{error}");
    }
    // Four wrong passwords in all: the account waits on both instances.
    assert_rate_limited(&sign_in_error(&b, &ada, "wrong password!!").await, 20);
    assert_rate_limited(&sign_in_error(&a, &ada, PASSWORD).await, 20);
    assert_eq!(form(&b, &ada).await.unwrap().status(), 429);
    // The address has two failures left, one per instance; then it waits.
    for app in [&b, &a] {
        let error = sign_in_error(app, &email("other"), "wrong password!!").await;
        assert_eq!(error["extensions"]["code"], "UNAUTHENTICATED", "{error}");
    }
    assert_rate_limited(&sign_in_error(&b, &bob, PASSWORD).await, 20);
    assert_rate_limited(&sign_in_error(&a, &bob, PASSWORD).await, 20);
}
