//! `GET /health` (the process is alive), `GET /ready` (PostgreSQL and NATS are reachable) and
//! `GET /metrics` (Prometheus).

use std::time::Duration;

use async_nats::connection::State;
use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{IntoResponse, Response, handler};
use serde_json::json;

use crate::state::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[handler]
pub fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

#[handler]
pub fn metrics(state: Data<&AppState>) -> Response {
    state
        .metrics
        .render()
        .with_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .into_response()
}

#[handler]
pub async fn ready(state: Data<&AppState>) -> Response {
    let postgres = match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("select 1").execute(&state.db)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    let nats = match state.nats.connection_state() {
        State::Connected => Ok(()),
        other => Err(format!("{other:?}").to_lowercase()),
    };
    let ready = postgres.is_ok() && nats.is_ok();
    let describe = |check: &Result<(), String>| match check {
        Ok(()) => "ok".to_owned(),
        Err(error) => error.clone(),
    };
    let body = Json(json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": { "postgres": describe(&postgres), "nats": describe(&nats) },
    }));
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    body.with_status(status).into_response()
}

/// `GET /`: the interactive documentation is what a person opening the API's URL wants.
#[handler]
pub fn to_docs() -> poem::web::Redirect {
    poem::web::Redirect::see_other("/docs")
}
