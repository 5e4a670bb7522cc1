//! The broker's settings: flags, each with an environment variable and a default.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser};
use parley_shared::auth::AuthArgs;
use parley_shared::telemetry::LogArgs;

#[derive(Parser, Debug)]
#[command(name = "parley-broker", version, about = "Parley WebSocket broker")]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
}

#[derive(Args, Clone, Debug)]
pub struct Config {
    /// Address the HTTP/WebSocket server listens on.
    #[arg(long, env = "PARLEY_BROKER_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// Path of the WebSocket endpoint.
    #[arg(long, env = "PARLEY_WS_PATH", default_value = "/ws")]
    pub ws_path: String,
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// On SIGTERM, how long connections may take to close before the process exits anyway.
    #[arg(long, env = "PARLEY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    /// Settings from the environment and defaults alone, as the binary would read them with no flags.
    pub fn from_env() -> Self {
        Cli::parse_from(["parley-broker"]).config
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn readme_documents_every_environment_variable() {
        let readme = include_str!("../../README.md");
        let command = Cli::command();
        let undocumented: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .filter(|env| !readme.contains(&format!("| `{env}` |")))
            .collect();
        assert!(undocumented.is_empty(), "README.md's configuration tables lack {undocumented:?}");
    }
}
