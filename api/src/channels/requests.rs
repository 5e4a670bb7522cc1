//! Channel requests over core NATS, each answered by one API instance (queue group):
//! - `<prefix>.api.publish`: a backend on the same NATS publishes, with the same validation as
//!   `POST /v1/publications` (NATS permissions, not API keys, decide who may);
//! - `<prefix>.internal.channel.position`: a broker asks where a durable channel stands and
//!   for the publications a subscriber missed.

use parley_shared::publications::{
    PositionReply, PositionRequest, PublishReply, PublishRequest as NatsPublishRequest, PublishedTo,
};
use tokio_util::sync::CancellationToken;

use super::history;
use super::publish::{PublishRequest, publish};
use crate::error::ApiError;
use crate::state::AppState;

pub struct ChannelResponder {
    pub state: AppState,
}

impl ChannelResponder {
    /// Serves until `stop`; requests are answered concurrently (the pool bounds the queries).
    pub async fn run(self, stop: CancellationToken) {
        let subjects = [self.state.subjects.publish_request(), self.state.subjects.channel_position_request()];
        let state = self.state;
        crate::broker_requests::serve(state.nats.clone(), subjects, stop, move |publish, payload| {
            let state = state.clone();
            async move {
                let reply = if publish {
                    serde_json::to_vec(&answer_publish(&state, &payload).await)
                } else {
                    serde_json::to_vec(&answer_position(&state, &payload).await)
                };
                reply.unwrap_or_default()
            }
        })
        .await;
    }
}

async fn answer_publish(state: &AppState, payload: &[u8]) -> PublishReply {
    let request: NatsPublishRequest = match serde_json::from_slice(payload) {
        Ok(request) => request,
        Err(error) => return problem(ApiError::bad_request("body", format!("malformed publish request: {error}"))),
    };
    let (channels, field) = match request.channel {
        Some(channel) if request.channels.is_empty() => (vec![channel], "channel"),
        None => (request.channels, "channels"),
        Some(_) => return problem(ApiError::bad_request("channels", "give channel or channels, not both")),
    };
    let request = PublishRequest {
        channels: &channels,
        data: &request.data,
        idempotency_key: request.idempotency_key.as_deref(),
        channels_field: field,
    };
    match publish(state, request).await {
        Ok(published) => PublishReply::Publications(
            published
                .into_iter()
                .map(|published| PublishedTo {
                    channel: published.channel,
                    offset: published.offset,
                    epoch: published.epoch,
                })
                .collect(),
        ),
        Err(error) => problem(error),
    }
}

fn problem(error: ApiError) -> PublishReply {
    PublishReply::Error(error.problem().to_json_value())
}

async fn answer_position(state: &AppState, payload: &[u8]) -> PositionReply {
    let request: PositionRequest = match serde_json::from_slice(payload) {
        Ok(request) => request,
        Err(error) => return PositionReply::Error(format!("malformed position request: {error}")),
    };
    let Ok((channel, namespace)) = super::resolve(&state.namespaces, &request.channel, "channel") else {
        return PositionReply::Error("not a channel of a configured namespace".into());
    };
    match history::recover(&state.db, &channel, namespace, request.since.as_ref(), request.max_bytes).await {
        Ok(state) => PositionReply::Position(state),
        Err(error) => {
            tracing::warn!(%error, "channel position request failed");
            PositionReply::Error("the channel query failed".into())
        }
    }
}
