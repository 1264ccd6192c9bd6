//! Claims, claim settings and manual approval.
use serde_json::{Value, json};

use crate::harness::{Options, PRODUCT, TestApp, unique};

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

const CLAIM: &str = "mutation($k:String!,$p:String){ claimLicense(key:$k, product:$p){ outcome claim { id status } license { id key assigneeEmail } } }";
const SETTINGS: &str = "mutation($i:ClaimSettingsInput!){ updateClaimSettings(input:$i){ claimSettings { requireManualApproval allowOverrideAssignee notifyOnClaim allowAssigneeOrganization } } }";
const APPROVE: &str = "mutation($c:ID!){ approveClaim(claimId:$c){ id status } }";
const DECLINE: &str = "mutation($c:ID!){ declineClaim(claimId:$c){ id status } }";
const ASSIGN: &str =
    "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }";
const LICENSE: &str = "query($l:ID!){ license(id:$l){ assigneeEmail } }";
const INCOMING: &str = "query($s:ApprovalStatus){ claimRequests(status:$s){ edges { node { id status claimer { email } license { key } } } } }";

/// An app with a generous claim rate limit (tests of the limit set their own).
async fn app() -> TestApp {
    TestApp::spawn_with(Options {
        configure: Box::new(|c| c.claim_rate_per_minute = 10_000),
        ..Options::default()
    })
    .await
}

fn edges(data: &Value, field: &str) -> Vec<Value> {
    data[field]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["node"].clone())
        .collect()
}

/// A buyer with one paid order; returns (buyer token, buyer email, order id, key ids, keys).
async fn buyer_with_keys(
    app: &TestApp,
    n: i32,
) -> (String, String, String, Vec<String>, Vec<String>) {
    let address = email("buyer");
    let (token, _) = app.verified_user(&address).await;
    let (order, ids, keys) = app.paid_order(&token, n).await;
    (token, address, order, ids, keys)
}

#[tokio::test]
async fn claiming_needs_a_verified_account() {
    let app = app().await;
    let (_, _, _, _, keys) = buyer_with_keys(&app, 1).await;
    assert_eq!(
        app.err(None, CLAIM, json!({"k": keys[0]})).await,
        "UNAUTHENTICATED"
    );
    let (unverified, _) = app.unverified_user(&email("unverified")).await;
    assert_eq!(
        app.err(Some(&unverified), CLAIM, json!({"k": keys[0]}))
            .await,
        "EMAIL_NOT_VERIFIED"
    );
}

#[tokio::test]
async fn a_free_key_is_linked_at_once_and_the_owner_is_emailed() {
    let app = app().await;
    let (_, buyer_email, _, ids, keys) = buyer_with_keys(&app, 1).await;
    let claimer = email("claimer");
    let (token, _) = app.verified_user(&claimer).await;
    // Typed sloppily: lower case, spaces, no dashes.
    let sloppy = format!("  {}  ", keys[0].replace('-', "").to_lowercase());
    let data = app.ok(Some(&token), CLAIM, json!({"k": sloppy})).await;
    assert_eq!(data["claimLicense"]["outcome"], "LINKED");
    assert_eq!(data["claimLicense"]["claim"]["status"], "APPROVED");
    assert_eq!(data["claimLicense"]["license"]["key"], keys[0]);
    let assigned = app
        .ok(
            Some(&token),
            "{ assignedLicenses { edges { node { id key } } } }",
            json!({}),
        )
        .await;
    assert_eq!(edges(&assigned, "assignedLicenses")[0]["id"], ids[0]);
    let mails = app.wait_mails(&buyer_email, 2).await;
    assert!(
        mails.iter().any(|m| m.subject.contains("was claimed")),
        "{mails:?}"
    );

    // Claiming again: nothing changes, no second claim.
    let again = app.ok(Some(&token), CLAIM, json!({"k": keys[0]})).await;
    assert_eq!(again["claimLicense"]["outcome"], "ALREADY_YOURS");
    assert_eq!(
        again["claimLicense"]["claim"]["id"],
        data["claimLicense"]["claim"]["id"]
    );
    let mine = app
        .ok(
            Some(&token),
            "{ myClaims { edges { node { id status } } } }",
            json!({}),
        )
        .await;
    assert_eq!(edges(&mine, "myClaims").len(), 1);
}

