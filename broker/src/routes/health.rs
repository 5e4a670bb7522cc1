//! `GET /health` (the process is alive) and `GET /ready` (NATS is connected).

use async_nats::connection::State;
use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{IntoResponse, Response, Route, get, handler};
use serde_json::json;

use crate::state::BrokerState;

pub fn routes() -> Route {
    Route::new().at("/health", get(health)).at("/ready", get(ready))
}

#[handler]
fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

#[handler]
fn ready(state: Data<&BrokerState>) -> Response {
    match state.nats.connection_state() {
        State::Connected => Json(json!({ "status": "ready", "checks": { "nats": "ok" } })).into_response(),
        other => Json(json!({ "status": "unavailable", "checks": { "nats": format!("{other:?}").to_lowercase() } }))
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
            .into_response(),
    }
}
