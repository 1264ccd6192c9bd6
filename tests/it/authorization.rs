//! The authorization matrix: every operation of the schema, as each kind of
//! caller, with the outcome it must have. The schema is read by
//! introspection, so an operation added without a row here fails the test.
use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::{
    harness::{TestApp, unique},
    introspect::Schema,
    organizations::{ADD, member_bought_order},
};

/// Callers, in the order of each row's outcomes.
const ROLES: [&str; 9] = [
    "anonymous",
    "unverified",
    "stranger",
    "owner",
    "assignee",
    "former assignee",
    "organization member",
    "organization admin",
    "site admin",
];

/// One operation: its root type, field, a request exercising it, and per
/// role (in [`ROLES`] order) `OK`, an error code, or `-` (not exercised for
/// that role, because it would change the world the later rows rely on or
/// end the caller's session). Rows run in order, each role in turn.
/// Variables: `$o` the organization's order (bought by "owner", a plain
/// member), `$k0` its key held by "assignee" (before by "former assignee"),
/// `$k1` its free key, `$key0` the key string of `$k0`, `$org` the
/// organization, `$owner` the owner's email, `$fresh` a new address.
const MATRIX: &[(&str, &str, &str, &str)] = &[
    ("Query", "me", "{ me { id } }", "OK OK OK OK OK OK OK OK OK"),
    (
        "Query",
        "products",
        "{ products { code name } }",
        "UNAUTHENTICATED OK OK OK OK OK OK OK OK",
    ),
    (
        "Mutation",
        "createProduct",
        "mutation{ createProduct(input:{code:\"matrix-product\", name:\"Matrix\"}){ code } }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN OK",
    ),
    (
        "Mutation",
        "updateProduct",
        "mutation{ updateProduct(code:\"matrix-product\", input:{name:\"Matrix 2\"}){ code } }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN OK",
    ),
    (
        "Query",
        "orders",
        "{ orders { edges { node { id } } } }",
        "UNAUTHENTICATED OK OK OK OK OK OK OK OK",
    ),
    (
        "Query",
        "order",
        "query($o:ID!){ order(id:$o){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND OK NOT_FOUND NOT_FOUND NOT_FOUND OK OK",
    ),
    (
        "Query",
        "license",
        "query($k0:ID!){ license(id:$k0){ id key } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND OK OK NOT_FOUND NOT_FOUND OK OK",
    ),
    (
        "Query",
        "assignedLicenses",
        "{ assignedLicenses { edges { node { id } } } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED OK OK OK OK OK OK OK",
    ),
    (
        "Query",
        "claimRequests",
        "{ claimRequests { edges { node { id } } } }",
        "UNAUTHENTICATED OK OK OK OK OK OK OK OK",
    ),
    (
        "Query",
        "myClaims",
        "{ myClaims { edges { node { id } } } }",
        "UNAUTHENTICATED OK OK OK OK OK OK OK OK",
    ),
    (
        "Query",
        "licenseRequests",
        "{ licenseRequests(direction: INCOMING) { edges { node { id } } } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED OK OK OK OK OK OK OK",
    ),
    (
        "Query",
        "orderTransfers",
        "{ orderTransfers(direction: INCOMING) { id } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED OK OK OK OK OK OK OK",
    ),
    (
        "Query",
        "validateLicense",
        "query($key0:String!){ validateLicense(key:$key0){ valid } }",
        "OK OK OK OK OK OK OK OK OK",
    ),
    (
        "Query",
        "events",
        "{ events { edges { node { id } } } }",
        "UNAUTHENTICATED OK OK OK OK OK OK OK OK",
    ),
    (
        "Query",
        "admin",
        "{ admin { accounts { edges { node { id } } } } }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN OK",
    ),
    (
        "Mutation",
        "signUp",
        "mutation($fresh:String!){ signUp(email:$fresh, password:\"correct horse battery\"){ __typename } }",
        "OK OK OK OK OK OK OK OK OK",
    ),
    (
        "Mutation",
        "verifyEmail",
        "mutation{ verifyEmail(token:\"forged\"){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "requestPasswordReset",
        "mutation($fresh:String!){ requestPasswordReset(email:$fresh) }",
        "OK OK OK OK OK OK OK OK OK",
    ),
    (
        "Mutation",
        "resetPassword",
        "mutation{ resetPassword(token:\"forged\", newPassword:\"correct horse battery\") }",
        "NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "changePassword",
        "mutation{ changePassword(current:\"wrong password here\", new:\"another good password\") }",
        "UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED",
    ),
    (
        "Mutation",
        "changeEmail",
        "mutation($fresh:String!){ changeEmail(newEmail:$fresh, password:\"wrong password here\") }",
        "UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED UNAUTHENTICATED",
    ),
    (
        "Mutation",
        "revokeSession",
        "mutation{ revokeSession(id:\"999999999\") }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "resendVerificationEmail",
        "mutation{ resendVerificationEmail }",
        "UNAUTHENTICATED OK - - - - - - -",
    ),
    (
        "Mutation",
        "signIn",
        "mutation($fresh:String!){ signIn(email:$fresh, password:\"wrong password here\"){ token } }",
        "UNAUTHENTICATED - - - - - - - -",
    ),
    (
        "Mutation",
        "signOut",
        "mutation{ signOut }",
        "UNAUTHENTICATED - - - - - - - -",
    ),
    (
        "Mutation",
        "createOrder",
        "mutation{ createOrder(input:{product:\"keyledger-pro\", quantity:1}){ id } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED OK OK OK OK OK OK OK",
    ),
    (
        "Mutation",
        "markOrderPaid",
        "mutation($o:ID!){ markOrderPaid(orderId:$o){ id } }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN CONFLICT",
    ),
    (
        "Mutation",
        "assignLicense",
        "mutation($k1:ID!){ assignLicense(input:{licenseId:$k1, email:\"third@example.com\"}){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND OK NOT_FOUND NOT_FOUND NOT_FOUND OK NOT_FOUND",
    ),
    (
        "Mutation",
        "unassignLicense",
        "mutation($k1:ID!){ unassignLicense(licenseId:$k1){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND - NOT_FOUND NOT_FOUND NOT_FOUND OK NOT_FOUND",
    ),
    (
        "Mutation",
        "claimLicense",
        "mutation{ claimLicense(key:\"AAAA-AAAA-AAAA-AAAA\"){ outcome } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED - - - - - - -",
    ),
    (
        "Mutation",
        "approveClaim",
        "mutation{ approveClaim(claimId:\"999999\"){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "declineClaim",
        "mutation{ declineClaim(claimId:\"999999\"){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "updateClaimSettings",
        "mutation{ updateClaimSettings(input:{}){ id } }",
        "UNAUTHENTICATED OK OK OK OK OK OK OK OK",
    ),
    (
        "Mutation",
        "setOrderManualApproval",
        "mutation($o:ID!){ setOrderManualApproval(orderId:$o, value:null){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND OK NOT_FOUND NOT_FOUND NOT_FOUND OK NOT_FOUND",
    ),
    (
        "Mutation",
        "setLicenseOrganization",
        "mutation($k0:ID!){ setLicenseOrganization(input:{licenseId:$k0}){ id } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED NOT_FOUND NOT_FOUND FORBIDDEN NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "requestLicense",
        "mutation($owner:String!){ requestLicense(input:{buyerEmail:$owner}){ request { id } } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED - - - - - - -",
    ),
    (
        "Mutation",
        "approveLicenseRequest",
        "mutation($k1:ID!){ approveLicenseRequest(requestId:\"999999\", licenseId:$k1){ id } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "declineLicenseRequest",
        "mutation{ declineLicenseRequest(requestId:\"999999\"){ id } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "startOrderTransfer",
        "mutation($o:ID!){ startOrderTransfer(orderId:$o, newOwnerEmail:\"next-owner@example.com\"){ id } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED NOT_FOUND FORBIDDEN NOT_FOUND NOT_FOUND NOT_FOUND OK NOT_FOUND",
    ),
    (
        "Mutation",
        "acceptOrderTransfer",
        "mutation{ acceptOrderTransfer(token:\"forged\"){ id } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "cancelOrderTransfer",
        "mutation{ cancelOrderTransfer(transferId:\"999999\"){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "createOrganization",
        "mutation{ createOrganization(name:\"Acme\", siret:\"73282932000074\"){ id } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED OK OK OK OK OK OK OK",
    ),
    (
        "Mutation",
        "addOrganizationMember",
        "mutation($org:ID!){ addOrganizationMember(organizationId:$org, email:\"extra@example.com\", role:MEMBER){ email } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND FORBIDDEN NOT_FOUND NOT_FOUND FORBIDDEN OK NOT_FOUND",
    ),
    (
        "Mutation",
        "removeOrganizationMember",
        "mutation($org:ID!){ removeOrganizationMember(organizationId:$org, email:\"extra@example.com\") }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND FORBIDDEN NOT_FOUND NOT_FOUND FORBIDDEN OK NOT_FOUND",
    ),
    (
        "Mutation",
        "activateLicense",
        "mutation{ activateLicense(key:\"AAAA-AAAA-AAAA-AAAA\", fingerprint:\"fp\", name:\"pc\"){ name } }",
        "NOT_FOUND - - - - - - - -",
    ),
    (
        "Mutation",
        "deactivateLicense",
        "mutation{ deactivateLicense(key:\"AAAA-AAAA-AAAA-AAAA\", fingerprint:\"fp\"){ name } }",
        "NOT_FOUND - - - - - - - -",
    ),
    (
        "Mutation",
        "deactivateDevice",
        "mutation($k0:ID!){ deactivateDevice(licenseId:$k0, fingerprint:\"none\"){ name } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "createWebhookEndpoint",
        "mutation{ createWebhookEndpoint(input:{url:\"https://93.184.215.14/matrix\", eventKinds:[ORDER_PAID]}){ secret } }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN OK",
    ),
    (
        "Mutation",
        "updateWebhookEndpoint",
        "mutation($hook:ID!){ updateWebhookEndpoint(id:$hook, input:{description:\"matrix\"}){ id } }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN OK",
    ),
    (
        "Mutation",
        "rotateWebhookSecret",
        "mutation($hook:ID!){ rotateWebhookSecret(id:$hook){ secret } }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN OK",
    ),
    (
        "Mutation",
        "redeliverWebhook",
        "mutation($hookDelivery:ID!){ redeliverWebhook(deliveryId:$hookDelivery){ id } }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN OK",
    ),
    (
        "Mutation",
        "deleteWebhookEndpoint",
        "mutation($hook:ID!){ deleteWebhookEndpoint(id:$hook) }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN OK",
    ),
    (
        "Mutation",
        "reissueLicense",
        "mutation($k0:ID!){ reissueLicense(licenseId:$k0, graceHours:1){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND OK NOT_FOUND NOT_FOUND NOT_FOUND OK NOT_FOUND",
    ),
    (
        "Mutation",
        "checkOutLicense",
        "mutation{ checkOutLicense(key:\"AAAA-AAAA-AAAA-AAAA\", fingerprint:\"fp\"){ expiresAt } }",
        "NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    (
        "Mutation",
        "heartbeatLicense",
        "mutation{ heartbeatLicense(key:\"AAAA-AAAA-AAAA-AAAA\", fingerprint:\"fp\"){ code } }",
        "OK OK OK OK OK OK OK OK OK",
    ),
    (
        "Mutation",
        "setOrderHeartbeat",
        "mutation($o:ID!){ setOrderHeartbeat(orderId:$o, seconds:null){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND OK NOT_FOUND NOT_FOUND NOT_FOUND OK NOT_FOUND",
    ),
    (
        "Mutation",
        "suspendLicense",
        "mutation($k0:ID!){ suspendLicense(licenseId:$k0){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND OK NOT_FOUND NOT_FOUND NOT_FOUND OK NOT_FOUND",
    ),
    (
        "Mutation",
        "resumeLicense",
        "mutation($k0:ID!){ resumeLicense(licenseId:$k0){ id } }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND OK NOT_FOUND NOT_FOUND NOT_FOUND OK NOT_FOUND",
    ),
    // Payments and refunds: the site admin's refund would end the order
    // the other rows use (tests/it/payments.rs refunds as an admin).
    (
        "Mutation",
        "refundOrder",
        "mutation($o:ID!){ refundOrder(orderId:$o, reason:\"matrix\"){ id } }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN -",
    ),
    // API tokens.
    (
        "Mutation",
        "createApiToken",
        "mutation{ createApiToken(input:{name:\"matrix\", scopes:[ORDERS_READ], expiresInDays:1}){ token } }",
        "UNAUTHENTICATED EMAIL_NOT_VERIFIED OK OK OK OK OK OK OK",
    ),
    (
        "Mutation",
        "revokeApiToken",
        "mutation{ revokeApiToken(id:\"999999999\") }",
        "UNAUTHENTICATED NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND NOT_FOUND",
    ),
    // Administration: support actions (on an address without an account,
    // so that no later row loses its caller).
    (
        "Mutation",
        "disableAccount",
        "mutation($fresh:String!){ disableAccount(email:$fresh, reason:\"matrix\"){ id } }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN NOT_FOUND",
    ),
    (
        "Mutation",
        "enableAccount",
        "mutation($owner:String!){ enableAccount(email:$owner, reason:\"matrix\"){ id } }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN CONFLICT",
    ),
    (
        "Mutation",
        "revokeSessions",
        "mutation($fresh:String!){ revokeSessions(email:$fresh, reason:\"matrix\") }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN NOT_FOUND",
    ),
    (
        "Mutation",
        "resendEmail",
        "mutation($owner:String!){ resendEmail(kind:VERIFICATION, email:$owner) }",
        "UNAUTHENTICATED FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN FORBIDDEN CONFLICT",
    ),
];

