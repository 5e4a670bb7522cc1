//! Real services for tests and for the local development stack.
//!
//! - [`context`]: [`TestContext`], what each integration test starts from: its own database,
//!   its own nats-server, and the real Parley binaries on demand.
//! - [`postgres`], [`nats`]: control of a PostgreSQL cluster and a nats-server (start, stop,
//!   SIGKILL, restart), also used by `cargo xtask up`.
//! - [`app`]: the `parley-api` / `parley-broker` executables as child processes.
//! - [`process`]: children that die with their owner; [`privilege`]: running PostgreSQL as an
//!   unprivileged user when we are root; [`binaries`]: finding the server programs.
//! - [`otlp`]: a stand-in OTLP/HTTP collector for trace tests.
//! - [`rest`]: one user's REST client; [`ws`]: a WebSocket client of the broker.
//! - [`netns`]: a client behind a real network link that a test can cut.
//! - [`raw_http`]: HTTP/1.1 read byte by byte, for tests of connection handling.
//! - [`stream`]: reading the JetStream events stream back, for assertions.
//! - [`wait`]: bounded waits, free ports.

pub mod app;
pub mod binaries;
pub mod context;
pub mod nats;
pub mod netns;
pub mod otlp;
pub mod postgres;
pub mod privilege;
pub mod process;
pub mod raw_http;
pub mod rest;
pub mod stream;
pub mod wait;
pub mod ws;

pub use app::{AppProcess, Binary};
pub use context::{TEST_JWT_SECRET, TestContext};
