//! Taking an account back and keeping it: sign-up that tells nothing,
//! verification by the password's owner only, password reset by email,
//! password and email changes, sessions.
use serde_json::{Value, json};

use crate::{
    events::{Protocol, Sub},
    harness::{Mail, PASSWORD, TestApp, unique},
};

const SIGN_UP: &str = "mutation($e:String!,$p:String!){ signUp(email:$e,password:$p){ email } }";
const SIGN_IN: &str =
    "mutation($e:String!,$p:String!){ signIn(email:$e,password:$p){ token account { id } } }";
const VERIFY: &str = "mutation($t:String!){ verifyEmail(token:$t){ email emailVerified } }";
const REQUEST_RESET: &str = "mutation($e:String!){ requestPasswordReset(email:$e) }";
const RESET: &str = "mutation($t:String!,$p:String!){ resetPassword(token:$t, newPassword:$p) }";
const CHANGE_PASSWORD: &str =
    "mutation($c:String!,$n:String!){ changePassword(current:$c, new:$n) }";
const CHANGE_EMAIL: &str =
    "mutation($e:String!,$p:String!){ changeEmail(newEmail:$e, password:$p) }";
const SESSIONS: &str =
    "{ me { sessions { id current createdAt expiresAt userAgent clientAddress } } }";
const REVOKE: &str = "mutation($s:ID!){ revokeSession(id:$s) }";
const ME: &str = "{ me { id email emailVerified } }";
const ASSIGNED: &str = "{ assignedLicenses { edges { node { id key } } } }";
const ASSIGN: &str =
    "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }";

const ATTACKER_PASSWORD: &str = "squatter's own password";
const VICTIM_PASSWORD: &str = "the rightful owner's pw";

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

/// The whole answer of `signUp` for `address` with `password`.
async fn sign_up_answer(app: &TestApp, address: &str, password: &str) -> Value {
    app.gql(None, SIGN_UP, json!({"e": address, "p": password}))
        .await
}

/// Sign in with `password`: the session token, or the error code.
async fn sign_in_with(app: &TestApp, address: &str, password: &str) -> Result<String, String> {
    let body = app
        .gql(None, SIGN_IN, json!({"e": address, "p": password}))
        .await;
    match body["data"]["signIn"]["token"].as_str() {
        Some(token) => Ok(token.to_owned()),
        None => Err(body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or("NO_CODE")
            .to_owned()),
    }
}

/// How a live feed ends: the error code of its last message. Events
/// committed with the revocation (`PASSWORD_CHANGED`) may come first.
async fn feed_end(feed: &mut Sub) -> String {
    loop {
        let message = feed
            .message(std::time::Duration::from_secs(20))
            .await
            .expect("the stream ends");
        let errors = match message["type"].as_str() {
            Some("next") | Some("data") if message["payload"]["errors"].is_null() => continue,
            Some("next") | Some("data") => message["payload"]["errors"].clone(),
            Some("error") => message["payload"].clone(),
            _ => panic!("expected an error, got {message}"),
        };
        return errors[0]["extensions"]["code"]
            .as_str()
            .unwrap_or("NO_CODE")
            .to_owned();
    }
}

/// The latest reset email to `to` (waits for it) and its token.
async fn reset_token(app: &TestApp, to: &str) -> String {
    app.wait_mail(to, "password reset", |m| m.subject == "Reset your password")
        .await
        .token_after("/reset-password?token=")
}

fn mails_titled(app: &TestApp, to: &str, subject: &str) -> Vec<Mail> {
    app.mails_to(to)
        .into_iter()
        .filter(|m| m.subject == subject)
        .collect()
}

/// A buyer's paid key assigned to `address`; returns its key string.
async fn key_assigned_to(app: &TestApp, address: &str) -> String {
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    let (_, ids, keys) = app.paid_order(&buyer, 1).await;
    app.ok(Some(&buyer), ASSIGN, json!({"l": ids[0], "e": address}))
        .await;
    keys[0].clone()
}

