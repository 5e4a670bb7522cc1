//! Logs and traces for both binaries: human-readable text logs by default, JSON lines on
//! request; OpenTelemetry spans with W3C trace context, exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Trace context is always propagated (request → stored event → NATS headers → broker), even
//! with no exporter: unsampled spans still carry ids and cost next to nothing. OpenTelemetry
//! spans are made explicitly ([`child_span`]) at the few places a trace crosses a process
//! boundary; the `tracing` spans of the logs stay separate.

use std::collections::HashMap;
use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Logging and tracing settings, flattened into each binary's configuration.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log filter in `tracing` EnvFilter syntax, e.g. `info,parley_api=debug`.
    #[arg(long = "log", env = "PARLEY_LOG", default_value = "info")]
    pub filter: String,
    /// Log line format.
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// OTLP/HTTP endpoint (e.g. `http://127.0.0.1:4318`) to export spans to; unset: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Flushes exported spans when dropped; keep it alive until the process ends.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber and tracer provider. Safe to call more than once (later
/// calls do not replace the subscriber), which in-process tests rely on.
pub fn init(args: &LogArgs, service_name: &'static str) -> TelemetryGuard {
    let filter = EnvFilter::try_new(&args.filter).unwrap_or_else(|error| {
        eprintln!("invalid PARLEY_LOG filter {:?} ({error}); using \"info\"", args.filter);
        EnvFilter::new("info")
    });
    let provider = tracer_provider(args.otlp_endpoint.as_deref(), service_name);
    opentelemetry::global::set_tracer_provider(provider.clone());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let logs = match args.log_format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).boxed(),
    };
    let _ = tracing_subscriber::registry().with(filter).with(logs).try_init();
    TelemetryGuard { provider }
}

fn tracer_provider(endpoint: Option<&str>, service_name: &'static str) -> SdkTracerProvider {
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let exporter = endpoint.map(|endpoint| {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()
    });
    match exporter {
        Some(Ok(exporter)) => builder.with_batch_exporter(exporter).build(),
        failed_or_none => {
            if let Some(Err(error)) = failed_or_none {
                eprintln!("OTLP exporter not started ({error}); spans are not exported");
            }
            // Nothing to export to: record nothing, but keep propagating ids.
            builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff))).build()
        }
    }
}

tokio::task_local! {
    static TRACEPARENT: String;
}

/// Runs `work` inside the trace whose span `traceparent` names: [`current_traceparent`] in it
/// returns that traceparent (e.g. to store it with the events a request writes).
pub async fn in_trace<F: std::future::Future>(traceparent: String, work: F) -> F::Output {
    TRACEPARENT.scope(traceparent, work).await
}

/// The `traceparent` of the span the current task works in, if [`in_trace`] set one.
pub fn current_traceparent() -> Option<String> {
    TRACEPARENT.try_with(Clone::clone).ok()
}

/// A span of its own (ended when dropped) in the trace of `parent`, or in a new trace, with the
/// `traceparent` to hand on. Requests, publishes and deliveries each get one.
pub fn child_span(name: &'static str, parent: Option<&str>) -> (opentelemetry::global::BoxedSpan, String) {
    use opentelemetry::trace::{Span as _, Tracer as _};
    let carrier: HashMap<String, String> =
        parent.map(|parent| HashMap::from([("traceparent".to_owned(), parent.to_owned())])).unwrap_or_default();
    let parent_cx = TraceContextPropagator::new().extract(&carrier);
    let span = opentelemetry::global::tracer("parley").start_with_context(name, &parent_cx);
    let context = span.span_context();
    let traceparent = format!("00-{}-{}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8());
    (span, traceparent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spans_continue_a_given_trace_or_start_one_without_an_exporter() {
        let args = LogArgs { filter: "warn".into(), log_format: LogFormat::Text, otlp_endpoint: None };
        let _guard = init(&args, "parley-test");
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (_span, child) = child_span("child", Some(parent));
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{child}");
        assert!(!child.contains("00f067aa0ba902b7"), "the child needs a span id of its own");
        assert_eq!(in_trace(child.clone(), async { current_traceparent() }).await, Some(child));
        assert_eq!(current_traceparent(), None);

        for malformed in [None, Some("garbage"), Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01")] {
            let (_span, root) = child_span("root", malformed);
            assert_eq!(root.len(), 55, "{root}");
            assert!(
                !root.contains("4bf92f3577b34da6a3ce929d0e0e4736")
                    && !root.contains("-00000000000000000000000000000000-")
            );
        }
    }
}
