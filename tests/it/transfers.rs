//! Order transfers.
use serde_json::{Value, json};

use crate::harness::{Options, TestApp, unique};

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

const START: &str = "mutation($o:ID!,$e:String!){ startOrderTransfer(orderId:$o, newOwnerEmail:$e){ id status toEmail expiresAt } }";
const ACCEPT: &str =
    "mutation($t:String!){ acceptOrderTransfer(token:$t){ id status order { id } } }";
const CANCEL: &str = "mutation($t:ID!){ cancelOrderTransfer(transferId:$t){ id status } }";
const ORDER: &str =
    "query($o:ID!){ order(id:$o){ id owner { email } licenses { edges { node { id key } } } } }";
const ASSIGN: &str =
    "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }";

struct Setup {
    app: TestApp,
    owner: String,
    new_owner_email: String,
    new_owner: String,
    order: String,
    ids: Vec<String>,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

/// [`setup`] with more configuration.
async fn setup_with(
    configure: impl FnOnce(&mut keyledger::config::Config) + Send + 'static,
) -> Setup {
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|c| {
            c.claim_rate_per_minute = 1000;
            configure(c);
        }),
        ..Options::default()
    })
    .await;
    let (owner, _) = app.verified_user(&email("owner")).await;
    let (order, ids, _) = app.paid_order(&owner, 2).await;
    let new_owner_email = email("new");
    let (new_owner, _) = app.verified_user(&new_owner_email).await;
    Setup {
        app,
        owner,
        new_owner_email,
        new_owner,
        order,
        ids,
    }
}

