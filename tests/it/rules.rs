//! Rules of product.md that cut across areas: which events each decision
//! emits and to whom, a rolled-back change leaves no trace, secrets are
//! stored only hashed, and background work is done once when instances share
//! a database.
use std::sync::Arc;

use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::harness::{Options, TestApp, unique};

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

const EVENTS: &str = "{ events(first: 100) { edges { node { kind order { id } license { id } claim { id } request { id } transfer { id } } } } }";

/// The caller's events as (kind, the id of the object `field` names).
async fn events(app: &TestApp, token: &str, field: &str) -> Vec<(String, Value)> {
    let data = app.ok(Some(token), EVENTS, json!({})).await;
    data["events"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            let node = &e["node"];
            (
                node["kind"].as_str().unwrap().to_owned(),
                node[field]["id"].clone(),
            )
        })
        .collect()
}

/// How many of the caller's events are of `kind` and about object `id`.
async fn count(app: &TestApp, token: &str, kind: &str, field: &str, id: &str) -> usize {
    events(app, token, field)
        .await
        .iter()
        .filter(|(k, object)| k == kind && object == id)
        .count()
}

fn id(data: &Value, path: &[&str]) -> String {
    let mut value = data;
    for key in path {
        value = &value[*key];
    }
    value.as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn each_decision_emits_its_event_to_the_parties_and_no_one_else() {
    let app = TestApp::spawn().await;
    let buyer_email = email("buyer");
    let (buyer, _) = app.verified_user(&buyer_email).await;
    let (other, _) = app.verified_user(&email("other")).await;
    let (stranger, _) = app.verified_user(&email("stranger")).await;
    app.ok(
        Some(&buyer),
        "mutation{ updateClaimSettings(input:{requireManualApproval:true}){ id } }",
        json!({}),
    )
    .await;
    let (order, licenses, keys) = app.paid_order(&buyer, 2).await;

    // An owner's explicit decline of a pending claim.
    let claimed = app
        .ok(
            Some(&other),
            "mutation($k:String!){ claimLicense(key:$k){ claim { id status } } }",
            json!({"k": keys[0]}),
        )
        .await;
    assert_eq!(claimed["claimLicense"]["claim"]["status"], "PENDING");
    let claim = id(&claimed, &["claimLicense", "claim", "id"]);
    let declined = app
        .ok(
            Some(&buyer),
            "mutation($c:ID!){ declineClaim(claimId:$c){ status } }",
            json!({"c": claim}),
        )
        .await;
    assert_eq!(declined["declineClaim"]["status"], "DECLINED");

    // Two requests: one approved with a key, one declined.
    let request = "mutation($b:String!){ requestLicense(input:{buyerEmail:$b}){ request { id } } }";
    let first = id(
        &app.ok(Some(&other), request, json!({"b": buyer_email}))
            .await,
        &["requestLicense", "request", "id"],
    );
    let second = id(
        &app.ok(Some(&other), request, json!({"b": buyer_email}))
            .await,
        &["requestLicense", "request", "id"],
    );
    app.ok(
        Some(&buyer),
        "mutation($r:ID!,$l:ID!){ approveLicenseRequest(requestId:$r, licenseId:$l){ id } }",
        json!({"r": first, "l": licenses[1]}),
    )
    .await;
    app.ok(
        Some(&buyer),
        "mutation($r:ID!){ declineLicenseRequest(requestId:$r){ id } }",
        json!({"r": second}),
    )
    .await;

    // A transfer started, then cancelled by the owner.
    let started = app
        .ok(
            Some(&buyer),
            "mutation($o:ID!,$e:String!){ startOrderTransfer(orderId:$o, newOwnerEmail:$e){ id } }",
            json!({"o": order, "e": app.ok(Some(&other), "{ me { email } }", json!({})).await["me"]["email"]}),
        )
        .await;
    let transfer = id(&started, &["startOrderTransfer", "id"]);
    app.ok(
        Some(&buyer),
        "mutation($t:ID!){ cancelOrderTransfer(transferId:$t){ status } }",
        json!({"t": transfer}),
    )
    .await;

    for (who, token) in [("owner", &buyer), ("the other party", &other)] {
        for (kind, field, object) in [
            ("CLAIM_DECLINED", "claim", &claim),
            ("REQUEST_APPROVED", "request", &first),
            ("REQUEST_DECLINED", "request", &second),
            ("TRANSFER_CANCELLED", "transfer", &transfer),
        ] {
            assert_eq!(
                count(&app, token, kind, field, object).await,
                1,
                "{who} should see one {kind}"
            );
        }
    }
    assert_eq!(events(&app, &stranger, "order").await, vec![]);
}

/// Make every insert into the mail queue for an address starting with
/// `trap` fail, inside whatever transaction does it.
async fn trap_mail_to_trap_addresses(app: &TestApp) {
    let db = &app.app.state.ctx.db;
    let statements: &[&str] = match db.get_database_backend() {
        DatabaseBackend::Postgres => &[
            "CREATE FUNCTION kl_trap() RETURNS trigger AS $$ BEGIN \
             IF NEW.recipient LIKE 'trap%' THEN RAISE EXCEPTION 'trapped'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER kl_trap BEFORE INSERT ON mail_queue \
             FOR EACH ROW EXECUTE FUNCTION kl_trap()",
        ],
        _ => &["CREATE TRIGGER kl_trap BEFORE INSERT ON mail_queue \
             WHEN NEW.recipient LIKE 'trap%' BEGIN SELECT RAISE(ABORT, 'trapped'); END"],
    };
    for statement in statements {
        db.execute_unprepared(statement).await.expect("trigger");
    }
}

#[tokio::test]
async fn a_change_that_fails_after_writing_its_event_leaves_no_trace() {
    let app = TestApp::spawn().await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    let (_, licenses, _) = app.paid_order(&buyer, 1).await;
    trap_mail_to_trap_addresses(&app).await;
    let before = events(&app, &buyer, "license").await;

    // The assignment writes the key, its history and its event, then fails
    // queueing the email: the whole transaction is rolled back.
    let trapped = format!("trap-{}", email("assignee"));
    let assign =
        "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }";
    let error = app
        .error(
            Some(&buyer),
            assign,
            json!({"l": licenses[0], "e": trapped}),
        )
        .await;
    assert_eq!(error["extensions"]["code"], "INTERNAL", "{error}");
    assert!(
        !error.to_string().contains("trapped"),
        "the cause leaked: {error}"
    );

    // A later change that commits is the barrier: its event and email exist,
    // so had the failed one left anything behind it would show by now.
    let assignee = email("assignee");
    app.ok(
        Some(&buyer),
        assign,
        json!({"l": licenses[0], "e": assignee}),
    )
    .await;
    app.wait_mail_drained().await;
    let after = events(&app, &buyer, "license").await;
    assert_eq!(
        after[before.len()..],
        [("LICENSE_ASSIGNED".to_owned(), json!(licenses[0]))],
        "only the committed change has an event"
    );
    let history = app
        .ok(
            Some(&buyer),
            "query($l:ID!){ license(id:$l){ assigneeEmail history { edges { node { kind changes } } } } }",
            json!({"l": licenses[0]}),
        )
        .await;
    assert_eq!(history["license"]["assigneeEmail"], assignee);
    let history = history["license"]["history"]["edges"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert!(app.mails_to(&trapped).is_empty());
    assert_eq!(app.mails_to(&assignee).len(), 1);
    let queued = entity::mail_queue::Entity::find()
        .filter(entity::mail_queue::Column::Recipient.like("trap%"))
        .all(&app.app.state.ctx.db)
        .await
        .unwrap();
    assert!(queued.is_empty(), "{queued:?}");
}

#[tokio::test]
async fn passwords_and_tokens_are_stored_only_hashed() {
    let app = TestApp::spawn().await;
    let owner_email = email("owner");
    let (owner, _) = app.verified_user(&owner_email).await;
    let (session, _) = app.sign_in(&owner_email).await;
    let new_owner = email("new-owner");
    app.verified_user(&new_owner).await;
    let (order, _, _) = app.paid_order(&owner, 1).await;
    app.ok(
        Some(&owner),
        "mutation($o:ID!,$e:String!){ startOrderTransfer(orderId:$o, newOwnerEmail:$e){ id } }",
        json!({"o": order, "e": new_owner}),
    )
    .await;
    let verification = app.verification_token(&owner_email).await;
    let transfer = app.transfer_token(&new_owner).await;
    let db = &app.app.state.ctx.db;

    let account = entity::account::Entity::find()
        .filter(entity::account::Column::Email.eq(owner_email.as_str()))
        .one(db)
        .await
        .unwrap()
        .expect("the account");
    assert!(
        account.password_hash.starts_with("$argon2id$"),
        "{}",
        account.password_hash
    );
    assert!(!account.password_hash.contains(crate::harness::PASSWORD));

    let secrets = [&owner, &session, &verification, &transfer];
    let mut stored = Vec::new();
    for row in entity::session::Entity::find().all(db).await.unwrap() {
        stored.push(row.token_hash);
    }
    for row in entity::email_verification::Entity::find()
        .all(db)
        .await
        .unwrap()
    {
        stored.push(row.token_hash);
    }
    for row in entity::order_transfer::Entity::find()
        .all(db)
        .await
        .unwrap()
    {
        stored.push(row.token_hash);
    }
    assert!(stored.len() >= 4, "{stored:?}");
    for secret in secrets {
        assert!(secret.len() >= 32, "a token too short to be a secret");
        for hash in &stored {
            assert!(
                !hash.contains(secret.as_str()) && !secret.contains(hash.as_str()),
                "a token is stored as it was given out"
            );
        }
    }
}

/// A second instance on the first one's database (and mail folder).
async fn second_instance(app: &TestApp) -> TestApp {
    TestApp::spawn_with(Options {
        db: Some(Arc::clone(&app.db)),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn two_instances_sharing_the_queue_send_each_email_once() {
    let first = TestApp::spawn().await;
    let second = second_instance(&first).await;
    let (buyer, _) = first.verified_user(&email("buyer")).await;
    let (_, licenses, _) = first.paid_order(&buyer, 24).await;
    let assign =
        "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }";
    let recipients: Vec<String> = (0..licenses.len()).map(|_| email("assignee")).collect();
    // Half the changes on each instance: both workers are woken and race.
    let writes = licenses
        .iter()
        .zip(&recipients)
        .enumerate()
        .map(|(i, (l, e))| {
            let app = if i % 2 == 0 { &first } else { &second };
            app.ok(Some(&buyer), assign, json!({"l": l, "e": e}))
        });
    futures_util::future::join_all(writes).await;
    first.wait_mail_drained().await;
    for recipient in &recipients {
        assert_eq!(first.mails_to(recipient).len(), 1, "{recipient}");
    }
}

#[tokio::test]
async fn two_sweepers_expire_each_pending_item_once() {
    let first = TestApp::spawn().await;
    let second = second_instance(&first).await;
    let buyer_email = email("buyer");
    let (buyer, _) = first.verified_user(&buyer_email).await;
    first
        .ok(
            Some(&buyer),
            "mutation{ updateClaimSettings(input:{requireManualApproval:true}){ id } }",
            json!({}),
        )
        .await;
    let (_, _, keys) = first.paid_order(&buyer, 6).await;
    let (requester, _) = first.verified_user(&email("requester")).await;
    for key in &keys {
        first
            .ok(
                Some(&requester),
                "mutation($k:String!){ claimLicense(key:$k){ claim { id } } }",
                json!({"k": key}),
            )
            .await;
        first
            .ok(
                Some(&requester),
                "mutation($b:String!){ requestLicense(input:{buyerEmail:$b}){ request { id } } }",
                json!({"b": buyer_email}),
            )
            .await;
    }
    let week = chrono::Duration::days(7) + chrono::Duration::minutes(1);
    first.clock.advance(week);
    second.clock.advance(week);

    // Both instances sweep at once, several times over.
    let sweeps = (0..6).map(|i| {
        let ctx = if i % 2 == 0 {
            &first.app.state.ctx
        } else {
            &second.app.state.ctx
        };
        keyledger::domain::expiry::sweep(ctx)
    });
    let results = futures_util::future::join_all(sweeps).await;
    let swept: usize = results
        .into_iter()
        .map(|r| r.map_err(|e| e.message()).expect("sweep"))
        .sum();
    // The instances' own background sweepers may have taken some of them,
    // so the sweeps here expired at most all; the events say each went once.
    assert!(swept <= keys.len() * 2, "{swept} items expired");
    let expired = events(&first, &requester, "order")
        .await
        .into_iter()
        .filter(|(kind, _)| kind == "REQUEST_EXPIRED")
        .count();
    assert_eq!(expired, keys.len() * 2);
}

#[tokio::test]
async fn an_activation_racing_a_transfer_acceptance_has_a_serial_outcome() {
    let app = TestApp::spawn().await;
    let owner_email = email("owner");
    let (owner, _) = app.verified_user(&owner_email).await;
    let new_owner_email = email("new-owner");
    let (new_owner, _) = app.verified_user(&new_owner_email).await;
    let activate = "mutation($k:String!,$f:String!){ activateLicense(key:$k, fingerprint:$f, name:\"laptop\"){ fingerprint } }";
    for round in 0..6 {
        let (order, licenses, keys) = app.paid_order(&owner, 1).await;
        app.ok(
            Some(&owner),
            "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }",
            json!({"l": licenses[0], "e": email("assignee")}),
        )
        .await;
        app.ok(
            Some(&owner),
            "mutation($o:ID!,$e:String!){ startOrderTransfer(orderId:$o, newOwnerEmail:$e){ id } }",
            json!({"o": order, "e": new_owner_email}),
        )
        .await;
        // This round's transfer email is written, so the newest one is it
        // (not the previous round's).
        app.wait_mail_drained().await;
        let token = app.transfer_token(&new_owner_email).await;
        let fingerprint = format!("device-{round}");
        let (activated, accepted) = tokio::join!(
            app.gql(None, activate, json!({"k": keys[0], "f": fingerprint})),
            app.gql(
                Some(&new_owner),
                "mutation($t:String!){ acceptOrderTransfer(token:$t){ status } }",
                json!({"t": token}),
            ),
        );
        // Either order of the two is allowed; nothing else is.
        let activated_ok = activated["errors"].is_null();
        let accepted_ok = accepted["errors"].is_null();
        assert!(activated_ok, "activation failed: {activated}");
        if !accepted_ok {
            assert_eq!(
                accepted["errors"][0]["extensions"]["code"], "DEVICE_ACTIVE",
                "{accepted}"
            );
        }
        // Whoever holds the order sees the device on its key.
        let holder = if accepted_ok { &new_owner } else { &owner };
        let seen = app
            .ok(
                Some(holder),
                "query($l:ID!){ license(id:$l){ activations { fingerprint } } }",
                json!({"l": licenses[0]}),
            )
            .await;
        assert_eq!(
            seen["license"]["activations"][0]["fingerprint"], fingerprint,
            "{seen}"
        );
    }
}
