//! HTTP endpoints: GraphQL over HTTP and websockets, GraphiQL, health,
//! readiness, metrics, and the small pages links in emails open.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::GraphQLResponse;
use axum::{
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

pub mod email_links;
pub mod listener;
pub mod refusal;
mod websocket;

use crate::{
    auth::{self, bearer},
    client_ip::ClientAddr,
    error::AppError,
    graphql::{AppSchema, Auth, Loaders},
    state::AppState,
};

pub use websocket::graphql_ws;

#[derive(Clone)]
pub struct Server {
    /// Shared, not cloned field by field: axum clones the router's state for
    /// every request.
    pub state: Arc<AppState>,
    pub schema: AppSchema,
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

pub async fn graphql(
    State(server): State<Server>,
    client: ClientAddr,
    headers: HeaderMap,
    refusal::GraphQLPost(request): refusal::GraphQLPost,
) -> GraphQLResponse {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("invalid"));
    let auth = match resolve_auth(&server.state, authorization).await {
        Ok(auth) => auth,
        Err(error) => {
            let error =
                async_graphql::Error::from(error).into_server_error(async_graphql::Pos::default());
            return async_graphql::Response::from_errors(vec![error]).into();
        }
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| crate::graphql::UserAgent(ua.to_owned()));
    let mut request = request.data(auth).data(client);
    if let Some(user_agent) = user_agent {
        request = request.data(user_agent);
    }
    let request = request.data(Loaders::new(server.state.ctx.db.clone()));
    server.schema.execute(request).await.into()
}

pub async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .title("keyledger")
            .finish(),
    )
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// How long readiness waits for the database and for Redis (checked at once):
/// a probe wants an answer in time, and a dependency slower than this is as
/// good as down for requests. Without it, a database that stopped answering
/// held the probe for the pool's 30 s acquire timeout.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(1);

async fn within_readiness_timeout(
    check: impl Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(READINESS_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err("timeout".to_owned()))
}

/// Ready when the database answers, and, when Redis is configured, Redis
/// answers and this instance's subscriber is subscribed (else events made on
/// other instances would not reach its live subscriptions). 503 otherwise,
/// within [`READINESS_TIMEOUT`].
pub async fn readyz(State(server): State<Server>) -> Response {
    let state = &server.state;
    let (database, bus) = tokio::join!(
        within_readiness_timeout(async { state.ctx.db.ping().await.map_err(|e| e.to_string()) }),
        within_readiness_timeout(state.bus.ping()),
    );
    let subscribed = state.bus.subscribed();
    let status = |ok: bool| if ok { "ok" } else { "unavailable" };
    let local = matches!(state.bus, crate::events::bus::Bus::Local(_));
    let body = serde_json::json!({
        "database": status(database.is_ok()),
        "redis": if local { "not configured" } else { status(bus.is_ok()) },
        "subscriber": if local { "not configured" } else if subscribed { "ok" } else { "disconnected" },
    });
    let code = if database.is_ok() && bus.is_ok() && subscribed {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

pub async fn metrics(State(server): State<Server>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        server.state.metrics.render(),
    )
        .into_response()
}
