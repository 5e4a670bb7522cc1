//! Channel requests over core NATS, each answered by one API instance (queue group):
//! - `<prefix>.api.publish`: a backend on the same NATS publishes, with the same validation as
//!   `POST /v1/publications` (NATS permissions, not API keys, decide who may);
//! - `<prefix>.internal.channel.position`: a broker asks where a durable channel stands and
//!   for the publications a subscriber missed.

use futures_util::StreamExt;
use parley_shared::publications::{
    PositionReply, PositionRequest, PublishReply, PublishRequest as NatsPublishRequest, PublishedTo,
};
use tokio_util::sync::CancellationToken;

use super::history;
use super::publish::{PublishRequest, publish};
use crate::error::ApiError;
use crate::state::AppState;

const QUEUE_GROUP: &str = "parley-api";

pub struct ChannelResponder {
    pub state: AppState,
}

impl ChannelResponder {
    /// Serves until `stop`; requests are answered concurrently (the pool bounds the queries).
    pub async fn run(self, stop: CancellationToken) {
        let (nats, subjects) = (&self.state.nats, &self.state.subjects);
        let subscribe = |subject: String| nats.queue_subscribe(subject, QUEUE_GROUP.into());
        let (publishes, positions) = match tokio::try_join!(
            subscribe(subjects.publish_request()),
            subscribe(subjects.channel_position_request())
        ) {
            Ok(subscriptions) => subscriptions,
            Err(error) => {
                tracing::error!(%error, "cannot subscribe to channel requests");
                return;
            }
        };
        let mut requests = futures_util::stream::select(publishes, positions);
        let mut in_flight = tokio::task::JoinSet::new();
        let publish_subject = subjects.publish_request();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(request) = requests.next() => {
                    let state = self.state.clone();
                    let is_publish = request.subject.as_str() == publish_subject;
                    in_flight.spawn(async move {
                        let Some(reply_to) = request.reply.clone() else { return };
                        let reply = if is_publish {
                            serde_json::to_vec(&answer_publish(&state, &request.payload).await)
                        } else {
                            serde_json::to_vec(&answer_position(&state, &request.payload).await)
                        };
                        if let Err(error) = state.nats.publish(reply_to, reply.unwrap_or_default().into()).await {
                            tracing::debug!(%error, "channel request reply not sent");
                        }
                    });
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        drop(requests);
        while in_flight.join_next().await.is_some() {}
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
