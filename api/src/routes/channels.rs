//! `/v1/channels/…` and `/v1/publications`: application channels. Backends publish with a
//! server API key; anyone allowed reads a durable channel's history; backends read stats.

use chrono::{DateTime, Utc};
use parley_shared::channels::{Channel, Namespace, Subscribers, pattern_grants};
use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme};

use super::ApiTags;
use crate::auth::BearerAuth;
use crate::channels::publish::{MAX_CHANNELS, PublishRequest, Published, publish};
use crate::channels::server_keys::{AuthorizationKey, HeaderKey, ServerAuth};
use crate::channels::{history, resolve, stats};
use crate::error::{ApiError, Problem, ProblemCode, ProblemJson};
use crate::state::AppState;

/// One publication into the channel of the path.
#[derive(Object, Debug)]
#[oai(example)]
pub struct NewPublication {
    /// Any JSON value, at most the namespace's `max_data_bytes` (64 KiB by default) as JSON text.
    pub data: serde_json::Value,
}

/// One publication into many channels.
#[derive(Object, Debug)]
#[oai(example)]
pub struct Broadcast {
    /// 1 to 1,000 distinct channels.
    pub channels: Vec<String>,
    /// Any JSON value, at most the smallest `max_data_bytes` of the channels' namespaces.
    pub data: serde_json::Value,
}

#[derive(Object, Debug)]
#[oai(example)]
pub struct BroadcastResult {
    /// One per channel, in the request's order.
    pub publications: Vec<Published>,
}

#[derive(ApiResponse, Debug)]
pub enum PublishResponse {
    /// Accepted: durable publications are stored (with their offset) and will be delivered even
    /// if NATS is down now; ephemeral ones were handed to NATS.
    #[oai(status = 202)]
    Accepted(Json<Published>),
}

#[derive(ApiResponse, Debug)]
pub enum BroadcastResponse {
    /// Accepted (see `publishToChannel`).
    #[oai(status = 202)]
    Accepted(Json<BroadcastResult>),
}

/// One stored publication.
#[derive(Object, Debug)]
#[oai(example)]
pub struct StoredPublication {
    /// Gapless and increasing within the channel.
    pub offset: i64,
    pub data: serde_json::Value,
    pub published_at: DateTime<Utc>,
}

#[derive(Object, Debug)]
#[oai(example)]
pub struct PublicationPage {
    /// In offset order.
    pub items: Vec<StoredPublication>,
    /// More follow; ask again with `after_offset` = the last item's offset.
    pub has_more: bool,
    /// The channel's latest offset when this page was read (0: nothing published yet).
    pub last_offset: i64,
    /// The channel's epoch (empty while nothing was published): pass it with `since` when
    /// subscribing.
    pub epoch: String,
}

#[derive(ApiResponse, Debug)]
pub enum HistoryResponse {
    #[oai(status = 200)]
    Page(Json<PublicationPage>),
    /// Publications after `after_offset` are no longer kept (the namespace's `history_size` /
    /// `history_ttl`): continue from `last_offset`, the gap cannot be filled.
    #[oai(status = 410)]
    Pruned(ProblemJson),
}

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct ChannelStats {
    pub channel: String,
    /// Connections subscribed, summed over the brokers that answered.
    pub subscribers: u64,
    /// Brokers that answered.
    pub brokers: u32,
    /// Whether every broker with a live lease answered (within 500 ms).
    pub complete: bool,
    /// Durable channels: the latest offset and the epoch.
    pub last_offset: Option<i64>,
    pub epoch: Option<String>,
}

#[derive(ApiResponse, Debug)]
pub enum StatsResponse {
    #[oai(status = 200)]
    Stats(Json<ChannelStats>),
}

/// Who reads a channel's history: a backend, a user, or anyone (public namespaces).
#[derive(SecurityScheme, Debug)]
pub enum ReaderAuth {
    Header(HeaderKey),
    Authorization(AuthorizationKey),
    User(BearerAuth),
    #[oai(fallback)]
    Anonymous,
}

