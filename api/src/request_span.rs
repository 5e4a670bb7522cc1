//! One span per HTTP request, continuing the caller's W3C trace (`traceparent` header) so the
//! events the request writes, and their NATS messages, belong to the caller's trace.

use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;
use parley_shared::telemetry;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use tracing::Instrument;

#[derive(Clone, Copy, Debug, Default)]
pub struct RequestSpan;

impl<E: Endpoint> Middleware<E> for RequestSpan {
    type Output = RequestSpanEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestSpanEndpoint { inner }
    }
}

#[derive(Debug)]
pub struct RequestSpanEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for RequestSpanEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> Result<Self::Output> {
        let incoming = request.headers().get("traceparent").and_then(|value| value.to_str().ok());
        let (mut span, traceparent) = telemetry::child_span("http.request", incoming);
        // The path only: query strings can carry what belongs in neither traces nor logs.
        let log_span = tracing::info_span!("request", method = %request.method(), path = %request.uri().path());
        // Attributes only for spans that are exported (none are without an OTLP endpoint).
        let attributes = span.is_recording().then(|| {
            [
                KeyValue::new("http.request.method", request.method().to_string()),
                KeyValue::new("url.path", request.uri().path().to_owned()),
            ]
        });
        let started = Instant::now();
        let result = telemetry::in_trace(traceparent, self.inner.call(request).instrument(log_span.clone()))
            .await
            .map(IntoResponse::into_response);
        let status = match &result {
            Ok(response) => response.status(),
            Err(error) => error.status(),
        };
        if let Some(attributes) = attributes {
            span.set_attributes(attributes);
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
        }
        log_span.in_scope(|| {
            tracing::debug!(status = status.as_u16(), elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "response");
        });
        result
    }
}
