//! A private stack for client tests, and the HTTP endpoint through which those tests (written
//! in TypeScript, so they cannot reach the Rust harness) mint tokens and stop and start the
//! broker or nats-server:
//!
//! ```text
//! POST /token          {"user_id", "name"?, "ttl_seconds"?}  → {"token"}
//! POST /broker/stop    SIGTERM (clients get 1012)        POST /broker/start
//! POST /nats/stop      a clean nats-server stop           POST /nats/start (same store)
//! ```

use std::sync::Arc;
use std::time::Duration;

use parley_shared::auth::{Claims, issue_hs256};
use parley_shared::ids::UserId;
use parley_testkit::{AppProcess, Binary, TEST_JWT_SECRET, TestContext, wait};
use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::web::{Data, Json, Path};
use poem::{EndpointExt, Route, handler, post};
use serde::Deserialize;
use tokio::sync::Mutex;

/// The private stack's server API key (for channel publications in tests).
pub const SERVER_API_KEY: &str = "sdk-check-server-key-0123456789";

struct Services {
    ctx: TestContext,
    broker: AppProcess,
}

pub struct PrivateStack {
    services: Arc<Mutex<Services>>,
    api: AppProcess,
    broker_ws_url: String,
    control_url: String,
    server: tokio::task::JoinHandle<()>,
}

impl PrivateStack {
    /// PostgreSQL, nats-server, parley-api and parley-broker of their own, with every origin
    /// allowed (pages under test are served from elsewhere), a server API key
    /// ([`SERVER_API_KEY`]) and anonymous connections, and the control endpoint.
    pub async fn start() -> anyhow::Result<Self> {
        let ctx = TestContext::with_own_services().await;
        let setting = |name: &str, value: &str| (name.to_owned(), value.to_owned());
        let api_env =
            vec![setting("PARLEY_API_ALLOWED_ORIGINS", "*"), setting("PARLEY_SERVER_API_KEYS", SERVER_API_KEY)];
        let broker_env =
            vec![setting("PARLEY_BROKER_ALLOWED_ORIGINS", "*"), setting("PARLEY_BROKER_ALLOW_ANONYMOUS", "true")];
        let api = ctx.spawn(Binary::Api, api_env).await;
        let broker = ctx.spawn(Binary::Broker, broker_env).await;
        let broker_ws_url = format!("ws://127.0.0.1:{}/ws", broker.port());
        let services = Arc::new(Mutex::new(Services { ctx, broker }));

        let port = wait::free_port()?;
        let routes =
            Route::new().at("/token", post(token)).at("/:service/:action", post(control)).data(services.clone());
        let server = tokio::spawn(async move {
            let _ = poem::Server::new(TcpListener::bind(format!("127.0.0.1:{port}"))).run(routes).await;
        });
        let control_url = format!("http://127.0.0.1:{port}");
        eprintln!("xtask: private stack: API {}, broker {broker_ws_url}, control {control_url}", api.url());
        Ok(Self { services, api, broker_ws_url, control_url, server })
    }

    /// The variables the client tests read.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("PARLEY_API_URL".into(), self.api.url()),
            ("PARLEY_BROKER_WS_URL".into(), self.broker_ws_url.clone()),
            ("PARLEY_CONTROL_URL".into(), self.control_url.clone()),
            ("PARLEY_SERVER_API_KEY".into(), SERVER_API_KEY.into()),
        ]
    }

    pub fn api_url(&self) -> String {
        self.api.url()
    }

    pub fn broker_ws_url(&self) -> String {
        self.broker_ws_url.clone()
    }

    /// A token for `user`, valid for an hour.
    pub fn token(&self, user: UserId, name: &str) -> String {
        issue_hs256(TEST_JWT_SECRET, &Claims::for_user(user, Some(name.into()), Duration::from_secs(3600)))
    }

    pub fn api_log(&self, lines: usize) -> String {
        self.api.log_tail(lines)
    }

    pub async fn broker_log(&self, lines: usize) -> String {
        self.services.lock().await.broker.log_tail(lines)
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Deserialize)]
struct TokenRequest {
    user_id: UserId,
    name: Option<String>,
    ttl_seconds: Option<u64>,
}

#[handler]
fn token(Json(request): Json<TokenRequest>) -> Json<serde_json::Value> {
    let ttl = Duration::from_secs(request.ttl_seconds.unwrap_or(3600));
    let token = issue_hs256(TEST_JWT_SECRET, &Claims::for_user(request.user_id, request.name, ttl));
    Json(serde_json::json!({ "token": token }))
}

#[handler]
async fn control(
    Path((service, action)): Path<(String, String)>,
    services: Data<&Arc<Mutex<Services>>>,
) -> poem::Result<StatusCode> {
    let mut services = services.lock().await;
    let result = match (service.as_str(), action.as_str()) {
        ("broker", "stop") => {
            services.broker.terminate().await;
            Ok(())
        }
        ("broker", "start") => services.broker.start_again().await,
        ("nats", "stop") => {
            services.ctx.nats().stop().await;
            Ok(())
        }
        ("nats", "start") => services.ctx.nats().start_again().await,
        _ => return Err(poem::Error::from_status(StatusCode::NOT_FOUND)),
    };
    eprintln!("xtask: control: {service} {action}");
    result
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|error| poem::Error::from_string(format!("{error:#}"), StatusCode::INTERNAL_SERVER_ERROR))
}
