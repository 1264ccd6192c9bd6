//! Administration: the filters of `admin { … }`, their cursors under
//! concurrent writes, the support actions (disable, enable, revoke
//! sessions, resend an email, acting on a user's behalf) and their audit,
//! and what non-admins and hostile inputs get.
use serde_json::{Value, json};

use crate::{
    events::{Protocol, Sub, wait_subscribers},
    harness::{PASSWORD, TestApp, unique},
};

fn email(tag: &str) -> String {
    format!("{}@admin-tests.example.com", unique(tag))
}

const ASSIGN: &str =
    "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }";
const DISABLE: &str =
    "mutation($e:String!,$r:String!){ disableAccount(email:$e, reason:$r){ id email disabled } }";
const ENABLE: &str =
    "mutation($e:String!,$r:String!){ enableAccount(email:$e, reason:$r){ id disabled } }";
const REVOKE: &str = "mutation($e:String!,$r:String!){ revokeSessions(email:$e, reason:$r) }";
const RESEND: &str = "mutation($k:ResendEmailKind!,$e:String!,$t:ID,$r:String){ resendEmail(kind:$k, email:$e, transferId:$t, reason:$r) }";
const SIGN_IN: &str = "mutation($e:String!,$p:String!){ signIn(email:$e,password:$p){ token } }";

