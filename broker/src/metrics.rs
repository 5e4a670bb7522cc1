//! Prometheus metrics of the broker (OpenMetrics text at `GET /metrics`).

use crate::latency::LatencyHistogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub users: Gauge,
    pub index_conversations: Gauge,
    pub index_memberships: Gauge,
    pub events_routed: Counter,
    pub events_dropped: Counter,
    pub feed_resumes: Counter,
    pub feed_lost: Counter,
    pub presence_frames: Counter,
    pub feed_pending: Gauge,
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub slow_consumers: Counter,
    pub nats_reconnects: Counter,
    /// From an event's `occurred_at` (set by the API at commit) to the frame written to the socket.
    pub delivery_latency: LatencyHistogram,
    pub closes: Family<CloseLabels, Counter>,
    /// Channel publications received with a local subscriber, by namespace.
    pub publications_in: Family<NamespaceLabels, Counter>,
    /// Publication frames queued to subscribers, by namespace.
    pub publications_out: Family<NamespaceLabels, Counter>,
    /// Channel subscriptions open here, by namespace.
    pub subscriptions: Family<NamespaceLabels, Gauge>,
    /// Connections without a user (`PARLEY_BROKER_ALLOW_ANONYMOUS`).
    pub anonymous_connections: Gauge,
    /// Channels with at least one subscriber here.
    pub index_channels: Gauge,
    /// Typing signals older than the typing timeout when they arrived, dropped.
    pub stale_signals: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    pub reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("parley_broker");
        let metrics = Self {
            connections: Gauge::default(),
            users: Gauge::default(),
            index_conversations: Gauge::default(),
            index_memberships: Gauge::default(),
            events_routed: Counter::default(),
            events_dropped: Counter::default(),
            feed_resumes: Counter::default(),
            feed_lost: Counter::default(),
            presence_frames: Counter::default(),
            feed_pending: Gauge::default(),
            frames_in: Counter::default(),
            frames_out: Counter::default(),
            slow_consumers: Counter::default(),
            nats_reconnects: Counter::default(),
            delivery_latency: LatencyHistogram::default(),
            closes: Family::default(),
            publications_in: Family::default(),
            publications_out: Family::default(),
            subscriptions: Family::default(),
            anonymous_connections: Gauge::default(),
            index_channels: Gauge::default(),
            stale_signals: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Open WebSocket connections", metrics.connections.clone());
        registry.register("users", "Users with at least one open connection", metrics.users.clone());
        registry.register(
            "index_conversations",
            "Conversations with a connected member here (entries of the routing index)",
            metrics.index_conversations.clone(),
        );
        registry.register(
            "index_memberships",
            "Memberships of the users connected here (entries of the routing index)",
            metrics.index_memberships.clone(),
        );
        registry.register(
            "events_routed",
            "Stream events delivered to at least one local connection",
            metrics.events_routed.clone(),
        );
        registry.register(
            "events_dropped",
            "Stream events with no local interest (or already delivered), dropped after one lookup",
            metrics.events_dropped.clone(),
        );
        registry.register(
            "feed_resumes",
            "Times the events consumer was recreated from where this broker left off (NATS reconnects, stalls)",
            metrics.feed_resumes.clone(),
        );
        registry.register(
            "feed_lost",
            "Times events this broker missed were gone from the stream (its clients were told to resume, 4004)",
            metrics.feed_lost.clone(),
        );
        registry.register(
            "feed_pending",
            "Stream messages not yet delivered to this broker's consumer (its lag), as of the last one",
            metrics.feed_pending.clone(),
        );
        registry.register(
            "presence_frames",
            "Presence frames queued to connections (one per change per connection that should see it)",
            metrics.presence_frames.clone(),
        );
        registry.register("frames_in", "Frames received from clients", metrics.frames_in.clone());
        registry.register("frames_out", "Frames written to clients", metrics.frames_out.clone());
        registry.register(
            "slow_consumer_disconnects",
            "Connections closed because their outbound queue hit its bound",
            metrics.slow_consumers.clone(),
        );
        registry.register("nats_reconnects", "Times the NATS client reconnected", metrics.nats_reconnects.clone());
        registry.register(
            "delivery_latency_seconds",
            "From an event's occurred_at to its frame written to the socket",
            metrics.delivery_latency.clone(),
        );
        registry.register("closes", "Connections closed by the server, by close reason", metrics.closes.clone());
        registry.register(
            "channel_publications_in",
            "Channel publications that reached a local subscriber's channel, by namespace",
            metrics.publications_in.clone(),
        );
        registry.register(
            "channel_publications_out",
            "Publication frames queued to subscribed connections, by namespace",
            metrics.publications_out.clone(),
        );
        registry.register(
            "channel_subscriptions",
            "Channel subscriptions open on this broker, by namespace",
            metrics.subscriptions.clone(),
        );
        registry.register(
            "stale_signals",
            "Typing signals older than the typing timeout on arrival (a frozen broker, a backlog), dropped",
            metrics.stale_signals.clone(),
        );
        registry.register(
            "index_channels",
            "Channels with a subscriber here (entries of the channel index)",
            metrics.index_channels.clone(),
        );
        registry.register(
            "anonymous_connections",
            "Open connections without a user (PARLEY_BROKER_ALLOW_ANONYMOUS)",
            metrics.anonymous_connections.clone(),
        );
        Self { registry, ..metrics }
    }
}

impl Metrics {
    /// One publication of `namespace` handed to `sent` subscribers.
    pub fn publications(&self, namespace: &str, sent: usize) {
        let labels = NamespaceLabels { namespace: namespace.to_owned() };
        self.publications_in.get_or_create(&labels).inc();
        self.publications_out.get_or_create(&labels).inc_by(sent as u64);
    }

    /// A subscription to a channel of `namespace` opened (`1`) or closed (`-1`).
    pub fn subscribed(&self, namespace: &str, change: i64) {
        self.subscriptions.get_or_create(&NamespaceLabels { namespace: namespace.to_owned() }).inc_by(change);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
