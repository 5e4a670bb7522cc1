//! `parley-broker`: holds WebSocket connections and relays NATS events to the members allowed to
//! see them. It never connects to PostgreSQL.
//!
//! Reading order:
//! - [`config`]: every setting, with its environment variable and default.
//! - [`app`]: [`Application`] — starts the NATS client, binds the listener (port 0 in tests),
//!   serves until the shutdown signal, closes every connection with 1012 and drains NATS.
//! - [`asyncapi`]: the AsyncAPI document (NATS events + this WebSocket protocol).
//! - [`protocol`]: the frames and close codes (documented in `openapi/asyncapi.yaml`).
//! - `server`: `GET /ws` — origin and credential checks, the upgrade, the connection tasks.
//! - `connection`: one connection's loop (inbound, outbound queue, heartbeat, token expiry).
//! - `hub`: joining and leaving, over the index and the router.
//! - `index`: the sharded routing table — users → connections and conversations, conversations
//!   → local members and latest `seq`.
//! - `channels`: a connection's channel frames — authorise, recover, subscribe, publish.
//! - `channel_index`: channel → local subscribers (and each one's last offset); fan-out.
//! - `feed`: the one JetStream consumer of the events stream, resumed after interruptions.
//! - `router`: routes each stream event to local members; sequences joins with delivery.
//! - `signals`: typing, presence, ephemeral publications and channel stats requests (core NATS,
//!   one wildcard subscription each).
//! - `relay`: NATS requests and publishes — membership, channel positions, publications, typing.
//! - `presence`: this broker's presence lease and its users' sessions (NATS KV).
//! - `recent`: picks a user's most recently active conversations (for `hello`, presence).
//! - `outbound`: the bounded per-connection queue that holds nothing while empty.
//! - `writer`: text frames from that queue, written to the socket in batches freed once sent.
//! - `routes`: `/health`, `/ready`, `/metrics`.

pub mod app;
pub mod asyncapi;
mod channel_index;
mod channels;
pub mod config;
mod connection;
mod feed;
mod hub;
mod index;
mod latency;
mod metrics;
mod outbound;
mod presence;
pub mod protocol;
pub mod protocol_schema;
mod recent;
mod relay;
mod router;
mod routes;
mod server;
mod signals;
mod writer;

pub use app::Application;
pub use config::{Cli, Config};