/// What the owner's API token with only `orders:read` may call: these
/// answer as they do to the owner's session; every other operation of
/// [`MATRIX`] is `FORBIDDEN` (with `extensions.scope` when a scope would
/// allow it) and runs nothing.
const ORDERS_READ_TOKEN_MAY: &[(&str, &str)] = &[
    ("Query", "me"),
    ("Query", "products"),
    ("Query", "orders"),
    ("Query", "order"),
    ("Query", "orderTransfers"),
    ("Query", "claimRequests"),
    ("Query", "licenseRequests"),
    ("Query", "validateLicense"),
    ("Mutation", "checkOutLicense"),
    ("Mutation", "heartbeatLicense"),
];

/// `OK`, or the error code of the first error.
fn outcome(answer: &Value) -> String {
    match answer["errors"].get(0) {
        None => "OK".into(),
        Some(error) => error["extensions"]["code"]
            .as_str()
            .unwrap_or("NO_CODE")
            .to_owned(),
    }
}

#[tokio::test]
async fn every_operation_has_its_outcome_for_every_kind_of_caller() {
    let app = TestApp::spawn().await;
    let (org_admin, owner, owner_email, org_id, order_id, keys) = member_bought_order(&app).await;
    let ids: Vec<String> = app
        .ok(
            Some(&owner),
            "query($o:ID!){ order(id:$o){ licenses { edges { node { id } } } } }",
            json!({"o": order_id}),
        )
        .await["order"]["licenses"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect();
    let address = |tag: &str| format!("{}@example.com", unique(tag));
    let (unverified, _) = app.unverified_user(&address("unverified")).await;
    let (stranger, _) = app.verified_user(&address("stranger")).await;
    let assignee_email = address("assignee");
    let (assignee, _) = app.verified_user(&assignee_email).await;
    let former_email = address("former");
    let (former, _) = app.verified_user(&former_email).await;
    let member_email = address("member");
    let (member, _) = app.verified_user(&member_email).await;
    app.ok(
        Some(&org_admin),
        ADD,
        json!({"o": org_id, "e": member_email, "r": "MEMBER"}),
    )
    .await;
    let site_admin = app.admin().await;
    let assign =
        "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }";
    for to in [&former_email, &assignee_email] {
        app.ok(Some(&owner), assign, json!({"l": ids[0], "e": to}))
            .await;
    }
    // An outbound webhook endpoint (it gets its own creation event: a delivery).
    let hook = app
        .ok(
            Some(&site_admin),
            "mutation{ createWebhookEndpoint(input:{url:\"https://93.184.215.14/matrix\", eventKinds:[]}){ endpoint { id deliveries { edges { node { id } } } } } }",
            json!({}),
        )
        .await["createWebhookEndpoint"]["endpoint"]
        .clone();
    let tokens: [Option<&str>; 9] = [
        None,
        Some(&unverified),
        Some(&stranger),
        Some(&owner),
        Some(&assignee),
        Some(&former),
        Some(&member),
        Some(&org_admin),
        Some(&site_admin),
    ];

    // The table lists every operation of the schema, and only those.
    let schema = Schema::load(&app).await;
    let served: BTreeSet<(String, String)> =
        [("Query", &schema.query), ("Mutation", &schema.mutation)]
            .into_iter()
            .flat_map(|(root, name)| {
                schema
                    .ty(name)
                    .fields
                    .iter()
                    .map(move |f| (root.to_owned(), f.name.clone()))
            })
            .collect();
    let listed: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(root, field, _, _)| (root.to_string(), field.to_string()))
        .collect();
    let missing: Vec<_> = served.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "operations without a row in the authorization matrix: {missing:?}"
    );
    let stale: Vec<_> = listed.difference(&served).collect();
    assert!(stale.is_empty(), "rows for operations gone: {stale:?}");

    let mut wrong = Vec::new();
    for (root, field, query, expected) in MATRIX {
        let expected: Vec<&str> = expected.split_whitespace().collect();
        assert_eq!(
            expected.len(),
            ROLES.len(),
            "{root}.{field}: one outcome per role"
        );
        for (role, (token, want)) in tokens.iter().zip(&expected).enumerate() {
            if *want == "-" {
                continue;
            }
            let variables: HashMap<&str, Value> = HashMap::from([
                ("o", json!(order_id)),
                ("k0", json!(ids[0])),
                ("k1", json!(ids[1])),
                ("key0", json!(keys[0])),
                ("org", json!(org_id)),
                ("owner", json!(owner_email)),
                ("fresh", json!(address("fresh"))),
                ("hook", hook["id"].clone()),
                (
                    "hookDelivery",
                    hook["deliveries"]["edges"][0]["node"]["id"].clone(),
                ),
            ]);
            // Only the variables the request declares.
            let variables: serde_json::Map<String, Value> = variables
                .into_iter()
                .filter(|(name, _)| query.contains(&format!("${name}:")))
                .map(|(name, value)| (name.to_owned(), value))
                .collect();
            let answer = app.gql(*token, query, Value::Object(variables)).await;
            let got = outcome(&answer);
            if got != *want {
                wrong.push(format!(
                    "{root}.{field} as {}: expected {want}, got {got} ({answer})",
                    ROLES[role]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "authorization matrix:\n{}",
        wrong.join("\n")
    );

    // The owner again, through an API token with only orders:read.
    let (token, _) = crate::api_tokens::token(&app, &owner, &["ORDERS_READ"]).await;
    let owner_column = ROLES.iter().position(|r| *r == "owner").unwrap();
    for (root, field, query, expected) in MATRIX {
        let allowed = ORDERS_READ_TOKEN_MAY.contains(&(*root, *field));
        let want = if allowed {
            expected.split_whitespace().nth(owner_column).unwrap()
        } else {
            "FORBIDDEN"
        };
        if want == "-" {
            continue;
        }
        let variables: serde_json::Map<String, Value> = [
            ("o", json!(order_id)),
            ("k0", json!(ids[0])),
            ("k1", json!(ids[1])),
            ("key0", json!(keys[0])),
            ("org", json!(org_id)),
            ("owner", json!(owner_email)),
            ("fresh", json!(address("fresh"))),
        ]
        .into_iter()
        .filter(|(name, _)| query.contains(&format!("${name}:")))
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        let answer = app.gql(Some(&token), query, Value::Object(variables)).await;
        let got = outcome(&answer);
        if got != want {
            wrong.push(format!(
                "{root}.{field} with an orders:read token: expected {want}, got {got} ({answer})"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "authorization matrix of an orders:read token:\n{}",
        wrong.join("\n")
    );
}
