//! Who sees what: key strings by every path, transfers of an organization's
//! orders, events redacted per recipient, and the cost of a page of keys.
use serde_json::{Value, json};

use crate::harness::{Options, TestApp, unique};

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

const ASSIGN: &str =
    "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id key } }";

/// Every `key` value anywhere in `value`.
fn keys_in(value: &Value, found: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            for (name, v) in map {
                if name == "key" {
                    found.push(v.clone());
                } else {
                    keys_in(v, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys_in(v, found)),
        _ => {}
    }
}

fn all_keys(value: &Value) -> Vec<Value> {
    let mut found = Vec::new();
    keys_in(value, &mut found);
    found
}

#[tokio::test]
async fn a_key_string_is_shown_to_managers_and_the_assignee_by_every_path() {
    let app = TestApp::spawn().await;
    let (owner, _) = app.verified_user(&email("owner")).await;
    let assignee_email = email("assignee");
    let (assignee, _) = app.verified_user(&assignee_email).await;
    let (stranger, _) = app.verified_user(&email("stranger")).await;
    let (order, ids, keys) = app.paid_order(&owner, 2).await;
    app.ok(
        Some(&owner),
        ASSIGN,
        json!({"l": ids[0], "e": assignee_email}),
    )
    .await;
    let admin = app.admin().await;

    let by_order = "query($o:ID!){ order(id:$o){ licenses { edges { node { id key } } } history { edges { node { license { key } } } } } }";
    let by_license = "query($l:ID!){ license(id:$l){ key } }";
    let by_admin = "{ admin { orders { edges { node { licenses { edges { node { key } } } } } } licenses { edges { node { key } } } events { edges { node { license { key } order { licenses { edges { node { key } } } } } } } } }";
    let by_assignment = "{ assignedLicenses { edges { node { key } } } }";
    let by_events = "{ events { edges { node { license { key } } } } }";

    // An administrator who neither manages the order nor holds a key reads
    // every record, and never a key string.
    for (query, vars) in [
        (by_order, json!({"o": order})),
        (by_license, json!({"l": ids[0]})),
        (by_license, json!({"l": ids[1]})),
        (by_admin, json!({})),
    ] {
        let data = app.ok(Some(&admin), query, vars).await;
        let found = all_keys(&data);
        assert!(!found.is_empty(), "{query} reaches keys: {data}");
        assert!(
            found.iter().all(Value::is_null),
            "an admin reads no key string through {query}: {data}"
        );
    }

    // The owner reads every key of their order, by every path.
    for (query, vars) in [(by_order, json!({"o": order})), (by_events, json!({}))] {
        let data = app.ok(Some(&owner), query, vars).await;
        let found = all_keys(&data);
        assert!(!found.is_empty(), "{query}: {data}");
        assert!(found.iter().all(Value::is_string), "{query}: {data}");
    }
    let data = app.ok(Some(&owner), by_license, json!({"l": ids[1]})).await;
    assert_eq!(data["license"]["key"], keys[1]);

    // The assignee reads their key, and only theirs.
    let data = app
        .ok(Some(&assignee), by_license, json!({"l": ids[0]}))
        .await;
    assert_eq!(data["license"]["key"], keys[0]);
    let data = app.ok(Some(&assignee), by_assignment, json!({})).await;
    assert_eq!(all_keys(&data), vec![json!(keys[0])]);
    let data = app.ok(Some(&assignee), by_events, json!({})).await;
    assert!(
        all_keys(&data).iter().all(|k| *k == json!(keys[0])),
        "{data}"
    );
    assert_eq!(
        app.err(Some(&assignee), by_license, json!({"l": ids[1]}))
            .await,
        "NOT_FOUND"
    );

    // A stranger reaches neither the order nor its keys.
    assert_eq!(
        app.err(Some(&stranger), by_order, json!({"o": order}))
            .await,
        "NOT_FOUND"
    );
    for id in &ids {
        assert_eq!(
            app.err(Some(&stranger), by_license, json!({"l": id})).await,
            "NOT_FOUND"
        );
    }
    assert!(all_keys(&app.ok(Some(&stranger), by_events, json!({})).await).is_empty());

    // An administrator who owns an order reads its keys like any owner.
    let (own_order, own_ids, own_keys) = app.paid_order(&admin, 1).await;
    let data = app
        .ok(Some(&admin), by_order, json!({"o": own_order}))
        .await;
    assert_eq!(
        data["order"]["licenses"]["edges"][0]["node"]["key"],
        own_keys[0]
    );
    let data = app
        .ok(
            Some(&admin),
            "{ admin { licenses(first:100) { edges { node { id key } } } } }",
            json!({}),
        )
        .await;
    for edge in data["admin"]["licenses"]["edges"].as_array().unwrap() {
        let expected = if edge["node"]["id"] == own_ids[0] {
            json!(own_keys[0])
        } else {
            Value::Null
        };
        assert_eq!(edge["node"]["key"], expected, "{data}");
    }
}

#[tokio::test]
async fn only_an_organizations_admins_transfer_its_orders() {
    use crate::organizations::{ACCEPT_TRANSFER, ADD, REMOVE, START_TRANSFER, member_bought_order};
    let app = TestApp::spawn().await;
    let (admin, member, member_email, org_id, order_id, _) = member_bought_order(&app).await;
    let second_email = email("second");
    let (second, _) = app.verified_user(&second_email).await;

    // The member who bought the order cannot move it out of the organization,
    // not even to their own second account.
    assert_eq!(
        app.err(
            Some(&member),
            START_TRANSFER,
            json!({"o": order_id, "e": second_email})
        )
        .await,
        "FORBIDDEN"
    );
    // An admin who started a transfer and was then demoted to member
    // cannot see it accepted, even as the order's buyer.
    app.ok(
        Some(&admin),
        ADD,
        json!({"o": org_id, "e": member_email, "r": "ADMIN"}),
    )
    .await;
    app.ok(
        Some(&member),
        START_TRANSFER,
        json!({"o": order_id, "e": second_email}),
    )
    .await;
    let token = app.transfer_token(&second_email).await;
    app.ok(
        Some(&admin),
        ADD,
        json!({"o": org_id, "e": member_email, "r": "MEMBER"}),
    )
    .await;
    assert_eq!(
        app.err(Some(&second), ACCEPT_TRANSFER, json!({"t": token}))
            .await,
        "CONFLICT"
    );
    // Nor once they have left.
    app.ok(
        Some(&admin),
        REMOVE,
        json!({"o": org_id, "e": member_email}),
    )
    .await;
    assert_eq!(
        app.err(
            Some(&member),
            START_TRANSFER,
            json!({"o": order_id, "e": second_email})
        )
        .await,
        "NOT_FOUND"
    );
    // The organization's admin still can.
    app.ok(
        Some(&admin),
        START_TRANSFER,
        json!({"o": order_id, "e": second_email}),
    )
    .await;
}

const EVENTS: &str = "{ events(first: 100) { edges { node { kind changes actor { email } license { id assigneeEmail } order { id } } } } }";

/// The first `n` events of `token`'s subscription from the start, as a
/// dashboard's notification panel receives them.
async fn subscribed_events(app: &TestApp, token: &str, n: usize) -> Vec<Value> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut socket = app.websocket("graphql-transport-ws").await;
    let send = |v: Value| Message::text(v.to_string());
    socket
        .send(send(json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}})))
        .await
        .unwrap();
    let query = EVENTS
        .replace(
            "{ events(first: 100) { edges { node ",
            "subscription { events ",
        )
        .replace(" } } } }", " } }");
    socket
        .send(send(
            json!({"type": "subscribe", "id": "1", "payload": {"query": query}}),
        ))
        .await
        .unwrap();
    let mut events = Vec::new();
    while events.len() < n {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(20), socket.next())
            .await
            .expect("an event arrives")
            .unwrap()
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let message: Value = serde_json::from_str(&text).unwrap();
        if message["type"] == "next" {
            assert!(message["payload"]["errors"].is_null(), "{message}");
            events.push(message["payload"]["data"]["events"].clone());
        }
    }
    events
}

