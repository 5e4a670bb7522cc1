use clap::Parser;
use parley_broker::{Application, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    parley_shared::telemetry::init(&cli.config.log);
    let app = Application::build(cli.config).await?;
    app.run_until_stopped(parley_shared::shutdown::signal()).await
}
