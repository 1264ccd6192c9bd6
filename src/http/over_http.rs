//! GraphQL over HTTP (graphql.github.io/graphql-over-http): the request's
//! parameters from a JSON body or a `GET` query string, the media type of
//! the answer from `Accept`, and the status code that media type calls for.
//!
//! Parsing fails with the whole answer (`Err(Response)`), as axum's
//! rejections do: built once per refused request, its size costs nothing.
#![allow(clippy::result_large_err)]
use async_graphql::{ServerError, Variables};
use axum::{
    extract::{FromRequest, Request},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};

use super::refusal::refuse;
use crate::graphql::{
    limits::{self, Limit, MAX_BODY_BYTES, MAX_QUERY_STRING_BYTES},
    transport::METHOD_FIELD,
};

/// A GraphQL request read from a `POST` body of at most [`MAX_BODY_BYTES`]
/// (413 beyond, before more is read), in JSON (`Content-Type:
/// application/json`; anything else is 415, a missing type included).
/// Multipart bodies (file uploads) are refused: no operation takes a file.
/// With an `Idempotency-Key` header, the SHA-256 of the body comes along.
pub struct GraphQLPost(pub async_graphql::Request, pub Option<BodyHash>);

/// SHA-256 (hex) of a request body: a retry must send the same bytes.
pub type BodyHash = String;

impl<S: Send + Sync> FromRequest<S> for GraphQLPost {
    type Rejection = Response;

    async fn from_request(request: Request, _: &S) -> Result<Self, Response> {
        let headers = request.headers();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if media != "application/json" {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                limits::coded_error(
                    "send the request as JSON (Content-Type: application/json)".into(),
                    "body",
                    None,
                ),
            ));
        }
        let declared = super::refusal::declared_length(headers);
        let keyed = headers.contains_key(super::idempotency::HEADER);
        let body = super::refusal::read_body(request.into_body(), declared, MAX_BODY_BYTES).await?;
        let hash = keyed.then(|| {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&body))
        });
        from_json(&body).map(|request| GraphQLPost(request, hash))
    }
}

/// The two media types of a GraphQL response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json`: request errors (nothing
    /// executed) are 4xx, so caches and proxies see them.
    GraphQLResponse,
    /// `application/json`, the legacy type: every GraphQL response is 200.
    Json,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::GraphQLResponse => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        })
    }
}

/// The media types `Accept` lists, with their weights (`q`, 0 to 1000).
fn accepted(headers: &HeaderMap) -> Vec<(String, u16)> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let media = parts.next()?.trim().to_ascii_lowercase();
            let mut q = 1000;
            for param in parts {
                if let Some((name, value)) = param.split_once('=')
                    && name.trim().eq_ignore_ascii_case("q")
                {
                    let weight = value.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0);
                    q = (weight * 1000.0).round() as u16;
                }
            }
            (!media.is_empty()).then_some((media, q))
        })
        .collect()
}

/// The media type to answer in, or `None` (406) when `Accept` lists only
/// types keyledger cannot write. `application/graphql-response+json` is
/// the default (no `Accept`, `*/*`, `application/*`: the spec lets servers
/// choose it since its 2025 watershed, and api.md promises it), and wins
/// whenever it is asked for at least as strongly as `application/json`;
/// `application/json` when that is what `Accept` prefers.
pub fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let accepted = accepted(headers);
    if accepted.is_empty() {
        return Some(MediaType::GraphQLResponse);
    }
    let weight = |names: &[&str]| {
        accepted
            .iter()
            .filter(|(media, _)| names.contains(&media.as_str()))
            .map(|(_, q)| *q)
            .max()
            .unwrap_or(0)
    };
    let graphql = weight(&["application/graphql-response+json", "application/*", "*/*"]);
    let json = weight(&["application/json", "application/*", "*/*"]);
    match (graphql, json) {
        (0, 0) => None,
        (graphql, json) if graphql >= json => Some(MediaType::GraphQLResponse),
        _ => Some(MediaType::Json),
    }
}

/// Whether a `GET` asks for a page (a browser's navigation): `text/html`
/// named in `Accept`.
pub fn wants_html(headers: &HeaderMap) -> bool {
    accepted(headers)
        .iter()
        .any(|(media, q)| media == "text/html" && *q > 0)
}

/// 406 with the types keyledger can answer in.
pub fn not_acceptable() -> Response {
    refuse(
        StatusCode::NOT_ACCEPTABLE,
        limits::coded_error(
            "answers are application/graphql-response+json or application/json".into(),
            "accept",
            None,
        ),
    )
}

fn bad_request(message: &str, field: &str) -> Response {
    refuse(
        StatusCode::BAD_REQUEST,
        limits::coded_error(message.to_owned(), field, None),
    )
}

/// The parameters of a request, read from a JSON object (a `POST` body): a
/// string `query`, and `operationName`, `variables` and `extensions` of
/// their types or null; anything else is 400 before any GraphQL work.
pub fn from_json(body: &[u8]) -> Result<async_graphql::Request, Response> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        bad_request(
            &format!("the body is not a GraphQL request in JSON: {error}"),
            "body",
        )
    })?;
    let Value::Object(mut fields) = value else {
        return Err(bad_request(
            "the body is not a GraphQL request in JSON: expected an object",
            "body",
        ));
    };
    let query = match fields.remove("query") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(query)) => query,
        Some(_) => return Err(bad_request("query must be a string", "query")),
    };
    let operation_name = match fields.remove("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => {
            return Err(bad_request(
                "operationName must be a string",
                "operationName",
            ));
        }
    };
    let variables = object(fields.remove("variables"), "variables")?;
    let extensions = object(fields.remove("extensions"), "extensions")?;
    Ok(request(query, operation_name, variables, extensions))
}

