//! The API's settings: flags, each with an environment variable and a default.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use parley_shared::config::ServiceArgs;

#[derive(Parser, Debug)]
#[command(name = "parley-api", version, about = "Parley REST API")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Apply migrations, then serve HTTP (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

#[derive(Args, Clone, Debug)]
pub struct Config {
    /// Address the HTTP server listens on.
    #[arg(long, env = "PARLEY_API_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://parley@127.0.0.1:5432/parley",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Upper bound of the PostgreSQL connection pool.
    #[arg(long, env = "PARLEY_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,
    /// How long a request waits for a pooled connection (and start-up for the database).
    #[arg(long, env = "PARLEY_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,
    /// Browser origins allowed to call the API from their pages (CORS), comma-separated (e.g.
    /// `https://app.example.com`), or `*`; same meaning as `PARLEY_BROKER_ALLOWED_ORIGINS`. A
    /// request from any other origin gets no CORS headers. None by default.
    #[arg(long, env = "PARLEY_API_ALLOWED_ORIGINS", value_delimiter = ',', default_value = "")]
    pub allowed_origins: Vec<String>,
    /// Server API keys for the publish and stats routes (`X-API-Key` or `Authorization: ApiKey`),
    /// comma-separated: several are valid at once, for rotation. Each at least 24 characters.
    /// None by default: those routes answer 401.
    #[arg(long, env = "PARLEY_SERVER_API_KEYS", value_delimiter = ',', default_value = "", hide_env_values = true)]
    pub server_api_keys: Vec<String>,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub relay: crate::relay::RelayConfig,
    #[command(flatten)]
    pub push: crate::push::PushConfig,
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Limits on what one request may ask for.
#[derive(Args, Clone, Debug)]
pub struct Limits {
    /// Longest message text, in characters (Unicode scalar values), after trimming.
    #[arg(long, env = "PARLEY_MESSAGE_MAX_CHARS", default_value_t = 4000)]
    pub message_max_chars: usize,
    /// How long after sending its author may edit a message.
    #[arg(long, env = "PARLEY_EDIT_WINDOW", default_value = "15m", value_parser = humantime::parse_duration)]
    pub edit_window: Duration,
    /// Most members a group conversation may have.
    #[arg(long, env = "PARLEY_GROUP_MAX_MEMBERS", default_value_t = 10_000)]
    pub group_max_members: i64,
    /// Sustained writes (POST, PUT, PATCH, DELETE) per second and user; more get 429.
    #[arg(long, env = "PARLEY_WRITE_RATE_PER_SECOND", default_value_t = 30)]
    pub write_rate_per_second: u32,
    /// Writes a user may burst above the sustained rate.
    #[arg(long, env = "PARLEY_WRITE_BURST", default_value_t = 60)]
    pub write_burst: u32,
    /// Largest request body, in bytes; larger bodies get 413.
    #[arg(long, env = "PARLEY_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Group conversations one user may create per hour; more get 429.
    #[arg(long, env = "PARLEY_NEW_CONVERSATIONS_PER_HOUR", default_value_t = 30)]
    pub new_conversations_per_hour: i64,
    /// Direct conversations with new partners one user may start per hour; more get 429.
    #[arg(long, env = "PARLEY_NEW_DIRECT_PARTNERS_PER_HOUR", default_value_t = 100)]
    pub new_direct_partners_per_hour: i64,
}

impl Config {
    /// Settings from the environment and defaults alone, as the binary would read them with no flags.
    pub fn from_env() -> Self {
        Cli::parse_from(["parley-api"]).config
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
