use clap::Parser;
use parley_api::{Application, Cli, Command, db};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    parley_shared::telemetry::init(&cli.config.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(cli.config).await?;
            app.run_until_stopped(parley_shared::shutdown::signal()).await
        }
        Command::Migrate => {
            let pool = db::connect(&cli.config).await?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}
