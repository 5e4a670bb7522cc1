//! The demo chat app (`clients/demo`): served by `cargo xtask up`, and tested in headless
//! Chromium by `cargo xtask demo-check`.
//!
//! The server is static files plus `/config.json` (the API and broker URLs and the demo users
//! with development tokens): the page needs no build step and no toolchain to sign in. It is a
//! development tool only; production apps get their tokens from their own sign-in.

use std::path::{Path, PathBuf};

use parley_shared::ids::UserId;
use poem::endpoint::StaticFilesEndpoint;
use poem::listener::TcpListener;
use poem::web::Json;
use poem::{EndpointExt, Route, get, handler};
use serde_json::{Value, json};

use crate::sdk;

pub struct DemoUser {
    pub name: &'static str,
    pub id: UserId,
    pub token: String,
}

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/demo")
}

/// Serves the demo on `127.0.0.1:<port>` until the returned task is aborted.
pub async fn serve(
    port: u16,
    api_url: &str,
    broker_ws_url: &str,
    users: &[DemoUser],
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let users: Vec<Value> =
        users.iter().map(|user| json!({ "name": user.name, "id": user.id, "token": user.token })).collect();
    let config = json!({ "apiUrl": api_url, "brokerUrl": broker_ws_url, "users": users });
    let package = sdk::package_dir();
    let routes = Route::new()
        .at("/config.json", get(config_endpoint).data(config))
        .nest("/sdk", StaticFilesEndpoint::new(package.join("dist")))
        .nest("/vendor/openapi-fetch", StaticFilesEndpoint::new(package.join("node_modules/openapi-fetch/dist")))
        .nest("/", StaticFilesEndpoint::new(demo_dir()).index_file("index.html"));
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"));
    let acceptor = poem::listener::Listener::into_acceptor(listener).await?;
    Ok(tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(routes).await;
    }))
}

#[handler]
fn config_endpoint(config: poem::web::Data<&Value>) -> Json<Value> {
    Json(config.0.clone())
}

/// `cargo xtask demo-check`: two users chat in two Chromium contexts against a private stack.
pub async fn check() -> anyhow::Result<()> {
    let chromium = crate::install::ensure_chromium()?;
    sdk::build()?;
    let dir = demo_dir();
    sdk::ensure_dependencies(&dir)?;
    crate::stack::build_binaries()?;
    let stack = sdk::control::PrivateStack::start().await?;
    let users: Vec<DemoUser> = ["Alice", "Bob"]
        .into_iter()
        .map(|name| {
            let id = UserId::from_uuid(uuid::Uuid::now_v7());
            DemoUser { name, id, token: stack.token(id, name) }
        })
        .collect();
    let port = parley_testkit::wait::free_port()?;
    let server = serve(port, &stack.api_url(), &stack.broker_ws_url(), &users).await?;
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/demo");
    std::fs::create_dir_all(&screenshots)?;
    let mut test_env = stack.env();
    test_env.push(("DEMO_URL".into(), format!("http://127.0.0.1:{port}")));
    test_env.push(("CHROMIUM".into(), chromium.display().to_string()));
    test_env.push(("SCREENSHOTS".into(), screenshots.canonicalize()?.display().to_string()));
    let result = sdk::npm(&dir, &["test"], &test_env);
    server.abort();
    if result.is_err() {
        eprintln!(
            "xtask: demo test failed; API log:\n{}\nbroker log:\n{}",
            stack.api_log(40),
            stack.broker_log(40).await
        );
    } else {
        eprintln!("xtask: demo test passed; screenshots in {}", screenshots.display());
    }
    result
}
