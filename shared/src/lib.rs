//! What both Parley processes (`parley-api` and `parley-broker`) need, and nothing else.
//!
//! - [`address_limit`]: 429 for an address sending too many requests without credentials or with bad ones.
//! - [`asyncapi`]: the AsyncAPI document of the NATS contract, generated from [`events`].
//! - [`auth`]: verification of bearer JWTs (HS256 secret, PEM public key or JWKS URL) into an [`auth::Identity`].
//! - [`channels`]: channel names, namespace rules and their subjects.
//! - [`config`]: the settings both binaries share (NATS, shutdown, auth, logs).
//! - [`events`]: the domain-event envelope and payloads (the contract with the broker and clients).
//! - [`http_server`]: the HTTP server both run: per-request header deadline, idle timeout, a shutdown that answers what it received.
//! - [`ids`]: validated id newtypes; NATS subjects are only ever built from these.
//! - [`membership`]: the broker's request for a user's conversations, answered by the API.
//! - [`nats`]: connecting to NATS (servers, authentication, TLS, dead-link deadline).
//! - [`notifications`]: the live frames of a user's notification inbox.
//! - [`presence`]: the presence bucket's layout and the presence signal.
//! - [`publications`]: channel publications on NATS and the broker's position request.
//! - [`subjects`]: the NATS subject scheme and the events stream's name.
//! - [`telemetry`]: log set-up (text or JSON) shared by both binaries.
//! - [`serve`]: binding the listener and best-effort NATS publishes, as both servers need them.
//! - [`shutdown`]: the SIGTERM / SIGINT future both servers stop on.

pub mod address_limit;
pub mod asyncapi;
pub mod auth;
pub mod channels;
pub mod config;
pub mod events;
pub mod http_server;
pub mod ids;
pub mod membership;
pub mod nats;
pub mod notifications;
pub mod presence;
pub mod publications;
pub mod serve;
pub mod shutdown;
pub mod subjects;
pub mod telemetry;