#[tokio::test]
async fn a_former_assignee_learns_that_the_key_left_them_not_who_got_it() {
    let app = TestApp::spawn().await;
    let (owner, _) = app.verified_user(&email("owner")).await;
    let (order, ids, keys) = app.paid_order(&owner, 1).await;
    let x_email = email("former");
    let (x, _) = app.verified_user(&x_email).await;
    let y_email = email("next");
    let (y, _) = app.verified_user(&y_email).await;
    let z_email = email("claimer");
    let (z, _) = app.verified_user(&z_email).await;
    let organization = "Hidden Holdings";
    app.ok(Some(&owner), ASSIGN, json!({"l": ids[0], "e": x_email}))
        .await;
    app.ok(
        Some(&owner),
        "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e,organization:{name:\"Hidden Holdings\",siret:\"73282932000074\"}}){ id } }",
        json!({"l": ids[0], "e": y_email}),
    )
    .await;
    // A claim that replaces Y: Z is the actor of the change Y receives. Z
    // holds the key's string of now (reassigning Y gave it a new one).
    let current = app
        .ok(
            Some(&owner),
            "query($l:ID!){ license(id:$l){ key } }",
            json!({"l": ids[0]}),
        )
        .await["license"]["key"]
        .clone();
    assert_ne!(current, keys[0]);
    app.ok(
        Some(&owner),
        "mutation{ updateClaimSettings(input:{allowOverrideAssignee:true}){ id } }",
        json!({}),
    )
    .await;
    app.ok(
        Some(&z),
        "mutation($k:String!){ claimLicense(key:$k){ outcome } }",
        json!({"k": current}),
    )
    .await;

    // X saw the key come and go, and nothing of Y or Z.
    let x_events = app.ok(Some(&x), EVENTS, json!({})).await;
    let edges = x_events["events"]["edges"].as_array().unwrap();
    let kinds: Vec<&Value> = edges.iter().map(|e| &e["node"]["kind"]).collect();
    assert_eq!(
        kinds,
        ["LICENSE_ASSIGNED", "LICENSE_ASSIGNED"],
        "{x_events}"
    );
    let left = &edges[1]["node"];
    assert_eq!(left["changes"]["before"]["assigneeEmail"], x_email);
    assert!(left["changes"]["after"].is_null(), "{left}");
    let text = x_events.to_string();
    for hidden in [&y_email, &z_email, organization] {
        assert!(!text.contains(hidden), "X's events show {hidden}: {text}");
    }
    // Y sees their own assignment and that the key left them, not to whom.
    let text = app.ok(Some(&y), EVENTS, json!({})).await.to_string();
    assert!(
        text.contains(&y_email) && text.contains(organization),
        "{text}"
    );
    for hidden in [&x_email, &z_email] {
        assert!(
            !text.contains(hidden.as_str()),
            "Y's events show {hidden}: {text}"
        );
    }
    // The live feed is redacted alike.
    let live = Value::Array(subscribed_events(&app, &x, 2).await).to_string();
    assert!(live.contains(&x_email), "{live}");
    for hidden in [&y_email, &z_email, organization] {
        assert!(
            !live.contains(hidden),
            "X's live events show {hidden}: {live}"
        );
    }

    // The owner's feed, and the key's history, tell everything.
    let text = app.ok(Some(&owner), EVENTS, json!({})).await.to_string();
    for shown in [&x_email, &y_email, &z_email, organization] {
        assert!(
            text.contains(shown),
            "the owner's events show {shown}: {text}"
        );
    }
    let live = Value::Array(subscribed_events(&app, &owner, 4).await).to_string();
    for shown in [&x_email, &y_email, organization] {
        assert!(
            live.contains(shown),
            "the owner's live events show {shown}: {live}"
        );
    }
    let history = app
        .ok(
            Some(&owner),
            "query($o:ID!){ order(id:$o){ history { edges { node { changes actor { email } } } } } }",
            json!({"o": order}),
        )
        .await
        .to_string();
    assert!(
        history.contains(&y_email) && history.contains(&z_email),
        "{history}"
    );
}

