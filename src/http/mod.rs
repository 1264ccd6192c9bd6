//! HTTP endpoints: GraphQL over HTTP and websockets, GraphiQL, health,
//! readiness, metrics, and the small pages links in emails open.
pub mod password_limits;

use std::{net::SocketAddr, num::NonZeroU32, sync::Arc, time::Duration};

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::GraphQLResponse;
use axum::{
    Form,
    extract::{ConnectInfo, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use serde::Deserialize;

pub mod refusal;

use crate::{
    app::AppState,
    auth::{self, Viewer, bearer},
    domain::{accounts, orders, products, transfers},
    error::AppError,
    graphql::{AppSchema, Auth, Loaders},
    pages,
};

pub mod listener;
mod websocket;

pub use websocket::graphql_ws;

#[derive(Clone)]
pub struct Server {
    /// Shared, not cloned field by field: axum clones the router's state for
    /// every request.
    pub state: Arc<AppState>,
    pub schema: AppSchema,
}

/// The client's address, as [`crate::client_ip`] resolves it (behind
/// trusted proxies, from `X-Forwarded-For`); what rate limits count against.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::IpAddr);

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
    let request = request
        .data(auth)
        .data(client)
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

#[derive(Deserialize)]
pub struct TokenForm {
    token: String,
}

/// Tokens are 64 hex digits; anything else is not echoed into a page.
fn well_formed_token(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The link in the verification email: a page with a button, so that a mail
/// scanner opening the link verifies nothing.
pub async fn verify_email_page(Query(form): Query<TokenForm>) -> Html<String> {
    if !well_formed_token(&form.token) {
        return pages::message("Invalid link", "This verification link is not valid.");
    }
    pages::render(&pages::Page {
        title: "Confirm your email address",
        form: Some("verify"),
        token: Some(&form.token),
        ..Default::default()
    })
}

pub async fn verify_email_submit(
    State(server): State<Server>,
    Form(form): Form<TokenForm>,
) -> Html<String> {
    match accounts::verify_email(&server.state.ctx, &form.token).await {
        Ok(_) => pages::message(
            "Email address confirmed",
            "You can close this page and sign in.",
        ),
        Err(error) => pages::message("Not confirmed", error_text(&error)),
    }
}

/// The link in the new owner's transfer email: explains the transfer and asks
/// for an explicit, signed-in confirmation. Opening it changes nothing.
pub async fn transfer_page(
    State(server): State<Server>,
    Query(form): Query<TokenForm>,
) -> Html<String> {
    let invalid = || pages::message("Invalid link", "This transfer link is not valid.");
    if !well_formed_token(&form.token) {
        return invalid();
    }
    let Ok((transfer, order)) = transfers::find_by_token(&server.state.ctx.db, &form.token).await
    else {
        return invalid();
    };
    if transfers::effective_status(&transfer, server.state.ctx.clock.now()) != transfers::PENDING {
        return pages::message(
            "Transfer closed",
            "This transfer was already accepted, cancelled, or has expired.",
        );
    }
    let from = transfers::from_email(&server.state.ctx.db, &transfer)
        .await
        .unwrap_or_default();
    let number = orders::number(order.id);
    let product = products::display_name(&server.state.ctx.db, &order.product)
        .await
        .unwrap_or_else(|_| order.product.clone());
    pages::render(&pages::Page {
        title: "Confirm the order transfer",
        form: Some("transfer"),
        token: Some(&form.token),
        from: Some(&from),
        to: Some(&transfer.to_email),
        order: Some(&number),
        product: Some(&product),
        ..Default::default()
    })
}

#[derive(Deserialize)]
pub struct TransferForm {
    token: String,
    email: String,
    password: String,
}

/// The explicit confirmation: signs in with the addressee's credentials and
/// accepts. Wrong passwords count against the same limits as `signIn`'s;
/// past them the page says when to retry (429 with `Retry-After`).
pub async fn transfer_submit(
    State(server): State<Server>,
    ClientAddr(client): ClientAddr,
    Form(form): Form<TransferForm>,
) -> Response {
    let ctx = &server.state.ctx;
    let checked = server.state.limits.passwords.check(
        &form.email,
        Some(client),
        accounts::check_password(ctx, &form.email, &form.password),
    );
    let viewer = match checked.await {
        Ok(account) => Viewer::of(&account),
        Err(AppError::RateLimited { retry_after_secs }) => {
            let page = pages::message(
                "Not confirmed",
                &format!("Too many attempts. Retry in {retry_after_secs} seconds."),
            );
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                page,
            )
                .into_response();
        }
        Err(_) => {
            return pages::message("Not confirmed", "Wrong email or password.").into_response();
        }
    };
    let page = match transfers::accept(ctx, &viewer, &form.token).await {
        Ok(_) => pages::message(
            "Transfer confirmed",
            "The order and its keys are now yours.",
        ),
        Err(AppError::Forbidden(_)) => pages::message(
            "Not confirmed",
            "This transfer is addressed to another email address.",
        ),
        Err(AppError::EmailNotVerified) => {
            pages::message("Not confirmed", "Verify your email address first.")
        }
        Err(error) => pages::message("Not confirmed", error_text(&error)),
    };
    page.into_response()
}

fn error_text(error: &AppError) -> &'static str {
    match error {
        AppError::Expired(_) => "This link has expired.",
        AppError::Conflict(_) => "This link was already used or the request was cancelled.",
        AppError::DeviceActive { .. } => {
            "Keys of this order are active on devices: they must be deactivated first."
        }
        AppError::Internal => "Something went wrong on our side. Try again later.",
        _ => "This link is not valid.",
    }
}

/// What a rate limit is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Account(i64),
    Client(std::net::IpAddr),
    /// An email address mail is sent to (normalised).
    Recipient(String),
}

