//! GraphQL over HTTP as graphql.github.io/graphql-over-http says it (the
//! graphql-http audit runs in `.ci/graphql-http-audit`): media types by
//! `Accept`, status codes by media type, `GET` for queries only, GraphiQL
//! for browsers, and automatic persisted queries.
use reqwest::{Response, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::TestApp;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

fn content_type(response: &Response) -> String {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn post(app: &TestApp, accept: Option<&str>, body: Value) -> Response {
    let mut request = app.http.post(format!("{}/graphql", app.base)).json(&body);
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    request.send().await.expect("request sent")
}

fn url(app: &TestApp, params: &[(&str, &str)]) -> url::Url {
    url::Url::parse_with_params(&format!("{}/graphql", app.base), params).unwrap()
}

async fn get(app: &TestApp, accept: Option<&str>, params: &[(&str, &str)]) -> Response {
    let mut request = app.http.get(url(app, params));
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    request.send().await.expect("request sent")
}

#[tokio::test]
async fn the_answer_is_in_the_media_type_accept_asks_for() {
    let app = TestApp::spawn().await;
    let query = json!({"query": "{ __typename }"});
    for (accept, expected) in [
        (Some("application/json"), "application/json"),
        (Some(GRAPHQL_RESPONSE), GRAPHQL_RESPONSE),
        (
            Some("application/graphql-response+json, application/json;q=0.9"),
            GRAPHQL_RESPONSE,
        ),
        (Some("*/*"), GRAPHQL_RESPONSE),
        (None, GRAPHQL_RESPONSE),
        (Some("application/json, */*;q=0.5"), "application/json"),
    ] {
        let response = post(&app, accept, query.clone()).await;
        assert_eq!(response.status(), 200, "{accept:?}");
        assert!(
            content_type(&response).starts_with(expected),
            "{accept:?} answered {}",
            content_type(&response)
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"]["__typename"], "Query");
    }
    let response = post(&app, Some("text/plain"), query).await;
    assert_eq!(response.status(), 406);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION");
}

#[tokio::test]
async fn request_errors_are_400_in_the_new_media_type_and_200_in_json() {
    let app = TestApp::spawn().await;
    for query in ["{", "{ noSuchField }"] {
        let response = post(&app, Some(GRAPHQL_RESPONSE), json!({"query": query})).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert!(body.get("data").is_none(), "no data entry: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION");
        let response = post(&app, Some("application/json"), json!({"query": query})).await;
        assert_eq!(response.status(), 200, "{query}");
    }
    // An error while executing is a GraphQL answer: 200, with data.
    let response = post(
        &app,
        Some(GRAPHQL_RESPONSE),
        json!({"query": "{ order(id: \"nope\") { id } }"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("data").is_some(), "{body}");
    assert!(
        body["errors"][0]["extensions"]["code"].is_string(),
        "{body}"
    );
    // Not a request at all: 400 in both, before any GraphQL work.
    for body in [json!({"notquery": "{ __typename }"}), json!({"query": 1})] {
        assert_eq!(post(&app, None, body).await.status(), 400);
    }
    let response = app
        .http
        .post(format!("{}/graphql", app.base))
        .body(r#"{"query":"{ __typename }"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415, "a POST without a content type");
}

#[tokio::test]
async fn get_runs_queries_and_refuses_mutations() {
    let app = TestApp::spawn().await;
    let response = get(
        &app,
        Some(GRAPHQL_RESPONSE),
        &[
            (
                "query",
                "query Type($name: String!) { __type(name: $name) { name } }",
            ),
            ("variables", r#"{"name": "Order"}"#),
            ("operationName", "Type"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with(GRAPHQL_RESPONSE));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["__type"]["name"], "Order");

    let mutation =
        r#"mutation { signUp(email: "get@example.com", password: "correct horse battery") }"#;
    for accept in [None, Some("application/json"), Some(GRAPHQL_RESPONSE)] {
        let response = get(&app, accept, &[("query", mutation)]).await;
        assert_eq!(response.status(), 405, "{accept:?}");
        assert_eq!(response.headers()[header::ALLOW], "POST");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION");
        assert_eq!(body["errors"][0]["extensions"]["field"], "method");
        assert!(body.get("data").is_none(), "nothing ran: {body}");
    }
    // The operation chosen by name decides, not the first one.
    let both = format!("query Q {{ __typename }} {mutation}");
    let both = both.replacen("mutation {", "mutation M {", 1);
    let response = get(&app, None, &[("query", &both), ("operationName", "M")]).await;
    assert_eq!(response.status(), 405);
    let response = get(
        &app,
        Some("application/json"),
        &[("query", &both), ("operationName", "Q")],
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn graphiql_only_for_a_page_request() {
    let app = TestApp::spawn().await;
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let response = get(&app, Some(browser), &[]).await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("graphiql"), "{page}");
    assert!(!page.contains("unpkg.com"), "no CDN: {page}");
    assert!(!page.contains("<script>"), "no inline script: {page}");
    // Every script and stylesheet it loads is served from the binary.
    for path in page.split('"').filter(|part| part.starts_with("/assets/")) {
        let asset = app
            .http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200, "{path}");
        assert!(asset.bytes().await.unwrap().len() > 10, "{path}");
    }
    // Without text/html, GET executes (and a GET without a query is 400).
    let response = get(&app, Some("application/json"), &[]).await;
    assert_eq!(response.status(), 400);
    assert!(content_type(&response).starts_with("application/json"));
    let response = get(&app, Some("*/*"), &[("query", "{ __typename }")]).await;
    assert_eq!(response.status(), 200);
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn persisted(hash: &str) -> Value {
    json!({"persistedQuery": {"version": 1, "sha256Hash": hash}})
}

#[tokio::test]
async fn automatic_persisted_queries() {
    let app = TestApp::spawn().await;
    let query = "query Me { me { email } __typename }";
    let hash = sha256(query);
    // Unknown hash: the code Apollo clients answer by sending the query.
    for accept in [None, Some(GRAPHQL_RESPONSE)] {
        let response = post(&app, accept, json!({"extensions": persisted(&hash)})).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            "PERSISTED_QUERY_NOT_FOUND"
        );
        assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    }
    // A hash that is not the query's: refused, and nothing kept.
    let wrong = sha256("{ __typename }");
    let response = post(
        &app,
        None,
        json!({"query": query, "extensions": persisted(&wrong)}),
    )
    .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "VALIDATION",
        "{body}"
    );
    assert_eq!(body["errors"][0]["extensions"]["field"], "extensions");
    let response = post(&app, None, json!({"extensions": persisted(&wrong)})).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
    // Hash and query: run and kept; then the hash alone works over GET.
    let body = app.gql(None, query, json!({})).await;
    assert_eq!(body["data"]["__typename"], "Query");
    let response = post(
        &app,
        None,
        json!({"query": query, "extensions": persisted(&hash)}),
    )
    .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
    let (token, _) = app.verified_user("apq@example.com").await;
    let extensions = persisted(&hash).to_string();
    let response = app
        .http
        .get(url(
            &app,
            &[("extensions", extensions.as_str()), ("operationName", "Me")],
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["me"]["email"], "apq@example.com", "{body}");

    // A persisted mutation is still no GET.
    let mutation = r#"mutation { requestPasswordReset(email: "apq@example.com") }"#;
    let mutation_hash = sha256(mutation);
    let response = post(
        &app,
        Some("application/json"),
        json!({"query": mutation, "extensions": persisted(&mutation_hash)}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let extensions = persisted(&mutation_hash).to_string();
    let response = get(&app, None, &[("extensions", extensions.as_str())]).await;
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn fields_come_back_in_the_order_they_were_asked() {
    let app = TestApp::spawn().await;
    for accept in [None, Some("application/json")] {
        let response = post(
            &app,
            accept,
            json!({"query": "{ zz: __typename mm: __typename aa: __typename }"}),
        )
        .await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert_eq!(
            text, r#"{"data":{"zz":"Query","mm":"Query","aa":"Query"}}"#,
            "{accept:?}"
        );
    }
}
