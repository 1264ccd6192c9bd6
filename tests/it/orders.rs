//! Orders and keys: payment, generation, visibility, assignment,
//! SIRET, history, batching.
use serde_json::{Value, json};

use crate::harness::{Options, PRODUCT, PRODUCT_NAME, TestApp, unique};

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

const CREATE: &str = "mutation($q:Int!){ createOrder(input:{product:\"keyledger-pro\", quantity:$q}){ id number status quantity paidAt } }";
const PAY: &str = "mutation($o:ID!){ markOrderPaid(orderId:$o){ id status paidAt } }";
const ASSIGN: &str = "mutation($l:ID!,$e:String!,$org:OrganizationInput){ assignLicense(input:{licenseId:$l,email:$e,organization:$org}){ id status assigneeEmail organization { name siret } } }";
const LICENSE: &str = "query($l:ID!){ license(id:$l){ id key status assigneeEmail assignee { email } organization { name siret } } }";

fn is_key(key: &str) -> bool {
    let groups: Vec<&str> = key.split('-').collect();
    groups.len() == 4
        && groups.iter().all(|g| {
            g.len() == 4
                && g.chars()
                    .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c)))
        })
}

#[tokio::test]
async fn buying_paying_and_generating_keys() {
    let app = TestApp::spawn().await;
    app.product(PRODUCT, PRODUCT_NAME).await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    let admin = app.admin().await;
    let order = app.ok(Some(&buyer), CREATE, json!({"q": 5})).await["createOrder"].clone();
    assert_eq!(order["status"], "PENDING_PAYMENT");
    assert!(order["number"].as_str().unwrap().starts_with("KL-"));
    let id = order["id"].as_str().unwrap();

    // Only administrators mark orders paid.
    assert_eq!(
        app.err(Some(&buyer), PAY, json!({"o": id})).await,
        "FORBIDDEN"
    );
    let paid = app.ok(Some(&admin), PAY, json!({"o": id})).await;
    assert_eq!(paid["markOrderPaid"]["status"], "PAID");
    assert_eq!(
        app.err(Some(&admin), PAY, json!({"o": id})).await,
        "CONFLICT"
    );
    assert_eq!(
        app.err(Some(&admin), PAY, json!({"o": "999999"})).await,
        "NOT_FOUND"
    );

    let data = app
        .ok(Some(&buyer), "query($o:ID!){ order(id:$o){ status licenses(first:10){ edges { node { key status } } } } }", json!({"o": id}))
        .await;
    let keys: Vec<&str> = data["order"]["licenses"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 5);
    assert!(keys.iter().all(|k| is_key(k)), "{keys:?}");
    let unique_keys: std::collections::HashSet<&str> = keys.iter().copied().collect();
    assert_eq!(unique_keys.len(), keys.len(), "keys are unique: {keys:?}");
}

