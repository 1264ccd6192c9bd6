//! Organizations: admins, members, organization-owned orders (issue 8).
use serde_json::json;

use crate::harness::{TestApp, unique};

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

const CREATE_ORG: &str =
    "mutation($n:String!,$s:String!){ createOrganization(name:$n, siret:$s){ id name siret } }";
const ADD: &str = "mutation($o:ID!,$e:String!,$r:OrganizationRole!){ addOrganizationMember(organizationId:$o, email:$e, role:$r){ email role } }";
const REMOVE: &str =
    "mutation($o:ID!,$e:String!){ removeOrganizationMember(organizationId:$o, email:$e) }";
const CREATE_ORDER: &str = "mutation($o:ID){ createOrder(input:{product:\"Pro\", quantity:2, organizationId:$o}){ id organization { id name } } }";
const PAY: &str = "mutation($o:ID!){ markOrderPaid(orderId:$o){ id } }";
const ORDER: &str = "query($o:ID!){ order(id:$o){ id licenses { edges { node { id } } } } }";
const ASSIGN: &str =
    "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }";

#[tokio::test]
async fn organization_orders_belong_to_the_organization() {
    let app = TestApp::spawn().await;
    let admin_email = email("admin");
    let (admin, _) = app.verified_user(&admin_email).await;
    let bad = app
        .error(Some(&admin), CREATE_ORG, json!({"n": "Acme", "s": "123"}))
        .await;
    assert_eq!(bad["extensions"]["field"], "organization.siret");
    let org = app
        .ok(
            Some(&admin),
            CREATE_ORG,
            json!({"n": "Acme", "s": "73282932000074"}),
        )
        .await;
    let org_id = org["createOrganization"]["id"].as_str().unwrap().to_owned();
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
    let (admin, _) = app.verified_user(&email("admin")).await;
    let org = app
        .ok(
            Some(&admin),
            CREATE_ORG,
            json!({"n": "Acme", "s": "73282932000074"}),
        )
        .await;
    let org_id = org["createOrganization"]["id"].as_str().unwrap().to_owned();
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
        "NOT_FOUND"
    );
    let token = app.verification_token(&new_admin).await;
    app.ok(
        None,
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
