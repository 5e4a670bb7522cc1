//! Committing sent messages, many per transaction (see [`crate::group_commit`]): the messages
//! queued for one conversation get one seq range, one statement and one commit, and each
//! request is answered with its own seq or its own error.
//!
//! The guarantees of one message per transaction hold: the conversation's row is locked first,
//! so the statement's snapshot sees every membership change committed before; seqs follow
//! arrival order without gaps; each message's event row is written with it (the outbox); a
//! 2xx is sent only after the commit. A message queued alone takes the statements one message
//! always took.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use parley_shared::ids::{ConversationId, MessageId, UserId};
use prometheus_client::metrics::histogram::Histogram;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{ApiError, connection_lost, database_unavailable};
use crate::group_commit::{Committer, GroupCommit};
use crate::notifications::{self, MessageNotice};
use crate::outbox::EventRow;
use crate::relay::Outbox;
use crate::routes::messages::mentions_column;

/// Most messages one transaction commits.
const MAX_BATCH: usize = 128;

/// One message to store, with its `message.created` event.
#[derive(Debug)]
pub struct NewMessageWrite {
    pub id: MessageId,
    pub author: UserId,
    pub client_message_id: Option<String>,
    pub body: Option<String>,
    pub reply_to: Option<Uuid>,
    pub attachment: Option<serde_json::Value>,
    /// The members it names (checked by the caller; notified only if members at commit).
    pub mentions: Vec<Uuid>,
    /// Its `message.created` event; the seq in it is not used (the group's commit assigns it).
    pub event: EventRow,
    /// The request's `Idempotency-Key` and what it must match when repeated.
    pub idempotency: Option<(String, serde_json::Value)>,
}

impl NewMessageWrite {
    /// Whether it may notify anyone: its event announces the notifications it may create.
    fn notifies(&self) -> bool {
        !self.event.notifications.is_empty()
    }

    /// The message as stored at `seq`, for the notifications it causes.
    fn notice(&self, seq: i64) -> MessageNotice {
        MessageNotice {
            message_id: *self.id.as_uuid(),
            author: *self.author.as_uuid(),
            seq,
            text: self.body.clone(),
            mentions: self.mentions.clone(),
            reply_to: self.reply_to,
            ids: self.event.notifications.clone(),
        }
    }
}

/// What became of one message.
#[derive(Debug)]
pub enum Sent {
    Stored {
        seq: i64,
        created_at: DateTime<Utc>,
    },
    /// Its `Idempotency-Key` was already taken: answer with what that request created.
    KeyTaken,
}

pub type Sending = Arc<GroupCommit<MessageCommitter>>;

pub fn sending(db: PgPool, outbox: Outbox, per_commit: Histogram) -> Sending {
    GroupCommit::new(MessageCommitter { db, outbox, per_commit }, MAX_BATCH)
}

#[derive(Debug)]
pub struct MessageCommitter {
    db: PgPool,
    outbox: Outbox,
    per_commit: Histogram,
}

impl Committer for MessageCommitter {
    type Key = ConversationId;
    type Write = NewMessageWrite;
    type Outcome = Result<Sent, ApiError>;

    async fn commit(&self, conversation: &ConversationId, writes: Vec<NewMessageWrite>) -> Vec<Self::Outcome> {
        let span = tracing::debug_span!("messages.commit", conversation_id = %conversation, messages = writes.len());
        self.commit_all(*conversation, &writes, Retry::Allowed).instrument(span).await
    }
}

