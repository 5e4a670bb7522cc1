use clap::Parser;
use parley_broker::{Application, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = parley_shared::telemetry::init(&cli.config.service.log, "parley-broker");
    // Signal handlers first: a SIGTERM during start-up must stop us gracefully too.
    let stop = parley_shared::shutdown::signal();
    let app = Application::build(cli.config).await?;
    app.run_until_stopped(stop).await
}
