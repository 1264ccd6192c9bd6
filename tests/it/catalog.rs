//! The product catalog: written by administrators, read by signed-in
//! accounts, named by orders; emails use its names. Also the rules that keep
//! keyledger from sending mail for anyone who asks: verified accounts only
//! for orders and transfers, and limits on every email a caller addresses.
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::harness::{Options, PRODUCT, PRODUCT_NAME, TestApp, TestDb, unique};

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

const CREATE: &str = "mutation($i:CreateProductInput!){ createProduct(input:$i){ code name unitPrice { amount currency } createdAt updatedAt } }";
const UPDATE: &str = "mutation($c:String!,$i:UpdateProductInput!){ updateProduct(code:$c, input:$i){ code name unitPrice { amount currency } } }";
const LIST: &str = "{ products { code name unitPrice { amount currency } } }";
const ORDER: &str =
    "mutation($p:String!){ createOrder(input:{product:$p, quantity:1}){ id product productName } }";
const START: &str =
    "mutation($o:ID!,$e:String!){ startOrderTransfer(orderId:$o, newOwnerEmail:$e){ id } }";
const CANCEL: &str = "mutation($t:ID!){ cancelOrderTransfer(transferId:$t){ status } }";
const REQUEST: &str =
    "mutation($b:String!){ requestLicense(input:{buyerEmail:$b}){ request { id } } }";
const SIGN_UP: &str = "mutation($e:String!,$p:String!){ signUp(email:$e,password:$p){ email } }";
const RESEND: &str = "mutation{ resendVerificationEmail }";

#[tokio::test]
async fn administrators_write_the_catalog_and_no_one_else_does() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (user, _) = app.verified_user(&email("user")).await;
    let input = json!({"i": {"code": "kl-pro.2027_a", "name": "Keyledger Pro 2027", "unitPrice": {"amount": 4900, "currency": "eur"}}});

    assert_eq!(
        app.err(Some(&user), CREATE, input.clone()).await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.err(None, CREATE, input.clone()).await,
        "UNAUTHENTICATED"
    );
    let created = app.ok(Some(&admin), CREATE, input.clone()).await["createProduct"].clone();
    assert_eq!(created["code"], "kl-pro.2027_a");
    assert_eq!(created["name"], "Keyledger Pro 2027");
    assert_eq!(
        created["unitPrice"],
        json!({"amount": 4900, "currency": "EUR"})
    );
    assert_eq!(app.err(Some(&admin), CREATE, input).await, "CONFLICT");

    for (bad, field) in [
        (json!({"code": "has space", "name": "X"}), "code"),
        (json!({"code": "", "name": "X"}), "code"),
        (json!({"code": "x".repeat(65), "name": "X"}), "code"),
        (json!({"code": "ok", "name": " "}), "name"),
        (json!({"code": "ok", "name": "x".repeat(101)}), "name"),
        (
            json!({"code": "ok", "name": "A\nBcc: eve@example.com"}),
            "name",
        ),
        (
            json!({"code": "ok", "name": "X", "unitPrice": {"amount": -1, "currency": "EUR"}}),
            "unitPrice.amount",
        ),
        (
            json!({"code": "ok", "name": "X", "unitPrice": {"amount": 1, "currency": "EURO"}}),
            "unitPrice.currency",
        ),
    ] {
        let error = app.error(Some(&admin), CREATE, json!({"i": bad})).await;
        assert_eq!(error["extensions"]["code"], "VALIDATION", "{bad}");
        assert_eq!(error["extensions"]["field"], field, "{bad}");
    }

    let rename = json!({"c": "kl-pro.2027_a", "i": {"name": "Keyledger Pro (2027)"}});
    assert_eq!(
        app.err(Some(&user), UPDATE, rename.clone()).await,
        "FORBIDDEN"
    );
    assert_eq!(
        app.err(None, UPDATE, rename.clone()).await,
        "UNAUTHENTICATED"
    );
    let renamed = app.ok(Some(&admin), UPDATE, rename).await["updateProduct"].clone();
    assert_eq!(renamed["name"], "Keyledger Pro (2027)");
    assert_eq!(
        renamed["unitPrice"]["amount"], 4900,
        "an omitted price stays"
    );
    let repriced = app
        .ok(
            Some(&admin),
            UPDATE,
            json!({"c": "kl-pro.2027_a", "i": {"unitPrice": {"amount": 0, "currency": "USD"}}}),
        )
        .await["updateProduct"]
        .clone();
    assert_eq!(
        repriced["unitPrice"],
        json!({"amount": 0, "currency": "USD"})
    );
    assert_eq!(repriced["name"], "Keyledger Pro (2027)");
    let free = app
        .ok(
            Some(&admin),
            UPDATE,
            json!({"c": "kl-pro.2027_a", "i": {"unitPrice": null}}),
        )
        .await["updateProduct"]
        .clone();
    assert!(free["unitPrice"].is_null());
    assert_eq!(
        app.err(
            Some(&admin),
            UPDATE,
            json!({"c": "nope", "i": {"name": "X"}})
        )
        .await,
        "NOT_FOUND"
    );

    // Any signed-in account reads the catalog; anonymous callers do not.
    let listed = app.ok(Some(&user), LIST, json!({})).await;
    assert_eq!(
        listed["products"],
        json!([{"code": "kl-pro.2027_a", "name": "Keyledger Pro (2027)", "unitPrice": null}])
    );
    assert_eq!(app.err(None, LIST, json!({})).await, "UNAUTHENTICATED");

    // Each change is in the administrators' audit log, with what changed.
    let audit = app
        .ok(
            Some(&admin),
            "{ admin { auditLog { edges { node { kind actor { role } changes } } } } }",
            json!({}),
        )
        .await;
    let entries: Vec<Value> = audit["admin"]["auditLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "PRODUCT_CREATED",
            "PRODUCT_UPDATED",
            "PRODUCT_UPDATED",
            "PRODUCT_UPDATED"
        ]
    );
    assert!(entries.iter().all(|e| e["actor"]["role"] == "ADMIN"));
    let changes = &entries[1]["changes"];
    assert_eq!(changes["before"]["name"], "Keyledger Pro 2027");
    assert_eq!(changes["after"]["name"], "Keyledger Pro (2027)");
}