#[derive(Default)]
pub struct ChannelsApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Channels")]
impl ChannelsApi {
    /// Publish to a channel
    ///
    /// For backends, with a server API key. Durable channels answer with the publication's
    /// offset once it is stored; it reaches every subscriber even if NATS is down at this
    /// moment. With an `Idempotency-Key`, a retried request (same key, same body) answers what
    /// the first one did and publishes nothing again; the same key with another body is 422.
    #[oai(path = "/channels/:channel/publications", method = "post", operation_id = "publishToChannel")]
    async fn publish(
        &self,
        state: Data<&AppState>,
        _auth: ServerAuth,
        /// `<namespace>:<name>`, e.g. `public:bounty.b-42`.
        channel: Path<String>,
        /// Any string up to 255 characters, unique per publish request.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255))]
        idempotency_key: Header<Option<String>>,
        body: Json<NewPublication>,
    ) -> Result<PublishResponse, ApiError> {
        let channels = [channel.0];
        let request = PublishRequest {
            channels: &channels,
            data: &body.0.data,
            idempotency_key: idempotency_key.0.as_deref(),
            channels_field: "channel",
        };
        let mut published = publish(&state, request).await?;
        Ok(PublishResponse::Accepted(Json(published.pop().ok_or_else(ApiError::internal)?)))
    }

    /// Publish to many channels
    ///
    /// One payload to up to 1,000 channels (any mix of namespaces), for backends with a server
    /// API key. Durable channels are all stored in one transaction: all or none.
    #[oai(path = "/publications", method = "post", operation_id = "broadcast")]
    async fn broadcast(
        &self,
        state: Data<&AppState>,
        _auth: ServerAuth,
        /// Any string up to 255 characters, unique per publish request.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255))]
        idempotency_key: Header<Option<String>>,
        body: Json<Broadcast>,
    ) -> Result<BroadcastResponse, ApiError> {
        if body.0.channels.len() > MAX_CHANNELS {
            return Err(ApiError::bad_request("channels", format!("at most {MAX_CHANNELS} channels")));
        }
        let request = PublishRequest {
            channels: &body.0.channels,
            data: &body.0.data,
            idempotency_key: idempotency_key.0.as_deref(),
            channels_field: "channels",
        };
        let publications = publish(&state, request).await?;
        Ok(BroadcastResponse::Accepted(Json(BroadcastResult { publications })))
    }

    /// Replay a channel's publications
    ///
    /// The stored publications of a durable channel after `after_offset`, in order: how a
    /// client catches up when `subscribed` says `recovered: false`. Public namespaces need no
    /// credentials; others take the bearer token of a user allowed to subscribe, or a server
    /// API key.
    #[oai(path = "/channels/:channel/publications", method = "get", operation_id = "listPublications")]
    async fn history(
        &self,
        state: Data<&AppState>,
        auth: ReaderAuth,
        /// `<namespace>:<name>`.
        channel: Path<String>,
        /// The last offset the client holds; 0 for everything still kept.
        #[oai(default, validator(minimum(value = "0")))]
        after_offset: Query<i64>,
        /// 1 to 500.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<i64>,
    ) -> Result<HistoryResponse, ApiError> {
        let (channel, namespace) = resolve(&state.namespaces, &channel.0, "channel")?;
        authorize_reader(&auth, &channel, namespace)?;
        if !namespace.is_durable() {
            return Err(ApiError::bad_request_code(
                ProblemCode::NotDurable,
                "channel",
                format!("namespace {} is ephemeral: it keeps no publications", channel.namespace()),
            ));
        }
        let page = history::page(&state.db, &channel, namespace, after_offset.0, limit.0 + 1).await?;
        let last_offset = page.position.offset;
        let first_wanted = after_offset.0.saturating_add(1);
        let first_stored = page.items.first().map_or(last_offset.saturating_add(1), |item| item.offset);
        if first_stored > first_wanted && first_wanted <= last_offset {
            let detail = format!(
                "publications {first_wanted}..{} are no longer kept; continue from offset {}",
                first_stored - 1,
                first_stored - 1
            );
            return Ok(HistoryResponse::Pruned(ProblemJson::new(Problem::new(
                StatusCode::GONE,
                ProblemCode::HistoryPruned,
                detail,
            ))));
        }
        let limit = usize::try_from(limit.0).unwrap_or(usize::MAX);
        let has_more = page.items.len() > limit;
        let items = page
            .items
            .into_iter()
            .take(limit)
            .map(|item| StoredPublication { offset: item.offset, data: item.data, published_at: item.occurred_at })
            .collect();
        Ok(HistoryResponse::Page(Json(PublicationPage { items, has_more, last_offset, epoch: page.position.epoch })))
    }

