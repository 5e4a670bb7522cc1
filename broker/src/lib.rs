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
//! - `hub`: users → connections and memberships; conversations → local members and their
//!   reference-counted NATS subscription.
//! - `relay`: NATS — the membership request to the API and the subscriptions.
//! - `presence`: this broker's presence lease and its users' sessions (NATS KV).
//! - `outbound`: the bounded per-connection queue that holds nothing while empty.
//! - `head_deadline`: the deadline for the HTTP upgrade request.
//! - `routes`: `/health`, `/ready`, `/metrics`.

pub mod app;
pub mod asyncapi;
pub mod config;
mod connection;
mod head_deadline;
mod hub;
mod metrics;
mod outbound;
mod presence;
pub mod protocol;
mod relay;
mod routes;
mod server;

pub use app::Application;
pub use config::{Cli, Config};
