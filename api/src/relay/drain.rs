//! One relay round: read unpublished events oldest first, publish them, mark them published.

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use futures_util::{TryStreamExt, stream};
use parley_shared::events::{Envelope, Event};
use parley_shared::ids::{ConversationId, EventId, UserId};
use sqlx::PgPool;

use super::publisher::{Failure, Publisher, Step};
use crate::metrics::OutboxMetrics;
use uuid::Uuid;

/// Most user copies of one event awaiting their acknowledgement at once. async-nats admits
/// 5,000 unacknowledged publishes per context and makes the next `send_publish` wait for a
/// permit; here every copy awaits its own acknowledgement, so a permit is only ever held by a
/// future that is driving its release, and one event (a 20,000-member `conversation.created`)
/// leaves permits for the conversations published beside it.
const USER_COPIES_IN_FLIGHT: usize = 256;

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
    /// The notifications its write created, published with it.
    notifications: Option<Vec<Uuid>>,
}

/// An event the round could not publish; the round stops at it (see [`publish_pending`]).
#[derive(Debug, thiserror::Error)]
#[error("publishing event {event} of conversation {conversation}: {failure}")]
pub struct Unpublished {
    pub event: Uuid,
    pub conversation: Uuid,
    pub failure: Failure,
}

/// Publishes every unpublished event, `batch` at a time, until none is left or a publish fails.
/// An event larger than NATS admits is logged, counted and marked published without being
/// published (it stays in the event log; clients see the gap in `seq` and read it over REST),
/// so it cannot hold back its conversation's later events for ever.
pub async fn publish_pending(
    db: &PgPool,
    publisher: &Publisher<'_>,
    batch: i64,
    metrics: &OutboxMetrics,
) -> anyhow::Result<()> {
    loop {
        let pending: Vec<Pending> = sqlx::query_as(
            "select id, conversation_id, seq, type, actor_id, occurred_at, data, trace_context, notifications
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
        let announced: Vec<Uuid> =
            pending.iter().flat_map(|event| event.notifications.iter().flatten().copied()).collect();
        let (frames, outcomes) = tokio::join!(
            super::notifications::publish_announced(db, publisher, &announced, metrics),
            join_all(chains.map(|events| publish_in_order(publisher, events)))
        );
        // An announced notification that did not go out leaves the whole batch unpublished:
        // the next round publishes it again, and JetStream drops what it already has.
        frames?;
        let acknowledged_at = Utc::now();
        let mut published = Vec::with_capacity(pending.len());
        let mut failure = None;
        for (acknowledged, unpublished) in outcomes {
            for event in acknowledged {
                let latency = (acknowledged_at - event.occurred_at).to_std().unwrap_or_default();
                metrics.publish_latency.observe(latency.as_secs_f64());
                published.push(event.id);
            }
            match unpublished {
                Some(Unpublished { event, conversation, failure: Failure::TooLarge }) => {
                    tracing::error!(event_id = %event, conversation_id = %conversation,
                        "event larger than the NATS server's max_payload; skipped, clients read it over REST");
                    metrics.unpublishable.inc();
                    published.push(event);
                }
                Some(unpublished) => failure = failure.or(Some(unpublished)),
                None => {}
            }
        }
        mark_published(db, Outbox::Events, &published, metrics).await?;
        if let Some(unpublished) = failure {
            return Err(unpublished.into());
        }
        tracing::debug!(events = published.len(), "outbox round published");
        if i64::try_from(pending.len()).unwrap_or(i64::MAX) < batch {
            return Ok(());
        }
    }
}

/// The outbox tables the relay publishes from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Outbox {
    Events,
    ChannelPublications,
}

/// Marks the rows JetStream acknowledged (or that were skipped for good) as published.
pub(super) async fn mark_published(
    db: &PgPool,
    outbox: Outbox,
    ids: &[Uuid],
    metrics: &OutboxMetrics,
) -> Result<(), sqlx::Error> {
    metrics.published.inc_by(ids.len() as u64);
    if ids.is_empty() {
        return Ok(());
    }
    let statement = match outbox {
        Outbox::Events => "update events set published_at = now() where id = any($1)",
        Outbox::ChannelPublications => "update channel_publications set published_at = now() where id = any($1)",
    };
    sqlx::query(statement).bind(ids).execute(db).await.map(drop)
}

/// Publishes `events` (one conversation's, in seq order) until the first failure; returns
/// the events JetStream acknowledged and the one that failed.
async fn publish_in_order<'e>(
    publisher: &Publisher<'_>,
    events: &'e [&'e Pending],
) -> (&'e [&'e Pending], Option<Unpublished>) {
    let (acknowledged, failure) = publisher.publish_chain(events, |event| step(publisher, event)).await;
    let unpublished = failure.map(|failure| {
        let event = events[acknowledged];
        Unpublished { event: event.id, conversation: event.conversation_id, failure }
    });
    (&events[..acknowledged], unpublished)
}

/// The conversation subject, then (for an event with user recipients: membership changes)
/// the subject of each user who must hear it, at most [`USER_COPIES_IN_FLIGHT`] at a time; in
/// a span of the writing request's trace, whose context the NATS headers carry on.
fn step<'a>(publisher: &'a Publisher<'a>, pending: &'a Pending) -> Result<Step<'a>, Failure> {
    let (span, traceparent) = parley_shared::telemetry::child_span("outbox.publish", pending.trace_context.as_deref());
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
    let message = move |id: String, payload: Bytes| {
        PublishMessage::build().headers(headers.clone()).message_id(id).payload(payload)
    };
    let subject = publisher.subjects.conversation_event(conversation, kind);
    let recipients = envelope.event.user_recipients();
    if recipients.is_empty() {
        return Ok(Step::Pipelined { subject, message: message(pending.id.to_string(), payload), span });
    }
    Ok(Step::Alone(Box::pin(async move {
        let _span = span;
        publisher.publish(subject, message(pending.id.to_string(), payload.clone())).await?;
        // The users' copies are independent of each other.
        stream::iter(recipients.into_iter().map(Ok))
            .try_for_each_concurrent(USER_COPIES_IN_FLIGHT, |user| {
                let copy = match envelope.event.for_recipient(user) {
                    Some(event) => serde_json::to_vec(&Envelope { event, ..envelope.clone() }).map(Bytes::from),
                    None => Ok(payload.clone()),
                };
                let id = format!("{}/{user}", pending.id);
                let subject = publisher.subjects.user_event(user, kind);
                let message = copy.map(|copy| message(id, copy));
                async move { publisher.publish(subject, message?).await }
            })
            .await
    })))
}