#[tokio::test]
async fn create_order_validates_input_and_needs_a_sign_in() {
    let app = TestApp::spawn().await;
    app.product(PRODUCT, PRODUCT_NAME).await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    assert_eq!(
        app.err(None, CREATE, json!({"q": 1})).await,
        "UNAUTHENTICATED"
    );
    for q in [0, -1, 100_001] {
        let error = app.error(Some(&buyer), CREATE, json!({"q": q})).await;
        assert_eq!(error["extensions"]["code"], "VALIDATION");
        assert_eq!(error["extensions"]["field"], "quantity");
    }
    let error = app
        .error(
            Some(&buyer),
            "mutation{ createOrder(input:{product:\"  \", quantity:1}){ id } }",
            json!({}),
        )
        .await;
    assert_eq!(error["extensions"]["field"], "product");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_payments_generate_exactly_one_batch() {
    let app = TestApp::spawn().await;
    app.product(PRODUCT, PRODUCT_NAME).await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    let admin = app.admin().await;
    let id = app.ok(Some(&buyer), CREATE, json!({"q": 20})).await["createOrder"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let results = futures_util::future::join_all(
        (0..50).map(|_| app.gql(Some(&admin), PAY, json!({"o": id}))),
    )
    .await;
    let ok = results.iter().filter(|r| r.get("errors").is_none()).count();
    assert_eq!(ok, 1, "exactly one payment wins");
    for r in results.iter().filter(|r| r.get("errors").is_some()) {
        assert_eq!(r["errors"][0]["extensions"]["code"], "CONFLICT", "{r}");
    }
    let data = app
        .ok(
            Some(&buyer),
            "query($o:ID!){ order(id:$o){ licenses(first:100){ edges { node { id } } } } }",
            json!({"o": id}),
        )
        .await;
    assert_eq!(
        data["order"]["licenses"]["edges"].as_array().unwrap().len(),
        20
    );
}

#[tokio::test]
async fn strangers_cannot_read_or_assign_another_buyers_keys() {
    let app = TestApp::spawn().await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    let (stranger, _) = app.verified_user(&email("stranger")).await;
    let (order, ids, _) = app.paid_order(&buyer, 2).await;
    let order_q = "query($o:ID!){ order(id:$o){ id } }";
    assert_eq!(
        app.err(Some(&stranger), order_q, json!({"o": order})).await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(Some(&stranger), LICENSE, json!({"l": ids[0]}))
            .await,
        "NOT_FOUND"
    );
    // A key that does not exist answers the same.
    assert_eq!(
        app.err(Some(&stranger), LICENSE, json!({"l": "999999"}))
            .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(
            Some(&stranger),
            ASSIGN,
            json!({"l": ids[0], "e": "me@example.com"})
        )
        .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(
            Some(&stranger),
            "mutation($l:ID!){ unassignLicense(licenseId:$l){ id } }",
            json!({"l": ids[0]})
        )
        .await,
        "NOT_FOUND"
    );
    let orders = app
        .ok(
            Some(&stranger),
            "{ orders { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(orders["orders"]["edges"], json!([]));
    // Nothing changed.
    let license = app.ok(Some(&buyer), LICENSE, json!({"l": ids[0]})).await;
    assert!(license["license"]["assigneeEmail"].is_null());
}

#[tokio::test]
async fn assignee_sees_the_key_after_verifying_not_before() {
    let app = TestApp::spawn().await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    let (_, ids, keys) = app.paid_order(&buyer, 1).await;
    let assignee = email("Assignee");
    app.ok(
        Some(&buyer),
        ASSIGN,
        json!({"l": ids[0], "e": assignee.to_uppercase()}),
    )
    .await;
    let mail = app.wait_mails(&assignee.to_lowercase(), 1).await;
    assert!(
        mail[0].body.contains(&keys[0]),
        "the assignment email carries the key"
    );

    // Someone signs up with that address but has not proven it.
    let (unverified, _) = app.unverified_user(&assignee).await;
    let q = "{ assignedLicenses { edges { node { id key } } } }";
    assert_eq!(
        app.err(Some(&unverified), q, json!({})).await,
        "EMAIL_NOT_VERIFIED"
    );
    assert_eq!(
        app.err(Some(&unverified), LICENSE, json!({"l": ids[0]}))
            .await,
        "NOT_FOUND"
    );
    let license = app.ok(Some(&buyer), LICENSE, json!({"l": ids[0]})).await;
    assert!(
        license["license"]["assignee"].is_null(),
        "no account is linked before verification"
    );

    // After verifying (the second email is the verification one).
    let mails = app.wait_mails(&assignee.to_lowercase(), 2).await;
    let token = mails
        .iter()
        .find(|m| m.subject.contains("Confirm"))
        .unwrap()
        .verification_token();
    app.ok(
        Some(&unverified),
        "mutation($t:String!){ verifyEmail(token:$t){ id } }",
        json!({"t": token}),
    )
    .await;
    let data = app.ok(Some(&unverified), q, json!({})).await;
    assert_eq!(data["assignedLicenses"]["edges"][0]["node"]["key"], keys[0]);
    let license = app
        .ok(Some(&unverified), LICENSE, json!({"l": ids[0]}))
        .await;
    assert_eq!(license["license"]["key"], keys[0]);
    let license = app.ok(Some(&buyer), LICENSE, json!({"l": ids[0]})).await;
    assert_eq!(
        license["license"]["assignee"]["email"],
        assignee.to_lowercase()
    );
}

#[tokio::test]
async fn organization_needs_name_and_a_valid_siret() {
    let app = TestApp::spawn().await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    let (_, ids, _) = app.paid_order(&buyer, 1).await;
    let cases: &[(Value, Option<&str>)] = &[
        (
            json!({"name": "Apple France", "siret": "73282932000074"}),
            None,
        ),
        (json!({"name": "La Poste", "siret": "35600000049837"}), None),
        (
            json!({"name": "Spaced", "siret": "732 829 320 00074"}),
            None,
        ),
        (
            json!({"name": "Bad Luhn", "siret": "73282932000075"}),
            Some("organization.siret"),
        ),
        (
            json!({"name": "La Poste bad", "siret": "35600000000048"}),
            Some("organization.siret"),
        ),
        (
            json!({"name": "Short", "siret": "7328293200007"}),
            Some("organization.siret"),
        ),
        (
            json!({"name": "Letters", "siret": "7328293200007A"}),
            Some("organization.siret"),
        ),
        (json!({"name": "No SIRET"}), Some("organization.siret")),
        (
            json!({"siret": "73282932000074"}),
            Some("organization.name"),
        ),
        (json!({}), None),
    ];
    for (org, field) in cases {
        let vars = json!({"l": ids[0], "e": "user@example.com", "org": org});
        match field {
            None => {
                app.ok(Some(&buyer), ASSIGN, vars).await;
            }
            Some(field) => {
                let error = app.error(Some(&buyer), ASSIGN, vars).await;
                assert_eq!(error["extensions"]["code"], "VALIDATION", "{org}");
                assert_eq!(error["extensions"]["field"], *field, "{org}");
            }
        }
    }
    let bad_email = app
        .error(Some(&buyer), ASSIGN, json!({"l": ids[0], "e": "nope"}))
        .await;
    assert_eq!(bad_email["extensions"]["field"], "email");
}

#[tokio::test]
async fn reassigning_keeps_the_history_and_unassign_clears() {
    let app = TestApp::spawn().await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    let (order, ids, _) = app.paid_order(&buyer, 2).await;
    let first = email("first");
    let second = email("second");
    app.ok(Some(&buyer), ASSIGN, json!({"l": ids[0], "e": first}))
        .await;
    app.ok(
        Some(&buyer),
        ASSIGN,
        json!({"l": ids[0], "e": second, "org": {"name": "Acme", "siret": "73282932000074"}}),
    )
    .await;
    // Same assignment again: no new history row.
    app.ok(
        Some(&buyer),
        ASSIGN,
        json!({"l": ids[0], "e": second, "org": {"name": "Acme", "siret": "73282932000074"}}),
    )
    .await;
    app.ok(
        Some(&buyer),
        "mutation($l:ID!){ unassignLicense(licenseId:$l){ status } }",
        json!({"l": ids[0]}),
    )
    .await;
    assert_eq!(
        app.err(
            Some(&buyer),
            "mutation($l:ID!){ unassignLicense(licenseId:$l){ status } }",
            json!({"l": ids[0]})
        )
        .await,
        "CONFLICT"
    );
    let data = app
        .ok(
            Some(&buyer),
            "query($l:ID!){ license(id:$l){ status history { edges { node { kind actor { email } changes } } } } }",
            json!({"l": ids[0]}),
        )
        .await;
    assert_eq!(data["license"]["status"], "UNASSIGNED");
    let history: Vec<Value> = data["license"]["history"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    let kinds: Vec<&str> = history
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["LICENSE_ASSIGNED", "LICENSE_ASSIGNED", "LICENSE_UNASSIGNED"]
    );
    assert_eq!(history[1]["changes"]["before"]["assigneeEmail"], first);
    assert_eq!(history[1]["changes"]["after"]["assigneeEmail"], second);
    assert_eq!(
        history[1]["changes"]["after"]["organizationSiret"],
        "73282932000074"
    );
    assert!(history[2]["changes"]["after"]["assigneeEmail"].is_null());

    // Status filter.
    app.ok(Some(&buyer), ASSIGN, json!({"l": ids[1], "e": first}))
        .await;
    let q = "query($o:ID!,$s:LicenseStatus){ order(id:$o){ licenses(status:$s){ edges { node { id } } } } }";
    let assigned = app
        .ok(Some(&buyer), q, json!({"o": order, "s": "ASSIGNED"}))
        .await;
    assert_eq!(
        assigned["order"]["licenses"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let unassigned = app
        .ok(Some(&buyer), q, json!({"o": order, "s": "UNASSIGNED"}))
        .await;
    assert_eq!(
        unassigned["order"]["licenses"]["edges"][0]["node"]["id"],
        ids[0]
    );
}

#[tokio::test]
async fn pagination_walks_every_key_once() {
    let app = TestApp::spawn().await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    let (order, _, _) = app.paid_order(&buyer, 7).await;
    let q = "query($o:ID!,$a:String){ order(id:$o){ licenses(first:3, after:$a){ edges { cursor node { id } } pageInfo { hasNextPage endCursor } } } }";
    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let data = app
            .ok(Some(&buyer), q, json!({"o": order, "a": after}))
            .await;
        let page = &data["order"]["licenses"];
        for edge in page["edges"].as_array().unwrap() {
            seen.push(edge["node"]["id"].as_str().unwrap().to_owned());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), 7);
    let error = app
        .error(Some(&buyer), q, json!({"o": order, "a": "zzz"}))
        .await;
    assert_eq!(error["extensions"]["field"], "after");
}

#[tokio::test]
async fn nested_key_lists_cost_a_constant_number_of_sql_statements() {
    // Background workers only run when woken, so they do not add to the count.
    let app = TestApp::spawn_with(Options {
        configure: Box::new(|config| config.job_interval_ms = 3_600_000),
        ..Options::default()
    })
    .await;
    let address = email("buyer");
    let (buyer, _) = app.verified_user(&address).await;
    // The first key of each order goes to someone with a verified account.
    app.verified_user("user0@example.com").await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let (order, ids, _) = app.paid_order(&buyer, 30).await;
        for (i, id) in ids.iter().enumerate().take(10) {
            app.ok(
                Some(&buyer),
                ASSIGN,
                json!({"l": id, "e": format!("user{i}@example.com")}),
            )
            .await;
        }
        orders.push(order);
    }
    // Let background mail sending settle so it does not count.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let q = |n: i32| {
        format!(
            "{{ orders(first: 5) {{ edges {{ node {{ id licenses(first:{n}) {{ edges {{ node {{ key status assigneeEmail assignee {{ email }} }} }} }} }} }} }} }}"
        )
    };
    let mut counts = Vec::new();
    for n in [1, 30, 100] {
        // A session of its own, so that each request reads it (a session
        // used a moment ago is kept in memory: one statement fewer).
        let (session, _) = app.sign_in(&address).await;
        let before = app.metric("keyledger_sql_statements_total").await;
        let data = app.ok(Some(&session), &q(n), json!({})).await;
        let after = app.metric("keyledger_sql_statements_total").await;
        let keys: Vec<&Value> = data["orders"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|o| o["node"]["licenses"]["edges"].as_array().unwrap())
            .map(|edge| &edge["node"])
            .collect();
        assert_eq!(keys.len(), 3 * n.min(30) as usize);
        // Each order's page holds its keys in order: the first ten are
        // assigned to user0 … user9, and only user0 has a verified account.
        let per_order = n.min(30) as usize;
        for (i, key) in keys.iter().enumerate().map(|(i, key)| (i % per_order, key)) {
            let assigned = (i < 10).then(|| format!("user{i}@example.com"));
            assert_eq!(key["assigneeEmail"].as_str(), assigned.as_deref(), "{key}");
            let status = if i < 10 { "ASSIGNED" } else { "UNASSIGNED" };
            assert_eq!(key["status"], status, "{key}");
            let verified = (i == 0).then_some("user0@example.com");
            assert_eq!(key["assignee"]["email"].as_str(), verified, "{key}");
        }
        counts.push(after - before);
    }
    assert!(
        counts.iter().all(|c| *c == counts[0]),
        "statements per request: {counts:?}"
    );
    // Authentication (the session with its account; none once it is kept),
    // orders, one page of keys with their assignees for all orders: three
    // statements.
    assert_eq!(counts[0], 3.0, "statements per request: {counts:?}");
}

#[tokio::test]
async fn admins_read_across_accounts_and_see_their_audit_log() {
    let app = TestApp::spawn().await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    let (order, _, _) = app.paid_order(&buyer, 2).await;
    let admin = app.admin().await;
    let q = "{ admin { accounts { edges { node { email } } } orders { edges { node { id } } } licenses { edges { node { id key } } } events { edges { node { kind } } } auditLog { edges { node { kind actor { role } order { id } } } } } }";
    assert_eq!(app.err(Some(&buyer), q, json!({})).await, "FORBIDDEN");
    assert_eq!(app.err(None, q, json!({})).await, "UNAUTHENTICATED");
    let data = app.ok(Some(&admin), q, json!({})).await;
    assert!(data["admin"]["accounts"]["edges"].as_array().unwrap().len() >= 2);
    assert_eq!(data["admin"]["orders"]["edges"][0]["node"]["id"], order);
    let licenses = data["admin"]["licenses"]["edges"].as_array().unwrap();
    assert_eq!(licenses.len(), 2);
    assert!(
        licenses.iter().all(|l| l["node"]["key"].is_null()),
        "admins do not see key strings"
    );
    let audit = data["admin"]["auditLog"]["edges"].as_array().unwrap();
    // The catalog's product came first (its own test checks it).
    assert_eq!(audit[0]["node"]["kind"], "PRODUCT_CREATED");
    assert_eq!(audit[1]["node"]["kind"], "ORDER_PAID");
    assert_eq!(audit[1]["node"]["actor"]["role"], "ADMIN");
    assert_eq!(audit[1]["node"]["order"]["id"], order);
}
