//! Publishing into channels, for the HTTP routes and for backends on NATS alike.
//!
//! Durable channels: in one transaction each channel's row takes its next offset (locked until
//! commit, so offsets are gapless and commit order is offset order) and the publication is
//! written; the outbox relay publishes it to JetStream after commit, so a publish that answered
//! is never lost, whatever happens to NATS. Ephemeral channels: one core-NATS message each,
//! after the durable ones committed; at most once.

use std::collections::HashSet;

use parley_shared::channels::{Channel, Delivery, MAX_DATA_BYTES};
use parley_shared::publications::Publication;
use poem_openapi::Object;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::resolve;
use crate::error::{ApiError, ProblemCode};
use crate::metrics::PublicationLabels;
use crate::outbox::Recorded;
use crate::state::AppState;

/// Most channels one broadcast may name.
pub const MAX_CHANNELS: usize = 1_000;

/// Where one publication went.
#[derive(Object, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[oai(skip_serializing_if_is_none, example)]
pub struct Published {
    pub channel: String,
    /// Durable channels: the publication's offset (gapless within the channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// Durable channels: the channel's epoch (resume with `since: {offset, epoch}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

impl poem_openapi::types::Example for Published {
    fn example() -> Self {
        Self { channel: "public:bounty.b-42".into(), offset: Some(7), epoch: Some("5f0c1e9a2b4d".into()) }
    }
}

/// A validated publish request.
#[derive(Debug)]
pub struct PublishRequest<'a> {
    pub channels: &'a [String],
    pub data: &'a serde_json::Value,
    pub idempotency_key: Option<&'a str>,
    /// The request field naming the channels, for errors (`channel` or `channels`).
    pub channels_field: &'static str,
}

/// Publishes `data` to every channel of the request; the answer lists them in request order.
pub async fn publish(state: &AppState, request: PublishRequest<'_>) -> Result<Vec<Published>, ApiError> {
    let PublishRequest { channels, data, idempotency_key, channels_field } = request;
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(ApiError::bad_request(channels_field, format!("name 1 to {MAX_CHANNELS} channels")));
    }
    let size = serde_json::to_vec(data).map_or(usize::MAX, |json| json.len());
    let mut seen = HashSet::with_capacity(channels.len());
    let mut targets = Vec::with_capacity(channels.len());
    for name in channels {
        let (channel, namespace) = resolve(&state.namespaces, name, channels_field)?;
        if !seen.insert(channel.as_str().to_owned()) {
            return Err(ApiError::bad_request(channels_field, format!("{name} is listed twice")));
        }
        if size > namespace.max_data_bytes.min(MAX_DATA_BYTES) {
            return Err(ApiError::payload_too_large(
                "data",
                format!("data is {size} bytes; {} takes at most {}", channel.namespace(), namespace.max_data_bytes),
            ));
        }
        targets.push((channel, namespace.delivery));
    }
    let durable: Vec<&Channel> =
        targets.iter().filter(|(_, delivery)| *delivery == Delivery::Durable).map(|(channel, _)| channel).collect();
    let fingerprint = serde_json::json!({ "channels": channels, "data": data });
    let stored = if durable.is_empty() && idempotency_key.is_none() {
        Vec::new()
    } else if idempotency_key.is_none() {
        // One statement is its own transaction: one round trip, no BEGIN or COMMIT.
        let stored = store(&mut *state.db.acquire().await?, &durable, data).await?;
        state.outbox.committed(Recorded::publications());
        stored
    } else {
        let mut tx = state.db.begin().await?;
        if let Some(key) = idempotency_key
            && let Some(earlier) = claim_key(&mut tx, key, &fingerprint).await?
        {
            return Ok(earlier);
        }
        let stored = store(&mut tx, &durable, data).await?;
        let answer = answer(&targets, &stored);
        if let Some(key) = idempotency_key {
            sqlx::query("update publish_idempotency_keys set response = $2 where key = $1")
                .bind(key)
                .bind(serde_json::to_value(&answer).map_err(|_| ApiError::internal())?)
                .execute(&mut *tx)
                .await?;
        }
        crate::db::commit(tx).await?;
        if !stored.is_empty() {
            state.outbox.committed(Recorded::publications());
        }
        stored
    };
    for (channel, delivery) in &targets {
        let delivery = match delivery {
            Delivery::Durable => "durable",
            Delivery::Ephemeral => {
                let frame = serde_json::to_vec(&Publication::ephemeral(channel.as_str(), data.clone()))
                    .map_err(|_| ApiError::internal())?;
                state
                    .nats
                    .publish(state.subjects.ephemeral_channel(channel), frame.into())
                    .await
                    .map_err(|_| ApiError::unavailable("NATS is unavailable; retry shortly"))?;
                "ephemeral"
            }
        };
        let labels = PublicationLabels { namespace: channel.namespace().to_owned(), delivery };
        state.metrics.publications.get_or_create(&labels).inc();
    }
    Ok(answer(&targets, &stored))
}

