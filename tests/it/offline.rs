//! Offline certificates: `checkOutLicense`, the JWKS, signing keys. Every
//! certificate is verified here as licensed software would, with a JOSE
//! library and an Ed25519 implementation other than the server's
//! (jwt-compact on ed25519-compact), from the published JWKS only.
use chrono::{DateTime, Duration, Utc};
use jwt_compact::{
    Algorithm, AlgorithmExt, TimeOptions, UntrustedToken, alg::Ed25519, jwk::JsonWebKey,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::harness::{Options, PRODUCT, PRODUCT_NAME, TestApp, TestDb, signing_key_in, unique};

pub const ACTIVATE: &str = "mutation($k:String!,$f:String!){ activateLicense(key:$k, fingerprint:$f, name:\"laptop\"){ fingerprint } }";
pub const CHECK_OUT: &str = "mutation($k:String!,$f:String!,$t:Int){ checkOutLicense(key:$k, fingerprint:$f, ttlSeconds:$t){ certificate expiresAt } }";
const ASSIGN: &str =
    "mutation($l:ID!,$e:String!){ assignLicense(input:{licenseId:$l,email:$e}){ id } }";

pub fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

/// The claims of a certificate.
#[derive(Debug, Deserialize)]
pub struct Certified {
    pub sub: String,
    pub product: String,
    pub order: String,
    pub fpr: String,
    /// Read by jwt-compact among the registered claims.
    #[serde(skip)]
    pub iat: i64,
}

/// A buyer's paid order of `n` keys (device limit `limit`, heartbeat
/// `heartbeat`), all assigned. Returns (buyer token, order id, key ids, key strings).
pub async fn assigned_keys(
    app: &TestApp,
    n: i32,
    limit: i32,
    heartbeat: Option<i32>,
) -> (String, String, Vec<String>, Vec<String>) {
    app.product(PRODUCT, PRODUCT_NAME).await;
    let (buyer, _) = app.verified_user(&email("buyer")).await;
    let admin = app.admin().await;
    let order = app
        .ok(
            Some(&buyer),
            "mutation($n:Int!,$l:Int!,$h:Int){ createOrder(input:{product:\"keyledger-pro\", quantity:$n, deviceLimit:$l, heartbeatSeconds:$h}){ id heartbeatSeconds } }",
            json!({"n": n, "l": limit, "h": heartbeat}),
        )
        .await["createOrder"]
        .clone();
    assert_eq!(order["heartbeatSeconds"], json!(heartbeat));
    let order = order["id"].as_str().unwrap().to_owned();
    app.ok(
        Some(&admin),
        "mutation($o:ID!){ markOrderPaid(orderId:$o){ id } }",
        json!({"o": order}),
    )
    .await;
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    let edges = app
        .ok(
            Some(&buyer),
            "query($o:ID!){ order(id:$o){ licenses { edges { node { id } } } } }",
            json!({"o": order}),
        )
        .await["order"]["licenses"]["edges"]
        .as_array()
        .unwrap()
        .clone();
    for edge in edges {
        let id = edge["node"]["id"].as_str().unwrap().to_owned();
        app.ok(Some(&buyer), ASSIGN, json!({"l": id, "e": email("holder")}))
            .await;
        let key = app
            .ok(
                Some(&buyer),
                "query($l:ID!){ license(id:$l){ key } }",
                json!({"l": id}),
            )
            .await["license"]["key"]
            .as_str()
            .unwrap()
            .to_owned();
        ids.push(id);
        keys.push(key);
    }
    (buyer, order, ids, keys)
}

pub async fn jwks(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.base))
        .send()
        .await
        .expect("JWKS answers");
    assert_eq!(response.status(), 200);
    let cache = response.headers()["cache-control"].to_str().unwrap();
    assert!(cache.contains("max-age="), "{cache}");
    response.json().await.expect("JSON")
}