fn object(value: Option<Value>, name: &str) -> Result<Map<String, Value>, Response> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(bad_request(&format!("{name} must be an object"), name)),
    }
}

fn request(
    query: String,
    operation_name: Option<String>,
    variables: Map<String, Value>,
    extensions: Map<String, Value>,
) -> async_graphql::Request {
    let mut request = async_graphql::Request::new(query)
        .variables(Variables::from_json(Value::Object(variables)));
    request.operation_name = operation_name;
    for (name, value) in extensions {
        if let Ok(value) = async_graphql::Value::from_json(value) {
            request.extensions.insert(name, value);
        }
    }
    request
}

/// The parameters of a `GET` request, from its URL's query string:
/// `query`, `operationName`, and `variables` and `extensions` as JSON
/// objects. A query string over [`MAX_QUERY_STRING_BYTES`] is 414; a
/// parameter given twice or malformed JSON is 400.
pub fn from_query_string(query_string: &str) -> Result<async_graphql::Request, Response> {
    if query_string.len() > MAX_QUERY_STRING_BYTES {
        return Err(refuse(StatusCode::URI_TOO_LONG, Limit::QueryString.error()));
    }
    let mut params: [Option<String>; 4] = Default::default();
    const NAMES: [&str; 4] = ["query", "operationName", "variables", "extensions"];
    for (name, value) in url::form_urlencoded::parse(query_string.as_bytes()) {
        if let Some(index) = NAMES.iter().position(|known| *known == name) {
            if params[index].is_some() {
                return Err(bad_request(&format!("{name} is given twice"), &name));
            }
            params[index] = Some(value.into_owned());
        }
    }
    let [query, operation_name, variables, extensions] = params;
    let json = |text: Option<String>, name: &str| -> Result<Map<String, Value>, Response> {
        let value = match text {
            None => return Ok(Map::new()),
            Some(text) => serde_json::from_str::<Value>(&text)
                .map_err(|_| bad_request(&format!("{name} must be a JSON object"), name))?,
        };
        object(Some(value), name)
    };
    let variables = json(variables, "variables")?;
    let extensions = json(extensions, "extensions")?;
    Ok(request(
        query.unwrap_or_default(),
        operation_name.filter(|name| !name.is_empty()),
        variables,
        extensions,
    ))
}

/// Whether an error is a refusal of a non-query sent with `GET`.
fn is_method_refusal(error: &ServerError) -> bool {
    error
        .extensions
        .as_ref()
        .and_then(|extensions| extensions.get("field"))
        .is_some_and(|field| *field == async_graphql::Value::from(METHOD_FIELD))
}

/// A response refused before execution: no `data` entry at all.
#[derive(serde::Serialize)]
struct RequestError<'a> {
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}

/// The HTTP answer to a GraphQL response. A response with errors and no
/// execution (syntax, validation, variables, limits) has no `data` entry
/// and is 400 in `application/graphql-response+json`, 200 in
/// `application/json`; a non-query over `GET` is 405 with `Allow: POST`.
pub fn respond(media: MediaType, response: async_graphql::Response, executed: bool) -> Response {
    let request_error = !executed && !response.errors.is_empty();
    let status = if request_error && response.errors.iter().any(is_method_refusal) {
        StatusCode::METHOD_NOT_ALLOWED
    } else if request_error && media == MediaType::GraphQLResponse {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    // Serialized straight from the response, so that fields keep the order
    // they were asked in (a detour through `serde_json::Value` sorts them).
    let body = if request_error {
        serde_json::to_string(&RequestError {
            errors: &response.errors,
            extensions: &response.extensions,
        })
    } else {
        serde_json::to_string(&response)
    };
    let mut answer = (status, body.unwrap_or_default()).into_response();
    let headers = answer.headers_mut();
    headers.insert(header::CONTENT_TYPE, media.content_type());
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    headers.extend(response.http_headers);
    answer
}

/// The answer of an executed request whose JSON body is `body` (kept for
/// an `Idempotency-Key`, or sent again).
pub fn executed_body(media: MediaType, body: String) -> Response {
    let mut answer = (StatusCode::OK, body).into_response();
    answer
        .headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    answer
}

/// A request refused before it reached the schema, as a GraphQL response.
pub fn request_error(media: MediaType, error: ServerError, status: StatusCode) -> Response {
    let mut answer = respond(
        media,
        async_graphql::Response::from_errors(vec![error]),
        false,
    );
    *answer.status_mut() = status;
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn negotiation() {
        use MediaType::*;
        assert_eq!(negotiate(&HeaderMap::new()), Some(GraphQLResponse));
        assert_eq!(negotiate(&accept("*/*")), Some(GraphQLResponse));
        assert_eq!(negotiate(&accept("application/*")), Some(GraphQLResponse));
        assert_eq!(negotiate(&accept("application/json")), Some(Json));
        assert_eq!(
            negotiate(&accept("application/json, */*;q=0.5")),
            Some(Json)
        );
        assert_eq!(
            negotiate(&accept("application/graphql-response+json")),
            Some(GraphQLResponse)
        );
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(GraphQLResponse)
        );
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json;q=0.5, application/json"
            )),
            Some(Json)
        );
        assert_eq!(negotiate(&accept("text/plain")), None);
        assert_eq!(negotiate(&accept("application/json;q=0")), None);
        assert!(wants_html(&accept(
            "text/html,application/xhtml+xml,*/*;q=0.8"
        )));
        assert!(!wants_html(&accept("application/json")));
    }
}
