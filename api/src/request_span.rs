//! Per request: a span continuing the caller's W3C trace (`traceparent` header) so the events the
//! request writes, and their NATS messages, belong to the caller's trace; one access log line;
//! the per-route request metrics.
//!
//! What identifies a request in all three is its route template (`GET
//! /v1/conversations/{id}/messages`), never the raw path or the query string: paths carry ids
//! (one metric series per resource) and query strings can carry what belongs in no log.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;
use parley_shared::telemetry;
use poem::PathPattern;
use poem::http::Method;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use tracing::Instrument;

use crate::metrics::{HttpMetrics, RequestLabels, RouteLabels};
use crate::route_templates::RouteTemplates;

#[derive(Clone, Debug)]
pub struct RequestSpan {
    metrics: HttpMetrics,
    templates: Arc<RouteTemplates>,
}

impl RequestSpan {
    pub fn new(metrics: HttpMetrics, templates: Arc<RouteTemplates>) -> Self {
        Self { metrics, templates }
    }
}

impl<E: Endpoint> Middleware<E> for RequestSpan {
    type Output = RequestSpanEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestSpanEndpoint { inner, config: self.clone() }
    }
}

#[derive(Debug)]
pub struct RequestSpanEndpoint<E> {
    inner: E,
    config: RequestSpan,
}

impl<E: Endpoint> Endpoint for RequestSpanEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> Result<Self::Output> {
        let incoming = request.headers().get("traceparent").and_then(|value| value.to_str().ok());
        let (mut span, traceparent) = telemetry::child_span("http.request", incoming);
        let method = method_label(request.method());
        // `user_id` is recorded by authentication, inside this span.
        let log_span =
            tracing::info_span!("request", method, route = tracing::field::Empty, user_id = tracing::field::Empty);
        let started = Instant::now();
        let result = telemetry::in_trace(traceparent, self.inner.call(request).instrument(log_span.clone()))
            .await
            .map(IntoResponse::into_response);
        let elapsed = started.elapsed();
        let (status, pattern) = match &result {
            Ok(response) => (response.status(), response.data::<PathPattern>()),
            Err(error) => (error.status(), error.data::<PathPattern>()),
        };
        let route = pattern.map_or_else(|| UNMATCHED.to_owned(), |pattern| self.config.templates.template(&pattern.0));
        if span.is_recording() {
            span.update_name(format!("{method} {route}"));
            span.set_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route.clone()),
                KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
            ]);
        }
        log_span.record("route", route.as_str());
        log_span.in_scope(|| {
            tracing::info!(status = status.as_u16(), elapsed_ms = elapsed.as_secs_f64() * 1e3, "request answered");
        });
        let metrics = &self.config.metrics;
        metrics.duration.get_or_create(&RouteLabels { method, route: route.clone() }).observe(elapsed.as_secs_f64());
        metrics.requests.get_or_create(&RequestLabels { method, route, status: status.as_u16() }).inc();
        result
    }
}

/// The route of a request no route matched (a 404 for an unknown path).
const UNMATCHED: &str = "unmatched";

/// The standard methods by name; anything else as `OTHER`, so a client cannot mint series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