/// Start a transfer and return (transfer id, token from the new owner's email).
async fn start(s: &Setup) -> (String, String) {
    let data = s
        .app
        .ok(
            Some(&s.owner),
            START,
            json!({"o": s.order, "e": s.new_owner_email}),
        )
        .await;
    let id = data["startOrderTransfer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, s.app.transfer_token(&s.new_owner_email).await)
}

#[tokio::test]
async fn accepting_moves_the_order_and_locks_the_old_owner_out() {
    let s = setup().await;
    let app = &s.app;
    // A pending claim on the order goes along.
    app.ok(
        Some(&s.owner),
        "mutation{ updateClaimSettings(input:{requireManualApproval:true}){ id } }",
        json!({}),
    )
    .await;
    let (claimer, _) = app.verified_user(&email("claimer")).await;
    let keys: Vec<String> =
        app.ok(Some(&s.owner), ORDER, json!({"o": s.order})).await["order"]["licenses"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["key"].as_str().unwrap().to_owned())
            .collect();
    app.ok(
        Some(&claimer),
        "mutation($k:String!){ claimLicense(key:$k){ outcome } }",
        json!({"k": keys[0]}),
    )
    .await;

    let (_, token) = start(&s).await;
    let me = app.ok(Some(&s.owner), "{ me { email } }", json!({})).await;
    let owner_mails = app.wait_mails(me["me"]["email"].as_str().unwrap(), 2).await;
    assert!(
        owner_mails
            .iter()
            .any(|m| m.subject.contains("You started the transfer"))
    );

    let accepted = app
        .ok(Some(&s.new_owner), ACCEPT, json!({"t": token}))
        .await;
    assert_eq!(accepted["acceptOrderTransfer"]["status"], "ACCEPTED");
    let order = app
        .ok(Some(&s.new_owner), ORDER, json!({"o": s.order}))
        .await;
    assert_eq!(order["order"]["owner"]["email"], s.new_owner_email);
    app.ok(
        Some(&s.new_owner),
        ASSIGN,
        json!({"l": s.ids[1], "e": "someone@example.com"}),
    )
    .await;
    let claims = app
        .ok(
            Some(&s.new_owner),
            "{ claimRequests(status: PENDING){ edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        claims["claimRequests"]["edges"].as_array().unwrap().len(),
        1
    );

    assert_eq!(
        app.err(Some(&s.owner), ORDER, json!({"o": s.order})).await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(
            Some(&s.owner),
            ASSIGN,
            json!({"l": s.ids[1], "e": "x@example.com"})
        )
        .await,
        "NOT_FOUND"
    );
    let old_claims = app
        .ok(
            Some(&s.owner),
            "{ claimRequests { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert!(
        old_claims["claimRequests"]["edges"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // The token works once.
    assert_eq!(
        app.err(Some(&s.new_owner), ACCEPT, json!({"t": token}))
            .await,
        "CONFLICT"
    );
    let events = app
        .ok(
            Some(&s.owner),
            "{ events(first: 50) { edges { node { kind } } } }",
            json!({}),
        )
        .await;
    let kinds: Vec<Value> = events["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["kind"].clone())
        .collect();
    assert!(
        kinds.contains(&json!("TRANSFER_STARTED")) && kinds.contains(&json!("TRANSFER_ACCEPTED")),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn forged_expired_and_wrong_account_tokens_are_refused() {
    let s = setup().await;
    let app = &s.app;
    let (_, token) = start(&s).await;
    assert_eq!(
        app.err(Some(&s.new_owner), ACCEPT, json!({"t": "f".repeat(64)}))
            .await,
        "NOT_FOUND"
    );
    let (stranger, _) = app.verified_user(&email("stranger")).await;
    assert_eq!(
        app.err(Some(&stranger), ACCEPT, json!({"t": token})).await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.err(Some(&s.owner), ACCEPT, json!({"t": token})).await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.err(None, ACCEPT, json!({"t": token})).await,
        "UNAUTHENTICATED"
    );
    app.clock
        .advance(chrono::Duration::days(7) + chrono::Duration::minutes(1));
    // A fresh session (the old ones are still valid: 30 days).
    assert_eq!(
        app.err(Some(&s.new_owner), ACCEPT, json!({"t": token}))
            .await,
        "EXPIRED"
    );
    let order = app.ok(Some(&s.owner), ORDER, json!({"o": s.order})).await;
    assert!(
        order["order"]["owner"]["email"]
            .as_str()
            .unwrap()
            .starts_with("owner")
    );
}

#[tokio::test]
async fn an_unverified_addressee_cannot_accept() {
    let app = TestApp::spawn().await;
    let (owner, _) = app.verified_user(&email("owner")).await;
    let (order, _, _) = app.paid_order(&owner, 1).await;
    let to = email("unverified");
    let (unverified, _) = app.unverified_user(&to).await;
    app.ok(Some(&owner), START, json!({"o": order, "e": to}))
        .await;
    let token = app.transfer_token(&to).await;
    assert_eq!(
        app.err(Some(&unverified), ACCEPT, json!({"t": token}))
            .await,
        "EMAIL_NOT_VERIFIED"
    );
}

#[tokio::test]
async fn opening_the_link_changes_nothing_and_the_page_button_confirms() {
    let s = setup().await;
    let app = &s.app;
    let (_, token) = start(&s).await;
    let page = app
        .http
        .get(format!("{}/transfers/confirm?token={token}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<button") && html.contains("Keyledger Pro"),
        "{html}"
    );
    let order = app.ok(Some(&s.owner), ORDER, json!({"o": s.order})).await;
    assert!(
        order["order"]["owner"]["email"]
            .as_str()
            .unwrap()
            .starts_with("owner"),
        "GET transferred nothing"
    );
    let wrong = app
        .http
        .post(format!("{}/transfers/confirm", app.base))
        .form(&[
            ("token", token.as_str()),
            ("email", s.new_owner_email.as_str()),
            ("password", "wrong password!"),
        ])
        .send()
        .await
        .unwrap();
    assert!(wrong.text().await.unwrap().contains("Not confirmed"));
    let confirmed = app
        .http
        .post(format!("{}/transfers/confirm", app.base))
        .form(&[
            ("token", token.as_str()),
            ("email", s.new_owner_email.as_str()),
            ("password", crate::harness::PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        confirmed
            .text()
            .await
            .unwrap()
            .contains("Transfer confirmed")
    );
    let order = app
        .ok(Some(&s.new_owner), ORDER, json!({"o": s.order}))
        .await;
    assert_eq!(order["order"]["owner"]["email"], s.new_owner_email);
}

/// The confirmation page's password form counts wrong passwords against
/// the sign-in limits: past them it says when to retry (429, `Retry-After`)
/// and confirms nothing, even with the right password.
#[tokio::test]
async fn the_confirmation_page_refuses_after_too_many_wrong_passwords() {
    let s = setup_with(|c| {
        c.signin_failures_per_minute = 2;
        c.signin_failures_per_minute_per_address = 10_000;
    })
    .await;
    let app = &s.app;
    let (_, token) = start(&s).await;
    let submit = |password: &'static str| {
        app.http
            .post(format!("{}/transfers/confirm", app.base))
            .form(&[
                ("token", token.as_str()),
                ("email", s.new_owner_email.as_str()),
                ("password", password),
            ])
            .send()
    };
    for _ in 0..2 {
        let wrong = submit("wrong password!").await.unwrap();
        assert_eq!(wrong.status(), 200);
        assert!(
            wrong
                .text()
                .await
                .unwrap()
                .contains("Wrong email or password")
        );
    }
    for password in ["wrong password!", crate::harness::PASSWORD] {
        let limited = submit(password).await.unwrap();
        assert_eq!(limited.status(), 429);
        let retry: u64 = limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&retry), "Retry-After: {retry}");
        let html = limited.text().await.unwrap();
        assert!(html.contains("Too many attempts"), "{html}");
    }
    let order = app.ok(Some(&s.owner), ORDER, json!({"o": s.order})).await;
    assert!(
        order["order"]["owner"]["email"]
            .as_str()
            .unwrap()
            .starts_with("owner"),
        "nothing transferred"
    );
    // The account's sign-in waits as well: one limit, whichever door.
    let error = app
        .error(
            None,
            "mutation($e:String!,$p:String!){ signIn(email:$e,password:$p){ token } }",
            json!({"e": s.new_owner_email, "p": crate::harness::PASSWORD}),
        )
        .await;
    assert_eq!(error["extensions"]["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn one_pending_transfer_per_order_cancel_and_strangers() {
    let s = setup().await;
    let app = &s.app;
    let (id, token) = start(&s).await;
    assert_eq!(
        app.err(
            Some(&s.owner),
            START,
            json!({"o": s.order, "e": "third@example.com"})
        )
        .await,
        "CONFLICT"
    );
    let (stranger, _) = app.verified_user(&email("stranger")).await;
    assert_eq!(
        app.err(
            Some(&stranger),
            START,
            json!({"o": s.order, "e": "third@example.com"})
        )
        .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(Some(&stranger), CANCEL, json!({"t": id})).await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(Some(&s.new_owner), CANCEL, json!({"t": id})).await,
        "NOT_FOUND"
    );
    let bad = app
        .error(Some(&s.owner), START, json!({"o": s.order, "e": "nope"}))
        .await;
    assert_eq!(bad["extensions"]["field"], "newOwnerEmail");
    let cancelled = app.ok(Some(&s.owner), CANCEL, json!({"t": id})).await;
    assert_eq!(cancelled["cancelOrderTransfer"]["status"], "CANCELLED");
    assert_eq!(
        app.err(Some(&s.owner), CANCEL, json!({"t": id})).await,
        "CONFLICT"
    );
    assert_eq!(
        app.err(Some(&s.new_owner), ACCEPT, json!({"t": token}))
            .await,
        "CONFLICT"
    );
    // A new transfer may start after the cancellation.
    app.ok(
        Some(&s.owner),
        START,
        json!({"o": s.order, "e": s.new_owner_email}),
    )
    .await;
    let outgoing = app
        .ok(
            Some(&s.owner),
            "{ orderTransfers(direction: OUTGOING){ status } }",
            json!({}),
        )
        .await;
    assert_eq!(
        outgoing["orderTransfers"],
        json!([{"status": "PENDING"}, {"status": "CANCELLED"}])
    );
    let incoming = app
        .ok(
            Some(&s.new_owner),
            "{ orderTransfers(direction: INCOMING, status: PENDING){ status orderNumber } }",
            json!({}),
        )
        .await;
    assert_eq!(incoming["orderTransfers"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_accept_and_cancel_have_exactly_one_outcome() {
    for _ in 0..3 {
        let s = setup().await;
        let (id, token) = start(&s).await;
        let (accept, cancel) = tokio::join!(
            s.app.gql(Some(&s.new_owner), ACCEPT, json!({"t": token})),
            s.app.gql(Some(&s.owner), CANCEL, json!({"t": id})),
        );
        let accepted = accept.get("errors").is_none();
        let cancelled = cancel.get("errors").is_none();
        assert!(accepted ^ cancelled, "exactly one wins: {accept} {cancel}");
        let loser = if accepted { &cancel } else { &accept };
        assert_eq!(loser["errors"][0]["extensions"]["code"], "CONFLICT");
        let owner_email = s
            .app
            .ok(
                Some(&s.new_owner),
                "{ orderTransfers(direction: INCOMING){ status } }",
                json!({}),
            )
            .await;
        let expected = if accepted { "ACCEPTED" } else { "CANCELLED" };
        assert_eq!(owner_email["orderTransfers"][0]["status"], expected);
    }
}