/// Keyed token buckets (governor's GCRA) for attempts that could be used to
/// guess secrets, and for actions that send email.
pub struct RateLimits {
    claims: DefaultKeyedRateLimiter<LimitKey>,
    devices: DefaultKeyedRateLimiter<LimitKey>,
    /// Wrong passwords, per account and per client address.
    pub passwords: password_limits::PasswordLimits,
    /// Emails caused per account and sent per recipient address.
    mail: DefaultKeyedRateLimiter<LimitKey>,
    /// Emails caused per client address: a budget of its own, since many
    /// people may share one address (an office, a carrier's NAT).
    mail_clients: DefaultKeyedRateLimiter<LimitKey>,
}

fn per_minute(n: u32) -> DefaultKeyedRateLimiter<LimitKey> {
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(n))
}

fn per_hour(n: u32) -> DefaultKeyedRateLimiter<LimitKey> {
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_hour(n))
}

/// Count one attempt against every key; `RATE_LIMITED` when any is exhausted.
fn check(limiter: &DefaultKeyedRateLimiter<LimitKey>, keys: &[LimitKey]) -> Result<(), AppError> {
    for key in keys {
        check_one(limiter, key)?;
    }
    Ok(())
}

fn check_one(limiter: &DefaultKeyedRateLimiter<LimitKey>, key: &LimitKey) -> Result<(), AppError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(limiter.clock().now());
        AppError::RateLimited {
            retry_after_secs: wait.as_secs().max(1),
        }
    })
}

impl RateLimits {
    pub fn new(config: &crate::config::Config) -> Self {
        RateLimits {
            claims: per_minute(config.claim_rate_per_minute),
            devices: per_minute(config.device_rate_per_minute),
            passwords: password_limits::PasswordLimits::new(
                config.signin_failures_per_minute,
                config.signin_failures_per_minute_per_address,
            ),
            mail: per_hour(config.mail_rate_per_hour),
            mail_clients: per_hour(config.mail_client_rate_per_hour),
        }
    }

    /// A claim attempt (keys could otherwise be guessed).
    pub fn claim(&self, keys: &[LimitKey]) -> Result<(), AppError> {
        check(&self.claims, keys)
    }

    /// A device activation or deactivation by the licensed software.
    pub fn devices(&self, keys: &[LimitKey]) -> Result<(), AppError> {
        check(&self.devices, keys)
    }

    /// An action that sends email to an address its caller chooses, so that
    /// nobody can make keyledger flood a mailbox.
    pub fn mail(&self, keys: &[LimitKey]) -> Result<(), AppError> {
        for key in keys {
            match key {
                LimitKey::Client(_) => check_one(&self.mail_clients, key)?,
                _ => check_one(&self.mail, key)?,
            }
        }
        Ok(())
    }

    /// Forget the buckets that are full again, so that the keys seen once
    /// (addresses, accounts) do not accumulate in memory.
    pub fn forget_idle(&self) {
        for limiter in [&self.claims, &self.devices, &self.mail, &self.mail_clients] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
