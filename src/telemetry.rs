use tracing_subscriber::EnvFilter;

/// Structured logs to stderr; `RUST_LOG` overrides the default filter
/// (which keeps sqlx's per-statement INFO lines out).
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
