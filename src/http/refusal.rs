//! Requests refused before they reach GraphQL, answered in GraphQL's error
//! shape so that every 4xx carries an `extensions.code` (api.md "Errors").
use async_graphql::ServerError;
use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::graphql::limits::{self, Limit};

/// `status` with a GraphQL response holding `error` as its body.
pub fn refuse(status: StatusCode, error: ServerError) -> Response {
    let body = async_graphql::Response::from_errors(vec![error]);
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The most of a refusal's own text kept as the message.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Middleware: a 4xx answer that is not already ours (axum's rejections of
/// a malformed form or upgrade, an unknown path, a wrong method) gets a body
/// in GraphQL's error shape with the `extensions.code` its status means.
pub async fn coded_client_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() {
        return response;
    }
    let ours = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/") || t.starts_with("text/html"));
    if ours {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_owned());
    let error = match status {
        StatusCode::NOT_FOUND => coded(text, "NOT_FOUND"),
        StatusCode::UNAUTHORIZED => coded(text, "UNAUTHENTICATED"),
        StatusCode::FORBIDDEN => coded(text, "FORBIDDEN"),
        StatusCode::TOO_MANY_REQUESTS => coded(text, "RATE_LIMITED"),
        StatusCode::PAYLOAD_TOO_LARGE => Limit::Body.error(),
        StatusCode::METHOD_NOT_ALLOWED => limits::coded_error(text, "method", None),
        _ => limits::coded_error(text, "request", None),
    };
    // Keep the original headers (a 405's `Allow`), with the new body's type.
    let (refused, body) = refuse(status, error).into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(refused.headers);
    Response::from_parts(parts, body)
}

pub fn coded(message: String, code: &str) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}

/// Answer for paths that do not exist.
pub async fn not_found() -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        coded("no such endpoint".into(), "NOT_FOUND"),
    )
}

/// The length a request declares (`Content-Length`), if it is readable.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// A body of at most `limit` bytes: 413 when its declared length is larger,
/// before anything is read, or as soon as what arrives passes the limit (a
/// body without a `Content-Length` is counted as it comes); 400 when it
/// cannot be read.
pub async fn read_body(body: Body, declared: Option<u64>, limit: usize) -> Result<Bytes, Response> {
    let too_large = || refuse(StatusCode::PAYLOAD_TOO_LARGE, Limit::Body.error());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(cause) = source {
            if cause.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = cause.source();
        }
        refuse(
            StatusCode::BAD_REQUEST,
            limits::coded_error("the body could not be read".into(), "body", None),
        )
    })
}
