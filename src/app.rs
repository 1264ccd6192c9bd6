//! Wiring: the shared state, the router, background workers, start-up and
//! graceful shutdown.
use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{get, post},
};
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    auth::session_cache::SessionCache,
    clock::Clock,
    config::Config,
    db,
    domain::{Ctx, Wake},
    events::{
        bus::{Bus, BusError, RedisBus},
        hub::{Hooks, Hub, SESSION_RECHECK},
        relay::Relay,
    },
    graphql::Endpoint,
    http,
    mail::{
        transport::{Transport, TransportError},
        worker::MailWorker,
    },
    metrics::Metrics,
    rate_limits::RateLimits,
    state::AppState,
};

/// Why keyledger could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("event bus (REDIS_URL): {0}")]
    Bus(#[from] BusError),
    #[error("mail: {0}")]
    Mail(#[from] TransportError),
    #[error("{0}")]
    SigningKey(#[from] crate::signing::SigningKeyError),
    #[error("{0}")]
    Webhooks(#[from] crate::webhooks::worker::ClientError),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// A built application: its state, its router and its background tasks
/// (stopped when the `App` is dropped).
pub struct App {
    pub state: AppState,
    /// The GraphQL schema behind its request checks.
    pub graphql: Endpoint,
    pub router: Router,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for App {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Test and embedding hooks; production uses the defaults.
#[derive(Default)]
pub struct Overrides {
    pub clock: Option<Clock>,
    pub transport: Option<Transport>,
}

impl App {
    /// Connect, migrate, start the workers and build the router.
    pub async fn build(config: Config, overrides: Overrides) -> Result<App, StartError> {
        let metrics = Metrics::default();
        let mut db = db::connect_configured(&config.db).await?;
        let raised = crate::events::cursor::keep_ahead(&db).await?;
        if raised > 0 {
            tracing::warn!(
                raised,
                "transaction ids are behind the stored events (database restored into another \
                 cluster?): new events are shifted after them"
            );
        }
        let counter = metrics.clone();
        db.set_metric_callback(move |_| counter.sql_statement());
        let clock = overrides.clock.unwrap_or_default();
        let transport = match overrides.transport {
            Some(transport) => transport,
            None => Transport::from_config(config.smtp_url.as_deref(), config.mail_dir.clone())?,
        };
        let signer = Arc::new(
            crate::signing::Signer::load(
                &db,
                &config.db.database_url,
                config.license_signing_key.as_deref(),
                clock.now(),
            )
            .await?,
        );
        let validities = Arc::new(crate::domain::validity_cache::ValidityCache::default());
        let sessions = Arc::new(SessionCache::default());
        let hub = Hub::new(
            metrics.clone(),
            Hooks {
                changes: {
                    let validities = validities.clone();
                    Arc::new(move || validities.invalidate())
                },
                sign_outs: {
                    let sessions = sessions.clone();
                    Arc::new(move || sessions.forget_all())
                },
            },
        );
        let mut tasks = Vec::new();
        let bus = match &config.redis_url {
            Some(url) => {
                let redis = RedisBus::new(url, &config.redis_channel, hub.clone())?;
                tasks.push(tokio::spawn(redis.clone().run_subscriber(hub.clone())));
                // Reads what other instances announce, once for all of this
                // instance's subscriptions.
                tasks.push(tokio::spawn(hub.clone().run_reader(db.clone())));
                Bus::Redis(redis)
            }
            None => Bus::Local(hub.clone()),
        };
        // Whatever the bus: a session can also end where no announcement
        // reaches this instance (another process, a lost message).
        tasks.push(tokio::spawn(hub.clone().run_session_checks(
            db.clone(),
            clock.clone(),
            SESSION_RECHECK,
        )));
        let wake = Wake::default();
        let interval = Duration::from_millis(config.job_interval_ms);
        let ctx = Ctx {
            db: db.clone(),
            clock: clock.clone(),
            public_url: config.public_url().into(),
            wake: wake.clone(),
            validities,
            heartbeats: crate::domain::heartbeats::Writer::new(&db),
        };
        tasks.push(tokio::spawn(
            Relay {
                db: db.clone(),
                bus: bus.clone(),
                wake: wake.relay.clone(),
                metrics: metrics.clone(),
                interval,
            }
            .run(),
        ));
        tasks.push(tokio::spawn(
            MailWorker {
                db: db.clone(),
                clock: clock.clone(),
                transport,
                from: config.mail_from.clone(),
                wake: wake.mail.clone(),
                interval,
            }
            .run(),
        ));
        let webhook_client = crate::webhooks::worker::client(config.webhook_allow_private)?;
        tasks.push(tokio::spawn(
            crate::webhooks::worker::WebhookWorker {
                ctx: ctx.clone(),
                schedule: config.webhook_retry_schedule.clone(),
                allow_private: config.webhook_allow_private,
                interval,
            }
            .run(webhook_client),
        ));
        tasks.push(tokio::spawn(crate::domain::expiry::run(
            ctx.clone(),
            interval,
        )));
        let limits = Arc::new(RateLimits::new(&config));
        tasks.push(tokio::spawn(forget_idle_limits(limits.clone())));
        let state = AppState {
            signer,
            limits,
            ctx,
            hub,
            bus,
            sessions,
            answers: tokio_util::task::TaskTracker::new(),
            idempotency: crate::domain::idempotency::KeyRows::new(db.clone()),
            metrics,
            config: Arc::new(config),
        };
        let graphql = Endpoint::new(state.clone());
        let router = router(state.clone(), graphql.clone());
        Ok(App {
            state,
            graphql,
            router,
            tasks,
        })
    }

    /// Serve on `listener` until `shutdown` resolves, then finish in-flight
    /// requests and the records of idempotent answers, with the connection
    /// caps and header deadline of the configuration (see
    /// [`http::listener`]).
    pub async fn serve_on(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let limits = http::listener::Limits::from_config(&self.state.config);
        tracing::info!(
            max_connections = limits.max_connections,
            per_client = limits.per_client,
            "connection caps"
        );
        let served = http::listener::serve(
            listener,
            self.router.clone(),
            limits,
            self.state.metrics.clone(),
            shutdown,
        )
        .await;
        // First attempts of idempotent requests still running, or whose
        // answers were sent and are being recorded: waited for, within a
        // bound, so that a stuck database cannot hold the stop forever.
        self.state.answers.close();
        if tokio::time::timeout(ANSWERS_STOP_WAIT, self.state.answers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.state.answers.len(),
                "stopped before every idempotent answer was recorded; their keys stay running until their lease ends"
            );
        }
        served
    }
}

/// Longest a stopping server waits for idempotent first attempts to
/// record their answers.
const ANSWERS_STOP_WAIT: Duration = Duration::from_secs(10);

/// How often rate limits forget the keys whose buckets are full again.
const LIMITS_SWEEP: Duration = Duration::from_secs(600);

async fn forget_idle_limits(limits: Arc<RateLimits>) {
    loop {
        tokio::time::sleep(LIMITS_SWEEP).await;
        limits.forget_idle();
    }
}

fn router(state: AppState, graphql: Endpoint) -> Router {
    let cors = cors(&state.config.cors_allowed_origins);
    let stripe = match &state.config.stripe_webhook_secret {
        Some(secret) => {
            if !secret.expose().starts_with("whsec_") {
                tracing::warn!(
                    "STRIPE_WEBHOOK_SECRET does not start with whsec_: is it the endpoint's signing secret?"
                );
            }
            tracing::info!("Stripe webhook at POST /webhooks/stripe");
            true
        }
        None => false,
    };
    let server = http::Server {
        state: Arc::new(state),
        graphql,
        persisted: http::persisted::PersistedQueries::default(),
    };
    let mut endpoint = post(http::graphql).get(http::graphql_get);
    if let Some(cors) = cors {
        endpoint = endpoint.layer(cors);
    }
    let [csp, referrer, nosniff, frames] = http::security::layers();
    let mut router = Router::new();
    if stripe {
        // Only with a secret to check signatures with (else 404).
        router = router.route("/webhooks/stripe", post(http::stripe::webhook));
    }
    router
        .route("/", get(http::dashboard::page))
        .route("/graphql", endpoint)
        .route("/graphql/ws", get(http::graphql_ws))
        .route("/assets/{*path}", get(http::assets::serve))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .route("/.well-known/jwks.json", get(http::jwks))
        .route(
            "/verify-email",
            get(http::email_links::verify_email_page).post(http::email_links::verify_email_submit),
        )
        .route(
            "/reset-password",
            get(http::email_links::reset_password_page)
                .post(http::email_links::reset_password_submit),
        )
        .route(
            "/transfers/confirm",
            get(http::email_links::transfer_page).post(http::email_links::transfer_submit),
        )
        .fallback(http::refusal::not_found)
        .layer(axum::middleware::from_fn(
            http::refusal::coded_client_errors,
        ))
        .layer(csp)
        .layer(referrer)
        .layer(nosniff)
        .layer(frames)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(server)
}

/// How long a browser may reuse a preflight's answer: 10 minutes, so that a
/// change of `CORS_ALLOWED_ORIGINS` reaches browsers soon (Chromium caps it
/// at 2 hours anyway).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// CORS for `/graphql` from the allowed origins; none when the list is
/// empty (no CORS header at all: pages of other origins cannot read
/// answers). No credentials: tokens travel in `Authorization`, never in
/// cookies.
fn cors(origins: &crate::origins::AllowedOrigins) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let origins = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect::<Vec<_>>();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([HeaderName::from_static("idempotent-replayed")])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// `keyledger serve`: run until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> Result<(), StartError> {
    let bind = config.bind_addr;
    let app = App::build(config, Overrides::default()).await?;
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|source| StartError::Bind { addr: bind, source })?;
    tracing::info!(address = %bind, "keyledger listening; GraphiQL at http://{bind}/graphql");
    app.serve_on(listener, shutdown_signal())
        .await
        .map_err(StartError::Serve)?;
    tracing::info!("keyledger stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
