//! One relay round: read unpublished events oldest first, publish them, mark them published.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use parley_shared::events::{Envelope, Event};
use parley_shared::ids::{ConversationId, EventId, UserId};
use parley_shared::subjects::Subjects;
use sqlx::PgPool;

use crate::metrics::OutboxMetrics;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct Pending {
    id: Uuid,
    conversation_id: Uuid,
    seq: i64,
    #[sqlx(rename = "type")]
    kind: String,
    actor_id: Uuid,
    occurred_at: DateTime<Utc>,
    data: serde_json::Value,
    trace_context: Option<String>,
}

/// Publishes every unpublished event, `batch` at a time, until none is left or a publish fails.
pub async fn publish_pending(
    db: &PgPool,
    jetstream: &jetstream::Context,
    subjects: &Subjects,
    batch: i64,
    metrics: &OutboxMetrics,
) -> anyhow::Result<()> {
    loop {
        let pending: Vec<Pending> = sqlx::query_as(
            "select id, conversation_id, seq, type, actor_id, occurred_at, data, trace_context
               from events where published_at is null order by position limit $1",
        )
        .bind(batch)
        .fetch_all(db)
        .await?;
        if pending.is_empty() {
            return Ok(());
        }
        let mut sorted: Vec<&Pending> = pending.iter().collect();
        // Stable: each conversation keeps its position (= seq) order.
        sorted.sort_by_key(|event| event.conversation_id);
        // Conversations in parallel, each conversation's events strictly one after another.
        let chains = sorted.chunk_by(|a, b| a.conversation_id == b.conversation_id);
        let outcomes = join_all(chains.map(|events| publish_in_order(jetstream, subjects, events))).await;
        let acknowledged_at = Utc::now();
        let mut published = Vec::with_capacity(pending.len());
        let mut failure = None;
        for (acknowledged, error) in outcomes {
            for event in acknowledged {
                let latency = (acknowledged_at - event.occurred_at).to_std().unwrap_or_default();
                metrics.publish_latency.observe(latency.as_secs_f64());
                published.push(event.id);
            }
            failure = failure.or(error);
        }
        metrics.published.inc_by(published.len() as u64);
        if !published.is_empty() {
            sqlx::query("update events set published_at = now() where id = any($1)")
                .bind(&published)
                .execute(db)
                .await?;
        }
        if let Some(error) = failure {
            return Err(error);
        }
        tracing::debug!(events = published.len(), "outbox round published");
        if i64::try_from(pending.len()).unwrap_or(i64::MAX) < batch {
            return Ok(());
        }
    }
}

/// Publishes `events` (one conversation's, in seq order) until the first failure; returns the
/// events JetStream acknowledged and that failure.
async fn publish_in_order<'a>(
    jetstream: &jetstream::Context,
    subjects: &Subjects,
    events: &'a [&'a Pending],
) -> (&'a [&'a Pending], Option<anyhow::Error>) {
    for (sent, event) in events.iter().enumerate() {
        if let Err(error) = publish_one(jetstream, subjects, event).await {
            return (&events[..sent], Some(error));
        }
    }
    (events, None)
}

/// The conversation subject, then the subject of each user who must hear it, each awaited; in
/// a span of the writing request's trace, whose context the NATS headers carry on.
async fn publish_one(jetstream: &jetstream::Context, subjects: &Subjects, pending: &Pending) -> anyhow::Result<()> {
    let (_span, traceparent) = parley_shared::telemetry::child_span("outbox.publish", pending.trace_context.as_deref());
    let event = Event::from_parts(&pending.kind, pending.data.clone())?;
    let conversation = ConversationId::from_uuid(pending.conversation_id);
    let envelope = Envelope {
        id: EventId::from_uuid(pending.id),
        conversation_id: conversation,
        seq: pending.seq,
        actor: UserId::from_uuid(pending.actor_id),
        occurred_at: pending.occurred_at,
        event,
    };
    let payload = Bytes::from(serde_json::to_vec(&envelope)?);
    let kind = envelope.event.kind();
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", traceparent.as_str());
    // `headers` replaces the whole map, so it goes before `message_id`.
    let message =
        |id: String, payload: Bytes| PublishMessage::build().headers(headers.clone()).message_id(id).payload(payload);
    jetstream
        .send_publish(subjects.conversation_event(conversation, kind), message(pending.id.to_string(), payload.clone()))
        .await?
        .await?;
    // The users' copies are independent of each other: send them all, then await the acks.
    let mut acks = Vec::new();
    for user in envelope.event.user_recipients() {
        let copy = match envelope.event.for_recipient(user) {
            Some(event) => Bytes::from(serde_json::to_vec(&Envelope { event, ..envelope.clone() })?),
            None => payload.clone(),
        };
        let id = format!("{}/{user}", pending.id);
        acks.push(jetstream.send_publish(subjects.user_event(user, kind), message(id, copy)).await?);
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}