#[tokio::test]
async fn notify_on_claim_off_sends_no_email() {
    let app = app().await;
    let (buyer, buyer_email, _, _, keys) = buyer_with_keys(&app, 1).await;
    app.ok(
        Some(&buyer),
        SETTINGS,
        json!({"i": {"notifyOnClaim": false}}),
    )
    .await;
    let (token, _) = app.verified_user(&email("claimer")).await;
    let data = app.ok(Some(&token), CLAIM, json!({"k": keys[0]})).await;
    assert_eq!(data["claimLicense"]["outcome"], "LINKED");
    // Every email of the claim's transaction has gone out by now.
    app.wait_mail_drained().await;
    let mails = app.mails_to(&buyer_email);
    assert!(
        mails.iter().all(|m| !m.subject.contains("claimed")),
        "{mails:?}"
    );
}

#[tokio::test]
async fn manual_approval_makes_claims_pending_suppresses_email_and_approval_links() {
    let app = app().await;
    let (buyer, buyer_email, _, ids, keys) = buyer_with_keys(&app, 1).await;
    let settings = app
        .ok(
            Some(&buyer),
            SETTINGS,
            json!({"i": {"requireManualApproval": true}}),
        )
        .await;
    assert_eq!(
        settings["updateClaimSettings"]["claimSettings"]["requireManualApproval"],
        true
    );
    assert_eq!(
        settings["updateClaimSettings"]["claimSettings"]["notifyOnClaim"],
        true
    );
    let claimer = email("claimer");
    let (token, _) = app.verified_user(&claimer).await;
    let data = app.ok(Some(&token), CLAIM, json!({"k": keys[0]})).await;
    assert_eq!(data["claimLicense"]["outcome"], "PENDING");
    assert!(
        data["claimLicense"]["license"].is_null(),
        "a pending claim does not reveal the key"
    );
    let claim_id = data["claimLicense"]["claim"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A second attempt while pending returns the same claim.
    let again = app.ok(Some(&token), CLAIM, json!({"k": keys[0]})).await;
    assert_eq!(again["claimLicense"]["claim"]["id"], claim_id);

    let incoming = app
        .ok(Some(&buyer), INCOMING, json!({"s": "PENDING"}))
        .await;
    let pending = edges(&incoming, "claimRequests");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["claimer"]["email"], claimer);
    assert_eq!(pending[0]["license"]["key"], keys[0]);
    let license = app.ok(Some(&buyer), LICENSE, json!({"l": ids[0]})).await;
    assert!(license["license"]["assigneeEmail"].is_null());

    app.ok(Some(&buyer), APPROVE, json!({"c": claim_id})).await;
    let license = app.ok(Some(&buyer), LICENSE, json!({"l": ids[0]})).await;
    assert_eq!(license["license"]["assigneeEmail"], claimer);
    let outcome = app.wait_mails(&claimer, 2).await;
    assert!(
        outcome.iter().any(|m| m.subject.contains("approved")),
        "{outcome:?}"
    );
    // The owner got no "claimed" email: suppressed while manual approval
    // applies (every email queued so far has gone out by now).
    app.wait_mail_drained().await;
    let mails = app.mails_to(&buyer_email);
    assert!(
        mails.iter().all(|m| !m.subject.contains("claim")),
        "{mails:?}"
    );
    assert_eq!(
        app.err(Some(&buyer), APPROVE, json!({"c": claim_id})).await,
        "CONFLICT"
    );
    assert_eq!(
        app.err(Some(&buyer), DECLINE, json!({"c": claim_id})).await,
        "CONFLICT"
    );

    let events = app
        .ok(
            Some(&buyer),
            "{ events(first: 50) { edges { node { kind } } } }",
            json!({}),
        )
        .await;
    let kinds: Vec<String> = edges(&events, "events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    for kind in ["CLAIM_CREATED", "LICENSE_ASSIGNED", "CLAIM_APPROVED"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[tokio::test]
async fn order_override_beats_the_owner_setting() {
    let app = app().await;
    let (buyer, _, order, _, keys) = buyer_with_keys(&app, 3).await;
    let set = "mutation($o:ID!,$v:Boolean){ setOrderManualApproval(orderId:$o, value:$v){ requireManualApproval } }";
    // Owner off, order on → pending.
    let data = app
        .ok(Some(&buyer), set, json!({"o": order, "v": true}))
        .await;
    assert_eq!(
        data["setOrderManualApproval"]["requireManualApproval"],
        true
    );
    let (a, _) = app.verified_user(&email("a")).await;
    assert_eq!(
        app.ok(Some(&a), CLAIM, json!({"k": keys[0]})).await["claimLicense"]["outcome"],
        "PENDING"
    );
    // Owner on, order off → linked.
    app.ok(
        Some(&buyer),
        SETTINGS,
        json!({"i": {"requireManualApproval": true}}),
    )
    .await;
    app.ok(Some(&buyer), set, json!({"o": order, "v": false}))
        .await;
    let (b, _) = app.verified_user(&email("b")).await;
    assert_eq!(
        app.ok(Some(&b), CLAIM, json!({"k": keys[1]})).await["claimLicense"]["outcome"],
        "LINKED"
    );
    // Order inherits (null) → owner's setting (on) → pending.
    let data = app
        .ok(Some(&buyer), set, json!({"o": order, "v": null}))
        .await;
    assert!(data["setOrderManualApproval"]["requireManualApproval"].is_null());
    let (c, _) = app.verified_user(&email("c")).await;
    assert_eq!(
        app.ok(Some(&c), CLAIM, json!({"k": keys[2]})).await["claimLicense"]["outcome"],
        "PENDING"
    );
}

#[tokio::test]
async fn a_held_key_waits_unless_the_owner_allows_override() {
    let app = app().await;
    let (buyer, buyer_email, _, ids, keys) = buyer_with_keys(&app, 1).await;
    let holder = email("holder");
    app.ok(Some(&buyer), ASSIGN, json!({"l": ids[0], "e": holder}))
        .await;
    let (x, _) = app.verified_user(&email("x")).await;
    let data = app.ok(Some(&x), CLAIM, json!({"k": keys[0]})).await;
    assert_eq!(data["claimLicense"]["outcome"], "PENDING");
    let mails = app.wait_mails(&buyer_email, 2).await;
    assert!(
        mails
            .iter()
            .any(|m| m.subject.contains("waits for your approval")),
        "{mails:?}"
    );
    assert_eq!(
        app.ok(Some(&buyer), LICENSE, json!({"l": ids[0]})).await["license"]["assigneeEmail"],
        holder
    );

    app.ok(
        Some(&buyer),
        SETTINGS,
        json!({"i": {"allowOverrideAssignee": true}}),
    )
    .await;
    let y = email("y");
    let (y_token, _) = app.verified_user(&y).await;
    let data = app.ok(Some(&y_token), CLAIM, json!({"k": keys[0]})).await;
    assert_eq!(data["claimLicense"]["outcome"], "LINKED");
    assert_eq!(
        app.ok(Some(&buyer), LICENSE, json!({"l": ids[0]})).await["license"]["assigneeEmail"],
        y
    );
    // The previous assignee is told (after the assignment email).
    let told = app.wait_mails(&holder, 2).await;
    assert!(
        told.iter()
            .any(|m| m.subject.contains("claimed by someone else")),
        "{told:?}"
    );
}

#[tokio::test]
async fn approving_one_claim_declines_the_others() {
    let app = app().await;
    let (buyer, _, _, ids, keys) = buyer_with_keys(&app, 1).await;
    app.ok(
        Some(&buyer),
        SETTINGS,
        json!({"i": {"requireManualApproval": true}}),
    )
    .await;
    let mut claims = Vec::new();
    let mut emails = Vec::new();
    for name in ["p", "q", "r"] {
        let address = email(name);
        let (token, _) = app.verified_user(&address).await;
        let data = app.ok(Some(&token), CLAIM, json!({"k": keys[0]})).await;
        claims.push(
            data["claimLicense"]["claim"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        emails.push(address);
    }
    app.ok(Some(&buyer), APPROVE, json!({"c": claims[1]})).await;
    let all = app.ok(Some(&buyer), INCOMING, json!({})).await;
    let statuses: Vec<String> = edges(&all, "claimRequests")
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["DECLINED", "APPROVED", "DECLINED"]);
    assert_eq!(
        app.ok(Some(&buyer), LICENSE, json!({"l": ids[0]})).await["license"]["assigneeEmail"],
        emails[1]
    );
    let declined = app.wait_mails(&emails[0], 2).await;
    assert!(declined.iter().any(|m| m.subject.contains("declined")));
    assert_eq!(
        app.err(Some(&buyer), DECLINE, json!({"c": claims[2]}))
            .await,
        "CONFLICT"
    );
}

#[tokio::test]
async fn strangers_cannot_decide_claims_or_change_settings_of_others() {
    let app = app().await;
    let (buyer, _, order, ids, keys) = buyer_with_keys(&app, 1).await;
    app.ok(
        Some(&buyer),
        SETTINGS,
        json!({"i": {"requireManualApproval": true}}),
    )
    .await;
    let (claimer, _) = app.verified_user(&email("claimer")).await;
    let claim = app.ok(Some(&claimer), CLAIM, json!({"k": keys[0]})).await["claimLicense"]["claim"]
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (stranger, _) = app.verified_user(&email("stranger")).await;
    assert_eq!(
        app.err(Some(&stranger), APPROVE, json!({"c": claim})).await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(Some(&stranger), DECLINE, json!({"c": claim})).await,
        "NOT_FOUND"
    );
    // The claimer cannot approve their own claim either.
    assert_eq!(
        app.err(Some(&claimer), APPROVE, json!({"c": claim})).await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(Some(&stranger), APPROVE, json!({"c": "nope"}))
            .await,
        "NOT_FOUND"
    );
    let set = "mutation($o:ID!){ setOrderManualApproval(orderId:$o, value:false){ id } }";
    assert_eq!(
        app.err(Some(&stranger), set, json!({"o": order})).await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(None, SETTINGS, json!({"i": {"notifyOnClaim": false}}))
            .await,
        "UNAUTHENTICATED"
    );
    let incoming = app.ok(Some(&stranger), INCOMING, json!({})).await;
    assert!(edges(&incoming, "claimRequests").is_empty());
    // Nothing moved.
    assert!(
        app.ok(Some(&buyer), LICENSE, json!({"l": ids[0]})).await["license"]["assigneeEmail"]
            .is_null()
    );
    let me = app
        .ok(
            Some(&buyer),
            "{ me { claimSettings { requireManualApproval } } }",
            json!({}),
        )
        .await;
    assert_eq!(me["me"]["claimSettings"]["requireManualApproval"], true);
}

#[tokio::test]
async fn unknown_keys_and_keys_of_another_product_answer_alike() {
    let app = app().await;
    let (_, _, _, _, keys) = buyer_with_keys(&app, 1).await;
    let (token, _) = app.verified_user(&email("prober")).await;
    let unknown = app
        .error(Some(&token), CLAIM, json!({"k": "ZZZZ-ZZZZ-ZZZZ-ZZZZ"}))
        .await;
    let malformed = app.error(Some(&token), CLAIM, json!({"k": "hello"})).await;
    let other_product = app
        .error(Some(&token), CLAIM, json!({"k": keys[0], "p": "Other"}))
        .await;
    assert_eq!(unknown["extensions"]["code"], "NOT_FOUND");
    assert_eq!(unknown["message"], malformed["message"]);
    assert_eq!(unknown["message"], other_product["message"]);
    let right_product = app
        .ok(Some(&token), CLAIM, json!({"k": keys[0], "p": PRODUCT}))
        .await;
    assert_eq!(right_product["claimLicense"]["outcome"], "LINKED");
}

#[tokio::test]
async fn claims_are_rate_limited_per_account() {
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|c| c.claim_rate_per_minute = 3),
        ..Options::default()
    })
    .await;
    let (token, _) = app.verified_user(&email("guesser")).await;
    for _ in 0..3 {
        assert_eq!(
            app.err(Some(&token), CLAIM, json!({"k": "ZZZZ-ZZZZ-ZZZZ-ZZZZ"}))
                .await,
            "NOT_FOUND"
        );
    }
    let limited = app
        .error(Some(&token), CLAIM, json!({"k": "ZZZZ-ZZZZ-ZZZZ-ZZZZ"}))
        .await;
    assert_eq!(limited["extensions"]["code"], "RATE_LIMITED");
    assert!(limited["extensions"]["retryAfter"].as_u64().unwrap() >= 1);
    // The same client address is limited for another account too.
    let (other, _) = app.verified_user(&email("other")).await;
    assert_eq!(
        app.err(Some(&other), CLAIM, json!({"k": "ZZZZ-ZZZZ-ZZZZ-ZZZZ"}))
            .await,
        "RATE_LIMITED"
    );
}

