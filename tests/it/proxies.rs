//! Rate limits as a deployment sees them: behind a load balancer
//! (`TRUSTED_PROXIES`) they count against the client named by
//! `X-Forwarded-For` (from anyone else that header is ignored, so it cannot
//! be used to dodge a limit), and with Redis all instances share them.
use serde_json::{Value, json};

use crate::harness::{Options, TestApp, unique};

const CLAIM: &str = "mutation { claimLicense(key: \"ZZZZ-ZZZZ-ZZZZ-ZZZZ\") { claim { id } } }";
const LIMIT: u32 = 3;

async fn claim_from(app: &TestApp, token: &str, forwarded_for: &str) -> String {
    let body: Value = app
        .http
        .post(format!("{}/graphql", app.base))
        .bearer_auth(token)
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "query": CLAIM }))
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON body");
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("OK")
        .to_owned()
}

async fn spawn(trusted: &'static str) -> TestApp {
    TestApp::spawn_with(Options {
        configure: Box::new(move |config| {
            config.claim_rate_per_minute = LIMIT;
            config.trusted_proxies = trusted.parse().expect("proxy list");
        }),
        ..Options::default()
    })
    .await
}

async fn users(app: &TestApp, n: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for _ in 0..n {
        let email = format!("{}@example.com", unique("proxied"));
        tokens.push(app.verified_user(&email).await.0);
    }
    tokens
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let app = spawn("127.0.0.0/8").await;
    let tokens = users(&app, 3).await;
    for _ in 0..LIMIT {
        assert_eq!(
            claim_from(&app, &tokens[0], "203.0.113.1, 198.51.100.1").await,
            "NOT_FOUND"
        );
    }
    // The same client through another account: its address is spent.
    assert_eq!(
        claim_from(&app, &tokens[1], "198.51.100.1").await,
        "RATE_LIMITED"
    );
    // Another client behind the same balancer is not: the spoofed entry on
    // the left was not taken for the client.
    assert_eq!(
        claim_from(&app, &tokens[2], "198.51.100.1, 198.51.100.2").await,
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn from_an_untrusted_peer_forwarded_addresses_are_ignored() {
    let app = spawn("").await;
    let tokens = users(&app, 2).await;
    for i in 0..LIMIT {
        let spoofed = format!("198.51.100.{i}");
        assert_eq!(claim_from(&app, &tokens[0], &spoofed).await, "NOT_FOUND");
    }
    assert_eq!(
        claim_from(&app, &tokens[1], "198.51.100.99").await,
        "RATE_LIMITED"
    );
}

/// With Redis, every instance counts in the same buckets: an attacker who
/// spreads attempts over instances gets the limit once, not once per
/// instance.
#[tokio::test]
#[ignore = "needs Redis"]
async fn instances_sharing_redis_share_one_budget() {
    let redis_url = crate::harness::require_redis();
    let (a, b) =
        TestApp::two_on_redis(&redis_url, |config| config.claim_rate_per_minute = LIMIT).await;
    let email = format!("{}@example.com", unique("spread"));
    let token = a.verified_user(&email).await.0;
    for i in 0..LIMIT {
        let instance = if i % 2 == 0 { &a } else { &b };
        assert_eq!(claim_from(instance, &token, "").await, "NOT_FOUND");
    }
    assert_eq!(claim_from(&a, &token, "").await, "RATE_LIMITED");
    assert_eq!(claim_from(&b, &token, "").await, "RATE_LIMITED");
}
