//! The `keyledger` binary: parse the command line, set up logging, run the subcommand.
use clap::Parser;
use keyledger::config::{Cli, Command};

/// A request allocates and frees many small objects (HTTP, JSON, GraphQL,
/// SQL rows): glibc's allocator was about a sixth of the server's CPU on the
/// claim path (`just bench`), mimalloc costs less for the same work.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    dotenvy::dotenv().ok();
    let cli = Cli::parse();
    keyledger::telemetry::init();
    // Every connection is a descriptor: start with as many as allowed.
    match keyledger::http::listener::raise_descriptor_limit() {
        Ok(limit) => tracing::debug!(limit, "open descriptor limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open descriptor limit"),
    }
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command.unwrap_or_default() {
        Command::Serve(config) => keyledger::app::serve(config).await.map_err(Into::into),
        Command::Migrate(db) => keyledger::db::connect_configured(&db)
            .await
            .map(|_| tracing::info!("migrations applied"))
            .map_err(Into::into),
        Command::GrantAdmin { db, email } => keyledger::cli::grant_admin(&db, &email).await,
        Command::Keygen => keyledger::signing::generate_pem()
            .map(|pem| print!("{pem}"))
            .map_err(Into::into),
        Command::PrintSchema => {
            print!("{}", keyledger::graphql::sdl());
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "keyledger stopped with an error");
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
