//! Prometheus metrics of the API (OpenMetrics text at `GET /metrics`): above all, whether the
//! outbox keeps up.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub outbox: OutboxMetrics,
    pub http: HttpMetrics,
    /// Publications accepted into channels, by namespace and delivery.
    pub publications: Family<PublicationLabels, Counter>,
    /// Messages stored per transaction (see `group_commit`).
    pub messages_per_commit: Histogram,
    pub push: crate::push::PushMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublicationLabels {
    pub namespace: String,
    pub delivery: &'static str,
}

/// Requests by route template (never the raw path: ids would make a series per resource).
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: String,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms to about 4 s.
    Histogram::new(exponential_buckets(0.000_5, 2.0, 14))
}

/// What the outbox relay reports. Only the instance holding the relay lease publishes, so its
/// values are the ones that count (`parley_outbox_leader` is 1 there).
#[derive(Clone, Debug)]
pub struct OutboxMetrics {
    pub published: Counter,
    pub failures: Counter,
    /// Rounds that stopped because an event got no acknowledgement within the publish timeout.
    pub stalls: Counter,
    /// Events larger than NATS admits, skipped (they stay readable over REST).
    pub unpublishable: Counter,
    /// Age of the oldest unpublished event, in seconds (0 when none), checked every poll interval.
    pub lag_seconds: Gauge<f64, AtomicU64>,
    /// From an event's `occurred_at` to JetStream's acknowledgement.
    pub publish_latency: Histogram,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("parley");
        let outbox = OutboxMetrics {
            published: Counter::default(),
            failures: Counter::default(),
            stalls: Counter::default(),
            unpublishable: Counter::default(),
            lag_seconds: Gauge::default(),
            // 0.25 ms to about 4 s.
            publish_latency: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            leader: Gauge::default(),
        };
        registry.register("outbox_published_events", "Events published to JetStream", outbox.published.clone());
        registry.register(
            "outbox_publish_failures",
            "Relay rounds that failed (NATS away, no ack)",
            outbox.failures.clone(),
        );
        registry.register(
            "outbox_stalls",
            "Relay rounds that made no progress within PARLEY_PUBLISH_TIMEOUT (logged with the event)",
            outbox.stalls.clone(),
        );
        registry.register(
            "outbox_unpublishable_events",
            "Events larger than the NATS server's max_payload, skipped (readable over REST)",
            outbox.unpublishable.clone(),
        );
        registry.register("outbox_lag_seconds", "Age of the oldest unpublished event", outbox.lag_seconds.clone());
        registry.register(
            "outbox_publish_latency_seconds",
            "From an event's occurred_at to JetStream's acknowledgement",
            outbox.publish_latency.clone(),
        );
        registry.register("outbox_leader", "1 while this instance holds the relay lease", outbox.leader.clone());
        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            http.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "From a request's arrival to its response, by method and route template",
            http.duration.clone(),
        );
        let publications = Family::<PublicationLabels, Counter>::default();
        registry.register(
            "channel_publications",
            "Publications accepted into channels (API and NATS publish), by namespace and delivery",
            publications.clone(),
        );
        let messages_per_commit = Histogram::new(exponential_buckets(1.0, 2.0, 8));
        registry.register(
            "messages_per_commit",
            "Messages stored per transaction: sends into one conversation that queue behind a commit share the next",
            messages_per_commit.clone(),
        );
        let push = crate::push::PushMetrics::default();
        push.register(&mut registry);
        Self { registry, outbox, http, publications, messages_per_commit, push }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
