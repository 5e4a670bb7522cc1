use clap::Parser;
use parley_api::{Application, Cli, Command, db};

// Many small short-lived allocations per request (JSON, headers, futures): mimalloc spends
// measurably less CPU on them than glibc malloc under load (see `cargo xtask bench rest`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = parley_shared::telemetry::init(&cli.config.service.log, "parley-api");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            // Signal handlers first: a SIGTERM during start-up must stop us gracefully too.
            let stop = parley_shared::shutdown::signal();
            let app = Application::build(cli.config).await?;
            app.run_until_stopped(stop).await
        }
        Command::Migrate => {
            let pool = db::connect(&cli.config).await?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}
