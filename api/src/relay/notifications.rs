//! The relay's notification frames, published on the user's notification subject as
//! ready-made WebSocket frames, each user's in order (pipelined like events):
//! - the changes in `notification_changes` (created, read, cleared), oldest first; the
//!   `Nats-Msg-Id` is the change's position;
//! - the notifications a message's event announces (`events.notifications`), published with
//!   that event; the `Nats-Msg-Id` is the notification's id.
//!
//! Either way a republish is dropped as a duplicate, and a frame carries the notification and
//! the unread count as they are when it is published.

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
        let unread = unread_counts(db, pending.iter().map(|change| change.user_id)).await?;
        let frames: Vec<Outgoing> = pending
            .into_iter()
            .map(|change| Outgoing {
                position: Some(change.position),
                user: change.user_id,
                frame: frame(&change, unread.get(&change.user_id).copied().unwrap_or(0)),
                message_id: format!("notification-change/{}", change.position),
            })
            .collect();
        let (acknowledged, failures) = publish_frames(publisher, &frames).await;
        let mut published: Vec<i64> = acknowledged.iter().filter_map(|frame| frame.position).collect();
        let mut failure = None;
        for (frame, error) in failures {
            if skipped(frame, &error, metrics) {
                published.extend(frame.position);
            } else {
                failure = failure.or(Some(anyhow::anyhow!("publishing notification {}: {error}", frame.message_id)));
            }
        }
        sqlx::query("update notification_changes set published_at = now() where position = any($1)")
            .bind(&published)
            .execute(db)
            .await?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        if i64::try_from(frames.len()).unwrap_or(i64::MAX) < batch {
            return Ok(());
        }
    }
}

#[derive(sqlx::FromRow)]
struct Announced {
    user_id: Uuid,
    notification: sqlx::types::Json<Notification>,
}

/// Publishes a `created` frame for each of `ids` (announced by the events of one round) that
/// exists: one never created (its user left) or already cleared has nothing to show. Any
/// failure fails the round, so the events announcing it stay unpublished and go again.
pub async fn publish_announced(
    db: &PgPool,
    publisher: &Publisher<'_>,
    ids: &[Uuid],
    metrics: &OutboxMetrics,
) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let created: Vec<Announced> = sqlx::query_as(&format!(
        "select n.user_id, {NOTIFICATION_JSON} as notification from notifications n where n.id = any($1) order by n.id"
    ))
    .bind(ids)
    .fetch_all(db)
    .await?;
    let unread = unread_counts(db, created.iter().map(|created| created.user_id)).await?;
    let frames: Vec<Outgoing> = created
        .into_iter()
        .map(|created| Outgoing {
            position: None,
            user: created.user_id,
            message_id: format!("notification/{}", created.notification.id),
            frame: Some(NotificationFrame::Created(NotificationCreated {
                notification: created.notification.0,
                unread_count: unread.get(&created.user_id).copied().unwrap_or(0),
            })),
        })
        .collect();
    let (_, failures) = publish_frames(publisher, &frames).await;
    match failures.into_iter().find(|(frame, error)| !skipped(frame, error, metrics)) {
        Some((frame, error)) => Err(anyhow::anyhow!("publishing notification {}: {error}", frame.message_id)),
        None => Ok(()),
    }
}

/// Each of `users`' unread notifications.
async fn unread_counts(db: &PgPool, users: impl Iterator<Item = Uuid>) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let mut users: Vec<Uuid> = users.collect();
    users.sort_unstable();
    users.dedup();
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(sqlx::query_as(
        "select user_id, count(*) from notifications where user_id = any($1) and read_at is null group by user_id",
    )
    .bind(&users)
    .fetch_all(db)
    .await?
    .into_iter()
    .collect())
}

/// One frame for one user's connections; `None` publishes nothing (a notification cleared
/// before its `created` change went out).
struct Outgoing {
    /// The change it publishes, if it comes from `notification_changes`.
    position: Option<i64>,
    user: Uuid,
    frame: Option<NotificationFrame>,
    message_id: String,
}

/// Publishes `frames`, users in parallel and each user's in the order given, until each user's
/// first failure; returns the frames JetStream acknowledged and the failures.
async fn publish_frames<'f>(
    publisher: &Publisher<'_>,
    frames: &'f [Outgoing],
) -> (Vec<&'f Outgoing>, Vec<(&'f Outgoing, Failure)>) {
    let mut sorted: Vec<&Outgoing> = frames.iter().collect();
    // Stable: each user's frames keep their order.
    sorted.sort_by_key(|frame| frame.user);
    let chains = sorted.chunk_by(|a, b| a.user == b.user).map(|chain| async move {
        let (acknowledged, failure) = publisher.publish_chain(chain, |frame| step(publisher, frame)).await;
        (&chain[..acknowledged], failure.map(|failure| (chain[acknowledged], failure)))
    });
    let mut acknowledged = Vec::with_capacity(frames.len());
    let mut failures = Vec::new();
    for (published, failure) in join_all(chains).await {
        acknowledged.extend_from_slice(published);
        failures.extend(failure);
    }
    (acknowledged, failures)
}

/// Whether a failed frame is skipped for good (larger than NATS carries: listed over REST
/// only), logged and counted.
fn skipped(frame: &Outgoing, failure: &Failure, metrics: &OutboxMetrics) -> bool {
    if !matches!(failure, Failure::TooLarge) {
        return false;
    }
    tracing::error!(message_id = %frame.message_id, user_id = %frame.user,
        "notification frame larger than the NATS server's max_payload; skipped, listed over REST");
    metrics.unpublishable.inc();
    true
}

fn step<'a>(publisher: &Publisher<'_>, outgoing: &Outgoing) -> Result<Step<'a>, Failure> {
    let Some(frame) = &outgoing.frame else {
        return Ok(Step::Alone(Box::pin(std::future::ready(Ok(())))));
    };
    let (span, _) = parley_shared::telemetry::child_span("outbox.publish", None);
    let message = PublishMessage::build()
        .message_id(outgoing.message_id.clone())
        .payload(Bytes::from(serde_json::to_vec(frame)?));
    let subject = publisher.subjects.user_notifications(UserId::from_uuid(outgoing.user));
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
