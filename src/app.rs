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
        bus::{Bus, RedisBus},
        hub::Hub,
        relay::Relay,
    },
    graphql::{self, AppSchema},
    http,
    mail::{transport::Transport, worker::MailWorker},
    metrics::Metrics,
    rate_limits::RateLimits,
    state::AppState,
};

/// A built application: its state, its router and its background tasks
/// (stopped when the `App` is dropped).
pub struct App {
    pub state: AppState,
    pub schema: AppSchema,
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
    pub async fn build(config: Config, overrides: Overrides) -> Result<App, String> {
        let metrics = Metrics::default();
        let mut db = db::connect_configured(&config.db)
            .await
            .map_err(|e| format!("database: {e}"))?;
        let counter = metrics.clone();
        db.set_metric_callback(move |_| counter.sql_statement());
        let clock = overrides.clock.unwrap_or_default();
        let transport = match overrides.transport {
            Some(transport) => transport,
            None => Transport::from_config(config.smtp_url.as_deref(), config.mail_dir.clone())?,
        };
        let validities = Arc::new(crate::domain::validity_cache::ValidityCache::default());
        let sessions = Arc::new(SessionCache::default());
        let hub = Hub::new(metrics.clone(), validities.clone(), sessions.clone());
        let mut tasks = Vec::new();
        let bus = match &config.redis_url {
            Some(url) => {
                let redis = RedisBus::new(url, &config.redis_channel, hub.clone())?;
                tasks.push(tokio::spawn(redis.clone().run_subscriber(hub.clone())));
                Bus::Redis(redis)
            }
            None => Bus::Local(hub.clone()),
        };
        let wake = Wake::default();
        let interval = Duration::from_millis(config.job_interval_ms);
        let ctx = Ctx {
            db: db.clone(),
            clock: clock.clone(),
            public_url: config.public_url().into(),
            wake: wake.clone(),
            validities,
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
                wake: wake.clone(),
                interval,
            }
            .run(),
        ));
        tasks.push(tokio::spawn(crate::domain::expiry::run(
            ctx.clone(),
            interval,
        )));
        let limits = Arc::new(RateLimits::new(&config));
        tasks.push(tokio::spawn(forget_idle_limits(limits.clone())));
        let state = AppState {
            limits,
            ctx,
            hub,
            bus,
            sessions,
            metrics,
            config: Arc::new(config),
        };
        let schema = graphql::schema(Some(state.clone()));
        let router = router(state.clone(), schema.clone());
        Ok(App {
            state,
            schema,
            router,
            tasks,
        })
    }

    /// Serve on `listener` until `shutdown` resolves, then finish in-flight
    /// requests, with the connection caps and header deadline of the
    /// configuration (see [`http::listener`]).
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
        http::listener::serve(
            listener,
            self.router.clone(),
            limits,
            self.state.metrics.clone(),
            shutdown,
        )
        .await
    }
}

/// How often rate limits forget the keys whose buckets are full again.
const LIMITS_SWEEP: Duration = Duration::from_secs(600);

async fn forget_idle_limits(limits: Arc<RateLimits>) {
    loop {
        tokio::time::sleep(LIMITS_SWEEP).await;
        limits.forget_idle();
    }
}

fn router(state: AppState, schema: AppSchema) -> Router {
    let server = http::Server {
        state: Arc::new(state),
        schema,
    };
    Router::new()
        .route("/graphql", post(http::graphql).get(http::graphiql))
        .route("/graphql/ws", get(http::graphql_ws))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
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
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(server)
}

/// `keyledger serve`: run until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> Result<(), String> {
    let bind = config.bind_addr;
    let app = App::build(config, Overrides::default()).await?;
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| format!("bind {bind}: {e}"))?;
    tracing::info!(address = %bind, "keyledger listening; GraphiQL at http://{bind}/graphql");
    app.serve_on(listener, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
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
