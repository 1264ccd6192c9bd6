//! License requests and the 7-day expiry.
use serde_json::{Value, json};

use crate::harness::{Options, TestApp, unique};

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

const REQUEST: &str = "mutation($b:String!,$m:String){ requestLicense(input:{buyerEmail:$b, message:$m}){ request { id status buyerEmail message } } }";
const LIST: &str = "query($d:Direction!,$s:ApprovalStatus){ licenseRequests(direction:$d, status:$s){ edges { node { id status message requester { email } license { key } } } } }";
const APPROVE: &str =
    "mutation($r:ID!,$l:ID!){ approveLicenseRequest(requestId:$r, licenseId:$l){ id status } }";
const DECLINE: &str = "mutation($r:ID!){ declineLicenseRequest(requestId:$r){ id status } }";
const CLAIM: &str = "mutation($k:String!){ claimLicense(key:$k){ outcome claim { id status } } }";

fn nodes(data: &Value, field: &str) -> Vec<Value> {
    data[field]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["node"].clone())
        .collect()
}

async fn request(app: &TestApp, token: &str, buyer: &str, message: &str) -> String {
    let data = app
        .ok(Some(token), REQUEST, json!({"b": buyer, "m": message}))
        .await;
    data["requestLicense"]["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_request_reaches_the_buyer_who_approves_with_a_free_key() {
    let app = TestApp::spawn().await;
    let buyer_email = email("buyer");
    let (buyer, _) = app.verified_user(&buyer_email).await;
    let (_, ids, keys) = app.paid_order(&buyer, 2).await;
    let requester_email = email("requester");
    let (requester, _) = app.verified_user(&requester_email).await;
    let id = request(
        &app,
        &requester,
        &buyer_email.to_uppercase(),
        "<script>alert(1)</script> please",
    )
    .await;

    let mail = app
        .wait_mails(&buyer_email, 2)
        .await
        .into_iter()
        .find(|m| m.subject.contains("asks you"))
        .unwrap();
    assert!(
        mail.body.contains("&lt;script&gt;"),
        "HTML part escapes the message"
    );
    let incoming = app
        .ok(Some(&buyer), LIST, json!({"d": "INCOMING", "s": "PENDING"}))
        .await;
    let incoming = nodes(&incoming, "licenseRequests");
    assert_eq!(incoming.len(), 1);
    assert_eq!(incoming[0]["requester"]["email"], requester_email);
    assert_eq!(incoming[0]["message"], "<script>alert(1)</script> please");

    // Someone else's key, or an assigned key, cannot be given.
    let (other_buyer, _) = app.verified_user(&email("other")).await;
    let (_, other_ids, _) = app.paid_order(&other_buyer, 1).await;
    assert_eq!(
        app.err(Some(&buyer), APPROVE, json!({"r": id, "l": other_ids[0]}))
            .await,
        "CONFLICT"
    );
    app.ok(
        Some(&buyer),
        "mutation($l:ID!){ assignLicense(input:{licenseId:$l, email:\"x@example.com\"}){ id } }",
        json!({"l": ids[1]}),
    )
    .await;
    assert_eq!(
        app.err(Some(&buyer), APPROVE, json!({"r": id, "l": ids[1]}))
            .await,
        "CONFLICT"
    );
    // A stranger cannot act on it.
    assert_eq!(
        app.err(
            Some(&other_buyer),
            APPROVE,
            json!({"r": id, "l": other_ids[0]})
        )
        .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(Some(&other_buyer), DECLINE, json!({"r": id})).await,
        "NOT_FOUND"
    );

    let approved = app
        .ok(Some(&buyer), APPROVE, json!({"r": id, "l": ids[0]}))
        .await;
    assert_eq!(approved["approveLicenseRequest"]["status"], "APPROVED");
    assert_eq!(
        app.err(Some(&buyer), DECLINE, json!({"r": id})).await,
        "CONFLICT"
    );
    let assigned = app
        .ok(
            Some(&requester),
            "{ assignedLicenses { edges { node { key } } } }",
            json!({}),
        )
        .await;
    assert_eq!(nodes(&assigned, "assignedLicenses")[0]["key"], keys[0]);
    let outcome = app.wait_mails(&requester_email, 2).await;
    assert!(
        outcome
            .iter()
            .any(|m| m.subject.contains("approved") && m.body.contains(&keys[0]))
    );
    let outgoing = app
        .ok(Some(&requester), LIST, json!({"d": "OUTGOING"}))
        .await;
    assert_eq!(nodes(&outgoing, "licenseRequests")[0]["status"], "APPROVED");
    assert_eq!(
        nodes(&outgoing, "licenseRequests")[0]["license"]["key"],
        keys[0]
    );
}

#[tokio::test]
async fn declining_tells_the_requester() {
    let app = TestApp::spawn().await;
    let buyer_email = email("buyer");
    let (buyer, _) = app.verified_user(&buyer_email).await;
    let requester_email = email("requester");
    let (requester, _) = app.verified_user(&requester_email).await;
    let id = request(&app, &requester, &buyer_email, "").await;
    let declined = app.ok(Some(&buyer), DECLINE, json!({"r": id})).await;
    assert_eq!(declined["declineLicenseRequest"]["status"], "DECLINED");
    let mails = app.wait_mails(&requester_email, 2).await;
    assert!(mails.iter().any(|m| m.subject.contains("declined")));
}

#[tokio::test]
async fn requests_validate_input_and_need_a_verified_requester() {
    let app = TestApp::spawn().await;
    let (requester, _) = app.verified_user(&email("requester")).await;
    let (unverified, _) = app.unverified_user(&email("unverified")).await;
    assert_eq!(
        app.err(Some(&unverified), REQUEST, json!({"b": "b@example.com"}))
            .await,
        "EMAIL_NOT_VERIFIED"
    );
    assert_eq!(
        app.err(None, REQUEST, json!({"b": "b@example.com"})).await,
        "UNAUTHENTICATED"
    );
    let bad = app
        .error(Some(&requester), REQUEST, json!({"b": "nope"}))
        .await;
    assert_eq!(bad["extensions"]["field"], "buyerEmail");
    let long = app
        .error(
            Some(&requester),
            REQUEST,
            json!({"b": "b@example.com", "m": "x".repeat(1001)}),
        )
        .await;
    assert_eq!(long["extensions"]["field"], "message");
    // The buyer must verify before seeing requests addressed to them.
    let incoming = "query{ licenseRequests(direction: INCOMING){ edges { node { id } } } }";
    assert_eq!(
        app.err(Some(&unverified), incoming, json!({})).await,
        "EMAIL_NOT_VERIFIED"
    );
}

#[tokio::test]
async fn a_buyer_who_verifies_later_finds_the_request_and_its_event() {
    let app = TestApp::spawn().await;
    let (requester, _) = app.verified_user(&email("requester")).await;
    let buyer_email = email("late");
    let id = request(&app, &requester, &buyer_email, "hello").await;
    let (buyer, _) = app.verified_user(&buyer_email).await;
    let incoming = app.ok(Some(&buyer), LIST, json!({"d": "INCOMING"})).await;
    assert_eq!(nodes(&incoming, "licenseRequests")[0]["id"], id);
    let events = app
        .ok(
            Some(&buyer),
            "{ events { edges { node { kind request { id } } } } }",
            json!({}),
        )
        .await;
    let events = nodes(&events, "events");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "REQUEST_CREATED" && e["request"]["id"] == id),
        "{events:?}"
    );
}

