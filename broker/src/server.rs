//! The `/ws` endpoint: checks the upgrade request (origin, credentials) before answering 101,
//! then hands the upgraded socket to a connection task the broker tracks until it ends.

use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
use parley_shared::auth::{Identity, Verifier};
use poem::http::{HeaderMap, HeaderValue, StatusCode, header};
use poem::web::Data;
use poem::{Request, Response, handler};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::task::TaskTracker;

use crate::channels::Channels;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::outbound::QueueBound;
use crate::protocol::Limits;

/// The subprotocol a client offers (and the server selects) to speak this protocol.
pub const SUBPROTOCOL: &str = "parley.v1";
/// A browser sends its token as a second offered subprotocol: `parley.bearer.<jwt>`.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "parley.bearer.";

/// Everything a connection needs, shared by all of them.
#[derive(Debug)]
pub struct Broker {
    pub hub: Arc<Hub>,
    pub channels: Channels,
    pub verifier: Arc<Verifier>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Every connection task, so shutdown can wait for them.
    pub connections: TaskTracker,
    /// The clock of every connection's inbound rate limiter: making a clock calibrates it
    /// (CPUID, a VM exit under virtualization), 3% of the broker's CPU in a connect storm.
    pub rate_clock: governor::clock::DefaultClock,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub allowed_origins: Vec<String>,
    pub allow_query_token: bool,
    /// See `PARLEY_BROKER_ALLOW_ANONYMOUS`.
    pub allow_anonymous: bool,
    pub heartbeat_interval: Duration,
    pub idle_timeout: Duration,
    /// See `PARLEY_BROKER_WRITE_TIMEOUT` and `PARLEY_BROKER_PONG_TIMEOUT`.
    pub write_timeout: Duration,
    pub pong_timeout: Duration,
    pub auth_timeout: Duration,
    pub close_timeout: Duration,
    pub inbound_quota: Quota,
    pub queue_bound: QueueBound,
    pub limits: Limits,
    /// Most conversations `hello` lists (see `PARLEY_BROKER_HELLO_MAX_CONVERSATIONS`).
    pub hello_max_conversations: usize,
}

impl Settings {
    /// The WebSocket library's limits: small read buffer (every byte of it is resident per
    /// connection) and frames capped at what the protocol needs (the library default would
    /// accept 64 MiB messages). It writes only pings, pongs and close frames; text frames go
    /// through the connection's own writer.
    fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(512)
            .write_buffer_size(0)
            .max_frame_size(Some(self.limits.max_frame_bytes))
            .max_message_size(Some(self.limits.max_frame_bytes))
    }

    fn origin_allowed(&self, origin: Option<&HeaderValue>) -> bool {
        // Clients outside browsers send no Origin; browsers always do.
        let Some(origin) = origin else { return true };
        let origin = origin.to_str().unwrap_or_default();
        self.allowed_origins.iter().any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }
}

#[handler]
pub async fn upgrade(request: &Request, broker: Data<&Arc<Broker>>) -> Response {
    let broker = Arc::clone(*broker);
    let headers = request.headers();
    if !broker.settings.origin_allowed(headers.get(header::ORIGIN)) {
        return problem(StatusCode::FORBIDDEN, "origin_not_allowed", "this Origin may not open WebSocket connections");
    }
    // RFC 6455 §4.2.2: an upgrade of another protocol version is answered with the versions
    // this server speaks.
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|version| version != "13") {
        let mut response = problem(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported_websocket_version",
            "this server speaks WebSocket version 13",
        );
        response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = websocket_key(request) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "not_a_websocket_upgrade",
            "expected a WebSocket (version 13) upgrade",
        );
    };
    let offered = offered_subprotocols(headers);
    if !offered.is_empty() && !offered.contains(&SUBPROTOCOL) {
        return problem(StatusCode::BAD_REQUEST, "unsupported_subprotocol", "offer the parley.v1 subprotocol");
    }
    let token = match credentials(request, &offered, broker.settings.allow_query_token) {
        Ok(token) => token,
        Err(error) => return error.response(),
    };
    let identity: Option<Identity> = match token {
        Some(token) => match broker.verifier.verify(&token).await {
            Ok(identity) => Some(identity),
            Err(error) => return problem(StatusCode::UNAUTHORIZED, "unauthorized", &error.to_string()),
        },
        None => None,
    };
    let Ok(on_upgrade) = request.take_upgrade() else {
        return problem(StatusCode::BAD_REQUEST, "not_a_websocket_upgrade", "the connection cannot be upgraded");
    };
    let config = broker.settings.websocket_config();
    let tracker = broker.connections.clone();
    tracker.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, Some(config)).await;
        crate::connection::run(broker, ws, identity).await;
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()));
    if !offered.is_empty() {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
    }
    response.finish()
}

