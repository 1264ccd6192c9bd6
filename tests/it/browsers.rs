//! Browsers on other origins: CORS for the allowed ones only, websockets
//! refused to other sites' pages, and the security headers on every page.
use reqwest::{Method, Response, header};
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http::HeaderValue};

use crate::harness::{Options, TestApp};

const DASHBOARD: &str = "https://dash.example.com";

async fn with_origins(origins: &'static str) -> TestApp {
    TestApp::spawn_with(Options {
        configure: Box::new(move |config| {
            config.cors_allowed_origins = origins.parse().expect("valid origins");
        }),
        ..Default::default()
    })
    .await
}

async fn preflight(app: &TestApp, origin: &str) -> Response {
    app.http
        .request(Method::OPTIONS, format!("{}/graphql", app.base))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization, content-type, idempotency-key",
        )
        .send()
        .await
        .expect("preflight sent")
}

fn header_text(response: &Response, name: header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
}

#[tokio::test]
async fn preflights_pass_for_allowed_origins_only() {
    let app = with_origins("https://dash.example.com,http://localhost:5173").await;
    let response = preflight(&app, DASHBOARD).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        header_text(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
        Some(DASHBOARD)
    );
    let headers = header_text(&response, header::ACCESS_CONTROL_ALLOW_HEADERS).unwrap();
    for wanted in ["authorization", "content-type", "idempotency-key"] {
        assert!(headers.contains(wanted), "{wanted} in {headers}");
    }
    let methods = header_text(&response, header::ACCESS_CONTROL_ALLOW_METHODS).unwrap();
    assert!(
        methods.contains("post") && methods.contains("get"),
        "{methods}"
    );
    assert_eq!(
        header_text(&response, header::ACCESS_CONTROL_MAX_AGE).as_deref(),
        Some("600")
    );
    assert!(
        header_text(&response, header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(),
        "no credentials: tokens go in Authorization"
    );
    // The actual request: readable by the page, `idempotent-replayed` too.
    let response = app
        .http
        .post(format!("{}/graphql", app.base))
        .header(header::ORIGIN, DASHBOARD)
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header_text(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
        Some(DASHBOARD)
    );
    assert!(
        header_text(&response, header::ACCESS_CONTROL_EXPOSE_HEADERS)
            .unwrap_or_default()
            .contains("idempotent-replayed")
    );
    // Another origin gets no CORS header: its page cannot read the answer.
    for origin in [
        "https://evil.example",
        "https://dash.example.com.evil.example",
    ] {
        let response = preflight(&app, origin).await;
        assert!(
            header_text(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "{origin}"
        );
    }
}

#[tokio::test]
async fn without_a_list_there_are_no_cors_headers() {
    let app = TestApp::spawn().await;
    let response = preflight(&app, DASHBOARD).await;
    assert!(!response.status().is_success(), "{}", response.status());
    assert!(
        response
            .headers()
            .keys()
            .all(|name| !name.as_str().starts_with("access-control-")),
        "{:?}",
        response.headers()
    );
}

/// Open `/graphql/ws` with `origin` (None: as programs do); `Ok` when the
/// upgrade succeeded, else the HTTP status.
async fn websocket(app: &TestApp, origin: Option<&str>) -> Result<(), u16> {
    let mut request = format!("ws://{}/graphql/ws", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut socket, _)) => {
            socket.close(None).await.ok();
            Ok(())
        }
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(error) => panic!("websocket: {error}"),
    }
}

#[tokio::test]
async fn websockets_from_other_sites_are_refused() {
    let app = with_origins(DASHBOARD).await;
    assert_eq!(websocket(&app, Some(DASHBOARD)).await, Ok(()));
    assert_eq!(
        websocket(&app, Some("https://evil.example")).await,
        Err(403)
    );
    assert_eq!(
        websocket(&app, None).await,
        Ok(()),
        "programs send no Origin"
    );
    // keyledger's own pages (GraphiQL, the dashboard) are always allowed.
    let own = format!("http://{}", app.addr);
    assert_eq!(websocket(&app, Some(&own)).await, Ok(()));

    // Without a list: the same-origin rule alone.
    let app = TestApp::spawn().await;
    assert_eq!(websocket(&app, Some(DASHBOARD)).await, Err(403));
    assert_eq!(websocket(&app, Some("null")).await, Err(403));
    let own = format!("http://{}", app.addr);
    assert_eq!(websocket(&app, Some(&own)).await, Ok(()));
    assert_eq!(websocket(&app, None).await, Ok(()));
}

fn assert_security_headers(response: &Response, what: &str) {
    let csp = header_text(response, header::CONTENT_SECURITY_POLICY)
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-eval"), "{what}: {csp}");
    let scripts = csp
        .split(';')
        .find(|directive| directive.trim().starts_with("script-src"))
        .unwrap();
    assert!(!scripts.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(
        header_text(response, header::REFERRER_POLICY).as_deref(),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(
        header_text(response, header::X_CONTENT_TYPE_OPTIONS).as_deref(),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        header_text(response, header::X_FRAME_OPTIONS).as_deref(),
        Some("deny"),
        "{what}"
    );
}

#[tokio::test]
async fn every_page_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let graphiql = app
        .http
        .get(format!("{}/graphql", app.base))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_security_headers(&graphiql, "GraphiQL");
    let token = "ab".repeat(32);
    let link = app
        .http
        .get(format!("{}/verify-email?token={token}", app.base))
        .send()
        .await
        .unwrap();
    assert_security_headers(&link, "the verification page");
    let page = link.text().await.unwrap();
    assert!(
        !page.contains("style=") && !page.contains("<script"),
        "{page}"
    );
    let api = app
        .http
        .post(format!("{}/graphql", app.base))
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_security_headers(&api, "POST /graphql");
    let missing = app
        .http
        .get(format!("{}/no-such-page", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_security_headers(&missing, "a 404");
}
