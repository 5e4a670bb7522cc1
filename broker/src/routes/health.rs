//! `GET /health` (the process is alive), `GET /ready` (NATS is connected), `GET /metrics`,
//! `GET /asyncapi.yaml` (the WebSocket protocol).

use std::sync::Arc;

use async_nats::connection::State;
use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{IntoResponse, Response, Route, get, handler};
use serde_json::json;

use crate::server::Broker;

pub fn routes() -> Route {
    Route::new()
        .at("/health", get(health))
        .at("/ready", get(ready))
        .at("/metrics", get(metrics))
        .at("/asyncapi.yaml", get(asyncapi))
}

/// The committed document, which a test keeps equal to what the code generates.
const ASYNCAPI_YAML: &str = include_str!("../../../openapi/asyncapi.yaml");

#[handler]
fn asyncapi() -> Response {
    Response::builder().content_type("application/yaml").body(ASYNCAPI_YAML)
}

#[handler]
fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

#[handler]
fn ready(broker: Data<&Arc<Broker>>) -> Response {
    match broker.hub.relay().nats().connection_state() {
        State::Connected => Json(json!({ "status": "ready", "checks": { "nats": "ok" } })).into_response(),
        other => Json(json!({ "status": "unavailable", "checks": { "nats": format!("{other:?}").to_lowercase() } }))
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .into_response(),
    }
}

#[handler]
fn metrics(broker: Data<&Arc<Broker>>) -> Response {
    broker
        .metrics
        .render()
        .with_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .into_response()
}