/// The `Sec-WebSocket-Key` of a well-formed version-13 upgrade request.
fn websocket_key(request: &Request) -> Option<&HeaderValue> {
    let headers = request.headers();
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    let is_upgrade = request.method() == poem::http::Method::GET
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|version| version == "13");
    is_upgrade.then(|| headers.get(header::SEC_WEBSOCKET_KEY)).flatten()
}

fn offered_subprotocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
        .collect()
}

/// A handshake whose credentials are refused before any token check.
#[derive(Clone, Copy, Debug)]
enum CredentialError {
    MalformedAuthorization,
    QueryTokenDisabled,
}

impl CredentialError {
    fn response(self) -> Response {
        match self {
            Self::MalformedAuthorization => {
                problem(StatusCode::UNAUTHORIZED, "unauthorized", "Authorization must be `Bearer <jwt>`")
            }
            Self::QueryTokenDisabled => problem(
                StatusCode::UNAUTHORIZED,
                "query_token_disabled",
                "?access_token= is disabled (query strings end up in logs): use the Authorization header, the parley.bearer subprotocol or an auth frame",
            ),
        }
    }
}

/// The token from the `Authorization` header, the bearer subprotocol or (only when enabled)
/// `?access_token=`; `None` means "expect an `auth` frame".
fn credentials(
    request: &Request,
    offered: &[&str],
    allow_query_token: bool,
) -> Result<Option<String>, CredentialError> {
    // Two `Authorization` headers are ambiguous (which one did a proxy add?): refuse both.
    if request.headers().get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
        return Err(CredentialError::MalformedAuthorization);
    }
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let token = value.to_str().ok().and_then(|value| value.strip_prefix("Bearer ")).map(str::trim);
        return match token {
            Some(token) if !token.is_empty() => Ok(Some(token.to_owned())),
            _ => Err(CredentialError::MalformedAuthorization),
        };
    }
    if let Some(token) = offered.iter().find_map(|protocol| protocol.strip_prefix(BEARER_SUBPROTOCOL_PREFIX)) {
        return Ok(Some(token.to_owned()));
    }
    let query_token = request
        .uri()
        .query()
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("access_token="));
    match query_token {
        Some(token) if allow_query_token => Ok(Some(token.to_owned())),
        Some(_) => Err(CredentialError::QueryTokenDisabled),
        None => Ok(None),
    }
}

/// A handshake that carries no token (an anonymous connection, or one that will send an `auth`
/// frame): counted by the per-address limit like a refused one.
pub fn without_credentials(request: &Request) -> bool {
    let offered = offered_subprotocols(request.headers());
    !request.headers().contains_key(header::AUTHORIZATION)
        && !offered.iter().any(|protocol| protocol.starts_with(BEARER_SUBPROTOCOL_PREFIX))
        && !request.uri().query().is_some_and(|query| query.split('&').any(|pair| pair.starts_with("access_token=")))
}

/// 429 from the per-address limit.
pub fn too_many_handshakes(retry_after_seconds: u64) -> Response {
    let detail =
        format!("too many handshakes without valid credentials from this address; retry in {retry_after_seconds} s");
    let mut response = problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited", &detail);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
    response
}

/// An RFC 7807 problem response.
fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("urn:parley:problem:{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    Response::builder().status(status).content_type("application/problem+json").body(body.to_string())
}