#[tokio::test]
async fn orders_name_a_catalog_product_and_emails_use_its_name() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    app.ok(
        Some(&admin),
        CREATE,
        json!({"i": {"code": "pro", "name": "Keyledger Pro"}}),
    )
    .await;

    for unknown in ["nope", "Pro", "  ", "<b>Free keys</b> at evil.example"] {
        let error = app.error(Some(&buyer), ORDER, json!({"p": unknown})).await;
        assert_eq!(error["extensions"]["code"], "VALIDATION", "{unknown}");
        assert_eq!(error["extensions"]["field"], "product", "{unknown}");
    }
    let order = app.ok(Some(&buyer), ORDER, json!({"p": " pro "})).await["createOrder"].clone();
    assert_eq!(order["product"], "pro");
    assert_eq!(order["productName"], "Keyledger Pro");
    let order_id = order["id"].as_str().unwrap().to_owned();

    // A rename shows at once, in the API and in the next emails.
    app.ok(
        Some(&admin),
        UPDATE,
        json!({"c": "pro", "i": {"name": "Keyledger Professional"}}),
    )
    .await;
    app.ok(
        Some(&admin),
        "mutation($o:ID!){ markOrderPaid(orderId:$o){ status } }",
        json!({"o": order_id}),
    )
    .await;
    let data = app
        .ok(
            Some(&buyer),
            "query($o:ID!){ order(id:$o){ product productName licenses { edges { node { id product productName } } } } }",
            json!({"o": order_id}),
        )
        .await;
    assert_eq!(data["order"]["productName"], "Keyledger Professional");
    let license = &data["order"]["licenses"]["edges"][0]["node"];
    assert_eq!(license["product"], "pro");
    assert_eq!(license["productName"], "Keyledger Professional");

    let assignee = email("assignee");
    app.ok(
        Some(&buyer),
        "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }",
        json!({"l": license["id"], "e": assignee}),
    )
    .await;
    let mail = app.wait_mails(&assignee, 1).await.remove(0);
    assert_eq!(
        mail.subject,
        "A Keyledger Professional license was assigned to you"
    );

    let new_owner = email("newowner");
    app.ok(Some(&buyer), START, json!({"o": order_id, "e": new_owner}))
        .await;
    let mail = app.wait_mails(&new_owner, 1).await.remove(0);
    assert!(
        mail.body.contains("(Keyledger Professional)"),
        "{}",
        mail.body
    );
}

