//! The broker's settings: flags, each with an environment variable and a default.

use std::net::SocketAddr;
use std::time::Duration;

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
    /// Browser origins allowed to connect, comma-separated (e.g. `https://app.example.com`), or
    /// `*`. A handshake with any other `Origin` header is refused with 403; clients that send
    /// no `Origin` (not browsers) are not affected.
    #[arg(long, env = "PARLEY_BROKER_ALLOWED_ORIGINS", value_delimiter = ',', default_value = "")]
    pub allowed_origins: Vec<String>,
    /// Accept the token as `?access_token=` (legacy clients only: query strings end up in proxy
    /// logs). Off: such handshakes are refused with 401.
    #[arg(long, env = "PARLEY_BROKER_ALLOW_QUERY_TOKEN", default_value_t = false)]
    pub allow_query_token: bool,
    /// Open connections per user on this broker; one more is refused with close code 4002.
    #[arg(long, env = "PARLEY_BROKER_MAX_CONNECTIONS_PER_USER", default_value_t = 5)]
    pub max_connections_per_user: usize,
    /// How often the server sends a WebSocket ping.
    #[arg(long, env = "PARLEY_BROKER_HEARTBEAT_INTERVAL", default_value = "20s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// A connection with no inbound frame (pongs included) for this long is closed (4003).
    #[arg(long, env = "PARLEY_BROKER_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// A write the client's socket does not take for this long (it stopped reading, or its link
    /// is gone) closes the connection as a slow consumer (4000).
    #[arg(long, env = "PARLEY_BROKER_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    /// A client that answers a ping with nothing (no pong, no frame) for this long is dead: its
    /// connection is closed (4003) and its presence ends.
    #[arg(long, env = "PARLEY_BROKER_PONG_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub pong_timeout: Duration,
    /// Deadline for the `auth` frame when the handshake carried no token (4101 after it).
    #[arg(long, env = "PARLEY_BROKER_AUTH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub auth_timeout: Duration,
    /// How long the close handshake may take before the socket is dropped.
    #[arg(long, env = "PARLEY_BROKER_CLOSE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub close_timeout: Duration,
    /// Largest frame a client may send, in bytes (4102 above it).
    #[arg(long, env = "PARLEY_BROKER_MAX_FRAME_BYTES", default_value_t = 16 * 1024)]
    pub max_frame_bytes: usize,
    /// Frames per second a connection may send (bursts of twice that); 4103 above it.
    #[arg(long, env = "PARLEY_BROKER_MAX_FRAMES_PER_SECOND", default_value_t = 20)]
    pub max_frames_per_second: u32,
    /// Frames queued for one connection before it is closed as a slow consumer (4000).
    #[arg(long, env = "PARLEY_BROKER_OUTBOUND_QUEUE_FRAMES", default_value_t = 1024)]
    pub outbound_queue_frames: usize,
    /// Most conversations `hello` lists (the most active first, by `last_seq`); a user with
    /// more gets `conversations_truncated: true` and reads the rest with `GET /v1/conversations`.
    /// Keeps `hello` small (about 75 bytes each): the socket's write buffer keeps the size of the
    /// largest frame written.
    #[arg(long, env = "PARLEY_BROKER_HELLO_MAX_CONVERSATIONS", default_value_t = 1_000)]
    pub hello_max_conversations: usize,
    /// Let connections without credentials in (their first frame is then not `auth`): they may
    /// subscribe to channels of `public` namespaces and do nothing else.
    #[arg(long, env = "PARLEY_BROKER_ALLOW_ANONYMOUS", default_value_t = false)]
    pub allow_anonymous: bool,
    /// Channels one connection may subscribe to at once; more get `too_many_subscriptions`.
    #[arg(long, env = "PARLEY_BROKER_MAX_SUBSCRIPTIONS", default_value_t = 256)]
    pub max_subscriptions: usize,
    /// Users one connection may follow with `presence.subscribe`.
    #[arg(long, env = "PARLEY_BROKER_PRESENCE_SUBSCRIPTIONS", default_value_t = 500)]
    pub presence_subscriptions: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer (4000).
    #[arg(long, env = "PARLEY_BROKER_OUTBOUND_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub outbound_queue_bytes: usize,
    /// Kernel send buffer of each client socket, in bytes (0: the kernel's autotuning, up to
    /// `net.ipv4.tcp_wmem`'s maximum, often 4 MiB). It bounds what a client that stopped reading
    /// holds in kernel memory before its queue fills and it is closed as a slow consumer.
    #[arg(long, env = "PARLEY_BROKER_SOCKET_SEND_BUFFER", default_value_t = 64 * 1024)]
    pub socket_send_buffer: u32,
    /// How long a connecting client waits for the API's answer about its conversations.
    #[arg(long, env = "PARLEY_BROKER_MEMBERSHIP_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub membership_timeout: Duration,
    /// After a NATS reconnect every connection is closed with 4004 (it may have missed events),
    /// spread evenly over this window so that clients do not all reconnect at once.
    #[arg(long, env = "PARLEY_BROKER_RESYNC_SPREAD", default_value = "5s", value_parser = humantime::parse_duration)]
    pub resync_spread: Duration,
    /// How long a user stays online after their broker stops renewing its presence lease (it
    /// renews every third of this): how soon the users of a crashed broker go offline.
    #[arg(long, env = "PARLEY_PRESENCE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub presence_ttl: Duration,
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
