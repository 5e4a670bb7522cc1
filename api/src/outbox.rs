//! Recording domain events. Every write appends its event to `events` in the same transaction
//! as the change itself, at the conversation's next `seq`: the row lock taken by the `update`
//! serialises writers of one conversation, so seq is gapless and commit order is seq order.
//! Publishing those rows to NATS is the relay's job; a committed row is never lost.

use parley_shared::events::Event;
use parley_shared::ids::{ConversationId, EventId, UserId};
use sqlx::PgConnection;

use crate::error::ApiError;
use uuid::Uuid;

/// Proof that an event was written to the outbox: the relay reads the row itself, so this only
/// makes forgetting to wake it (`Outbox::committed` after commit) a compiler warning.
#[must_use = "hand it to `Outbox::committed` after commit, so the relay publishes the event at once"]
#[derive(Debug)]
pub struct Recorded(());

impl Recorded {
    /// Channel publications were written to `channel_publications` (the relay publishes them too).
    pub fn publications() -> Self {
        Self(())
    }

    /// Notification changes were written to `notification_changes` (see [`crate::notifications`]).
    pub fn notifications() -> Self {
        Self(())
    }

    /// Messages were stored with their events by [`crate::sending`].
    pub fn messages() -> Self {
        Self(())
    }
}

/// The column values of one `events` row, for writers that insert it themselves (in the same
/// statement as their own change, to save a round trip on a hot path).
#[derive(Debug)]
pub struct EventRow {
    pub id: EventId,
    pub conversation: ConversationId,
    pub seq: i64,
    pub kind: &'static str,
    pub actor: UserId,
    pub data: serde_json::Value,
    /// The writing request's `traceparent`, so the relay's publish joins the request's trace.
    pub trace_context: Option<String>,
    /// The notifications its write created, which the relay publishes with it (see
    /// [`crate::notifications`]).
    pub notifications: Vec<Uuid>,
}

impl EventRow {
    pub fn new(conversation: ConversationId, seq: i64, actor: UserId, event: &Event) -> Self {
        Self {
            id: EventId::from_uuid(Uuid::now_v7()),
            conversation,
            seq,
            kind: event.kind(),
            actor,
            data: event.data(),
            trace_context: parley_shared::telemetry::current_traceparent(),
            notifications: Vec::new(),
        }
    }

    /// `events.notifications`: null when it announces none.
    pub fn notifications_column(&self) -> Option<&[Uuid]> {
        (!self.notifications.is_empty()).then_some(self.notifications.as_slice())
    }

    /// What the caller hands to the publisher once the row has been inserted and committed.
    pub fn recorded(&self) -> Recorded {
        Recorded(())
    }
}

/// Room a NATS message needs around an event's `{"type","data"}`: the envelope's ids, seq,
/// actor and timestamp (about 200 bytes) and the headers (`traceparent`, `Nats-Msg-Id`, about
/// 150), with margin.
const ENVELOPE_ALLOWANCE: usize = 1024;

/// Refuses, before anything is written, an event NATS could never carry (larger than the
/// server's `max_payload`): the relay could not publish it, and members would only find it by
/// reading the conversation's events over REST. `field` names the request field that made it
/// that large.
pub fn ensure_publishable(nats: &async_nats::Client, event: &Event, field: &str) -> Result<(), ApiError> {
    let limit = nats.max_payload().saturating_sub(ENVELOPE_ALLOWANCE);
    let size = serde_json::to_vec(event).map_or(usize::MAX, |json| json.len());
    if size > limit {
        return Err(ApiError::payload_too_large(
            field,
            format!("the event this request makes ({size} bytes) is larger than NATS carries ({limit} bytes)"),
        ));
    }
    Ok(())
}

/// Takes the conversation's next seq, locking its row until commit. Writers call this *before*
/// checking membership, so the check sees any membership change that committed while they
/// waited for the lock. `activity` also moves the conversation up members' lists; receipts do not.
pub async fn next_seq(tx: &mut PgConnection, conversation: ConversationId, activity: bool) -> Result<i64, ApiError> {
    sqlx::query_scalar(
        "update conversations
            set last_seq = last_seq + 1,
                last_activity_at = case when $2 then now() else last_activity_at end
          where id = $1
      returning last_seq",
    )
    .bind(conversation.as_uuid())
    .bind(activity)
    .fetch_optional(tx)
    .await?
    .ok_or_else(|| ApiError::not_found("conversation"))
}

/// Appends `event` at `seq`, which [`next_seq`] handed out in this transaction.
pub async fn append(
    tx: &mut PgConnection,
    conversation: ConversationId,
    seq: i64,
    actor: UserId,
    event: &Event,
) -> Result<Recorded, sqlx::Error> {
    append_row(tx, &EventRow::new(conversation, seq, actor, event)).await
}

/// Appends `row` (its seq from [`next_seq`] in this transaction).
pub async fn append_row(tx: &mut PgConnection, row: &EventRow) -> Result<Recorded, sqlx::Error> {
    sqlx::query(
        "insert into events (id, conversation_id, seq, type, actor_id, data, trace_context, notifications)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(row.id.as_uuid())
    .bind(row.conversation.as_uuid())
    .bind(row.seq)
    .bind(row.kind)
    .bind(row.actor.as_uuid())
    .bind(&row.data)
    .bind(&row.trace_context)
    .bind(row.notifications_column())
    .execute(tx)
    .await?;
    Ok(row.recorded())
}
