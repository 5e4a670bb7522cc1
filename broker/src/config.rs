//! The broker's settings: flags, each with an environment variable and a default.

use std::net::SocketAddr;

use clap::{Args, Parser};
use parley_shared::config::ServiceArgs;

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
    #[command(flatten)]
    pub service: ServiceArgs,
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
        let undocumented =
            parley_shared::config::undocumented_env_vars(&Cli::command(), include_str!("../../README.md"));
        assert!(undocumented.is_empty(), "README.md's configuration tables lack {undocumented:?}");
    }
}