/// The `field` list of `admin` with `filter`, `first` and `after`: its edges' nodes and page info.
async fn list(
    app: &TestApp,
    admin: &str,
    (field, filter_type): (&str, &str),
    selection: &str,
    filter: Value,
    first: i64,
    after: Option<&str>,
) -> (Vec<Value>, Value) {
    let query = format!(
        "query($f:{filter_type},$n:Int,$a:String){{ admin {{ {field}(filter:$f, first:$n, after:$a) {{ edges {{ cursor node {{ {selection} }} }} pageInfo {{ hasNextPage endCursor }} }} }} }}"
    );
    let data = app
        .ok(
            Some(admin),
            &query,
            json!({"f": filter, "n": first, "a": after}),
        )
        .await;
    let connection = &data["admin"][field];
    let nodes = connection["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    (nodes, connection["pageInfo"].clone())
}

fn strings(nodes: &[Value], field: &str) -> Vec<String> {
    let mut values: Vec<String> = nodes
        .iter()
        .map(|n| n[field].as_str().unwrap_or_default().to_owned())
        .collect();
    values.sort();
    values
}

async fn accounts(app: &TestApp, admin: &str, filter: Value) -> Vec<String> {
    let (nodes, _) = list(
        app,
        admin,
        ("accounts", "AccountFilter"),
        "email",
        filter,
        100,
        None,
    )
    .await;
    strings(&nodes, "email")
}

async fn orders(app: &TestApp, admin: &str, filter: Value) -> Vec<String> {
    let (nodes, _) = list(
        app,
        admin,
        ("orders", "OrderFilter"),
        "id",
        filter,
        100,
        None,
    )
    .await;
    strings(&nodes, "id")
}

async fn licenses(app: &TestApp, admin: &str, filter: Value) -> Vec<String> {
    let (nodes, _) = list(
        app,
        admin,
        ("licenses", "LicenseFilter"),
        "id key",
        filter,
        100,
        None,
    )
    .await;
    for node in &nodes {
        assert!(
            node["key"].is_null(),
            "an admin never reads key strings: {node}"
        );
    }
    strings(&nodes, "id")
}

async fn event_kinds(app: &TestApp, admin: &str, field: &str, filter: Value) -> Vec<Value> {
    let (nodes, _) = list(
        app,
        admin,
        (field, "EventFilter"),
        "id kind occurredAt actor { email } changes order { id }",
        filter,
        100,
        None,
    )
    .await;
    nodes
}

/// How `sub` ended (its error's code), after any events it still delivered
/// (the support action's own event may come first).
async fn stream_end(sub: &mut Sub) -> String {
    let patience = std::time::Duration::from_secs(20);
    loop {
        let message = sub.message(patience).await.expect("the stream ends");
        let errors = match message["type"].as_str() {
            Some("next") | Some("data") if message["payload"]["errors"].is_null() => continue,
            Some("next") | Some("data") => message["payload"]["errors"].clone(),
            Some("error") => message["payload"].clone(),
            _ => panic!("expected an error, got {message}"),
        };
        let complete = sub.message(patience).await.expect("complete");
        assert_eq!(complete["type"], "complete", "{complete}");
        return errors[0]["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }
}

/// [`event_kinds`] once it lists at least `n` events. On PostgreSQL a
/// committed event is listed once every transaction older than it has
/// ended, in the whole cluster (`events::cursor`): a long transaction of
/// another database can hold it back for a while.
async fn at_least(app: &TestApp, admin: &str, field: &str, filter: Value, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let nodes = event_kinds(app, admin, field, filter.clone()).await;
        if nodes.len() >= n || tokio::time::Instant::now() > deadline {
            return nodes;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort();
    values
}

#[tokio::test]
async fn each_filter_finds_its_rows_and_only_those() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let tag = unique("ada");
    let ada = format!("{tag}@alpha.example.com");
    let adam = format!("{tag}m@beta.example.com");
    let bob = email("bob");
    let (ada_token, _) = app.verified_user(&ada).await;
    let (_, _) = app.unverified_user(&adam).await;
    let (bob_token, _) = app.verified_user(&bob).await;

    // Accounts: a prefix, any case; role; verified; disabled.
    assert_eq!(
        accounts(&app, &admin, json!({"email": tag.to_uppercase()})).await,
        sorted(vec![ada.clone(), adam.clone()])
    );
    assert_eq!(
        accounts(&app, &admin, json!({"email": format!("{tag}@")})).await,
        vec![ada.clone()]
    );
    assert_eq!(
        accounts(&app, &admin, json!({"email": tag, "verified": false})).await,
        vec![adam.clone()]
    );
    let admins = accounts(&app, &admin, json!({"role": "ADMIN"})).await;
    assert!(
        admins.iter().all(|e| e.contains("@admin.example.com")),
        "{admins:?}"
    );
    assert!(!admins.contains(&ada));
    app.ok(Some(&admin), DISABLE, json!({"e": bob, "r": "test"}))
        .await;
    assert_eq!(
        accounts(&app, &admin, json!({"disabled": true})).await,
        vec![bob.clone()]
    );
    assert!(
        !accounts(&app, &admin, json!({"disabled": false}))
            .await
            .contains(&bob)
    );
    app.ok(Some(&admin), ENABLE, json!({"e": bob, "r": "test"}))
        .await;
    let (bob_token2, _) = app.sign_in(&bob).await;
    let _ = bob_token;

    // Orders: two products, paid and not, two owners.
    let other = app.product("other-product", "Other").await;
    let (ada_paid, ada_keys, _) = app.paid_order(&ada_token, 3).await;
    let ada_pending = app.order(&ada_token, 2).await;
    let bob_other = app
        .ok(
            Some(&bob_token2),
            "mutation($p:String!){ createOrder(input:{product:$p, quantity:1}){ id number } }",
            json!({"p": other}),
        )
        .await["createOrder"]
        .clone();
    let bob_other_id = bob_other["id"].as_str().unwrap().to_owned();
    let assignee = email("assignee");
    app.ok(
        Some(&ada_token),
        ASSIGN,
        json!({"l": ada_keys[1], "e": assignee.to_uppercase()}),
    )
    .await;

    assert_eq!(
        orders(&app, &admin, json!({"ownerEmail": ada.to_uppercase()})).await,
        sorted(vec![ada_paid.clone(), ada_pending.clone()])
    );
    assert_eq!(
        orders(&app, &admin, json!({"number": bob_other["number"]})).await,
        vec![bob_other_id.clone()]
    );
    assert_eq!(
        orders(&app, &admin, json!({"number": bob_other_id})).await,
        vec![bob_other_id.clone()]
    );
    assert_eq!(
        orders(&app, &admin, json!({"product": other})).await,
        vec![bob_other_id.clone()]
    );
    assert_eq!(
        orders(&app, &admin, json!({"status": "PAID"})).await,
        vec![ada_paid.clone()]
    );
    assert_eq!(
        orders(
            &app,
            &admin,
            json!({"status": "PENDING_PAYMENT", "ownerEmail": ada})
        )
        .await,
        vec![ada_pending.clone()]
    );
    assert_eq!(
        orders(&app, &admin, json!({"assigneeEmail": assignee})).await,
        vec![ada_paid.clone()]
    );
    let now = chrono::Utc::now();
    let hour = chrono::Duration::hours(1);
    assert_eq!(
        orders(
            &app,
            &admin,
            json!({"createdAfter": now - hour, "createdBefore": now + hour})
        )
        .await
        .len(),
        3
    );
    assert!(
        orders(&app, &admin, json!({"createdBefore": now - hour}))
            .await
            .is_empty()
    );
    assert_eq!(
        orders(&app, &admin, json!({"paidAfter": now - hour})).await,
        vec![ada_paid.clone()]
    );
    assert!(
        orders(&app, &admin, json!({"paidAfter": now + hour}))
            .await
            .is_empty()
    );

    // Keys: by key string (as typed), assignee, status, order.
    let (_, _, ada_strings) = {
        let data = app
            .ok(
                Some(&ada_token),
                "query($o:ID!){ order(id:$o){ licenses { edges { node { id key } } } } }",
                json!({"o": ada_paid}),
            )
            .await;
        let edges = data["order"]["licenses"]["edges"]
            .as_array()
            .unwrap()
            .clone();
        let ids: Vec<String> = edges
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
            .collect();
        let keys: Vec<String> = edges
            .iter()
            .map(|e| e["node"]["key"].as_str().unwrap().to_owned())
            .collect();
        ((), ids, keys)
    };
    let typed = format!("  {}  ", ada_strings[0].to_lowercase().replace('-', " "));
    assert_eq!(
        licenses(&app, &admin, json!({"key": typed})).await,
        vec![ada_keys[0].clone()]
    );
    assert!(
        licenses(&app, &admin, json!({"key": "ZZZZ-ZZZZ-ZZZZ-ZZZZ"}))
            .await
            .is_empty()
    );
    assert_eq!(
        licenses(&app, &admin, json!({"assigneeEmail": assignee})).await,
        vec![ada_keys[1].clone()]
    );
    assert_eq!(
        licenses(&app, &admin, json!({"status": "ASSIGNED"})).await,
        vec![ada_keys[1].clone()]
    );
    assert_eq!(
        licenses(
            &app,
            &admin,
            json!({"status": "UNASSIGNED", "orderId": ada_paid})
        )
        .await,
        sorted(vec![ada_keys[0].clone(), ada_keys[2].clone()])
    );
    assert_eq!(
        licenses(&app, &admin, json!({"orderId": ada_paid})).await,
        sorted(ada_keys.clone())
    );
    // A key found by the string it had before a reissue.
    app.ok(
        Some(&ada_token),
        "mutation($l:ID!){ reissueLicense(licenseId:$l){ id } }",
        json!({"l": ada_keys[2]}),
    )
    .await;
    assert_eq!(
        licenses(&app, &admin, json!({"key": ada_strings[2]})).await,
        vec![ada_keys[2].clone()]
    );

    // Events: kinds, account, order, time.
    // Once the last change's event is listed, every earlier one is.
    at_least(
        &app,
        &admin,
        "events",
        json!({"kinds": ["LICENSE_REISSUED"]}),
        1,
    )
    .await;
    let paid = event_kinds(&app, &admin, "events", json!({"kinds": ["ORDER_PAID"]})).await;
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0]["order"]["id"], ada_paid);
    let of_order = event_kinds(&app, &admin, "events", json!({"orderId": ada_paid})).await;
    assert!(
        of_order.iter().all(|e| e["order"]["id"] == ada_paid),
        "{of_order:?}"
    );
    let kinds: Vec<&str> = of_order
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["ORDER_PAID", "LICENSE_ASSIGNED", "LICENSE_REISSUED"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let of_bob = event_kinds(&app, &admin, "events", json!({"accountEmail": bob})).await;
    let kinds: Vec<&str> = of_bob.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ACCOUNT_DISABLED", "ACCOUNT_ENABLED"]);
    // What an account caused counts too: the administrator's actions.
    let admin_email = app.ok(Some(&admin), "{ me { email } }", json!({})).await["me"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_admin = event_kinds(
        &app,
        &admin,
        "events",
        json!({"accountEmail": admin_email, "kinds": ["ACCOUNT_ENABLED", "ORDER_PAID"]}),
    )
    .await;
    let kinds: Vec<&str> = by_admin
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ACCOUNT_ENABLED"]);
    assert!(
        event_kinds(&app, &admin, "events", json!({"after": now + hour}))
            .await
            .is_empty()
    );
    assert!(
        event_kinds(
            &app,
            &admin,
            "events",
            json!({"accountEmail": email("nobody")})
        )
        .await
        .is_empty()
    );
    // The audit log: only what administrators did.
    let audit = event_kinds(&app, &admin, "auditLog", json!({"accountEmail": bob})).await;
    let kinds: Vec<&str> = audit.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ACCOUNT_DISABLED", "ACCOUNT_ENABLED"]);
}

#[tokio::test]
async fn cursors_hold_while_rows_are_inserted_between_pages() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let tag = unique("page");
    let mut expected = Vec::new();
    for i in 0..5 {
        let address = format!("{tag}-{i}@paging.example.com");
        app.sign_up(&address).await;
        expected.push(address);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut inserted = 0;
    loop {
        let (nodes, page) = list(
            &app,
            &admin,
            ("accounts", "AccountFilter"),
            "email",
            json!({"email": tag}),
            2,
            after.as_deref(),
        )
        .await;
        seen.extend(strings(&nodes, "email"));
        // Between pages, newcomers arrive (they sort after every cursor
        // handed out, so they show up at the end, once).
        if inserted < 2 {
            let address = format!("{tag}-new{inserted}@paging.example.com");
            app.sign_up(&address).await;
            expected.push(address);
            inserted += 1;
        }
        if page["hasNextPage"] != true {
            break;
        }
        after = page["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(
        sorted(seen.clone()),
        sorted(expected),
        "no row twice, none skipped"
    );
    let mut unique_seen = seen.clone();
    unique_seen.dedup();
    assert_eq!(unique_seen.len(), seen.len());

    // Events: the same under writes, in delivery order.
    let (owner, _) = app.verified_user(&email("owner")).await;
    let (_, keys, _) = app.paid_order(&owner, 6).await;
    let filter = json!({"kinds": ["LICENSE_ASSIGNED"]});
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for (i, key) in keys.iter().enumerate() {
        if i % 2 == 1 {
            app.ok(Some(&owner), ASSIGN, json!({"l": key, "e": email("to")}))
                .await;
        }
    }
    let mut later = vec![&keys[0], &keys[2], &keys[4]].into_iter();
    loop {
        let (nodes, page) = list(
            &app,
            &admin,
            ("events", "EventFilter"),
            "id kind",
            filter.clone(),
            2,
            after.as_deref(),
        )
        .await;
        seen.extend(nodes.iter().map(|n| n["id"].as_str().unwrap().to_owned()));
        if let Some(cursor) = page["endCursor"].as_str() {
            after = Some(cursor.to_owned());
        }
        // A write between two pages; after the last one, one more page reads it.
        match later.next() {
            Some(key) => {
                app.ok(Some(&owner), ASSIGN, json!({"l": key, "e": email("to")}))
                    .await;
            }
            None if page["hasNextPage"] != true => break,
            None => {}
        }
    }
    let all = at_least(&app, &admin, "events", filter.clone(), 6).await;
    // The last write's event may have been listed only now: read on from
    // the last cursor, as a client would.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < 6 && tokio::time::Instant::now() < deadline {
        let (nodes, page) = list(
            &app,
            &admin,
            ("events", "EventFilter"),
            "id kind",
            filter.clone(),
            2,
            after.as_deref(),
        )
        .await;
        seen.extend(nodes.iter().map(|n| n["id"].as_str().unwrap().to_owned()));
        if let Some(cursor) = page["endCursor"].as_str() {
            after = Some(cursor.to_owned());
        }
    }
    let all: Vec<String> = all
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, all, "every event once, in order");
    assert_eq!(all.len(), 6);
}

/// Every admin field and support mutation as a user: `FORBIDDEN`;
/// anonymously: `UNAUTHENTICATED`.
#[tokio::test]
async fn only_administrators_reach_administration() {
    let app = TestApp::spawn().await;
    let (user, _) = app.verified_user(&email("user")).await;
    let victim = email("victim");
    app.verified_user(&victim).await;
    let requests = [
        (
            "{ admin { accounts(filter:{email:\"a\"}) { edges { node { id } } } } }",
            json!({}),
        ),
        (
            "{ admin { orders(filter:{status:PAID}) { edges { node { id } } } } }",
            json!({}),
        ),
        (
            "{ admin { licenses(filter:{status:ASSIGNED}) { edges { node { id } } } } }",
            json!({}),
        ),
        (
            "{ admin { events(filter:{kinds:[ORDER_PAID]}) { edges { node { id } } } } }",
            json!({}),
        ),
        (
            "{ admin { auditLog { edges { node { id } } } } }",
            json!({}),
        ),
        (DISABLE, json!({"e": victim, "r": "x"})),
        (ENABLE, json!({"e": victim, "r": "x"})),
        (REVOKE, json!({"e": victim, "r": "x"})),
        (RESEND, json!({"k": "VERIFICATION", "e": victim})),
    ];
    for (query, variables) in &requests {
        let code = app.err(Some(&user), query, variables.clone()).await;
        assert_eq!(code, "FORBIDDEN", "{query}");
        let code = app.err(None, query, variables.clone()).await;
        assert_eq!(code, "UNAUTHENTICATED", "{query}");
    }
    // The victim was not touched.
    app.sign_in(&victim).await;
}

#[tokio::test]
async fn a_disabled_account_is_shut_out_and_let_back_in() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let address = email("shut");
    let (token, _) = app.verified_user(&address).await;
    app.paid_order(&token, 1).await;
    let mut sub = Sub::open(&app, &token, Protocol::TransportWs, None, 1).await;
    sub.event().await;

    let disabled = app
        .ok(
            Some(&admin),
            DISABLE,
            json!({"e": address.to_uppercase(), "r": "  fraud  "}),
        )
        .await;
    assert_eq!(disabled["disableAccount"]["disabled"], true);
    assert_eq!(stream_end(&mut sub).await, "UNAUTHENTICATED");
    wait_subscribers(&app, 0).await;
    assert_eq!(
        app.err(Some(&token), "{ me { id } }", json!({})).await,
        "UNAUTHENTICATED"
    );
    let refused = app
        .err(None, SIGN_IN, json!({"e": address, "p": PASSWORD}))
        .await;
    assert_eq!(refused, "FORBIDDEN");
    // A wrong password learns nothing more than for anyone.
    let wrong = app
        .err(
            None,
            SIGN_IN,
            json!({"e": address, "p": "not the password"}),
        )
        .await;
    assert_eq!(wrong, "UNAUTHENTICATED");

    // Edge cases.
    assert_eq!(
        app.err(Some(&admin), DISABLE, json!({"e": address, "r": "again"}))
            .await,
        "CONFLICT"
    );
    let admin_email = app.ok(Some(&admin), "{ me { email } }", json!({})).await["me"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.err(
            Some(&admin),
            DISABLE,
            json!({"e": admin_email, "r": "oops"})
        )
        .await,
        "CONFLICT"
    );
    assert_eq!(
        app.err(
            Some(&admin),
            DISABLE,
            json!({"e": email("nobody"), "r": "x"})
        )
        .await,
        "NOT_FOUND"
    );

    app.ok(Some(&admin), ENABLE, json!({"e": address, "r": "cleared"}))
        .await;
    assert_eq!(
        app.err(Some(&admin), ENABLE, json!({"e": address, "r": "again"}))
            .await,
        "CONFLICT"
    );
    // The old token stays dead; signing in works again.
    assert_eq!(
        app.err(Some(&token), "{ me { id } }", json!({})).await,
        "UNAUTHENTICATED"
    );
    let (fresh, _) = app.sign_in(&address).await;
    let me = app.ok(Some(&fresh), "{ me { disabled } }", json!({})).await;
    assert_eq!(me["me"]["disabled"], false);
}

#[tokio::test]
async fn revoking_sessions_ends_them_all() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let address = email("revoked");
    let (first, _) = app.verified_user(&address).await;
    let (second, _) = app.sign_in(&address).await;
    let mut sub = Sub::open(&app, &second, Protocol::LegacyWs, None, 1).await;
    let ended = app
        .ok(
            Some(&admin),
            REVOKE,
            json!({"e": address, "r": "lost laptop"}),
        )
        .await;
    assert_eq!(ended["revokeSessions"], 2);
    assert_eq!(stream_end(&mut sub).await, "UNAUTHENTICATED");
    for token in [&first, &second] {
        assert_eq!(
            app.err(Some(token), "{ me { id } }", json!({})).await,
            "UNAUTHENTICATED"
        );
    }
    // Unlike a disabled account, it signs in again at once.
    app.sign_in(&address).await;
}