#[tokio::test]
async fn a_page_of_keys_costs_the_same_statements_whatever_its_length() {
    // Background workers only run when woken, so they do not add to the count.
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|config| config.job_interval_ms = 3_600_000),
        ..Options::default()
    })
    .await;
    let address = email("buyer");
    let (buyer, _) = app.verified_user(&address).await;
    let (order, ids, keys) = app.paid_order(&buyer, 50).await;
    for i in [0, 3, 12, 40] {
        app.ok(
            Some(&buyer),
            ASSIGN,
            json!({"l": ids[i], "e": format!("user{i}@example.com")}),
        )
        .await;
        app.ok(
            None,
            "mutation($k:String!){ activateLicense(key:$k, fingerprint:\"fp\", name:\"laptop\"){ name } }",
            json!({"k": keys[i]}),
        )
        .await;
    }
    // Let background mail sending settle so it does not count.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let q = |n: usize| {
        let node =
            "id history { edges { node { kind } } } activations { fingerprint } assignee { email }";
        let aliases: Vec<String> = (0..5)
            .map(|a| {
                let history = if a == 4 {
                    "history(first: 1)"
                } else {
                    "history"
                };
                format!(
                    "a{a}: licenses(first:{n}) {{ edges {{ node {{ {} }} }} }}",
                    node.replacen("history", history, 1)
                )
            })
            .collect();
        format!("query($o:ID!){{ order(id:$o){{ {} }} }}", aliases.join(" "))
    };
    let mut counts = Vec::new();
    for n in [10, 50] {
        // Reading a history first waits for transactions still writing
        // (on PostgreSQL, those of the whole cluster: other tests'), one
        // statement per look; the fewest of a few tries is the request's own.
        let mut fewest = f64::MAX;
        for _ in 0..4 {
            // A session of its own, so that each request reads it.
            let (session, _) = app.sign_in(&address).await;
            let before = app.metric("keyledger_sql_statements_total").await;
            let data = app.ok(Some(&session), &q(n), json!({"o": order})).await;
            let after = app.metric("keyledger_sql_statements_total").await;
            fewest = fewest.min(after - before);
            check_page(&data, n);
        }
        counts.push(fewest);
    }
    assert_eq!(counts[0], counts[1], "statements per request: {counts:?}");
}

/// The page of `n` keys that the query of the test above returns.
fn check_page(data: &Value, n: usize) {
    let edges = data["order"]["a0"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), n);
    let active = edges
        .iter()
        .filter(|e| e["node"]["activations"][0]["fingerprint"] == "fp")
        .count();
    assert_eq!(active, if n == 10 { 2 } else { 4 }, "{data}");
    let assigned = &edges[3]["node"];
    assert_eq!(assigned["assignee"], Value::Null);
    let history = assigned["history"]["edges"].as_array().unwrap();
    let kinds: Vec<&Value> = history.iter().map(|e| &e["node"]["kind"]).collect();
    assert_eq!(kinds, ["LICENSE_ASSIGNED", "DEVICE_ACTIVATED"], "{data}");
    let short = &data["order"]["a4"]["edges"][3]["node"]["history"]["edges"];
    assert_eq!(short.as_array().unwrap().len(), 1, "{data}");
}