#[tokio::test]
async fn unverified_accounts_neither_order_nor_start_transfers() {
    let app = TestApp::spawn().await;
    app.product(PRODUCT, PRODUCT_NAME).await;
    let (unverified, _) = app.unverified_user(&email("unverified")).await;
    assert_eq!(
        app.err(Some(&unverified), ORDER, json!({"p": PRODUCT}))
            .await,
        "EMAIL_NOT_VERIFIED"
    );

    // An owner whose address is no longer verified (as after a change of
    // address) keeps the order but cannot send it anywhere, nor buy.
    let owner_email = email("owner");
    let (owner, _) = app.verified_user(&owner_email).await;
    let (order, _, _) = app.paid_order(&owner, 1).await;
    let account = entity::account::Entity::find()
        .filter(entity::account::Column::Email.eq(&owner_email))
        .one(&app.app.state.ctx.db)
        .await
        .unwrap()
        .unwrap();
    let mut unproven: entity::account::ActiveModel = account.into();
    unproven.email_verified_at = Set(None);
    unproven.update(&app.app.state.ctx.db).await.unwrap();
    let (owner, _) = app.sign_in(&owner_email).await;
    let target = email("target");
    assert_eq!(
        app.err(Some(&owner), START, json!({"o": order, "e": target}))
            .await,
        "EMAIL_NOT_VERIFIED"
    );
    assert_eq!(
        app.err(Some(&owner), ORDER, json!({"p": PRODUCT})).await,
        "EMAIL_NOT_VERIFIED"
    );
    assert!(app.mails_to(&target).is_empty());
}

/// A test app whose mail limits are `per_hour` per account and recipient,
/// and `per_client_per_hour` per client address.
async fn limited(per_hour: u32, per_client_per_hour: u32) -> TestApp {
    TestApp::spawn_with(Options {
        configure: Box::new(move |c| {
            c.mail_rate_per_hour = per_hour;
            c.mail_client_rate_per_hour = per_client_per_hour;
        }),
        ..Options::default()
    })
    .await
}

fn assert_rate_limited(error: &Value) {
    assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{error}");
    let retry_after = error["extensions"]["retryAfter"].as_u64().unwrap_or(0);
    assert!(retry_after >= 1, "{error}");
}

#[tokio::test]
async fn license_requests_are_limited_per_account() {
    let app = limited(2, 1000).await;
    let (requester, _) = app.verified_user(&email("requester")).await;
    for _ in 0..2 {
        app.ok(Some(&requester), REQUEST, json!({"b": email("buyer")}))
            .await;
    }
    let buyer = email("buyer");
    assert_rate_limited(
        &app.error(Some(&requester), REQUEST, json!({"b": buyer}))
            .await,
    );
    // Another account still may.
    let (other, _) = app.verified_user(&email("other")).await;
    app.ok(Some(&other), REQUEST, json!({"b": buyer})).await;
}

#[tokio::test]
async fn license_requests_are_limited_per_recipient() {
    let app = limited(2, 1000).await;
    let victim = email("victim");
    for _ in 0..2 {
        let (requester, _) = app.verified_user(&email("requester")).await;
        app.ok(
            Some(&requester),
            REQUEST,
            json!({"b": victim.to_uppercase()}),
        )
        .await;
    }
    let (requester, _) = app.verified_user(&email("requester")).await;
    assert_rate_limited(
        &app.error(Some(&requester), REQUEST, json!({"b": victim}))
            .await,
    );
}

#[tokio::test]
async fn sign_ups_are_limited_per_client_address() {
    let app = limited(1000, 3).await;
    for _ in 0..3 {
        app.sign_up(&email("person")).await;
    }
    let refused = app
        .error(
            None,
            SIGN_UP,
            json!({"e": email("person"), "p": crate::harness::PASSWORD}),
        )
        .await;
    assert_rate_limited(&refused);
}

#[tokio::test]
async fn sign_ups_for_one_address_are_limited_even_once_it_has_an_account() {
    let app = limited(2, 1000).await;
    let victim = email("victim");
    let variables = json!({"e": victim, "p": crate::harness::PASSWORD});
    app.sign_up(&victim).await;
    app.ok(None, SIGN_UP, variables.clone()).await;
    assert_rate_limited(&app.error(None, SIGN_UP, variables).await);
    assert_eq!(app.wait_mails(&victim, 2).await.len(), 2);
}