#[tokio::test]
async fn sign_up_answers_alike_for_new_unverified_and_verified_addresses() {
    let app = TestApp::spawn().await;
    let fresh = email("fresh");
    let unverified = email("unverified");
    let verified = email("verified");
    app.sign_up(&unverified).await;
    app.verified_user(&verified).await;

    for address in [&fresh, &unverified, &verified] {
        let answer = sign_up_answer(&app, address, ATTACKER_PASSWORD).await;
        assert_eq!(
            answer,
            json!({"data": {"signUp": {"email": address}}}),
            "{address}"
        );
    }

    // The verified account did not change: its password still holds, the
    // newcomer's does not, and its owner was told, with a reset link.
    assert!(sign_in_with(&app, &verified, PASSWORD).await.is_ok());
    assert_eq!(
        sign_in_with(&app, &verified, ATTACKER_PASSWORD).await,
        Err("UNAUTHENTICATED".into())
    );
    let notice = app
        .wait_mail(&verified, "sign-up attempt", |m| {
            m.subject == "Someone tried to sign up with your email address"
        })
        .await;
    assert!(notice.body.contains("reset"), "{}", notice.body);
    let token = notice.token_after("/reset-password?token=");
    app.ok(None, RESET, json!({"t": token, "p": VICTIM_PASSWORD}))
        .await;
    assert!(sign_in_with(&app, &verified, VICTIM_PASSWORD).await.is_ok());

    // The never-verified one now has the newcomer's password, and a new
    // verification email went out.
    assert!(
        sign_in_with(&app, &unverified, ATTACKER_PASSWORD)
            .await
            .is_ok()
    );
    assert_eq!(
        sign_in_with(&app, &unverified, PASSWORD).await,
        Err("UNAUTHENTICATED".into())
    );
    app.wait_mails(&unverified, 2).await;
    // And the fresh one is an account like any other.
    assert!(sign_in_with(&app, &fresh, ATTACKER_PASSWORD).await.is_ok());
}

/// The pre-hijack: someone opens an account with another person's address
/// before they do. The owner signing up takes it over; the squatter's
/// sessions end and their password stops working.
#[tokio::test]
async fn signing_up_over_a_squatted_address_takes_the_account_over() {
    let app = TestApp::spawn().await;
    let victim = email("victim");
    let key = key_assigned_to(&app, &victim).await;
    assert_eq!(
        sign_up_answer(&app, &victim, ATTACKER_PASSWORD).await,
        json!({"data": {"signUp": {"email": victim}}})
    );
    let attacker = sign_in_with(&app, &victim, ATTACKER_PASSWORD)
        .await
        .unwrap();
    app.ok(Some(&attacker), ME, json!({})).await;

    // The owner signs up: the same answer as for a fresh address.
    assert_eq!(
        sign_up_answer(&app, &victim, VICTIM_PASSWORD).await,
        json!({"data": {"signUp": {"email": victim}}})
    );
    assert_eq!(
        app.err(Some(&attacker), ME, json!({})).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        sign_in_with(&app, &victim, ATTACKER_PASSWORD).await,
        Err("UNAUTHENTICATED".into())
    );
    let session = sign_in_with(&app, &victim, VICTIM_PASSWORD).await.unwrap();
    // Only the verification sent after the takeover works: the earlier
    // one, sent on the squatter's behalf, is gone.
    app.wait_mails(&victim, 3).await; // assignment + two verifications
    let confirmations = mails_titled(&app, &victim, "Confirm your email address");
    assert_eq!(confirmations.len(), 2);
    let first = confirmations[0].verification_token();
    assert_eq!(
        app.err(Some(&session), VERIFY, json!({"t": first})).await,
        "NOT_FOUND"
    );
    app.verify(&session, &victim).await;
    let assigned = app.ok(Some(&session), ASSIGNED, json!({})).await;
    assert_eq!(assigned["assignedLicenses"]["edges"][0]["node"]["key"], key);
}