/// Every support action is in the audit log, with the administrator as
/// actor and its reason; the account concerned reads its event without it.
#[tokio::test]
async fn support_actions_are_audited_with_their_reason() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let admin_email = app.ok(Some(&admin), "{ me { email } }", json!({})).await["me"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let owner_email = email("owner");
    let (owner, _) = app.verified_user(&owner_email).await;
    let newcomer = email("newcomer");
    app.unverified_user(&newcomer).await;
    let (order, _, _) = app.paid_order(&owner, 1).await;
    let to = email("to");
    let transfer = app
        .ok(
            Some(&owner),
            "mutation($o:ID!,$e:String!){ startOrderTransfer(orderId:$o, newOwnerEmail:$e){ id } }",
            json!({"o": order, "e": to}),
        )
        .await["startOrderTransfer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_link = app.transfer_token(&to).await;

    // Resending: a verification, a transfer's link (the old link stops working).
    app.ok(
        Some(&admin),
        RESEND,
        json!({"k": "VERIFICATION", "e": newcomer, "r": "customer asked"}),
    )
    .await;
    app.wait_mails(&newcomer, 2).await;
    app.ok(
        Some(&admin),
        RESEND,
        json!({"k": "TRANSFER_CONFIRMATION", "e": to, "t": transfer}),
    )
    .await;
    let mails = app.wait_mails(&to, 2).await;
    assert!(mails.iter().all(|m| !m.body.contains(&admin_email)));
    assert_eq!(
        app.err(
            Some(&admin),
            RESEND,
            json!({"k": "VERIFICATION", "e": owner_email})
        )
        .await,
        "CONFLICT",
        "already verified"
    );
    assert_eq!(
        app.err(
            Some(&admin),
            RESEND,
            json!({"k": "TRANSFER_CONFIRMATION", "e": to})
        )
        .await,
        "VALIDATION"
    );
    assert_eq!(
        app.err(
            Some(&admin),
            RESEND,
            json!({"k": "TRANSFER_CONFIRMATION", "e": owner_email, "t": transfer})
        )
        .await,
        "VALIDATION",
        "not the addressee"
    );
    let (to_token, _) = app.verified_user(&to).await;
    assert_eq!(
        app.err(
            Some(&to_token),
            "mutation($t:String!){ acceptOrderTransfer(token:$t){ id } }",
            json!({"t": first_link})
        )
        .await,
        "NOT_FOUND",
        "the link sent before no longer confirms"
    );

    // On the owner's behalf: a reason is required.
    let cancel =
        "mutation($t:ID!,$r:String){ cancelOrderTransfer(transferId:$t, reason:$r){ status } }";
    assert_eq!(
        app.err(Some(&admin), cancel, json!({"t": transfer})).await,
        "VALIDATION"
    );
    let cancelled = app
        .ok(
            Some(&admin),
            cancel,
            json!({"t": transfer, "r": "owner phoned"}),
        )
        .await;
    assert_eq!(cancelled["cancelOrderTransfer"]["status"], "CANCELLED");

    // Declining a request on the buyer's behalf.
    let (requester, _) = app.verified_user(&email("requester")).await;
    let request = app
        .ok(
            Some(&requester),
            "mutation($b:String!){ requestLicense(input:{buyerEmail:$b}){ request { id } } }",
            json!({"b": owner_email}),
        )
        .await["requestLicense"]["request"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let decline =
        "mutation($q:ID!,$r:String){ declineLicenseRequest(requestId:$q, reason:$r){ status } }";
    assert_eq!(
        app.err(Some(&admin), decline, json!({"q": request})).await,
        "VALIDATION"
    );
    app.ok(Some(&admin), decline, json!({"q": request, "r": "spam"}))
        .await;

    let owner_sessions = app
        .ok(
            Some(&admin),
            REVOKE,
            json!({"e": owner_email, "r": "security review"}),
        )
        .await;
    assert!(owner_sessions["revokeSessions"].as_i64().unwrap() >= 1);

    // Once the last action's event is listed, every earlier one is.
    let last = json!({"kinds": ["SESSIONS_REVOKED"], "accountEmail": owner_email});
    at_least(&app, &admin, "auditLog", last, 1).await;
    let audit = event_kinds(
        &app,
        &admin,
        "auditLog",
        json!({"after": chrono::Utc::now() - chrono::Duration::hours(1)}),
    )
    .await;
    let reasons: Vec<(String, Value)> = audit
        .iter()
        .filter(|e| e["actor"]["email"] == admin_email.as_str())
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["changes"]["reason"].clone(),
            )
        })
        .collect();
    for (kind, reason) in [
        ("EMAIL_RESENT", json!("customer asked")),
        ("EMAIL_RESENT", Value::Null),
        ("TRANSFER_CANCELLED", json!("owner phoned")),
        ("REQUEST_DECLINED", json!("spam")),
        ("SESSIONS_REVOKED", json!("security review")),
    ] {
        assert!(
            reasons.contains(&(kind.to_owned(), reason.clone())),
            "{kind} {reason} in {reasons:?}"
        );
    }

    // The owner sees the revocation in their feed, not the reason.
    let (owner, _) = app.sign_in(&owner_email).await;
    let feed = app
        .ok(
            Some(&owner),
            "{ events(first:100) { edges { node { kind changes actor { email } } } } }",
            json!({}),
        )
        .await;
    let revoked: Vec<&Value> = feed["events"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .filter(|n| n["kind"] == "SESSIONS_REVOKED")
        .collect();
    assert_eq!(revoked.len(), 1, "{feed}");
    assert!(revoked[0]["changes"]["reason"].is_null(), "{feed}");
}

