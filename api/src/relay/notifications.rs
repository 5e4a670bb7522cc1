//! The relay's round for notification changes: oldest first, each user's in position order
//! (pipelined like events), as ready-made WebSocket frames on the user's notification subject.
//! The `Nats-Msg-Id` is the change's position, so a republish is dropped as a duplicate.

use std::collections::HashMap;

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures_util::future::join_all;
use parley_shared::ids::UserId;
use parley_shared::notifications::{
    Notification, NotificationCreated, NotificationFrame, NotificationsCleared, NotificationsRead,
};
use sqlx::PgPool;
use uuid::Uuid;

use super::publisher::{Failure, Publisher, Step};
use crate::metrics::OutboxMetrics;
use crate::notifications::NOTIFICATION_JSON;

#[derive(sqlx::FromRow)]
struct Pending {
    position: i64,
    user_id: Uuid,
    change: String,
    notification_id: Option<Uuid>,
    /// The notification of a `created` change, unless cleared since.
    notification: Option<sqlx::types::Json<Notification>>,
}

/// Publishes every unpublished notification change, `batch` at a time, until none is left or a
/// publish fails. A `created` change whose notification was cleared before it went out is
/// marked published without a frame (its `cleared` change follows).
pub async fn publish_pending(
    db: &PgPool,
    publisher: &Publisher<'_>,
    batch: i64,
    metrics: &OutboxMetrics,
) -> anyhow::Result<()> {
    loop {
        let pending: Vec<Pending> = sqlx::query_as(&format!(
            "select c.position, c.user_id, c.change, c.notification_id,
                    case when n.id is not null then {NOTIFICATION_JSON} end as notification
               from notification_changes c
               left join notifications n on c.change = 'created' and n.id = c.notification_id
              where c.published_at is null order by c.position limit $1"
        ))
        .bind(batch)
        .fetch_all(db)
        .await?;
        if pending.is_empty() {
            return Ok(());
        }
        let users: Vec<Uuid> = pending.iter().map(|change| change.user_id).collect();
        let unread: HashMap<Uuid, i64> = sqlx::query_as(
            "select user_id, count(*) from notifications
              where user_id = any($1) and read_at is null group by user_id",
        )
        .bind(&users)
        .fetch_all(db)
        .await?
        .into_iter()
        .collect();
        let mut sorted: Vec<&Pending> = pending.iter().collect();
        // Stable: each user's changes keep their position order.
        sorted.sort_by_key(|change| change.user_id);
        let chains = sorted.chunk_by(|a, b| a.user_id == b.user_id);
        let outcomes = join_all(chains.map(|chain| publish_in_order(publisher, chain, &unread))).await;
        // Not counted with the events (`parley_outbox_published_events`, the publish latency):
        // those measure the conversation outbox.
        let mut published = Vec::with_capacity(pending.len());
        let mut failure = None;
        for (acknowledged, unpublished) in outcomes {
            published.extend(acknowledged.iter().map(|change| change.position));
            if let Some((change, Failure::TooLarge)) = unpublished {
                tracing::error!(position = change.position, user_id = %change.user_id,
                    "notification frame larger than the NATS server's max_payload; skipped, listed over REST");
                metrics.unpublishable.inc();
                published.push(change.position);
            } else if let Some((change, error)) = unpublished {
                failure = failure.or(Some(anyhow::anyhow!(
                    "publishing notification change {} of user {}: {error}",
                    change.position,
                    change.user_id
                )));
            }
        }
        sqlx::query("update notification_changes set published_at = now() where position = any($1)")
            .bind(&published)
            .execute(db)
            .await?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        if i64::try_from(pending.len()).unwrap_or(i64::MAX) < batch {
            return Ok(());
        }
    }
}

/// Publishes one user's changes in position order until the first failure.
async fn publish_in_order<'p>(
    publisher: &Publisher<'_>,
    chain: &'p [&'p Pending],
    unread: &HashMap<Uuid, i64>,
) -> (&'p [&'p Pending], Option<(&'p Pending, Failure)>) {
    let (acknowledged, failure) = publisher.publish_chain(chain, |change| step(publisher, change, unread)).await;
    (&chain[..acknowledged], failure.map(|failure| (chain[acknowledged], failure)))
}

fn step<'a>(publisher: &Publisher<'_>, pending: &Pending, unread: &HashMap<Uuid, i64>) -> Result<Step<'a>, Failure> {
    let Some(frame) = frame(pending, unread.get(&pending.user_id).copied().unwrap_or(0)) else {
        return Ok(Step::Alone(Box::pin(std::future::ready(Ok(())))));
    };
    let (span, _) = parley_shared::telemetry::child_span("outbox.publish", None);
    let message = PublishMessage::build()
        .message_id(format!("notification-change/{}", pending.position))
        .payload(Bytes::from(serde_json::to_vec(&frame)?));
    let subject = publisher.subjects.user_notifications(UserId::from_uuid(pending.user_id));
    Ok(Step::Pipelined { subject, message, span })
}

/// The frame of one change; `None` for a notification cleared before its `created` went out.
fn frame(pending: &Pending, unread_count: i64) -> Option<NotificationFrame> {
    let id = pending.notification_id;
    Some(match pending.change.as_str() {
        "created" => {
            let notification = pending.notification.as_ref()?.0.clone();
            NotificationFrame::Created(NotificationCreated { notification, unread_count })
        }
        "read" => NotificationFrame::Read(NotificationsRead { id, up_to: None, unread_count }),
        "read_up_to" => NotificationFrame::Read(NotificationsRead { id: None, up_to: id, unread_count }),
        "cleared" => NotificationFrame::Cleared(NotificationsCleared { id, all: false, unread_count }),
        _ => NotificationFrame::Cleared(NotificationsCleared { id: None, all: true, unread_count }),
    })
}
