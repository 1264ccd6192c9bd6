//! Organizations: admins, members, organization-owned orders.
use serde_json::json;

use crate::harness::{PRODUCT, PRODUCT_NAME, TestApp, unique};

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

const CREATE_ORG: &str =
    "mutation($n:String!,$s:String!){ createOrganization(name:$n, siret:$s){ id name siret } }";
pub(crate) const ADD: &str = "mutation($o:ID!,$e:String!,$r:OrganizationRole!){ addOrganizationMember(organizationId:$o, email:$e, role:$r){ email role } }";
pub(crate) const REMOVE: &str =
    "mutation($o:ID!,$e:String!){ removeOrganizationMember(organizationId:$o, email:$e) }";
const CREATE_ORDER: &str = "mutation($o:ID){ createOrder(input:{product:\"keyledger-pro\", quantity:2, organizationId:$o}){ id organization { id name } } }";
const PAY: &str = "mutation($o:ID!){ markOrderPaid(orderId:$o){ id } }";
const ORDER: &str = "query($o:ID!){ order(id:$o){ id licenses { edges { node { id } } } } }";
const ASSIGN: &str =
    "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }";

/// A valid organization ("Acme") created by `token`'s account, its admin. Returns its id.
async fn create_org(app: &TestApp, token: &str) -> String {
    let org = app
        .ok(
            Some(token),
            CREATE_ORG,
            json!({"n": "Acme", "s": "73282932000074"}),
        )
        .await;
    org["createOrganization"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn organization_orders_belong_to_the_organization() {
    let app = TestApp::spawn().await;
    app.product(PRODUCT, PRODUCT_NAME).await;
    let admin_email = email("admin");
    let (admin, _) = app.verified_user(&admin_email).await;
    let bad = app
        .error(Some(&admin), CREATE_ORG, json!({"n": "Acme", "s": "123"}))
        .await;
    assert_eq!(bad["extensions"]["field"], "organization.siret");
    let org_id = create_org(&app, &admin).await;
    let member_email = email("member");
    let (member, _) = app.verified_user(&member_email).await;
    let (stranger, _) = app.verified_user(&email("stranger")).await;

    // Only admins manage members; strangers do not even see the organization.
    assert_eq!(
        app.err(
            Some(&stranger),
            ADD,
            json!({"o": org_id, "e": member_email, "r": "MEMBER"})
        )
        .await,
        "NOT_FOUND"
    );
    app.ok(
        Some(&admin),
        ADD,
        json!({"o": org_id, "e": member_email.to_uppercase(), "r": "MEMBER"}),
    )
    .await;
    assert_eq!(
        app.err(
            Some(&member),
            ADD,
            json!({"o": org_id, "e": "x@example.com", "r": "ADMIN"})
        )
        .await,
        "FORBIDDEN"
    );
    let me = app
        .ok(
            Some(&member),
            "{ me { organizations { role organization { name } } } }",
            json!({}),
        )
        .await;
    assert_eq!(me["me"]["organizations"][0]["role"], "MEMBER");

    // A stranger cannot buy for the organization.
    assert_eq!(
        app.err(Some(&stranger), CREATE_ORDER, json!({"o": org_id}))
            .await,
        "NOT_FOUND"
    );
    // The member buys for it; the admin holds the owner's rights.
    let order = app
        .ok(Some(&member), CREATE_ORDER, json!({"o": org_id}))
        .await;
    assert_eq!(order["createOrder"]["organization"]["name"], "Acme");
    let order_id = order["createOrder"]["id"].as_str().unwrap().to_owned();
    let site_admin = app.admin().await;
    app.ok(Some(&site_admin), PAY, json!({"o": order_id})).await;
    let data = app.ok(Some(&admin), ORDER, json!({"o": order_id})).await;
    let license = data["order"]["licenses"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.ok(
        Some(&admin),
        ASSIGN,
        json!({"l": license, "e": "user1@example.com"}),
    )
    .await;
    app.ok(
        Some(&member),
        ASSIGN,
        json!({"l": license, "e": "user2@example.com"}),
    )
    .await;
    assert_eq!(
        app.err(Some(&stranger), ORDER, json!({"o": order_id}))
            .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(
            Some(&stranger),
            ASSIGN,
            json!({"l": license, "e": "x@example.com"})
        )
        .await,
        "NOT_FOUND"
    );
    let admin_orders = app
        .ok(
            Some(&admin),
            "{ orders { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(admin_orders["orders"]["edges"][0]["node"]["id"], order_id);
    // Org admins receive the order's events.
    let events = app
        .ok(
            Some(&admin),
            "{ events(first: 50) { edges { node { kind } } } }",
            json!({}),
        )
        .await;
    assert!(
        events["events"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["node"]["kind"] == "LICENSE_ASSIGNED")
    );

    // The member leaves: the order stays with the organization, their rights go.
    app.ok(
        Some(&admin),
        REMOVE,
        json!({"o": org_id, "e": member_email}),
    )
    .await;
    assert_eq!(
        app.err(Some(&member), ORDER, json!({"o": order_id})).await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(
            Some(&member),
            ASSIGN,
            json!({"l": license, "e": "x@example.com"})
        )
        .await,
        "NOT_FOUND"
    );
    app.ok(Some(&admin), ORDER, json!({"o": order_id})).await;

    // At least one admin stays.
    assert_eq!(
        app.err(Some(&admin), REMOVE, json!({"o": org_id, "e": admin_email}))
            .await,
        "CONFLICT"
    );
    assert_eq!(
        app.err(
            Some(&admin),
            ADD,
            json!({"o": org_id, "e": admin_email, "r": "MEMBER"})
        )
        .await,
        "CONFLICT"
    );
}

#[tokio::test]
async fn an_unverified_member_has_no_rights_until_verified() {
    let app = TestApp::spawn().await;
    app.product(PRODUCT, PRODUCT_NAME).await;
    let (admin, _) = app.verified_user(&email("admin")).await;
    let org_id = create_org(&app, &admin).await;
    let new_admin = email("newadmin");
    app.ok(
        Some(&admin),
        ADD,
        json!({"o": org_id, "e": new_admin, "r": "ADMIN"}),
    )
    .await;
    let (unverified, _) = app.unverified_user(&new_admin).await;
    assert_eq!(
        app.err(
            Some(&unverified),
            ADD,
            json!({"o": org_id, "e": "x@example.com", "r": "MEMBER"})
        )
        .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(Some(&unverified), CREATE_ORDER, json!({"o": org_id}))
            .await,
        "EMAIL_NOT_VERIFIED"
    );
    let token = app.verification_token(&new_admin).await;
    app.ok(
        Some(&unverified),
        "mutation($t:String!){ verifyEmail(token:$t){ id } }",
        json!({"t": token}),
    )
    .await;
    app.ok(
        Some(&unverified),
        ADD,
        json!({"o": org_id, "e": "x@example.com", "r": "MEMBER"}),
    )
    .await;
}

const KEYS: &str = "query($o:ID!){ order(id:$o){ licenses(first:10){ edges { node { key } } } } }";
const CLAIM: &str = "mutation($k:String!){ claimLicense(key:$k){ outcome } }";
pub(crate) const START_TRANSFER: &str =
    "mutation($o:ID!,$e:String!){ startOrderTransfer(orderId:$o, newOwnerEmail:$e){ id } }";
pub(crate) const ACCEPT_TRANSFER: &str =
    "mutation($t:String!){ acceptOrderTransfer(token:$t){ status order { id } } }";

/// An organization with an admin and a member, and an order the member
/// bought for it, paid. Returns (admin token, member token, member email,
/// organization id, order id, the order's keys).
pub(crate) async fn member_bought_order(
    app: &TestApp,
) -> (String, String, String, String, String, Vec<String>) {
    app.product(PRODUCT, PRODUCT_NAME).await;
    let (admin, _) = app.verified_user(&email("admin")).await;
    let org_id = create_org(app, &admin).await;
    let member_email = email("buyer");
    let (member, _) = app.verified_user(&member_email).await;
    app.ok(
        Some(&admin),
        ADD,
        json!({"o": org_id, "e": member_email, "r": "MEMBER"}),
    )
    .await;
    let order = app
        .ok(Some(&member), CREATE_ORDER, json!({"o": org_id}))
        .await;
    let order_id = order["createOrder"]["id"].as_str().unwrap().to_owned();
    let site_admin = app.admin().await;
    app.ok(Some(&site_admin), PAY, json!({"o": order_id})).await;
    let data = app.ok(Some(&admin), KEYS, json!({"o": order_id})).await;
    let keys = data["order"]["licenses"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["key"].as_str().unwrap().to_owned())
        .collect();
    (admin, member, member_email, org_id, order_id, keys)
}

/// `sender` starts a transfer of `order_id` to a new, verified account.
/// Returns (the new owner's token, their email, the transfer's token).
async fn transfer_to_new_owner(
    app: &TestApp,
    sender: &str,
    order_id: &str,
) -> (String, String, String) {
    let new_owner_email = email("newowner");
    let (new_owner, _) = app.verified_user(&new_owner_email).await;
    app.ok(
        Some(sender),
        START_TRANSFER,
        json!({"o": order_id, "e": new_owner_email}),
    )
    .await;
    let token = app.transfer_token(&new_owner_email).await;
    (new_owner, new_owner_email, token)
}

#[tokio::test]
async fn an_organization_admin_transfers_a_members_order() {
    let app = TestApp::spawn().await;
    let (admin, _, _, _, order_id, _) = member_bought_order(&app).await;
    let (new_owner, _, token) = transfer_to_new_owner(&app, &admin, &order_id).await;
    let accepted = app
        .ok(Some(&new_owner), ACCEPT_TRANSFER, json!({"t": token}))
        .await;
    assert_eq!(accepted["acceptOrderTransfer"]["status"], "ACCEPTED");
    // The order left the organization: the new owner holds it, the admin no longer does.
    app.ok(Some(&new_owner), ORDER, json!({"o": order_id}))
        .await;
    assert_eq!(
        app.err(Some(&admin), ORDER, json!({"o": order_id})).await,
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn a_buyer_who_left_can_neither_hand_the_order_over_nor_hear_of_its_claims() {
    let app = TestApp::spawn().await;
    let (admin, member, member_email, org_id, order_id, keys) = member_bought_order(&app).await;
    // Only the organization's admins transfer its orders: the buyer is one here.
    app.ok(
        Some(&admin),
        ADD,
        json!({"o": org_id, "e": member_email, "r": "ADMIN"}),
    )
    .await;
    let (new_owner, new_owner_email, token) = transfer_to_new_owner(&app, &member, &order_id).await;

    // While a member, the buyer hears of claims on the order's keys.
    let (claimer, _) = app.verified_user(&email("claimer")).await;
    app.ok(Some(&claimer), CLAIM, json!({"k": keys[0]})).await;
    let is_claim = |m: &crate::harness::Mail| m.subject.contains("claimed");
    let claimed = |mails: Vec<crate::harness::Mail>| mails.iter().filter(|m| is_claim(m)).count();
    app.wait_mail(&member_email, "claim", is_claim).await;
    assert_eq!(claimed(app.mails_to(&member_email)), 1);

    app.ok(
        Some(&admin),
        REMOVE,
        json!({"o": org_id, "e": member_email}),
    )
    .await;
    // The transfer the buyer started was cancelled with their leaving: it
    // cannot be accepted, and does not stand in the way of a new one.
    assert_eq!(
        app.err(Some(&new_owner), ACCEPT_TRANSFER, json!({"t": token}))
            .await,
        "CONFLICT"
    );
    app.ok(Some(&admin), ORDER, json!({"o": order_id})).await;
    app.ok(
        Some(&admin),
        START_TRANSFER,
        json!({"o": order_id, "e": new_owner_email}),
    )
    .await;
    // A claim after the buyer left sends them nothing (the email names the
    // key): once every queued email has gone out, they still have one.
    let (late, _) = app.verified_user(&email("late")).await;
    app.ok(Some(&late), CLAIM, json!({"k": keys[1]})).await;
    app.wait_mail_drained().await;
    assert_eq!(claimed(app.mails_to(&member_email)), 1);
}

/// Organizations with two admins each, all removing each other at once: in
/// each, exactly one removal goes through (the other admin is gone by then,
/// or would be the last one). Many pairs at once, so that on PostgreSQL some
/// of them overlap inside the database.
#[tokio::test]
async fn two_admins_removing_each_other_at_once_leave_one() {
    let app = TestApp::spawn().await;
    let mut pairs = Vec::new();
    for _ in 0..8 {
        let first_email = email("first");
        let (first, _) = app.verified_user(&first_email).await;
        let org_id = create_org(&app, &first).await;
        let second_email = email("second");
        let (second, _) = app.verified_user(&second_email).await;
        app.ok(
            Some(&first),
            ADD,
            json!({"o": org_id, "e": second_email, "r": "ADMIN"}),
        )
        .await;
        pairs.push((org_id, first, first_email, second, second_email));
    }
    let app = &app;
    let removals = pairs.iter().map(
        |(org_id, first, first_email, second, second_email)| async move {
            let (a, b) = tokio::join!(
                app.gql(Some(first), REMOVE, json!({"o": org_id, "e": second_email})),
                app.gql(Some(second), REMOVE, json!({"o": org_id, "e": first_email})),
            );
            [a, b]
        },
    );
    for results in futures_util::future::join_all(removals).await {
        let removed = results.iter().filter(|r| r["errors"].is_null()).count();
        assert_eq!(removed, 1, "exactly one removal goes through: {results:?}");
    }
}

/// Who may do what on an organization's order: its admins hold the owner's
/// rights (assign, approve claims, settings, devices); a member who did not
/// buy it, and a stranger, hold none; only admins manage members. Device
/// events reach the admins and the assignee, and the key's history.
#[tokio::test]
async fn organization_rights_for_admins_members_and_strangers() {
    let app = TestApp::spawn().await;
    let (admin, _, _, org_id, order_id, keys) = member_bought_order(&app).await;
    let other_email = email("other");
    let (other, _) = app.verified_user(&other_email).await;
    app.ok(
        Some(&admin),
        ADD,
        json!({"o": org_id, "e": other_email, "r": "MEMBER"}),
    )
    .await;
    let (stranger, _) = app.verified_user(&email("stranger")).await;

    assert_eq!(
        app.err(
            None,
            CREATE_ORG,
            json!({"n": "Acme", "s": "73282932000074"})
        )
        .await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        app.err(
            Some(&stranger),
            REMOVE,
            json!({"o": org_id, "e": other_email})
        )
        .await,
        "NOT_FOUND"
    );
    assert_eq!(
        app.err(Some(&other), REMOVE, json!({"o": org_id, "e": other_email}))
            .await,
        "FORBIDDEN"
    );

    let data = app.ok(Some(&admin), ORDER, json!({"o": order_id})).await;
    let license = |i: usize| {
        data["order"]["licenses"]["edges"][i]["node"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let assignee_email = email("assignee");
    let (assignee, _) = app.verified_user(&assignee_email).await;
    for who in [&other, &stranger] {
        assert_eq!(
            app.err(
                Some(who),
                ASSIGN,
                json!({"l": license(0), "e": assignee_email})
            )
            .await,
            "NOT_FOUND"
        );
    }
    app.ok(
        Some(&admin),
        ASSIGN,
        json!({"l": license(0), "e": assignee_email}),
    )
    .await;

    // Settings and claims.
    let manual = "mutation($o:ID!){ setOrderManualApproval(orderId:$o, value:true){ id } }";
    for who in [&other, &stranger] {
        assert_eq!(
            app.err(Some(who), manual, json!({"o": order_id})).await,
            "NOT_FOUND"
        );
    }
    app.ok(Some(&admin), manual, json!({"o": order_id})).await;
    let (claimer, _) = app.verified_user(&email("claimer")).await;
    let claim = app
        .ok(
            Some(&claimer),
            "mutation($k:String!){ claimLicense(key:$k){ outcome claim { id status } } }",
            json!({"k": keys[1]}),
        )
        .await;
    assert_eq!(claim["claimLicense"]["claim"]["status"], "PENDING");
    let claim_id = claim["claimLicense"]["claim"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let approve = "mutation($c:ID!){ approveClaim(claimId:$c){ status } }";
    for who in [&other, &stranger] {
        assert_eq!(
            app.err(Some(who), approve, json!({"c": claim_id})).await,
            "NOT_FOUND"
        );
    }
    let approved = app.ok(Some(&admin), approve, json!({"c": claim_id})).await;
    assert_eq!(approved["approveClaim"]["status"], "APPROVED");

    // Devices: events to the admins and the assignee, and the key's history.
    app.ok(
        None,
        "mutation($k:String!){ activateLicense(key:$k, fingerprint:\"fp-1\", name:\"Laptop\"){ fingerprint } }",
        json!({"k": keys[0]}),
    )
    .await;
    let kinds = |events: &serde_json::Value| -> Vec<String> {
        events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let feed = "{ events(first: 100) { edges { node { kind } } } }";
    for who in [&admin, &assignee] {
        let events = app.ok(Some(who), feed, json!({})).await;
        assert!(
            kinds(&events["events"]["edges"]).contains(&"DEVICE_ACTIVATED".to_owned()),
            "{events}"
        );
    }
    let other_events = app.ok(Some(&other), feed, json!({})).await;
    assert!(!kinds(&other_events["events"]["edges"]).contains(&"DEVICE_ACTIVATED".to_owned()));
    let force =
        "mutation($l:ID!){ deactivateDevice(licenseId:$l, fingerprint:\"fp-1\"){ fingerprint } }";
    for who in [&other, &stranger] {
        assert_eq!(
            app.err(Some(who), force, json!({"l": license(0)})).await,
            "NOT_FOUND"
        );
    }
    app.ok(Some(&admin), force, json!({"l": license(0)})).await;
    let history = app
        .ok(
            Some(&admin),
            "query($l:ID!){ license(id:$l){ history(first: 50) { edges { node { kind } } } } }",
            json!({"l": license(0)}),
        )
        .await;
    let kinds = kinds(&history["license"]["history"]["edges"]);
    assert!(kinds.contains(&"DEVICE_ACTIVATED".to_owned()), "{kinds:?}");
    assert!(
        kinds.contains(&"DEVICE_DEACTIVATED".to_owned()),
        "{kinds:?}"
    );
}