    /// A channel's subscribers
    ///
    /// For backends with a server API key: how many connections subscribe to the channel
    /// across all brokers (asked of every broker at once) and, for durable channels, the
    /// latest offset.
    #[oai(path = "/channels/:channel", method = "get", operation_id = "getChannel")]
    async fn stats(
        &self,
        state: Data<&AppState>,
        _auth: ServerAuth,
        /// `<namespace>:<name>`.
        channel: Path<String>,
    ) -> Result<StatsResponse, ApiError> {
        let (channel, namespace) = resolve(&state.namespaces, &channel.0, "channel")?;
        let subscribers = stats::subscribers(&state, &channel).await.map_err(|error| {
            tracing::warn!(%error, "channel stats request failed");
            ApiError::unavailable("NATS is unavailable; retry shortly")
        })?;
        let position = if namespace.is_durable() { Some(history::current(&state.db, &channel).await?) } else { None };
        Ok(StatsResponse::Stats(Json(ChannelStats {
            channel: channel.as_str().to_owned(),
            subscribers: subscribers.count,
            brokers: u32::try_from(subscribers.brokers).unwrap_or(u32::MAX),
            complete: subscribers.complete,
            last_offset: position.as_ref().map(|position| position.offset),
            epoch: position.map(|position| position.epoch),
        })))
    }
}

/// Whether the caller may read `channel`: backends always; otherwise as for subscribing.
fn authorize_reader(auth: &ReaderAuth, channel: &Channel, namespace: &Namespace) -> Result<(), ApiError> {
    let allowed = match (auth, namespace.subscribe) {
        (ReaderAuth::Header(_) | ReaderAuth::Authorization(_), _) | (_, Subscribers::Public) => true,
        (ReaderAuth::Anonymous, _) => {
            return Err(ApiError::unauthorized("this channel's history needs a bearer token or a server API key"));
        }
        (ReaderAuth::User(_), Subscribers::Authenticated) => true,
        (ReaderAuth::User(user), Subscribers::Granted) => {
            user.0.channels.iter().any(|pattern| pattern_grants(pattern, channel))
        }
        (ReaderAuth::User(user), Subscribers::Owner) => channel.name() == user.0.id.to_string(),
    };
    if allowed { Ok(()) } else { Err(ApiError::forbidden(ProblemCode::Forbidden, "you may not read this channel")) }
}

fn default_limit() -> i64 {
    100
}

impl poem_openapi::types::Example for NewPublication {
    fn example() -> Self {
        Self { data: serde_json::json!({ "bounty_id": "b-42", "status": "accepted" }) }
    }
}

impl poem_openapi::types::Example for Broadcast {
    fn example() -> Self {
        Self {
            channels: vec!["public:bounty.b-42".into(), "user:0191d0c2-6c3e-7f00-8000-00000000a11c".into()],
            data: serde_json::json!({ "bounty_id": "b-42", "status": "accepted" }),
        }
    }
}

impl poem_openapi::types::Example for BroadcastResult {
    fn example() -> Self {
        Self {
            publications: vec![Published {
                channel: "public:bounty.b-42".into(),
                offset: Some(7),
                epoch: Some("a1b2c3d4e5f6".into()),
            }],
        }
    }
}

impl poem_openapi::types::Example for StoredPublication {
    fn example() -> Self {
        Self {
            offset: 7,
            data: serde_json::json!({ "bounty_id": "b-42", "status": "accepted" }),
            published_at: super::examples::time(),
        }
    }
}

impl poem_openapi::types::Example for PublicationPage {
    fn example() -> Self {
        Self {
            items: vec![<StoredPublication as poem_openapi::types::Example>::example()],
            has_more: false,
            last_offset: 7,
            epoch: "a1b2c3d4e5f6".into(),
        }
    }
}

impl poem_openapi::types::Example for ChannelStats {
    fn example() -> Self {
        Self {
            channel: "public:bounty.b-42".into(),
            subscribers: 1_204,
            brokers: 3,
            complete: true,
            last_offset: Some(7),
            epoch: Some("a1b2c3d4e5f6".into()),
        }
    }
}