impl MessageCommitter {
    /// Stores `writes` in one transaction; when the database refuses it for one of them (a
    /// value it cannot store), halves it and tries again, so that only that write gets the
    /// error and the others queued beside it are stored (still in arrival order). A transaction
    /// whose connection was lost before its COMMIT was sent stored nothing: it is tried once
    /// more, on a connection the pool has just pinged.
    fn commit_all<'a>(
        &'a self,
        conversation: ConversationId,
        writes: &'a [NewMessageWrite],
        retry: Retry,
    ) -> BoxFuture<'a, Vec<Result<Sent, ApiError>>> {
        Box::pin(async move {
            let stored = match writes {
                [write] => self.store_one(conversation, write).await.map(|outcome| vec![outcome]),
                _ => self.store(conversation, writes).await,
            };
            match stored {
                Ok(outcomes) => outcomes,
                Err(Failed { error, at_commit: false })
                    if retry == Retry::Allowed && connection_lost(&error).is_some() =>
                {
                    tracing::info!(%error, messages = writes.len(), "retrying messages on a fresh database connection");
                    crate::db::distrust_pooled_connections();
                    self.commit_all(conversation, writes, Retry::Spent).await
                }
                Err(Failed { error, .. }) if database_unavailable(&error) => {
                    tracing::warn!(%error, "database unavailable");
                    writes
                        .iter()
                        .map(|_| Err(ApiError::unavailable("the database is unavailable; retry shortly")))
                        .collect()
                }
                Err(Failed { error, .. }) if writes.len() > 1 => {
                    tracing::debug!(%error, messages = writes.len(), "a batch of messages failed; halving it");
                    let (first, second) = writes.split_at(writes.len() / 2);
                    let mut outcomes = self.commit_all(conversation, first, retry).await;
                    outcomes.extend(self.commit_all(conversation, second, retry).await);
                    outcomes
                }
                Err(Failed { error, .. }) => vec![Err(error.into())],
            }
        })
    }

    /// One message alone (no other was queued): the statements one message has always taken,
    /// which cost PostgreSQL about 30% less CPU than the batch statement does for one row
    /// (`bench e2e`: 1,122 against 1,586 µs per message).
    async fn store_one(
        &self,
        conversation: ConversationId,
        write: &NewMessageWrite,
    ) -> Result<Result<Sent, ApiError>, Failed> {
        let notifies = write.notifies();
        let mut tx = if notifies {
            // The notifications' statement takes arrays: see `store` on its plans.
            self.db.begin_with(GENERIC_PLANS).await?
        } else {
            self.db.begin().await?
        };
        if let Some((key, request)) = &write.idempotency {
            // A concurrent request with the same key waits here for the other to commit, then
            // finds the key taken.
            let claimed: Option<Uuid> = sqlx::query_scalar(
                "insert into idempotency_keys (user_id, key, request, message_id) values ($1, $2, $3, $4)
                 on conflict (user_id, key) do nothing returning message_id",
            )
            .bind(write.author.as_uuid())
            .bind(key)
            .bind(request)
            .bind(write.id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
            if claimed.is_none() {
                return Ok(Ok(Sent::KeyTaken));
            }
        }
        // The seq's update locks the conversation first; the next statements' snapshots are
        // taken after it, so the membership checks see any removal committed meanwhile.
        let seq: Option<i64> = sqlx::query_scalar(
            "update conversations set last_seq = last_seq + 1, last_activity_at = now() where id = $1 returning last_seq",
        )
        .bind(conversation.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(seq) = seq else { return Ok(Err(ApiError::not_found("conversation"))) };
        if let Some(reply_to) = write.reply_to {
            let visible: Option<bool> = sqlx::query_scalar(
                "select exists (select 1 from messages where id = $1 and conversation_id = $2 and seq >= m.visible_from_seq)
                   from conversation_members m where m.conversation_id = $2 and m.user_id = $3",
            )
            .bind(reply_to)
            .bind(conversation.as_uuid())
            .bind(write.author.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
            match visible {
                None => return Ok(Err(ApiError::not_found("conversation"))),
                Some(false) => return Ok(Err(ApiError::bad_request("reply_to", "not a message of this conversation"))),
                Some(true) => {}
            }
        }
        // The message, its membership check and its event in one statement.
        let created_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "with message as (
                 insert into messages (id, conversation_id, seq, author_id, client_message_id, body, reply_to, attachment, mentions)
                 select $1, $2, $3, $4, $5, $6, $7, $8, $13
                  where exists (select 1 from conversation_members where conversation_id = $2 and user_id = $4)
                 returning created_at
             ), event as (
                 insert into events (id, conversation_id, seq, type, actor_id, data, trace_context, notifications)
                 select $9, $2, $3, $10, $4, $11, $12, $14 from message
             )
             select created_at from message",
        )
        .bind(write.id.as_uuid())
        .bind(conversation.as_uuid())
        .bind(seq)
        .bind(write.author.as_uuid())
        .bind(&write.client_message_id)
        .bind(&write.body)
        .bind(write.reply_to)
        .bind(&write.attachment)
        .bind(write.event.id.as_uuid())
        .bind(write.event.kind)
        .bind(&write.event.data)
        .bind(&write.event.trace_context)
        .bind(mentions_column(&write.mentions))
        .bind(write.event.notifications_column())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(created_at) = created_at else { return Ok(Err(ApiError::not_found("conversation"))) };
        if notifies {
            notifications::for_messages(&mut tx, *conversation.as_uuid(), &[write.notice(seq)]).await?;
        }
        tx.commit().await.map_err(|error| Failed { error, at_commit: true })?;
        self.committed(1);
        Ok(Ok(Sent::Stored { seq, created_at }))
    }

    /// Wakes the relay and counts the commit.
    fn committed(&self, stored: usize) {
        if stored > 0 {
            self.outbox.committed(crate::outbox::Recorded::messages());
            self.per_commit.observe(stored as f64);
        }
    }

    /// One transaction for `writes`; one outcome each, in order.
    async fn store(
        &self,
        conversation: ConversationId,
        writes: &[NewMessageWrite],
    ) -> Result<Vec<Result<Sent, ApiError>>, Failed> {
        // PostgreSQL would plan the statement below afresh for every execution (its custom
        // plans, knowing the arrays' lengths, look cheaper than the generic one), about 1 ms of
        // CPU each time, more than running it; the generic plan serves every batch size.
        let mut tx = self.db.begin_with(GENERIC_PLANS).await?;
        // The lock comes first and alone: the next statement's snapshot is then taken after
        // it, so the membership checks see any removal committed while this waited.
        let exists: Option<i32> = sqlx::query_scalar("select 1 from conversations where id = $1 for no key update")
            .bind(conversation.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(writes.iter().map(|_| Err(ApiError::not_found("conversation"))).collect());
        }
        let column = |field: fn(&NewMessageWrite) -> Option<String>| writes.iter().map(field).collect::<Vec<_>>();
        let announced: Vec<(Uuid, i64)> = (1..)
            .zip(writes)
            .flat_map(|(ord, write)| write.event.notifications.iter().map(move |id| (*id, ord)))
            .collect();
        let rows: Vec<Row> = sqlx::query_as(STORE)
            .bind(conversation.as_uuid())
            .bind(writes.iter().map(|write| *write.id.as_uuid()).collect::<Vec<_>>())
            .bind(writes.iter().map(|write| *write.author.as_uuid()).collect::<Vec<_>>())
            .bind(column(|write| write.client_message_id.clone()))
            .bind(column(|write| write.body.clone()))
            .bind(writes.iter().map(|write| write.reply_to).collect::<Vec<_>>())
            .bind(writes.iter().map(|write| write.attachment.clone()).collect::<Vec<_>>())
            .bind(writes.iter().map(|write| *write.event.id.as_uuid()).collect::<Vec<_>>())
            .bind(writes.iter().map(|write| write.event.kind).collect::<Vec<_>>())
            .bind(writes.iter().map(|write| write.event.data.clone()).collect::<Vec<_>>())
            .bind(column(|write| write.event.trace_context.clone()))
            .bind(column(|write| write.idempotency.as_ref().map(|(key, _)| key.clone())))
            .bind(
                writes
                    .iter()
                    .map(|write| write.idempotency.as_ref().map(|(_, request)| request.clone()))
                    .collect::<Vec<_>>(),
            )
            .bind(writes.iter().map(|write| mentions_column(&write.mentions)).collect::<Vec<_>>())
            .bind(announced.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(announced.iter().map(|(_, ord)| *ord).collect::<Vec<_>>())
            .fetch_all(&mut *tx)
            .await?;
        let notices: Vec<MessageNotice> = writes
            .iter()
            .zip(&rows)
            .filter(|(write, _)| write.notifies())
            .filter_map(|(write, row)| Some(write.notice(row.seq?)))
            .collect();
        notifications::for_messages(&mut tx, *conversation.as_uuid(), &notices).await?;
        tx.commit().await.map_err(|error| Failed { error, at_commit: true })?;
        self.committed(rows.iter().filter(|row| row.seq.is_some()).count());
        Ok(rows
            .into_iter()
            .map(|row| match row {
                Row { is_member: false, .. } => Err(ApiError::not_found("conversation")),
                Row { reply_ok: false, .. } => {
                    Err(ApiError::bad_request("reply_to", "not a message of this conversation"))
                }
                Row { seq: Some(seq), created_at: Some(created_at), .. } => Ok(Sent::Stored { seq, created_at }),
                Row { .. } => Ok(Sent::KeyTaken),
            })
            .collect())
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    is_member: bool,
    reply_ok: bool,
    seq: Option<i64>,
    created_at: Option<DateTime<Utc>>,
}

/// Stores the accepted messages of a batch and their events; one [`Row`] per write, in order.
/// A write is accepted when its author is a member, its `reply_to` (if any) is a message of
/// the conversation the author may see, and its idempotency key (if any) was free. Accepted
/// writes take consecutive seqs in arrival order; rows are inserted in seq order, so the
/// events' `position` follows seq (see the `position` migration).
const STORE: &str = "
with input as (
    select * from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::uuid[], $7::jsonb[],
                         $8::uuid[], $9::text[], $10::jsonb[], $11::text[], $12::text[], $13::jsonb[], $14::jsonb[])
        with ordinality as input(message_id, author_id, client_message_id, body, reply_to, attachment,
                                 event_id, event_kind, event_data, trace_context, idempotency_key, idempotency_request,
                                 mentions, ord)
), membership as materialized (
    -- A subquery per write, not a join: a join's generic plan reads every member of the
    -- conversation (10,000 rows for a big group) where this reads one row per author.
    select input.*, (select member.visible_from_seq from conversation_members member
                      where member.conversation_id = $1 and member.user_id = input.author_id) as visible_from_seq
      from input
), checked as (
    select membership.*, visible_from_seq is not null as is_member,
           reply_to is null or exists (
               select 1 from messages replied
                where replied.id = membership.reply_to and replied.conversation_id = $1
                  and replied.seq >= membership.visible_from_seq) as reply_ok
      from membership
), claimed as (
    -- In key order, so two batches claiming the same keys cannot wait for each other.
    insert into idempotency_keys (user_id, key, request, message_id)
    select author_id, idempotency_key, idempotency_request, message_id from checked
     where is_member and reply_ok and idempotency_key is not null
     order by author_id, idempotency_key
        on conflict (user_id, key) do nothing
 returning message_id
), accepted as (
    select checked.*, row_number() over (order by ord) as n, count(*) over () as total
      from checked
     where is_member and reply_ok and (idempotency_key is null or message_id in (select message_id from claimed))
), bumped as (
    update conversations set last_seq = last_seq + (select count(*) from accepted), last_activity_at = now()
     where id = $1 and exists (select 1 from accepted)
 returning last_seq
), numbered as (
    select accepted.*, bumped.last_seq - accepted.total + accepted.n as seq from accepted, bumped
), stored as (
    insert into messages (id, conversation_id, seq, author_id, client_message_id, body, reply_to, attachment, mentions)
    select message_id, $1, seq, author_id, client_message_id, body, reply_to, attachment, mentions from numbered order by seq
 returning id, seq, created_at
), recorded as (
    -- $15 lists the notification ids each write's event announces, $16 the write (ord) of each.
    insert into events (id, conversation_id, seq, type, actor_id, data, trace_context, notifications)
    select event_id, $1, seq, event_kind, author_id, event_data, trace_context,
           (select array_agg(announced.id) from unnest($15::uuid[], $16::bigint[]) as announced (id, ord)
             where announced.ord = numbered.ord)
      from numbered order by seq
)
select checked.is_member, checked.reply_ok, stored.seq, stored.created_at
  from checked left join stored on stored.id = checked.message_id
 order by checked.ord";

/// Begins a transaction whose statements use their generic plans.
const GENERIC_PLANS: &str = "begin; set local plan_cache_mode = force_generic_plan";

/// Whether a failed batch may still be tried once more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    Allowed,
    Spent,
}

/// A failed transaction, and whether it failed at its COMMIT (then it may have been stored).
#[derive(Debug)]
struct Failed {
    error: sqlx::Error,
    at_commit: bool,
}

impl From<sqlx::Error> for Failed {
    fn from(error: sqlx::Error) -> Self {
        Self { error, at_commit: false }
    }
}