/// The squatter verified nothing and the owner never signs up: a password
/// reset gives the account back, ending the squatter's sessions and their
/// live subscriptions.
#[tokio::test]
async fn a_password_reset_takes_a_squatted_account_back() {
    let app = TestApp::spawn().await;
    let victim = email("victim");
    let key = key_assigned_to(&app, &victim).await;
    sign_up_answer(&app, &victim, ATTACKER_PASSWORD).await;
    let attacker = sign_in_with(&app, &victim, ATTACKER_PASSWORD)
        .await
        .unwrap();
    let mut feed = Sub::open(&app, &attacker, Protocol::TransportWs, None, 1).await;
    assert_eq!(
        app.err(Some(&attacker), ASSIGNED, json!({})).await,
        "EMAIL_NOT_VERIFIED"
    );

    let asked = app.ok(None, REQUEST_RESET, json!({"e": victim})).await;
    assert_eq!(asked, json!({"requestPasswordReset": true}));
    let token = reset_token(&app, &victim).await;
    // The link's page names the address and changes nothing.
    let page = app.page(&format!("/reset-password?token={token}")).await;
    assert!(page.contains(&victim), "{page}");
    assert!(page.contains("type=\"password\""), "{page}");
    app.ok(Some(&attacker), ME, json!({})).await;

    let reset = app
        .http
        .post(format!("{}/reset-password", app.base))
        .form(&[("token", token.as_str()), ("password", VICTIM_PASSWORD)])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(reset.contains("Password changed"), "{reset}");

    assert_eq!(
        app.err(Some(&attacker), ME, json!({})).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(feed_end(&mut feed).await, "UNAUTHENTICATED");
    assert_eq!(
        sign_in_with(&app, &victim, ATTACKER_PASSWORD).await,
        Err("UNAUTHENTICATED".into())
    );
    let session = sign_in_with(&app, &victim, VICTIM_PASSWORD).await.unwrap();
    let me = app.ok(Some(&session), ME, json!({})).await;
    assert_eq!(
        me["me"]["emailVerified"], true,
        "the reset proved the address"
    );
    let assigned = app.ok(Some(&session), ASSIGNED, json!({})).await;
    assert_eq!(assigned["assignedLicenses"]["edges"][0]["node"]["key"], key);
    let events = app
        .ok(
            Some(&session),
            "{ events { edges { node { kind } } } }",
            json!({}),
        )
        .await;
    assert!(
        events.to_string().contains("PASSWORD_CHANGED"),
        "the reset is in the account's history: {events}"
    );
}

#[tokio::test]
async fn only_the_accounts_own_session_verifies_its_address() {
    let app = TestApp::spawn().await;
    let address = email("owner");
    let (own, _) = app.unverified_user(&address).await;
    let (other, _) = app.verified_user(&email("other")).await;
    let token = app.verification_token(&address).await;
    assert_eq!(
        app.err(None, VERIFY, json!({"t": token})).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        app.err(Some(&other), VERIFY, json!({"t": token})).await,
        "FORBIDDEN"
    );
    let me = app.ok(Some(&own), ME, json!({})).await;
    assert_eq!(me["me"]["emailVerified"], false);
    let verified = app.ok(Some(&own), VERIFY, json!({"t": token})).await;
    assert_eq!(verified["verifyEmail"]["emailVerified"], true);
}

#[tokio::test]
async fn the_verification_page_names_the_address_and_needs_the_password() {
    let app = TestApp::spawn().await;
    let address = email("link");
    let (session, _) = app.unverified_user(&address).await;
    let token = app.verification_token(&address).await;
    let page = app.page(&format!("/verify-email?token={token}")).await;
    assert!(
        page.contains(&address),
        "the page names the address: {page}"
    );
    assert!(page.contains("type=\"password\""), "{page}");
    let verified = || async {
        app.ok(Some(&session), ME, json!({})).await["me"]["emailVerified"]
            .as_bool()
            .unwrap()
    };
    assert!(!verified().await, "opening the link alone verifies nothing");

    let submit = |password: &'static str| {
        app.http
            .post(format!("{}/verify-email", app.base))
            .form(&[("token", token.as_str()), ("password", password)])
            .send()
    };
    let without = app
        .http
        .post(format!("{}/verify-email", app.base))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert!(!without.status().is_success(), "the password is required");
    let wrong = submit("not the password")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(wrong.contains("Wrong password"), "{wrong}");
    assert!(!verified().await);

    let confirmed = submit(PASSWORD).await.unwrap().text().await.unwrap();
    assert!(confirmed.contains("confirmed"), "{confirmed}");
    assert!(verified().await);
}

