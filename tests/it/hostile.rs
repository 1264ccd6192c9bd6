//! Hostile input: requests an attacker would send to crash, freeze or
//! exhaust the server. Each is refused with a code of api.md, and the server
//! keeps answering everyone else.
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::TestApp;

/// A hang, not a slow machine: every refusal here takes milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// POST `body` as it is (no harness checks) and return status and JSON.
async fn post_raw(app: &TestApp, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = tokio::time::timeout(
        DEADLINE,
        app.http
            .post(format!("{}/graphql", app.base))
            .header("content-type", content_type)
            .body(body)
            .send(),
    )
    .await
    .expect("answered before the deadline")
    .expect("request sent");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The first error of a refused GraphQL request, within the deadline.
async fn refused(app: &TestApp, query: &str, variables: Value) -> Value {
    let body = tokio::time::timeout(DEADLINE, app.gql(None, query, variables))
        .await
        .expect("answered before the deadline");
    assert!(body.get("data").is_none_or(Value::is_null), "{body}");
    body["errors"][0].clone()
}

fn assert_limit(error: &Value, limit: &str) {
    assert_eq!(error["extensions"]["code"], "VALIDATION", "{error}");
    assert_eq!(error["extensions"]["field"], "query", "{error}");
    assert_eq!(error["extensions"]["limit"], limit, "{error}");
}

async fn assert_alive(app: &TestApp) {
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(health.status(), 200);
    let data = app.ok(None, "{ me { id } }", json!({})).await;
    assert!(data["me"].is_null());
}

fn deep_list(levels: usize) -> String {
    format!(
        "query{{validateLicense(key:{}\"x\"{}){{valid}}}}",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

fn deep_object(levels: usize) -> String {
    format!(
        "query{{validateLicense(key:{}\"x\"{}){{valid}}}}",
        "{a:".repeat(levels),
        "}".repeat(levels)
    )
}

/// `fragment Fi on Query { ...Fi+1 ...Fi+1 }`: doubles at every level.
fn fragment_fan_out(levels: usize) -> String {
    let mut text = "query Q{...F0}".to_owned();
    for i in 0..levels {
        text += &format!(" fragment F{i} on Query{{...F{n} ...F{n}}}", n = i + 1);
    }
    text + &format!(" fragment F{levels} on Query{{me{{id}}}}")
}

#[tokio::test]
async fn deep_literals_are_refused_not_fatal() {
    let app = TestApp::spawn().await;
    for levels in [3_000, 100_000] {
        for query in [deep_list(levels), deep_object(levels)] {
            let error = refused(&app, &query, json!({})).await;
            let limit = error["extensions"]["limit"].as_str().unwrap_or_default();
            assert!(
                ["literalNesting", "queryLength"].contains(&limit),
                "{levels} levels: {error}"
            );
        }
    }
    assert_limit(
        &refused(&app, &deep_list(100), json!({})).await,
        "literalNesting",
    );
    let selections = format!("{}{}", "{me".repeat(3_000), "}".repeat(3_000));
    assert_limit(
        &refused(&app, &selections, json!({})).await,
        "selectionNesting",
    );
    assert_alive(&app).await;
}

#[tokio::test]
async fn deep_literals_over_a_websocket_are_refused_not_fatal() {
    let app = TestApp::spawn().await;
    let mut socket = app.websocket("graphql-transport-ws").await;
    let send = |message: Value| Message::text(message.to_string());
    socket
        .send(send(json!({"type": "connection_init", "payload": {}})))
        .await
        .unwrap();
    // The closure borrows the socket until the end of this block.
    {
        let mut next_message = async || loop {
            let frame = tokio::time::timeout(DEADLINE, socket.next())
                .await
                .expect("a message before the deadline")
                .expect("socket open")
                .expect("frame");
            if let Message::Text(text) = frame {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["type"] != "ping" && message["type"] != "ka" {
                    return message;
                }
            }
        };
        assert_eq!(next_message().await["type"], "connection_ack");
    }
    for (id, query) in [("deep", deep_list(3_000)), ("wide", deep_object(100_000))] {
        socket
            .send(send(
                json!({"type": "subscribe", "id": id, "payload": {"query": query}}),
            ))
            .await
            .unwrap();
        let answer = loop {
            let frame = tokio::time::timeout(DEADLINE, socket.next())
                .await
                .expect("an answer before the deadline")
                .expect("socket open")
                .expect("frame");
            if let Message::Text(text) = frame {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["id"] == id {
                    break message;
                }
            }
        };
        let errors = if answer["type"] == "error" {
            answer["payload"].clone()
        } else {
            answer["payload"]["errors"].clone()
        };
        assert_eq!(errors[0]["extensions"]["code"], "VALIDATION", "{answer}");
    }
    assert_alive(&app).await;
}

#[tokio::test]
async fn fragment_fan_out_is_refused_by_its_limit() {
    let app = TestApp::spawn().await;
    let started = std::time::Instant::now();
    let error = refused(&app, &fragment_fan_out(30), json!({})).await;
    assert_eq!(error["extensions"]["code"], "VALIDATION", "{error}");
    assert!(error["extensions"]["limit"].is_string(), "{error}");
    assert_limit(
        &refused(&app, &fragment_fan_out(12), json!({})).await,
        "fields",
    );
    assert!(started.elapsed() < DEADLINE);
    // A few spreads of a fragment are fine.
    app.ok(None, &fragment_fan_out(3), json!({})).await;
    assert_alive(&app).await;
}

#[tokio::test]
async fn shape_limits_name_themselves() {
    let app = TestApp::spawn().await;
    let aliases: String = (0..31).map(|i| format!("a{i}:id ")).collect();
    assert_limit(
        &refused(&app, &format!("{{me{{{aliases}}}}}",), json!({})).await,
        "aliases",
    );
    let deep = format!(
        "{{__schema{{types{{fields{{type{{{}name{}}}}}}}}}}}",
        "ofType{".repeat(13),
        "}".repeat(13)
    );
    assert_limit(&refused(&app, &deep, json!({})).await, "depth");
    let deep_data = format!(
        "{{orders{{edges{{node{{{}id{}}}}}}}}}",
        "licenses{edges{node{order{".repeat(3),
        "}}}}".repeat(3)
    );
    assert_limit(&refused(&app, &deep_data, json!({})).await, "depth");
    let tokens = format!("{{me{{id}}}}{}", "!".repeat(5_001));
    assert_limit(&refused(&app, &tokens, json!({})).await, "tokens");
    let long = format!("{{me{{id}}}} #{}", "x".repeat(15_001));
    assert_limit(&refused(&app, &long, json!({})).await, "queryLength");
    let directives = format!("{{me{{{}}}}}", "id @include(if:true) ".repeat(51));
    assert_limit(&refused(&app, &directives, json!({})).await, "directives");
    let two_sign_ins = r#"mutation{
        a:signIn(email:"a@example.com",password:"correct horse battery"){token}
        b:signIn(email:"b@example.com",password:"correct horse battery"){token}}"#;
    assert_limit(
        &refused(&app, two_sign_ins, json!({})).await,
        "passwordOperations",
    );
    let costly = "{ orders(first:100){ edges{ node{ licenses(first:100){ edges{ node{ id key status assigneeEmail } } } } } } }";
    assert_limit(&refused(&app, costly, json!({})).await, "complexity");
    assert_alive(&app).await;
}

#[tokio::test]
async fn large_bodies_are_refused_before_they_are_read() {
    let app = TestApp::spawn().await;
    let padding = "x".repeat(20 * 1024 * 1024);
    let body = json!({"query": "{ me { id } }", "variables": {"pad": padding}}).to_string();
    let (status, answer) = post_raw(&app, "application/json", body.clone().into_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(answer["errors"][0]["extensions"]["code"], "VALIDATION");
    assert_eq!(answer["errors"][0]["extensions"]["field"], "body");
    assert_eq!(answer["errors"][0]["extensions"]["limit"], "body");
    // Without a Content-Length, the body is counted as it arrives.
    assert_eq!(chunked_upload(&app, 20 * 1024 * 1024).await, 413);
    let multipart =
        b"--b\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--b--\r\n";
    let (status, answer) =
        post_raw(&app, "multipart/form-data; boundary=b", multipart.to_vec()).await;
    assert_eq!(status, 415);
    assert_eq!(answer["errors"][0]["extensions"]["field"], "body");
    let (status, answer) = post_raw(&app, "application/json", b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert_eq!(answer["errors"][0]["extensions"]["code"], "VALIDATION");
    assert_alive(&app).await;
}

/// POST a chunked body of `size` bytes (no Content-Length) over a raw
/// connection; the status the server answers, possibly before it all arrived.
async fn chunked_upload(app: &TestApp, size: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&frame).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0; 1024];
    let read = tokio::time::timeout(DEADLINE, stream.read(&mut answer))
        .await
        .expect("an answer before the deadline")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&answer[..read]);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn every_client_error_has_a_code() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(format!("{}/no/such/path", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND");
    let response = app
        .http
        .delete(format!("{}/graphql", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.headers().get("allow").is_some());
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION");
    let response = app
        .http
        .post(format!("{}/verify-email", app.base))
        .form(&[("nothing", "here")])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION");
}

#[tokio::test]
async fn control_characters_are_refused_and_layout_is_kept_in_free_text() {
    let app = TestApp::spawn().await;
    let (token, _) = app
        .verified_user(&format!("{}@example.com", crate::harness::unique("ctl")))
        .await;
    for bad in ["a\u{0}b", "a\u{1b}b", "a\u{7f}b", "a\nb"] {
        let error = app
            .error(
                Some(&token),
                "mutation($k:String!){ claimLicense(key:$k){ claim{ id } } }",
                json!({"k": bad}),
            )
            .await;
        assert_eq!(
            error["extensions"]["code"], "VALIDATION",
            "{bad:?}: {error}"
        );
        assert_eq!(error["extensions"]["field"], "key", "{bad:?}: {error}");
    }
    let buyer = format!("{}@example.com", crate::harness::unique("buyer"));
    let data = app
        .ok(
            Some(&token),
            "mutation($m:String){ requestLicense(input:{buyerEmail:$b, message:$m}){ request{ id } } }"
                .replace("$m:String", "$b:String!, $m:String")
                .as_str(),
            json!({"b": buyer, "m": "Hello,\n\tplease.\r\n"}),
        )
        .await;
    assert!(data["requestLicense"]["request"]["id"].is_string());
    let error = app
        .error(
            Some(&token),
            "mutation($b:String!, $m:String){ requestLicense(input:{buyerEmail:$b, message:$m}){ request{ id } } }",
            json!({"b": buyer, "m": "NUL\u{0}"}),
        )
        .await;
    assert_eq!(error["extensions"]["field"], "message", "{error}");
}

/// Every string argument of the schema, at every place it can be given
/// (arguments and input fields, inline and through a variable), refuses a
/// NUL byte with `VALIDATION` naming it: never `INTERNAL` (PostgreSQL
/// refuses NUL in text) and never stored.
#[tokio::test]
async fn nul_bytes_in_every_string_argument_are_refused() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let schema = crate::introspect::Schema::load(&app).await;
    let slots = schema.string_slots();
    assert!(slots.len() > 20, "the sweep found the schema's strings");
    for slot in &slots {
        for inline in [true, false] {
            let (query, variables) = slot.request(&schema, "a\u{0}b", inline);
            let body = app.gql(Some(&admin), &query, variables).await;
            let error = &body["errors"][0];
            assert_eq!(error["extensions"]["code"], "VALIDATION", "{query}: {body}");
            assert_eq!(error["extensions"]["field"], slot.leaf, "{query}: {body}");
        }
    }
}

/// `GET /graphql` with the URL `?{query_string}`; status and JSON body.
async fn get_raw(app: &TestApp, query_string: &str) -> (u16, Value) {
    let response = tokio::time::timeout(
        DEADLINE,
        app.http
            .get(format!("{}/graphql?{query_string}", app.base))
            .send(),
    )
    .await
    .expect("answered before the deadline")
    .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn hostile_get_urls_are_refused_with_codes() {
    let app = TestApp::spawn().await;
    // A URL over the bound (about 39 KB; 64 KiB is the most an HTTP/1 URI
    // can be here at all): 414 before anything is decoded.
    let huge = format!("query={}", "%7B".repeat(13_000));
    let (status, body) = get_raw(&app, &huge).await;
    assert_eq!(status, 414);
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "queryString");
    // Within the URL bound, over the text limit: the same limit as POST.
    let long = format!("query=%7B__typename%20%23{}%0A%7D", "a".repeat(20_000));
    let (status, body) = get_raw(&app, &long).await;
    assert_eq!(status, 400, "a request error, in the default media type");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "queryLength");
    for (query_string, field) in [
        (
            "query=%7B__typename%7D&variables=%7Bnot%20json",
            "variables",
        ),
        ("query=%7B__typename%7D&variables=%5B1%5D", "variables"),
        ("query=%7B__typename%7D&extensions=%7B", "extensions"),
        ("query=%7B__typename%7D&extensions=%22x%22", "extensions"),
        ("query=%7B__typename%7D&query=%7Bme%7Bid%7D%7D", "query"),
        ("query=%ff%fe", "query"),
    ] {
        let (status, body) = get_raw(&app, query_string).await;
        assert!(status == 400 || status == 200, "{query_string}: {status}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "VALIDATION",
            "{query_string}: {body}"
        );
        if status == 400 {
            assert_eq!(
                body["errors"][0]["extensions"]["field"], field,
                "{query_string}"
            );
        }
    }
    // Malformed persisted-query extensions, over GET and POST.
    for extensions in [
        json!({"persistedQuery": "x"}),
        json!({"persistedQuery": {"version": 2, "sha256Hash": "00"}}),
        json!({"persistedQuery": {"version": 1, "sha256Hash": "zz".repeat(32)}}),
        json!({"persistedQuery": {"version": 1, "sha256Hash": "0".repeat(100_000)}}),
    ] {
        let body = json!({"extensions": extensions}).to_string().into_bytes();
        let (status, answer) = post_raw(&app, "application/json", body).await;
        assert_eq!(status, 400, "a request error: {extensions}");
        assert_eq!(answer["errors"][0]["extensions"]["field"], "extensions");
    }
    assert_alive(&app).await;
}

/// graphql-js's introspection query, as GraphiQL, Apollo tools and code
/// generators send it (`ofType` nine levels deep).
const STANDARD_INTROSPECTION: &str = r#"query IntrospectionQuery {
  __schema {
    description queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description isRepeatable locations
      args(includeDeprecated: true) { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description specifiedByURL
  fields(includeDeprecated: true) { name description
    args(includeDeprecated: true) { ...InputValue }
    type { ...TypeRef } isDeprecated deprecationReason }
  inputFields(includeDeprecated: true) { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue {
  name description type { ...TypeRef } defaultValue isDeprecated deprecationReason
}
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
  ofType { kind name ofType { kind name ofType { kind name } } } } } } } } } }"#;

#[tokio::test]
async fn the_standard_introspection_query_is_answered() {
    let app = TestApp::spawn().await;
    let body = app.gql(None, STANDARD_INTROSPECTION, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().expect("types");
    assert!(types.iter().any(|t| t["name"] == "Order"), "{body}");
}
