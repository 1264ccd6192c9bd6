//! HTTP endpoints: GraphQL over HTTP and websockets, the dashboard, GraphiQL, health,
//! readiness, metrics, and the small pages links in emails open.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

pub mod assets;
pub mod dashboard;
pub mod email_links;
pub mod graphiql;
pub mod idempotency;
pub mod listener;
pub mod over_http;
pub mod persisted;
pub mod refusal;
pub mod security;
pub mod stripe;
mod websocket;

use crate::{
    auth::{self, bearer},
    client_ip::ClientAddr,
    error::AppError,
    graphql::{Auth, Endpoint, Loaders, transport::Executed},
    state::AppState,
};
use over_http::MediaType;

pub use websocket::graphql_ws;

#[derive(Clone)]
pub struct Server {
    /// Shared, not cloned field by field: axum clones the router's state for
    /// every request.
    pub state: Arc<AppState>,
    /// The schema, reached through its request checks.
    pub graphql: Endpoint,
    /// Automatic persisted queries, by hash.
    pub persisted: persisted::PersistedQueries,
}

/// The client of a request, as the trusted proxies say.
impl axum::extract::FromRequestParts<Server> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        server: &Server,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |info| info.0.ip());
        let trusted = &server.state.config.trusted_proxies;
        Ok(ClientAddr(trusted.client(peer, &parts.headers)))
    }
}

/// Decide who is calling from an `Authorization` value.
async fn resolve_auth(state: &AppState, authorization: Option<&str>) -> Result<Auth, AppError> {
    let Some(value) = authorization else {
        return Ok(Auth::Anonymous);
    };
    let Some(token) = bearer(value) else {
        return Ok(Auth::Invalid);
    };
    let now = state.ctx.clock.now();
    match auth::authenticate(&state.ctx.db, &state.sessions, token, now).await {
        Ok(viewer) => Ok(Auth::Viewer(viewer)),
        Err(AppError::Unauthenticated) => Ok(Auth::Invalid),
        Err(error) => Err(error),
    }
}

/// `POST /graphql`: GraphQL over HTTP, any operation.
pub async fn graphql(
    State(server): State<Server>,
    client: ClientAddr,
    headers: HeaderMap,
    over_http::GraphQLPost(request, body_hash): over_http::GraphQLPost,
) -> Response {
    let Some(media) = over_http::negotiate(&headers) else {
        return over_http::not_acceptable();
    };
    let keyed = match idempotency::key(&headers) {
        Ok(key) => key.zip(body_hash),
        Err(error) => return over_http::request_error(media, error, StatusCode::BAD_REQUEST),
    };
    run(&server, client, &headers, request, media, keyed, false).await
}