#[tokio::test]
async fn resending_the_verification_email_is_limited() {
    let app = limited(3, 1000).await;
    let (unverified, _) = app.unverified_user(&email("unverified")).await;
    // The sign-up's email was the first to this address.
    for _ in 0..2 {
        app.ok(Some(&unverified), RESEND, json!({})).await;
    }
    assert_rate_limited(&app.error(Some(&unverified), RESEND, json!({})).await);
}

#[tokio::test]
async fn order_transfers_are_limited_per_account() {
    let app = limited(2, 1000).await;
    let (owner, _) = app.verified_user(&email("owner")).await;
    let (order, _, _) = app.paid_order(&owner, 1).await;
    for _ in 0..2 {
        let started = app
            .ok(Some(&owner), START, json!({"o": order, "e": email("to")}))
            .await;
        app.ok(
            Some(&owner),
            CANCEL,
            json!({"t": started["startOrderTransfer"]["id"]}),
        )
        .await;
    }
    let to = email("to");
    assert_rate_limited(
        &app.error(Some(&owner), START, json!({"o": order, "e": to}))
            .await,
    );
    assert!(app.mails_to(&to).is_empty());
}

/// Orders from before the catalog name their product in free text: the
/// migration makes each distinct text a product and the orders name its code.
#[tokio::test]
async fn the_migration_moves_existing_order_products_into_the_catalog() {
    use migration::{Migrator, MigratorTrait};
    let test_db = TestDb::empty().await;
    let db = sea_orm::Database::connect(&test_db.url).await.unwrap();
    let before_catalog = Migrator::migrations()
        .iter()
        .position(|m| m.name() == "m20261202_000001_create_products")
        .expect("the catalog's migration") as u32;
    Migrator::up(&db, Some(before_catalog)).await.unwrap();

    let now = chrono::Utc::now();
    let owner = entity::account::ActiveModel {
        email: Set("old-buyer@example.com".into()),
        password_hash: Set("-".into()),
        created_at: Set(now),
        ..Default::default()
    }
    .insert(&db)
    .await
    .unwrap();
    let texts = [
        "Keyledger Pro",
        "Pro Max",
        "Pro-Max",
        "Keyledger Pro",
        "Café <b>Édition</b>",
    ];
    let mut ids = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let at = now - chrono::Duration::days(10 - i as i64);
        // Inserted without reading the row back: the entity has columns
        // that later migrations add.
        let order = entity::order::Entity::insert(entity::order::ActiveModel {
            owner_id: Set(owner.id),
            organization_id: Set(None),
            product: Set((*text).into()),
            quantity: Set(1),
            status: Set(entity::order::OrderStatus::PendingPayment),
            require_manual_approval: Set(None),
            device_limit: Set(1),
            created_at: Set(at),
            paid_at: Set(None),
            ..Default::default()
        })
        .exec(&db)
        .await
        .unwrap();
        ids.push(order.last_insert_id);
    }

    Migrator::up(&db, None).await.unwrap();

    let mut products: Vec<(String, String)> = entity::product::Entity::find()
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.code, p.name))
        .collect();
    products.sort();
    let expected: Vec<(String, String)> = [
        ("Caf-b-dition-b", "Café <b>Édition</b>"),
        ("Keyledger-Pro", "Keyledger Pro"),
        ("Pro-Max", "Pro-Max"),
        ("Pro-Max-2", "Pro Max"),
    ]
    .iter()
    .map(|(c, n)| ((*c).to_owned(), (*n).to_owned()))
    .collect();
    assert_eq!(products, expected);
    let mut codes = Vec::new();
    for id in &ids {
        let order = entity::order::Entity::find_by_id(*id)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        codes.push(order.product);
    }
    assert_eq!(
        codes,
        [
            "Keyledger-Pro",
            "Pro-Max-2",
            "Pro-Max",
            "Keyledger-Pro",
            "Caf-b-dition-b"
        ]
    );
    // A product is as old as its first order.
    let first = entity::product::Entity::find()
        .filter(entity::product::Column::Code.eq("Keyledger-Pro"))
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.created_at.timestamp(),
        (now - chrono::Duration::days(10)).timestamp()
    );

    // And back: the orders name their products in text again.
    let from_catalog = Migrator::migrations().len() as u32 - before_catalog;
    Migrator::down(&db, Some(from_catalog)).await.unwrap();
    use sea_orm::{ConnectionTrait, Statement};
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT product FROM orders WHERE id = {}", ids[1]),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "product").unwrap(), "Pro Max");
    db.close().await.ok();
}
