//! What travels for channel publications: the frame body published on NATS (and forwarded to
//! WebSocket clients byte for byte), and the broker's request for a durable channel's position.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// NATS header carrying a durable publication's offset, so brokers order and deduplicate
/// without parsing the payload.
pub const OFFSET_HEADER: &str = "Parley-Offset";

/// One publication as clients receive it: `{"type":"publication","channel","offset"?,"epoch"?,"data"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Publication {
    #[serde(rename = "type")]
    pub kind: PublicationType,
    pub channel: String,
    /// Durable channels only: gapless and increasing within the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// Durable channels only: the history `offset` belongs to (resume with both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Whatever the publisher sent (any JSON value, at most the namespace's `max_data_bytes`).
    pub data: serde_json::Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PublicationType {
    Publication,
}

impl Publication {
    pub fn ephemeral(channel: &str, data: serde_json::Value) -> Self {
        Self { kind: PublicationType::Publication, channel: channel.to_owned(), offset: None, epoch: None, data }
    }

    pub fn durable(channel: &str, offset: i64, epoch: &str, data: serde_json::Value) -> Self {
        let (offset, epoch) = (Some(offset), Some(epoch.to_owned()));
        Self { kind: PublicationType::Publication, channel: channel.to_owned(), offset, epoch, data }
    }
}

/// A place in a durable channel's history: the last offset a client holds, and the epoch it
/// belongs to (an epoch changes only when the channel's history restarts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelPosition {
    pub offset: i64,
    pub epoch: String,
}

/// A broker asks (core NATS request to `<prefix>.internal.channel.position`) where a durable
/// channel stands and, with `since`, for every publication after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PositionRequest {
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<ChannelPosition>,
    /// Most bytes of publications the reply may carry; more missed means `recovered: false`.
    pub max_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PositionReply {
    Position(ChannelState),
    Error(String),
}

/// Where a channel stands and, when `recovered`, every publication after the `since` asked
/// about, in offset order (never some of them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelState {
    pub position: ChannelPosition,
    pub recovered: bool,
    #[serde(default)]
    pub publications: Vec<Publication>,
}

/// A broker's local subscribers of a channel, answering `<prefix>.internal.channel.stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatsReply {
    pub subscribers: u64,
}

/// A backend's publish request on `<prefix>.api.publish` (core NATS request/reply): `channel`
/// or `channels` (up to 1,000), `data`, and optionally `idempotency_key`; validated exactly as
/// `POST /v1/publications`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The reply: where each publication went, or the problem (RFC 7807 fields, as over HTTP).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PublishReply {
    Publications(Vec<PublishedTo>),
    Error(serde_json::Value),
}

/// Where one publication went: durable channels give its offset and the channel's epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublishedTo {
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}
