//! The relay's round for channel publications: like events, oldest first, each channel's in
//! offset order (pipelined, see [`super::publisher::CHAIN_IN_FLIGHT`]), with
//! the publication id as `Nats-Msg-Id` so a republish is dropped as a duplicate.

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use parley_shared::channels::Channel;
use parley_shared::publications::{OFFSET_HEADER, Publication};
use sqlx::PgPool;
use uuid::Uuid;

use super::drain::{Outbox, mark_published};
use super::publisher::{Failure, Publisher, Step};
use crate::metrics::OutboxMetrics;

#[derive(sqlx::FromRow)]
struct Pending {
    id: Uuid,
    channel: String,
    offset: i64,
    epoch: String,
    data: serde_json::Value,
    occurred_at: DateTime<Utc>,
    trace_context: Option<String>,
}

/// Publishes every unpublished publication, `batch` at a time, until none is left or a
/// publish fails. One larger than NATS admits is skipped like an event (readable over REST).
pub async fn publish_pending(
    db: &PgPool,
    publisher: &Publisher<'_>,
    batch: i64,
    metrics: &OutboxMetrics,
) -> anyhow::Result<()> {
    loop {
        let pending: Vec<Pending> = sqlx::query_as(
            r#"select p.id, p.channel, p."offset", c.epoch, p.data, p.occurred_at, p.trace_context
                 from channel_publications p join channels c on c.name = p.channel
                where p.published_at is null order by p.position limit $1"#,
        )
        .bind(batch)
        .fetch_all(db)
        .await?;
        if pending.is_empty() {
            return Ok(());
        }
        let mut sorted: Vec<&Pending> = pending.iter().collect();
        // Stable: each channel keeps its position (= offset) order.
        sorted.sort_by(|a, b| a.channel.cmp(&b.channel));
        let chains = sorted.chunk_by(|a, b| a.channel == b.channel);
        let outcomes = join_all(chains.map(|chain| publish_in_order(publisher, chain))).await;
        let acknowledged_at = Utc::now();
        let mut published = Vec::with_capacity(pending.len());
        let mut failure = None;
        for (acknowledged, unpublished) in outcomes {
            for publication in acknowledged {
                let latency = (acknowledged_at - publication.occurred_at).to_std().unwrap_or_default();
                metrics.publish_latency.observe(latency.as_secs_f64());
                published.push(publication.id);
            }
            match unpublished {
                Some((publication, error @ (Failure::TooLarge | Failure::Unroutable))) => {
                    tracing::error!(publication_id = %publication.id, channel = %publication.channel, %error,
                        "publication cannot be published; skipped, readable over REST");
                    metrics.unpublishable.inc();
                    published.push(publication.id);
                }
                Some((publication, error)) => {
                    failure = failure.or(Some(anyhow::anyhow!(
                        "publishing offset {} of channel {}: {error}",
                        publication.offset,
                        publication.channel
                    )));
                }
                None => {}
            }
        }
        mark_published(db, Outbox::ChannelPublications, &published, metrics).await?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        if i64::try_from(pending.len()).unwrap_or(i64::MAX) < batch {
            return Ok(());
        }
    }
}

/// Publishes one channel's publications in offset order until the first failure.
async fn publish_in_order<'p>(
    publisher: &Publisher<'_>,
    chain: &'p [&'p Pending],
) -> (&'p [&'p Pending], Option<(&'p Pending, Failure)>) {
    let (acknowledged, failure) = publisher.publish_chain(chain, |publication| step(publisher, publication)).await;
    (&chain[..acknowledged], failure.map(|failure| (chain[acknowledged], failure)))
}

fn step<'a>(publisher: &Publisher<'_>, pending: &Pending) -> Result<Step<'a>, Failure> {
    let (span, traceparent) = parley_shared::telemetry::child_span("outbox.publish", pending.trace_context.as_deref());
    let channel = Channel::parse(&pending.channel).map_err(|_| Failure::Unroutable)?;
    let frame = Publication::durable(&pending.channel, pending.offset, &pending.epoch, pending.data.clone());
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", traceparent.as_str());
    headers.insert(OFFSET_HEADER, pending.offset.to_string().as_str());
    let message = PublishMessage::build()
        .headers(headers)
        .message_id(pending.id.to_string())
        .payload(Bytes::from(serde_json::to_vec(&frame)?));
    Ok(Step::Pipelined { subject: publisher.subjects.channel(&channel), message, span })
}