/// `GET /graphql`: GraphiQL for a browser asking for HTML; otherwise the
/// query of the URL's `?query=` (or persisted query), queries only.
pub async fn graphql_get(
    State(server): State<Server>,
    client: ClientAddr,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if over_http::wants_html(&headers) {
        return graphiql::page().await;
    }
    let Some(media) = over_http::negotiate(&headers) else {
        return over_http::not_acceptable();
    };
    let request = match over_http::from_query_string(uri.query().unwrap_or_default()) {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    run(&server, client, &headers, request, media, None, true).await
}

async fn run(
    server: &Server,
    client: ClientAddr,
    headers: &HeaderMap,
    mut request: async_graphql::Request,
    media: MediaType,
    keyed: Option<(String, over_http::BodyHash)>,
    queries_only: bool,
) -> Response {
    if let Err(error) = server.persisted.resolve(&mut request) {
        let status = match (persisted::is_not_found(&error), media) {
            (true, _) | (false, MediaType::Json) => StatusCode::OK,
            (false, MediaType::GraphQLResponse) => StatusCode::BAD_REQUEST,
        };
        return over_http::request_error(media, error, status);
    }
    if request.query.is_empty() {
        // Not a GraphQL document at all: 400 whatever the media type.
        return over_http::request_error(
            media,
            crate::graphql::limits::coded_error("the request has no query".into(), "query", None),
            StatusCode::BAD_REQUEST,
        );
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("invalid"));
    let auth = match resolve_auth(&server.state, authorization).await {
        Ok(auth) => auth,
        Err(error) => {
            let error =
                async_graphql::Error::from(error).into_server_error(async_graphql::Pos::default());
            return over_http::respond(
                media,
                async_graphql::Response::from_errors(vec![error]),
                true,
            );
        }
    };
    // Checked once, before anything executes (limits, scopes, `GET`).
    let mut request = match server.graphql.admit(request, &auth, queries_only) {
        Ok(request) => request,
        Err(error) => return over_http::respond(media, Endpoint::refused(error), false),
    };
    // With an `Idempotency-Key`: a mutation runs once per caller and key.
    let idempotent = match keyed {
        Some((key, body_hash)) => match idempotency::decide(&mut request, &auth, &body_hash) {
            idempotency::Decision::Ignore => None,
            idempotency::Decision::Refuse(error) => {
                return over_http::request_error(media, error, StatusCode::BAD_REQUEST);
            }
            idempotency::Decision::Keyed { caller } => Some((caller, key, body_hash)),
        },
        None => None,
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| crate::graphql::UserAgent(ua.to_owned()));
    let executed = Executed::default();
    let mut request = request.data(auth).data(client).data(executed.clone());
    if let Some(user_agent) = user_agent {
        request = request.data(user_agent);
    }
    let request = request.data(Loaders::new(server.state.ctx.db.clone()));
    if let Some((caller, key, body_hash)) = idempotent {
        let keyed = idempotency::Keyed {
            caller,
            key,
            body_hash,
        };
        return idempotency::run_once(server, keyed, request, executed, media).await;
    }
    let response = server.graphql.run(request).await;
    over_http::respond(media, response, executed.get())
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// How long readiness waits for the database and for Redis (checked at once):
/// a probe wants an answer in time, and a dependency slower than this is as
/// good as down for requests. Without it, a database that stopped answering
/// held the probe for the pool's 30 s acquire timeout.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether `check` succeeded within [`READINESS_TIMEOUT`].
async fn within_readiness_timeout<E>(check: impl Future<Output = Result<(), E>>) -> bool {
    matches!(
        tokio::time::timeout(READINESS_TIMEOUT, check).await,
        Ok(Ok(()))
    )
}

/// Ready when the database answers, and, when Redis is configured, Redis
/// answers and this instance's subscriber is subscribed (else events made on
/// other instances would not reach its live subscriptions). 503 otherwise,
/// within [`READINESS_TIMEOUT`].
pub async fn readyz(State(server): State<Server>) -> Response {
    let state = &server.state;
    let (database, bus) = tokio::join!(
        within_readiness_timeout(state.ctx.db.ping()),
        within_readiness_timeout(state.bus.ping()),
    );
    let subscribed = state.bus.subscribed();
    let status = |ok: bool| if ok { "ok" } else { "unavailable" };
    let local = matches!(state.bus, crate::events::bus::Bus::Local(_));
    let body = serde_json::json!({
        "database": status(database),
        "redis": if local { "not configured" } else { status(bus) },
        "subscriber": if local { "not configured" } else if subscribed { "ok" } else { "disconnected" },
    });
    let code = if database && bus && subscribed {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// How long clients and caches may keep the JWKS: a new key is published
/// when an instance starts with it, before it signs anything, so a verifier
/// that meets an unknown `kid` fetches the set again.
const JWKS_MAX_AGE: &str = "public, max-age=300";

/// `GET /.well-known/jwks.json`: the public keys offline certificates are
/// verified with, retired ones included.
pub async fn jwks(State(server): State<Server>) -> Response {
    match crate::signing::jwks(&server.state.ctx.db).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/jwk-set+json"),
                (header::CACHE_CONTROL, JWKS_MAX_AGE),
            ],
            body.to_string(),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(error = %error, "reading the JWKS failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

pub async fn metrics(State(server): State<Server>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        server.state.metrics.render(),
    )
        .into_response()
}
