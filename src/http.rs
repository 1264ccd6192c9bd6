//! HTTP endpoints: GraphQL over HTTP and websockets, GraphiQL, health,
//! readiness, metrics, and the small pages links in emails open.
use std::{net::SocketAddr, num::NonZeroU32, time::Duration};

use async_graphql::{Data, http::GraphiQLSource};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::{
    Form,
    extract::{ConnectInfo, Query, State, WebSocketUpgrade},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use serde::Deserialize;

use crate::{
    app::AppState,
    auth::{self, bearer},
    domain::accounts,
    error::AppError,
    graphql::{AppSchema, Auth, Loaders},
};

#[derive(Clone)]
pub struct Server {
    pub state: AppState,
    pub schema: AppSchema,
}

/// The client's address as seen by this server (the balancer's, behind one).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::IpAddr);

/// Decide who is calling from an `Authorization` value.
async fn resolve_auth(state: &AppState, authorization: Option<&str>) -> Result<Auth, AppError> {
    let Some(value) = authorization else {
        return Ok(Auth::Anonymous);
    };
    let Some(token) = bearer(value) else {
        return Ok(Auth::Invalid);
    };
    match auth::authenticate(&state.ctx.db, token, state.ctx.clock.now()).await {
        Ok(viewer) => Ok(Auth::Viewer(viewer)),
        Err(AppError::Unauthenticated) => Ok(Auth::Invalid),
        Err(error) => Err(error),
    }
}

pub async fn graphql(
    State(server): State<Server>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: GraphQLRequest,
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
    let request = request
        .into_inner()
        .data(auth)
        .data(ClientAddr(peer.ip()))
        .data(Loaders::new(server.state.ctx.db.clone()));
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

/// Initial read buffer of a websocket connection.
const WS_READ_BUFFER: usize = 1024;
/// Largest websocket message accepted (as the HTTP endpoint's 2 MB body limit).
const WS_MAX_MESSAGE: usize = 2 * 1024 * 1024;

/// Websocket subscriptions (`graphql-transport-ws` and legacy `graphql-ws`).
/// The token travels in `connection_init`'s payload, `{"authorization":
/// "Bearer TOKEN"}`, since browsers cannot set headers on a websocket. A bad
/// token refuses the connection; no token leaves it anonymous.
pub async fn graphql_ws(
    State(server): State<Server>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        // tungstenite zero-fills its whole read buffer on each read, so its
        // 128 KiB default stays resident for every idle subscriber; GraphQL
        // messages are small (the buffer grows for a larger one).
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(WS_MAX_MESSAGE)
        .on_upgrade(move |socket| {
            let state = server.state.clone();
            GraphQLWebSocket::new(socket, server.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    let authorization = payload
                        .get("authorization")
                        .or_else(|| payload.get("Authorization"))
                        .map(|v| v.as_str().unwrap_or("invalid").to_owned());
                    let auth = resolve_auth(&state, authorization.as_deref())
                        .await
                        .map_err(async_graphql::Error::from)?;
                    if matches!(auth, Auth::Invalid) {
                        return Err(async_graphql::Error::from(AppError::Unauthenticated));
                    }
                    let mut data = Data::default();
                    data.insert(auth);
                    data.insert(ClientAddr(peer.ip()));
                    data.insert(Loaders::new(state.ctx.db.clone()));
                    Ok(data)
                })
                .serve()
        })
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers and, when configured, Redis does.
pub async fn readyz(State(server): State<Server>) -> Response {
    let database = server.state.ctx.db.ping().await.map_err(|e| e.to_string());
    let bus = tokio::time::timeout(Duration::from_secs(3), server.state.bus.ping())
        .await
        .unwrap_or_else(|_| Err("timeout".into()));
    let status = |r: &Result<(), String>| if r.is_ok() { "ok" } else { "unavailable" };
    let body = serde_json::json!({
        "database": status(&database),
        "redis": match server.state.bus { crate::events::bus::Bus::Local(_) => "not configured", _ => status(&bus) },
    });
    let code = if database.is_ok() && bus.is_ok() {
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

#[derive(Deserialize)]
pub struct TokenForm {
    token: String,
}

/// Tokens are 64 hex digits; anything else is not echoed into a page.
fn well_formed_token(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{title}</h1>{body}</body></html>"
    ))
}

/// The link in the verification email: a page with a button, so that a mail
/// scanner opening the link verifies nothing.
pub async fn verify_email_page(Query(form): Query<TokenForm>) -> Html<String> {
    if !well_formed_token(&form.token) {
        return page(
            "Invalid link",
            "<p>This verification link is not valid.</p>",
        );
    }
    page(
        "Confirm your email address",
        &format!(
            "<form method=post action=/verify-email><input type=hidden name=token value=\"{}\">\
             <button type=submit>Confirm my email address</button></form>",
            form.token
        ),
    )
}

pub async fn verify_email_submit(
    State(server): State<Server>,
    Form(form): Form<TokenForm>,
) -> Html<String> {
    match accounts::verify_email(&server.state.ctx, &form.token).await {
        Ok(_) => page(
            "Email address confirmed",
            "<p>You can close this page and sign in.</p>",
        ),
        Err(error) => page("Not confirmed", &format!("<p>{}</p>", error_text(&error))),
    }
}

fn error_text(error: &AppError) -> &'static str {
    match error {
        AppError::Expired(_) => "This link has expired. Sign in to get a new one.",
        AppError::Conflict(_) => "This link was already used.",
        AppError::Internal => "Something went wrong on our side. Try again later.",
        _ => "This verification link is not valid.",
    }
}

/// What a rate limit is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Account(i64),
    Client(std::net::IpAddr),
}

/// Keyed token buckets (governor's GCRA) for attempts that could be used to
/// guess secrets.
pub struct RateLimits {
    claims: DefaultKeyedRateLimiter<LimitKey>,
}

impl RateLimits {
    pub fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        RateLimits {
            claims: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// Count one claim attempt against every key; `RATE_LIMITED` when any is exhausted.
    pub fn claim(&self, keys: &[LimitKey]) -> Result<(), AppError> {
        for key in keys {
            if let Err(not_until) = self.claims.check_key(key) {
                let wait = not_until.wait_time_from(self.claims.clock().now());
                return Err(AppError::RateLimited {
                    retry_after_secs: wait.as_secs().max(1),
                });
            }
        }
        Ok(())
    }
}
