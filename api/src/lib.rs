//! `parley-api`: the REST service that owns Parley's data.
//!
//! Reading order:
//! - [`config`]: every setting, with its environment variable and default.
//! - [`app`]: [`Application`] — connects PostgreSQL and NATS, applies migrations, binds the
//!   listener (port 0 in tests) and serves until the shutdown signal.
//! - [`db`]: the connection pool and the embedded migrations.
//! - `routes`: one module per resource.

pub mod app;
pub mod config;
pub mod db;
mod routes;
mod state;

pub use app::Application;
pub use config::{Cli, Command, Config};