/// Verify `certificate` with the key its `kid` names in `jwks`, at `now`.
pub fn verify(certificate: &str, jwks: &Value, now: DateTime<Utc>) -> Result<Certified, String> {
    let token = UntrustedToken::new(certificate).map_err(|e| e.to_string())?;
    if token.algorithm() != "EdDSA" {
        return Err(format!("alg {}", token.algorithm()));
    }
    let kid = token.header().key_id.clone().ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .ok_or("no keys")?
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    let public: JsonWebKey<'_> =
        serde_json::from_value(json!({"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]}))
            .map_err(|e| e.to_string())?;
    let key = <Ed25519 as Algorithm>::VerifyingKey::try_from(&public).map_err(|e| e.to_string())?;
    let token = Ed25519
        .validator::<Certified>(&key)
        .validate(&token)
        .map_err(|e| e.to_string())?;
    let claims = token.claims();
    claims
        .validate_expiration(&TimeOptions::new(Duration::zero(), move || now))
        .map_err(|e| e.to_string())?;
    claims.expiration.ok_or("no exp")?;
    Ok(Certified {
        sub: claims.custom.sub.clone(),
        product: claims.custom.product.clone(),
        order: claims.custom.order.clone(),
        fpr: claims.custom.fpr.clone(),
        iat: claims.issued_at.ok_or("no iat")?.timestamp(),
    })
}

async fn check_out(app: &TestApp, key: &str, fingerprint: &str, ttl: Option<i64>) -> Value {
    app.ok(
        None,
        CHECK_OUT,
        json!({"k": key, "f": fingerprint, "t": ttl}),
    )
    .await["checkOutLicense"]
        .clone()
}

fn expires_at(answer: &Value) -> DateTime<Utc> {
    answer["expiresAt"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_certificate_verifies_offline_until_it_expires_and_not_when_tampered() {
    let app = TestApp::spawn().await;
    let (buyer, order, ids, keys) = assigned_keys(&app, 1, 1, None).await;
    app.ok(None, ACTIVATE, json!({"k": keys[0], "f": " fp-1 "}))
        .await;
    let answer = check_out(&app, &keys[0], "fp-1", None).await;
    let certificate = answer["certificate"].as_str().unwrap();
    let jwks = jwks(&app).await;
    let now = app.clock.now();
    let claims = verify(certificate, &jwks, now).expect("verifies");
    assert_eq!(claims.sub, ids[0]);
    assert_eq!(claims.product, PRODUCT);
    assert_eq!(claims.fpr, "fp-1");
    let number = app
        .ok(
            Some(&buyer),
            "query($o:ID!){ order(id:$o){ number } }",
            json!({"o": order}),
        )
        .await["order"]["number"]
        .clone();
    assert_eq!(json!(claims.order), number);
    // Default: 30 days.
    let expires = expires_at(&answer);
    assert_eq!(expires.timestamp() - claims.iat, 30 * 86_400);
    // The header names the algorithm, the key and the type.
    let header = UntrustedToken::new(certificate).unwrap();
    assert_eq!(header.header().token_type.as_deref(), Some("JWT"));

    // Past its expiry it is refused.
    assert!(verify(certificate, &jwks, expires - Duration::seconds(1)).is_ok());
    let late = verify(certificate, &jwks, expires + Duration::seconds(1));
    assert!(late.is_err(), "expired: {late:?}");

    // Tampered claims (another fingerprint) do not verify.
    let parts: Vec<&str> = certificate.split('.').collect();
    let other = app
        .ok(
            None,
            CHECK_OUT,
            json!({"k": keys[0], "f": "fp-1", "t": 3600}),
        )
        .await["checkOutLicense"]["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_parts: Vec<&str> = other.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert!(verify(&spliced, &jwks, now).is_err(), "spliced claims");
    let mut payload = parts[1].to_owned();
    let last = payload.pop().unwrap();
    payload.push(if last == 'A' { 'B' } else { 'A' });
    let flipped = format!("{}.{payload}.{}", parts[0], parts[2]);
    assert!(verify(&flipped, &jwks, now).is_err(), "a flipped bit");
    // A key of someone else's JWKS does not verify it.
    let foreign = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": jwks["keys"][0]["kid"], "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]});
    assert!(verify(certificate, &foreign, now).is_err());
}

#[tokio::test]
async fn check_out_needs_a_valid_key_on_an_activated_device_and_a_bounded_ttl() {
    let app = TestApp::spawn().await;
    let (buyer, order, _ids, keys) = assigned_keys(&app, 1, 2, None).await;
    let code = |body: Value| body["errors"][0]["extensions"].clone();
    // Not activated on this device.
    let refused = app
        .gql(None, CHECK_OUT, json!({"k": keys[0], "f": "fp-1"}))
        .await;
    assert_eq!(code(refused)["code"], "CONFLICT");
    // Unknown and malformed keys.
    for key in ["AAAA-AAAA-AAAA-AAAA", "nonsense", ""] {
        let body = app
            .gql(None, CHECK_OUT, json!({"k": key, "f": "fp-1"}))
            .await;
        assert_eq!(code(body)["code"], "NOT_FOUND", "{key}");
    }
    app.ok(None, ACTIVATE, json!({"k": keys[0], "f": "fp-1"}))
        .await;
    for ttl in [0_i64, 3599, 7_776_001, -1, i64::from(i32::MAX)] {
        let body = app
            .gql(
                None,
                CHECK_OUT,
                json!({"k": keys[0], "f": "fp-1", "t": ttl}),
            )
            .await;
        assert_eq!(code(body.clone())["code"], "VALIDATION", "{ttl}: {body}");
        assert_eq!(code(body)["field"], "ttlSeconds");
    }
    for (ttl, secs) in [(3600_i64, 3600_i64), (7_776_000, 7_776_000)] {
        let answer = check_out(&app, &keys[0], "fp-1", Some(ttl)).await;
        let claims = verify(
            answer["certificate"].as_str().unwrap(),
            &jwks(&app).await,
            app.clock.now(),
        )
        .unwrap();
        assert_eq!(expires_at(&answer).timestamp() - claims.iat, secs);
    }
    // A heartbeat order caps the certificate at its interval.
    app.ok(
        Some(&buyer),
        "mutation($o:ID!){ setOrderHeartbeat(orderId:$o, seconds:600){ heartbeatSeconds } }",
        json!({"o": order}),
    )
    .await;
    let answer = check_out(&app, &keys[0], "fp-1", Some(86_400)).await;
    let claims = verify(
        answer["certificate"].as_str().unwrap(),
        &jwks(&app).await,
        app.clock.now(),
    )
    .unwrap();
    assert_eq!(expires_at(&answer).timestamp() - claims.iat, 600);
    // A fingerprint too long is refused before any work.
    let body = app
        .gql(None, CHECK_OUT, json!({"k": keys[0], "f": "x".repeat(201)}))
        .await;
    assert_eq!(code(body.clone())["code"], "VALIDATION");
    assert_eq!(code(body)["field"], "fingerprint");
}

/// Restart on the same database with another `LICENSE_SIGNING_KEY`: the new
/// key signs, the old one stays in the JWKS, and its certificates verify.
#[tokio::test]
async fn certificates_of_a_retired_key_still_verify_after_rotation() {
    let db = std::sync::Arc::new(TestDb::create().await);
    let keys_dir = tempfile::tempdir().unwrap();
    let first = signing_key_in(keys_dir.path());
    let spawn = |path: std::path::PathBuf| {
        TestApp::spawn_with(Options {
            db: Some(db.clone()),
            configure: Box::new(move |c| c.license_signing_key = Some(path)),
            ..Options::default()
        })
    };
    let app = spawn(first.clone()).await;
    let (_, _, _, keys) = assigned_keys(&app, 1, 1, None).await;
    app.ok(None, ACTIVATE, json!({"k": keys[0], "f": "fp"}))
        .await;
    let old = check_out(&app, &keys[0], "fp", None).await["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_kid = UntrustedToken::new(&old)
        .unwrap()
        .header()
        .key_id
        .clone()
        .unwrap();
    drop(app);

    let second_dir = tempfile::tempdir().unwrap();
    let second = signing_key_in(second_dir.path());
    let app = spawn(second).await;
    let new = check_out(&app, &keys[0], "fp", None).await["certificate"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_kid = UntrustedToken::new(&new)
        .unwrap()
        .header()
        .key_id
        .clone()
        .unwrap();
    assert_ne!(old_kid, new_kid);
    let set = jwks(&app).await;
    let kids: Vec<&str> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![old_kid.as_str(), new_kid.as_str()]);
    let now = app.clock.now();
    verify(&old, &set, now).expect("the retired key's certificate verifies");
    verify(&new, &set, now).expect("the new key's certificate verifies");
    drop(app);
    // Back to the first key: nothing is filed twice.
    let app = spawn(first).await;
    assert_eq!(jwks(&app).await["keys"].as_array().unwrap().len(), 2);
}

/// On SQLite with no `LICENSE_SIGNING_KEY`, a key is made beside the
/// database file, readable by its owner only, and reused at the next start.
#[tokio::test]
async fn sqlite_makes_its_signing_key_beside_the_database_and_reuses_it() {
    if crate::harness::test_database_is_postgres() {
        return;
    }
    let db = std::sync::Arc::new(TestDb::create().await);
    let spawn = || {
        TestApp::spawn_with(Options {
            db: Some(db.clone()),
            ..Options::default()
        })
    };
    let app = spawn().await;
    let first = jwks(&app).await;
    drop(app);
    let file = db.url.trim_start_matches("sqlite://");
    let file = std::path::Path::new(file.split('?').next().unwrap());
    let pem = file.with_file_name("keyledger-signing.pem");
    let metadata = std::fs::metadata(&pem).expect("the key file exists");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    }
    let app = spawn().await;
    assert_eq!(jwks(&app).await, first, "the same key, filed once");
    assert_eq!(first["keys"].as_array().unwrap().len(), 1);
}

/// PostgreSQL without `LICENSE_SIGNING_KEY` does not start, and says why.
#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn postgres_requires_a_signing_key() {
    crate::harness::require_postgres();
    let db = TestDb::create().await;
    let mut config = keyledger::config::Config::with_database(db.url.clone());
    config.license_signing_key = None;
    let error = keyledger::app::App::build(config, Default::default())
        .await
        .err()
        .expect("refuses to start");
    assert!(error.to_string().contains("LICENSE_SIGNING_KEY"), "{error}");
    // A file that is no key is refused as well.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let mut config = keyledger::config::Config::with_database(db.url.clone());
    config.license_signing_key = Some(bad);
    let error = keyledger::app::App::build(config, Default::default())
        .await
        .err()
        .expect("refuses to start");
    assert!(error.to_string().contains("LICENSE_SIGNING_KEY"), "{error}");
}

#[tokio::test]
async fn keygen_prints_a_key_the_server_accepts() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg("keygen")
        .output()
        .await
        .expect("keyledger keygen");
    assert!(output.status.success(), "{output:?}");
    let pem = String::from_utf8(output.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    assert!(keyledger::signing::Signer::from_pem(&pem).is_some());
}