#[tokio::test]
async fn pending_requests_and_claims_expire_after_seven_days() {
    let app = TestApp::spawn().await;
    let buyer_email = email("buyer");
    let (buyer, _) = app.verified_user(&buyer_email).await;
    app.ok(
        Some(&buyer),
        "mutation{ updateClaimSettings(input:{requireManualApproval:true}){ id } }",
        json!({}),
    )
    .await;
    let (_, _, keys) = app.paid_order(&buyer, 1).await;
    let (requester, _) = app.verified_user(&email("requester")).await;
    let request_id = request(&app, &requester, &buyer_email, "").await;
    let claim = app.ok(Some(&requester), CLAIM, json!({"k": keys[0]})).await;
    let claim_id = claim["claimLicense"]["claim"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A minute before the deadline both are still pending.
    app.clock
        .advance(chrono::Duration::days(7) - chrono::Duration::minutes(1));
    let pending = app
        .ok(Some(&buyer), LIST, json!({"d": "INCOMING", "s": "PENDING"}))
        .await;
    assert_eq!(nodes(&pending, "licenseRequests").len(), 1);
    let claims = app
        .ok(
            Some(&buyer),
            "{ claimRequests(status: PENDING){ edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(nodes(&claims, "claimRequests").len(), 1);

    // Two minutes later they are gone from pending lists, before any sweep.
    app.clock.advance(chrono::Duration::minutes(2));
    let pending = app
        .ok(Some(&buyer), LIST, json!({"d": "INCOMING", "s": "PENDING"}))
        .await;
    assert!(nodes(&pending, "licenseRequests").is_empty());
    let expired = app
        .ok(Some(&buyer), LIST, json!({"d": "INCOMING", "s": "EXPIRED"}))
        .await;
    assert_eq!(nodes(&expired, "licenseRequests")[0]["id"], request_id);
    let claims = app
        .ok(
            Some(&buyer),
            "{ claimRequests(status: PENDING){ edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert!(nodes(&claims, "claimRequests").is_empty());
    assert_eq!(
        app.err(Some(&buyer), DECLINE, json!({"r": request_id}))
            .await,
        "CONFLICT"
    );
    assert_eq!(
        app.err(
            Some(&buyer),
            "mutation($c:ID!){ approveClaim(claimId:$c){ id } }",
            json!({"c": claim_id})
        )
        .await,
        "CONFLICT"
    );

    // The sweeper then records one REQUEST_EXPIRED per item, once.
    let mut expired_events = Vec::new();
    for _ in 0..100 {
        let events = app
            .ok(
                Some(&requester),
                "{ events(first: 50) { edges { node { kind claim { id } request { id } } } } }",
                json!({}),
            )
            .await;
        expired_events = nodes(&events, "events")
            .into_iter()
            .filter(|e| e["kind"] == "REQUEST_EXPIRED")
            .collect();
        if expired_events.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Later sweeps record nothing more (run here, so that they did run).
    for _ in 0..2 {
        let expired = keyledger::domain::expiry::sweep(&app.app.state.ctx)
            .await
            .map_err(|e| e.message())
            .expect("sweep");
        assert_eq!(expired, 0, "a later sweep expired again");
    }
    let events = app
        .ok(
            Some(&requester),
            "{ events(first: 50) { edges { node { kind claim { id } request { id } } } } }",
            json!({}),
        )
        .await;
    let again: Vec<Value> = nodes(&events, "events")
        .into_iter()
        .filter(|e| e["kind"] == "REQUEST_EXPIRED")
        .collect();
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.iter().any(|e| e["request"]["id"] == request_id));
    assert!(again.iter().any(|e| e["claim"]["id"] == claim_id));
    assert_eq!(expired_events.len(), 2);
}

#[tokio::test]
async fn a_page_of_incoming_requests_reads_its_requesters_in_its_own_statement() {
    // Background workers only run when woken, so they do not add to the count.
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|config| config.job_interval_ms = 3_600_000),
        ..Options::default()
    })
    .await;
    let buyer_email = email("buyer");
    app.verified_user(&buyer_email).await;
    let mut requesters = Vec::new();
    for n in 0..3 {
        let requester_email = email("requester");
        let (requester, _) = app.verified_user(&requester_email).await;
        request(&app, &requester, &buyer_email, &format!("message {n}")).await;
        requesters.push(requester_email);
    }
    // Let background mail sending settle so it does not count.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut counts = Vec::new();
    for node in ["id message", "id message requester { email }"] {
        let q = format!(
            "{{ licenseRequests(direction: INCOMING) {{ edges {{ node {{ {node} }} }} }} }}"
        );
        // A session of its own, so that each request reads it.
        let (session, _) = app.sign_in(&buyer_email).await;
        let before = app.metric("keyledger_sql_statements_total").await;
        let data = app.ok(Some(&session), &q, json!({})).await;
        let after = app.metric("keyledger_sql_statements_total").await;
        counts.push(after - before);
        let listed = nodes(&data, "licenseRequests");
        assert_eq!(listed.len(), 3);
        if node.contains("requester") {
            for (n, item) in listed.iter().enumerate() {
                assert_eq!(item["message"], format!("message {n}"));
                assert_eq!(item["requester"]["email"], requesters[n].as_str());
            }
        }
    }
    assert_eq!(counts[0], counts[1], "statements per request: {counts:?}");
}