#[tokio::test]
async fn hostile_filter_and_support_inputs_are_refused_with_codes() {
    let app = TestApp::spawn_with(crate::harness::Options {
        configure: Box::new(|c| c.mail_rate_per_hour = 3),
        ..Default::default()
    })
    .await;
    let admin = app.admin().await;
    let long = "a".repeat(255);
    let cases: Vec<((&str, &str), Value, &str)> = vec![
        (
            ("accounts", "AccountFilter"),
            json!({"email": ""}),
            "filter.email",
        ),
        (
            ("accounts", "AccountFilter"),
            json!({"email": "   "}),
            "filter.email",
        ),
        (
            ("accounts", "AccountFilter"),
            json!({"email": long}),
            "filter.email",
        ),
        (
            ("orders", "OrderFilter"),
            json!({"number": "KL-abc"}),
            "filter.number",
        ),
        (
            ("orders", "OrderFilter"),
            json!({"number": "9".repeat(30)}),
            "filter.number",
        ),
        (
            ("orders", "OrderFilter"),
            json!({"ownerEmail": "not an address"}),
            "filter.ownerEmail",
        ),
        (
            ("orders", "OrderFilter"),
            json!({"assigneeEmail": "x".repeat(5000)}),
            "filter.assigneeEmail",
        ),
        (
            ("orders", "OrderFilter"),
            json!({"product": "p".repeat(65)}),
            "filter.product",
        ),
        (
            ("orders", "OrderFilter"),
            json!({"createdAfter": "2026-12-02T00:00:00Z", "createdBefore": "2026-12-01T00:00:00Z"}),
            "filter.createdBefore",
        ),
        (
            ("orders", "OrderFilter"),
            json!({"paidAfter": "2026-12-02T00:00:00Z", "paidBefore": "2026-12-02T00:00:00Z"}),
            "filter.paidBefore",
        ),
        (
            ("licenses", "LicenseFilter"),
            json!({"key": "not a key"}),
            "filter.key",
        ),
        (
            ("licenses", "LicenseFilter"),
            json!({"key": "A".repeat(100)}),
            "filter.key",
        ),
        (
            ("licenses", "LicenseFilter"),
            json!({"orderId": "1; DROP TABLE"}),
            "filter.orderId",
        ),
        (
            ("events", "EventFilter"),
            json!({"kinds": vec!["ORDER_PAID"; 65]}),
            "filter.kinds",
        ),
        (
            ("events", "EventFilter"),
            json!({"orderId": "x"}),
            "filter.orderId",
        ),
        (
            ("auditLog", "EventFilter"),
            json!({"after": "2026-12-02T00:00:00Z", "before": "2026-01-01T00:00:00Z"}),
            "filter.before",
        ),
    ];
    for ((field, filter_type), filter, expected_field) in cases {
        let query = format!(
            "query($f:{filter_type}){{ admin {{ {field}(filter:$f) {{ edges {{ cursor }} }} }} }}"
        );
        let error = app.error(Some(&admin), &query, json!({"f": filter})).await;
        assert_eq!(
            error["extensions"]["code"], "VALIDATION",
            "{field} {filter}: {error}"
        );
        assert_eq!(
            error["extensions"]["field"], expected_field,
            "{field} {filter}: {error}"
        );
    }
    // A date that is not one is refused by the schema.
    let body = app
        .gql(
            Some(&admin),
            "query($f:OrderFilter){ admin { orders(filter:$f) { edges { cursor } } } }",
            json!({"f": {"createdAfter": "yesterday"}}),
        )
        .await;
    assert!(body["errors"].is_array(), "{body}");
    // Cursors that are not ones.
    for after in ["-", "1:2:3", "x"] {
        let body = app
            .gql(
                Some(&admin),
                "query($a:String){ admin { accounts(after:$a) { edges { cursor } } events(after:$a) { edges { cursor } } } }",
                json!({"a": after}),
            )
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "VALIDATION",
            "{body}"
        );
    }

    // Support actions: reasons, addresses.
    let victim = email("victim");
    app.unverified_user(&victim).await;
    for (reason, code) in [("", "VALIDATION"), ("   ", "VALIDATION")] {
        let error = app
            .error(Some(&admin), DISABLE, json!({"e": victim, "r": reason}))
            .await;
        assert_eq!(error["extensions"]["code"], code);
        assert_eq!(error["extensions"]["field"], "reason");
    }
    let error = app
        .error(
            Some(&admin),
            REVOKE,
            json!({"e": victim, "r": "r".repeat(501)}),
        )
        .await;
    assert_eq!(error["extensions"]["field"], "reason");
    app.ok(
        Some(&admin),
        REVOKE,
        json!({"e": victim, "r": "é".repeat(500)}),
    )
    .await;
    let error = app
        .error(Some(&admin), ENABLE, json!({"e": "nope", "r": "x"}))
        .await;
    assert_eq!(error["extensions"]["code"], "VALIDATION");
    assert_eq!(error["extensions"]["field"], "email");
    let error = app
        .error(
            Some(&admin),
            RESEND,
            json!({"k": "VERIFICATION", "e": victim, "t": "1"}),
        )
        .await;
    assert_eq!(error["extensions"]["field"], "transferId");
    // Resending is rate limited per recipient (3 an hour here).
    let mut codes = Vec::new();
    for _ in 0..5 {
        let body = app
            .gql(
                Some(&admin),
                RESEND,
                json!({"k": "VERIFICATION", "e": victim}),
            )
            .await;
        codes.push(
            body["errors"][0]["extensions"]["code"]
                .as_str()
                .unwrap_or("OK")
                .to_owned(),
        );
    }
    assert!(codes.contains(&"RATE_LIMITED".to_owned()), "{codes:?}");
    // Nothing was half-written: the victim is still enabled.
    let found = accounts(&app, &admin, json!({"email": victim, "disabled": false})).await;
    assert_eq!(found, vec![victim.clone()]);
}

