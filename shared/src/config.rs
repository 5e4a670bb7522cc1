//! Settings every Parley process reads the same way, flattened into each binary's own.

use std::time::Duration;

use clap::Args;

use crate::address_limit::AddressLimitArgs;
use crate::auth::AuthArgs;
use crate::channels::Namespaces;
use crate::http_server::HttpArgs;
use crate::nats::NatsArgs;
use crate::subjects::{InvalidPrefix, Subjects};
use crate::telemetry::LogArgs;

#[derive(Args, Clone, Debug)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// First token of every NATS subject (and of the stream name), so several deployments can
    /// share one NATS: a-z, 0-9, '_' or '-'.
    #[arg(long, env = "PARLEY_NATS_PREFIX", default_value = crate::subjects::DEFAULT_PREFIX, value_parser = parse_prefix)]
    pub nats_prefix: Subjects,
    /// On SIGTERM/SIGINT, how long in-flight requests and open connections may take to finish
    /// before the process exits anyway.
    #[arg(long, env = "PARLEY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Members of conversations with at most this many members hear each other's presence
    /// without asking; in larger ones clients subscribe to the users they show.
    #[arg(long, env = "PARLEY_PRESENCE_AUTO_MAX_MEMBERS", default_value_t = 100)]
    pub presence_auto_max_members: u32,
    /// A TOML file of channel namespaces (`[namespace.<name>]` tables, see README "Channels");
    /// without it: `public`, `live` and `granted`. `user` is always there.
    #[arg(long = "channels-config", env = "PARLEY_CHANNELS_CONFIG", value_parser = parse_namespaces, default_value = "")]
    pub channels: Namespaces,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub address_limit: AddressLimitArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

fn parse_namespaces(path: &str) -> Result<Namespaces, String> {
    if path.is_empty() { Ok(Namespaces::default()) } else { Namespaces::load(std::path::Path::new(path)) }
}

fn parse_prefix(prefix: &str) -> Result<Subjects, InvalidPrefix> {
    Subjects::new(prefix)
}

/// The environment variables `command` reads that `readme` has no configuration-table row for;
/// each binary's tests keep this empty.
pub fn undocumented_env_vars(command: &clap::Command, readme: &str) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .filter(|env| !readme.contains(&format!("| `{env}` |")))
        .collect()
}
