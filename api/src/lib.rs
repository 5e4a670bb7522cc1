//! `parley-api`: the REST service that owns Parley's data.
//!
//! Reading order:
//! - [`config`]: every setting, with its environment variable and default.
//! - [`app`]: [`Application`] — connects PostgreSQL and NATS, applies migrations, binds the
//!   listener (port 0 in tests) and serves until the shutdown signal.
//! - [`db`]: the connection pool and the embedded migrations.
//! - `auth`: the bearer security scheme; users are created or refreshed on sight.
//! - `cors`: CORS headers for the browser origins `PARLEY_API_ALLOWED_ORIGINS` lists.
//! - `error`: `ApiError`, the one RFC 7807 problem+json error type.
//! - `retry`: one retry on a fresh connection for a request whose database connection was lost
//!   before anything of it can have been stored.
//! - `membership`, `outbox`: what every conversation write does — lock the conversation's next
//!   `seq`, check membership, append the domain event in the same transaction.
//! - `group_commit`, `sending`: sent messages queued for one conversation are committed
//!   together — one seq range, one statement, one commit — each answered on its own.
//! - `relay`: publishes the committed events (and channel publications, notification changes) to JetStream, in order per conversation, one
//!   publishing instance at a time (PostgreSQL advisory lock).
//! - `notifications`: notifications written with the write that causes them (mentions, replies,
//!   new conversations, additions), and their changes for the relay to publish to the user.
//! - `push`: the push dispatcher (one instance at a time): notifications to users' Expo, Web
//!   Push and webhook targets when they are not looking.
//! - `channels`: application channels — publishing (HTTP and NATS), history, stats, server API keys.
//! - `broker_requests`: answers the brokers' NATS request for a connecting user's conversations.
//! - `presence`: the presence bucket's copy behind responses, and the sweeper of crashed brokers' sessions.
//! - `routes`: one module per resource (`conversations`, `members`, `messages`, `events`, `me`).

pub mod app;
mod auth;
mod body_errors;
mod body_limit;
mod broker_requests;
mod channels;
pub mod config;
mod cors;
pub mod db;
mod error;
mod group_commit;
mod lease;
mod membership;
mod metrics;
mod notifications;
mod outbox;
mod presence;
pub mod push;
mod rate_limit;
pub mod relay;
mod request_span;
mod retry;
mod route_templates;
mod routes;
mod sending;
mod state;
mod text;

pub use app::Application;
pub use config::{Cli, Command, Config};

/// The OpenAPI document of the `/v1` API, as served at `/openapi.json`.
pub fn openapi_json() -> String {
    routes::spec_json()
}