/// Two instances behind a balancer: disabling on one shuts the account out
/// on the other at once (its kept sessions, its subscriptions).
#[tokio::test]
#[ignore = "needs PostgreSQL and Redis"]
async fn disabling_on_one_instance_shuts_the_account_out_on_the_other() {
    crate::harness::require_postgres();
    let redis_url = crate::harness::require_redis();
    let (a, b) = TestApp::two_on_redis(&redis_url, |_| {}).await;
    let admin = a.admin().await;
    let address = email("two");
    let (token, _) = a.verified_user(&address).await;
    a.paid_order(&token, 1).await;
    // B keeps the session: read it there first.
    b.ok(Some(&token), "{ me { id } }", json!({})).await;
    let mut sub = Sub::open(&b, &token, Protocol::TransportWs, None, 1).await;
    sub.event().await;

    a.ok(Some(&admin), DISABLE, json!({"e": address, "r": "fraud"}))
        .await;
    assert_eq!(stream_end(&mut sub).await, "UNAUTHENTICATED");
    // Well within the session cache's own bound (2 s): through the bus.
    assert_eq!(
        b.err(Some(&token), "{ me { id } }", json!({})).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        a.err(Some(&token), "{ me { id } }", json!({})).await,
        "UNAUTHENTICATED"
    );
    for app in [&a, &b] {
        assert_eq!(
            app.err(None, SIGN_IN, json!({"e": address, "p": PASSWORD}))
                .await,
            "FORBIDDEN"
        );
    }
    b.ok(Some(&admin), ENABLE, json!({"e": address, "r": "ok"}))
        .await;
    b.sign_in(&address).await;
}
