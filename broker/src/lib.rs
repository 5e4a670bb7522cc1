//! `parley-broker`: holds WebSocket connections and relays NATS events to the members allowed to
//! see them. It never connects to PostgreSQL.
//!
//! Reading order:
//! - [`config`]: every setting, with its environment variable and default.
//! - [`app`]: [`Application`] — starts the NATS client, binds the listener (port 0 in tests) and
//!   serves until the shutdown signal, then drains NATS.
//! - `routes`: `/health`, `/ready`.

pub mod app;
pub mod config;
mod routes;
mod state;

pub use app::Application;
pub use config::{Cli, Config};