#[tokio::test]
async fn wrong_passwords_on_the_verification_page_are_limited() {
    let app = TestApp::spawn().await;
    let address = email("guessed");
    app.sign_up(&address).await;
    let token = app.verification_token(&address).await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let guess = format!("guess number {i}");
        let response = app
            .http
            .post(format!("{}/verify-email", app.base))
            .form(&[("token", token.as_str()), ("password", guess.as_str())])
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Past the limit even the right password waits, like signIn.
    let right = app
        .http
        .post(format!("{}/verify-email", app.base))
        .form(&[("token", token.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 429);
    assert!(right.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn reset_links_are_single_use_expire_and_the_newest_replaces_the_older() {
    let app = TestApp::spawn().await;
    let address = email("reset");
    let (session, _) = app.verified_user(&address).await;

    // An unknown address gets the same answer, and no email.
    let nobody = email("nobody");
    assert_eq!(
        app.ok(None, REQUEST_RESET, json!({"e": nobody})).await,
        json!({"requestPasswordReset": true})
    );
    assert_eq!(
        app.ok(None, REQUEST_RESET, json!({"e": "not an address"}))
            .await,
        json!({"requestPasswordReset": true})
    );

    app.ok(None, REQUEST_RESET, json!({"e": address})).await;
    let older = reset_token(&app, &address).await;
    app.ok(None, REQUEST_RESET, json!({"e": address.to_uppercase()}))
        .await;
    let newer = app
        .wait_mail(&address, "second reset", |m| {
            m.subject == "Reset your password" && !m.body.contains(&older)
        })
        .await
        .token_after("/reset-password?token=");
    assert_ne!(older, newer);
    assert_eq!(
        app.err(None, RESET, json!({"t": older, "p": VICTIM_PASSWORD}))
            .await,
        "NOT_FOUND",
        "a newer link replaces the older"
    );
    let weak = app
        .error(None, RESET, json!({"t": newer, "p": "short"}))
        .await;
    assert_eq!(weak["extensions"]["code"], "VALIDATION");
    assert_eq!(weak["extensions"]["field"], "newPassword");
    app.ok(None, RESET, json!({"t": newer, "p": VICTIM_PASSWORD}))
        .await;
    assert_eq!(
        app.err(
            None,
            RESET,
            json!({"t": newer, "p": "yet another password"})
        )
        .await,
        "NOT_FOUND",
        "single use"
    );
    assert_eq!(
        app.err(Some(&session), ME, json!({})).await,
        "UNAUTHENTICATED",
        "every session ended"
    );
    assert!(sign_in_with(&app, &address, VICTIM_PASSWORD).await.is_ok());

    app.ok(None, REQUEST_RESET, json!({"e": address})).await;
    let late = app
        .wait_mail(&address, "third reset", |m| {
            m.subject == "Reset your password"
                && !m.body.contains(&newer)
                && !m.body.contains(&older)
        })
        .await
        .token_after("/reset-password?token=");
    app.clock.advance(chrono::Duration::minutes(61));
    assert_eq!(
        app.err(None, RESET, json!({"t": late, "p": "yet another password"}))
            .await,
        "EXPIRED"
    );
    assert_eq!(
        app.err(
            None,
            RESET,
            json!({"t": "0".repeat(64), "p": "yet another password"})
        )
        .await,
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn changing_the_password_ends_the_other_sessions_only() {
    let app = TestApp::spawn().await;
    let address = email("changer");
    let (caller, _) = app.verified_user(&address).await;
    let (other, _) = app.sign_in(&address).await;
    let mut other_feed = Sub::open(&app, &other, Protocol::LegacyWs, None, 1).await;

    assert_eq!(
        app.err(
            Some(&caller),
            CHANGE_PASSWORD,
            json!({"c": "not my password", "n": VICTIM_PASSWORD})
        )
        .await,
        "UNAUTHENTICATED"
    );
    let weak = app
        .error(
            Some(&caller),
            CHANGE_PASSWORD,
            json!({"c": PASSWORD, "n": "short"}),
        )
        .await;
    assert_eq!(weak["extensions"]["field"], "new");
    app.ok(Some(&other), ME, json!({})).await;

    app.ok(
        Some(&caller),
        CHANGE_PASSWORD,
        json!({"c": PASSWORD, "n": VICTIM_PASSWORD}),
    )
    .await;
    app.ok(Some(&caller), ME, json!({})).await;
    assert_eq!(
        app.err(Some(&other), ME, json!({})).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(feed_end(&mut other_feed).await, "UNAUTHENTICATED");
    assert_eq!(
        sign_in_with(&app, &address, PASSWORD).await,
        Err("UNAUTHENTICATED".into())
    );
    assert!(sign_in_with(&app, &address, VICTIM_PASSWORD).await.is_ok());
}

#[tokio::test]
async fn a_new_email_takes_effect_once_verified() {
    let app = TestApp::spawn().await;
    let old = email("old");
    let new = email("new");
    let (session, _) = app.verified_user(&old).await;
    let (stranger, _) = app.verified_user(&email("stranger")).await;

    assert_eq!(
        app.err(
            Some(&session),
            CHANGE_EMAIL,
            json!({"e": new, "p": "not my password"})
        )
        .await,
        "UNAUTHENTICATED"
    );
    app.ok(
        Some(&session),
        CHANGE_EMAIL,
        json!({"e": new, "p": PASSWORD}),
    )
    .await;
    let me = app.ok(Some(&session), ME, json!({})).await;
    assert_eq!(
        me["me"]["email"], old,
        "nothing changes before verification"
    );
    let confirmation = app
        .wait_mail(&new, "email change", |m| {
            m.subject == "Confirm your new email address"
        })
        .await;
    let token = confirmation.verification_token();
    // The page names both addresses and asks for the password.
    let page = app.page(&format!("/verify-email?token={token}")).await;
    assert!(page.contains(&new) && page.contains(&old), "{page}");
    assert_eq!(
        app.err(Some(&stranger), VERIFY, json!({"t": token})).await,
        "FORBIDDEN"
    );
    let me = app.ok(Some(&session), ME, json!({})).await;
    assert_eq!(me["me"]["email"], old);

    let verified = app.ok(Some(&session), VERIFY, json!({"t": token})).await;
    assert_eq!(
        verified["verifyEmail"],
        json!({"email": new, "emailVerified": true})
    );
    let me = app.ok(Some(&session), ME, json!({})).await;
    assert_eq!(me["me"]["email"], new);
    app.wait_mail(&old, "change notice", |m| {
        m.subject == "Your email address was changed"
    })
    .await;
    assert!(sign_in_with(&app, &new, PASSWORD).await.is_ok());
    assert_eq!(
        sign_in_with(&app, &old, PASSWORD).await,
        Err("UNAUTHENTICATED".into())
    );
}

#[tokio::test]
async fn an_email_change_to_a_taken_address_answers_alike_and_sends_nothing() {
    let app = TestApp::spawn().await;
    let (session, _) = app.verified_user(&email("mover")).await;
    let taken = email("taken");
    app.verified_user(&taken).await;
    let free = email("free");
    let to_taken = app
        .gql(
            Some(&session),
            CHANGE_EMAIL,
            json!({"e": taken, "p": PASSWORD}),
        )
        .await;
    let to_free = app
        .gql(
            Some(&session),
            CHANGE_EMAIL,
            json!({"e": free, "p": PASSWORD}),
        )
        .await;
    assert_eq!(to_taken, to_free);
    assert_eq!(to_free, json!({"data": {"changeEmail": true}}));
    app.wait_mail(&free, "email change", |m| {
        m.subject == "Confirm your new email address"
    })
    .await;
    app.wait_mail_drained().await;
    assert!(
        mails_titled(&app, &taken, "Confirm your new email address").is_empty(),
        "the holder of a taken address is not asked to confirm"
    );
}

#[tokio::test]
async fn sessions_are_listed_and_ended_by_their_owner_only() {
    let app = TestApp::spawn().await;
    let address = email("sessions");
    let (first, _) = app.verified_user(&address).await;
    // A second session, opened by a browser that says who it is.
    let body: Value = app
        .http
        .post(format!("{}/graphql", app.base))
        .header("user-agent", "Firefox/140 test")
        .json(&json!({"query": SIGN_IN, "variables": {"e": address, "p": PASSWORD}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second = body["data"]["signIn"]["token"].as_str().unwrap().to_owned();
    let (stranger, _) = app.verified_user(&email("stranger")).await;

    let listed = app.ok(Some(&first), SESSIONS, json!({})).await;
    let sessions = listed["me"]["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{listed}");
    assert!(!listed.to_string().contains(&first), "never the token");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    let other = sessions.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(other["userAgent"], "Firefox/140 test");
    assert_eq!(other["clientAddress"], "127.0.0.1");
    let other_id = other["id"].as_str().unwrap().to_owned();

    // A stranger can neither see nor end them.
    assert_eq!(
        app.err(Some(&stranger), REVOKE, json!({"s": other_id}))
            .await,
        "NOT_FOUND"
    );
    let stranger_sessions = app.ok(Some(&stranger), SESSIONS, json!({})).await;
    assert_eq!(
        stranger_sessions["me"]["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.ok(Some(&second), ME, json!({})).await;

    let mut feed = Sub::open(&app, &second, Protocol::TransportWs, None, 1).await;
    app.ok(Some(&first), REVOKE, json!({"s": other_id})).await;
    assert_eq!(feed_end(&mut feed).await, "UNAUTHENTICATED");
    assert_eq!(
        app.err(Some(&second), ME, json!({})).await,
        "UNAUTHENTICATED"
    );
    assert_eq!(
        app.err(Some(&first), REVOKE, json!({"s": other_id})).await,
        "NOT_FOUND",
        "already ended"
    );
    let listed = app.ok(Some(&first), SESSIONS, json!({})).await;
    assert_eq!(listed["me"]["sessions"].as_array().unwrap().len(), 1);
    app.ok(Some(&first), ME, json!({})).await;
}