/// The answer in request order: offsets and epochs for the durable channels.
fn answer(targets: &[(Channel, Delivery)], stored: &[Published]) -> Vec<Published> {
    targets
        .iter()
        .map(|(channel, _)| {
            stored.iter().find(|published| published.channel == channel.as_str()).cloned().unwrap_or(Published {
                channel: channel.as_str().to_owned(),
                offset: None,
                epoch: None,
            })
        })
        .collect()
}

/// Takes `key` for this request, or returns what the request that took it first answered
/// (waiting for that one's transaction if it is still open). 422 for another request.
async fn claim_key(
    tx: &mut sqlx::PgConnection,
    key: &str,
    fingerprint: &serde_json::Value,
) -> Result<Option<Vec<Published>>, ApiError> {
    let taken = sqlx::query(
        "insert into publish_idempotency_keys (key, request, response) values ($1, $2, 'null') on conflict do nothing",
    )
    .bind(key)
    .bind(fingerprint)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if taken {
        return Ok(None);
    }
    let (same, response): (bool, serde_json::Value) =
        sqlx::query_as("select request = $2, response from publish_idempotency_keys where key = $1")
            .bind(key)
            .bind(fingerprint)
            .fetch_one(&mut *tx)
            .await?;
    if !same {
        return Err(ApiError::unprocessable(
            ProblemCode::IdempotencyKeyReused,
            "this Idempotency-Key was used for a different publish request",
        ));
    }
    serde_json::from_value(response).map(Some).map_err(|_| ApiError::internal())
}

/// Writes one publication per durable channel at each channel's next offset. Rows are locked in
/// name order, so two broadcasts over the same channels cannot deadlock.
async fn store(
    tx: &mut sqlx::PgConnection,
    channels: &[&Channel],
    data: &serde_json::Value,
) -> Result<Vec<Published>, ApiError> {
    if channels.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: Vec<&str> = channels.iter().map(|channel| channel.as_str()).collect();
    names.sort_unstable();
    let ids: Vec<Uuid> = names.iter().map(|_| Uuid::now_v7()).collect();
    let epoch = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        r#"with wanted as (select * from unnest($1::text[], $2::uuid[]) as t (name, id)),
                positions as (
                    insert into channels (name, epoch, last_offset)
                    select name, $3, 1 from wanted order by name
                    on conflict (name) do update set last_offset = channels.last_offset + 1
                    returning name, last_offset, epoch),
                inserted as (
                    insert into channel_publications (id, channel, "offset", data, trace_context)
                    select w.id, p.name, p.last_offset, $4, $5 from positions p join wanted w using (name)
                    returning channel, "offset")
           select i.channel, i."offset", p.epoch from inserted i join positions p on p.name = i.channel"#,
    )
    .bind(&names)
    .bind(&ids)
    .bind(&epoch)
    .bind(data)
    .bind(parley_shared::telemetry::current_traceparent())
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(channel, offset, epoch)| Published { channel, offset: Some(offset), epoch: Some(epoch) })
        .collect())
}