#[tokio::test]
async fn assignee_organization_only_when_the_owner_allows_it() {
    let app = app().await;
    let (buyer, _, _, ids, _) = buyer_with_keys(&app, 1).await;
    let assignee = email("assignee");
    app.ok(Some(&buyer), ASSIGN, json!({"l": ids[0], "e": assignee}))
        .await;
    let (token, _) = app.verified_user(&assignee).await;
    let set = "mutation($l:ID!,$o:OrganizationInput){ setLicenseOrganization(input:{licenseId:$l, organization:$o}){ organization { name siret } } }";
    let org = json!({"name": "Acme", "siret": "73282932000074"});
    assert_eq!(
        app.err(Some(&token), set, json!({"l": ids[0], "o": org}))
            .await,
        "FORBIDDEN"
    );
    app.ok(
        Some(&buyer),
        SETTINGS,
        json!({"i": {"allowAssigneeOrganization": true}}),
    )
    .await;
    let bad = app
        .error(
            Some(&token),
            set,
            json!({"l": ids[0], "o": {"name": "Acme"}}),
        )
        .await;
    assert_eq!(bad["extensions"]["field"], "organization.siret");
    let data = app
        .ok(Some(&token), set, json!({"l": ids[0], "o": org}))
        .await;
    assert_eq!(
        data["setLicenseOrganization"]["organization"]["siret"],
        "73282932000074"
    );
    let (stranger, _) = app.verified_user(&email("stranger")).await;
    assert_eq!(
        app.err(Some(&stranger), set, json!({"l": ids[0], "o": org}))
            .await,
        "NOT_FOUND"
    );
    // The owner also cannot use the assignee's mutation on a key that is not assigned to them.
    assert_eq!(
        app.err(Some(&buyer), set, json!({"l": ids[0], "o": org}))
            .await,
        "NOT_FOUND"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_accounts_claiming_one_free_key_make_exactly_one_assignee() {
    let app = app().await;
    let (buyer, _, _, ids, keys) = buyer_with_keys(&app, 1).await;
    let tokens = futures_util::future::join_all((0..100).map(|i| {
        let app = &app;
        async move { app.verified_user(&email(&format!("racer{i}"))).await.0 }
    }))
    .await;
    let results = futures_util::future::join_all(
        tokens
            .iter()
            .map(|t| app.gql(Some(t), CLAIM, json!({"k": keys[0]}))),
    )
    .await;
    let outcomes: Vec<&str> = results
        .iter()
        .map(|r| {
            r["data"]["claimLicense"]["outcome"]
                .as_str()
                .unwrap_or("ERROR")
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "LINKED").count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "PENDING").count(),
        99,
        "{outcomes:?}"
    );
    let winner = results
        .iter()
        .find(|r| r["data"]["claimLicense"]["outcome"] == "LINKED")
        .map(|r| r["data"]["claimLicense"]["license"]["assigneeEmail"].clone())
        .unwrap();
    assert_eq!(
        app.ok(Some(&buyer), LICENSE, json!({"l": ids[0]})).await["license"]["assigneeEmail"],
        winner
    );
}

/// The pending-claim check rides in the claim's insert, under the key's
/// lock: a person's claims of one key sent at once make one pending claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_person_claiming_a_key_ten_times_at_once_makes_one_pending_claim() {
    let app = app().await;
    let (buyer, _, _, _, keys) = buyer_with_keys(&app, 1).await;
    app.ok(
        Some(&buyer),
        SETTINGS,
        json!({"i": {"requireManualApproval": true}}),
    )
    .await;
    let (token, _) = app.verified_user(&email("eager")).await;
    let results = futures_util::future::join_all(
        (0..10).map(|_| app.gql(Some(&token), CLAIM, json!({"k": keys[0]}))),
    )
    .await;
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .map(|r| {
            assert_eq!(r["data"]["claimLicense"]["outcome"], "PENDING", "{r}");
            r["data"]["claimLicense"]["claim"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let incoming = app
        .ok(Some(&buyer), INCOMING, json!({"s": "PENDING"}))
        .await;
    assert_eq!(edges(&incoming, "claimRequests").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn competing_approvals_at_once_make_exactly_one_winner() {
    let app = app().await;
    let (buyer, _, _, ids, keys) = buyer_with_keys(&app, 1).await;
    app.ok(
        Some(&buyer),
        SETTINGS,
        json!({"i": {"requireManualApproval": true}}),
    )
    .await;
    let mut claims = Vec::new();
    for name in ["left", "right"] {
        let (token, _) = app.verified_user(&email(name)).await;
        let data = app.ok(Some(&token), CLAIM, json!({"k": keys[0]})).await;
        claims.push(
            data["claimLicense"]["claim"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Two sessions of the owner approve the two claims at the same moment.
    let me = app.ok(Some(&buyer), "{ me { email } }", json!({})).await;
    let (second_session, _) = app.sign_in(me["me"]["email"].as_str().unwrap()).await;
    let (a, b) = tokio::join!(
        app.gql(Some(&buyer), APPROVE, json!({"c": claims[0]})),
        app.gql(Some(&second_session), APPROVE, json!({"c": claims[1]})),
    );
    let wins = [&a, &b]
        .iter()
        .filter(|r| r.get("errors").is_none())
        .count();
    assert_eq!(wins, 1, "{a} {b}");
    let loser = if a.get("errors").is_some() { &a } else { &b };
    assert_eq!(loser["errors"][0]["extensions"]["code"], "CONFLICT");
    let all = app.ok(Some(&buyer), INCOMING, json!({})).await;
    let approved = edges(&all, "claimRequests")
        .iter()
        .filter(|c| c["status"] == "APPROVED")
        .count();
    assert_eq!(approved, 1);
    assert!(
        app.ok(Some(&buyer), LICENSE, json!({"l": ids[0]})).await["license"]["assigneeEmail"]
            .is_string()
    );
}

#[tokio::test]
async fn a_page_of_claims_costs_the_same_statements_whatever_its_length() {
    // Background workers only run when woken, so they do not add to the count.
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|c| {
            c.claim_rate_per_minute = 10_000;
            c.job_interval_ms = 3_600_000;
        }),
        ..Options::default()
    })
    .await;
    let (_, buyer_email, _, _, keys) = buyer_with_keys(&app, 6).await;
    let (buyer, _) = app.sign_in(&buyer_email).await;
    app.ok(
        Some(&buyer),
        SETTINGS,
        json!({"i": {"requireManualApproval": true}}),
    )
    .await;
    let claimers = [email("p"), email("q")];
    let mut tokens = Vec::new();
    for claimer in &claimers {
        tokens.push(app.verified_user(claimer).await.0);
    }
    for (n, key) in keys.iter().enumerate() {
        let data = app.ok(Some(&tokens[n % 2]), CLAIM, json!({"k": key})).await;
        assert_eq!(data["claimLicense"]["outcome"], "PENDING");
    }
    // Let background mail sending settle so it does not count.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let page = "query($n:Int!){ claimRequests(status: PENDING, first: $n){ edges { node { id claimer { email } license { id key order { number } } } } } }";
    let mut counts = Vec::new();
    for n in [2, 6] {
        // The fewest of a few tries is the request's own.
        let mut fewest = f64::MAX;
        let mut data = Value::Null;
        for _ in 0..3 {
            let before = app.metric("keyledger_sql_statements_total").await;
            data = app.ok(Some(&buyer), page, json!({"n": n})).await;
            let after = app.metric("keyledger_sql_statements_total").await;
            fewest = fewest.min(after - before);
        }
        counts.push(fewest);
        let claims = edges(&data, "claimRequests");
        assert_eq!(claims.len(), n, "{data}");
        for (i, claim) in claims.iter().enumerate() {
            assert_eq!(claim["claimer"]["email"], claimers[i % 2], "{data}");
            assert_eq!(claim["license"]["key"], keys[i], "{data}");
            assert!(claim["license"]["order"]["number"].is_string(), "{data}");
        }
    }
    assert_eq!(counts[0], counts[1], "statements per request: {counts:?}");
    // The claimers ride on the page's statement: asking for them costs none.
    let without_claimers = page.replace(" claimer { email }", "");
    let mut fewest = f64::MAX;
    for _ in 0..3 {
        let before = app.metric("keyledger_sql_statements_total").await;
        app.ok(Some(&buyer), &without_claimers, json!({"n": 6}))
            .await;
        let after = app.metric("keyledger_sql_statements_total").await;
        fewest = fewest.min(after - before);
    }
    assert_eq!(
        fewest, counts[1],
        "without claimers, with them: {fewest}, {counts:?}"
    );
    // The claimers see their pending claims, not the keys (not theirs yet).
    let mine = app
        .ok(
            Some(&tokens[0]),
            "{ myClaims { edges { node { claimer { email } license { key } } } } }",
            json!({}),
        )
        .await;
    let mine = edges(&mine, "myClaims");
    assert_eq!(mine.len(), 3);
    assert!(
        mine.iter()
            .all(|c| c["license"].is_null() && c["claimer"]["email"] == claimers[0])
    );
}
