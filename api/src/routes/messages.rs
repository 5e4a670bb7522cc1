//! `/v1/conversations/{id}/messages`: send (idempotent), page through, edit, delete.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use parley_shared::events::{self, Event, MessageCreated, MessageDeleted, MessageEdited};
use parley_shared::ids::{ConversationId, MessageId, UserId};
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sqlx::PgPool;
use uuid::Uuid;

use super::{ApiTags, examples};
use crate::auth::BearerAuth;
use crate::error::{ApiError, ProblemCode};
use crate::notifications::{self, MessageNotice};
use crate::sending::{NewMessageWrite, Sent};
use crate::state::AppState;
use crate::text::{Text, is_https_url};
use crate::{membership, outbox};

/// File metadata; the file itself lives wherever the application stores files.
#[derive(Object, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[oai(skip_serializing_if_is_none, example)]
pub struct Attachment {
    /// An `https://` URL.
    #[oai(validator(max_length = 2048))]
    pub url: Text,
    #[oai(validator(pattern = r"^[\w.+-]+/[\w.+-]+$", max_length = 255))]
    pub mime_type: Text,
    #[oai(validator(minimum(value = "0")))]
    pub size_bytes: i64,
    #[oai(validator(max_length = 255))]
    pub name: Option<Text>,
}

#[derive(Object, Debug, serde::Serialize)]
#[oai(skip_serializing_if_is_none, example)]
pub struct NewMessage {
    /// The text: trimmed, non-empty, at most the configured length (default 4,000 characters).
    /// Optional only when the message has an attachment.
    pub text: Option<Text>,
    /// A message of the same conversation this one answers; its author is notified (`reply`).
    pub reply_to: Option<Uuid>,
    pub attachment: Option<Attachment>,
    /// Members of the conversation the message names (at most 50); each is notified
    /// (`mention`). Anyone else is a 400.
    #[oai(validator(max_items = 50))]
    pub mentions: Option<Vec<Uuid>>,
    /// The sender's own id for this message; echoed in the `message.created` event so the
    /// sender's devices can match it with their optimistic copy.
    #[oai(validator(min_length = 1, max_length = 100))]
    pub client_message_id: Option<Text>,
}

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct MessagePatch {
    /// The new text, with the same rules as when sending.
    pub text: Text,
    /// The members the message names from now on (at most 50); left out, they stay as they
    /// were. Members named for the first time are notified.
    #[oai(validator(max_items = 50))]
    pub mentions: Option<Vec<Uuid>>,
}

#[derive(Object, Clone, Debug)]
#[oai(skip_serializing_if_is_none)]
pub struct ReactionCount {
    pub emoji: String,
    pub count: i64,
    /// Whether the caller is among those who reacted.
    pub me: bool,
}

#[derive(Object, Clone, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct Message {
    pub id: Uuid,
    pub conversation_id: Uuid,
    /// Position in the conversation's event sequence.
    pub seq: i64,
    pub author_id: Uuid,
    /// Absent once the message is deleted.
    pub text: Option<String>,
    pub reply_to: Option<Uuid>,
    pub attachment: Option<Attachment>,
    /// The members the message names.
    pub mentions: Vec<Uuid>,
    pub client_message_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub reactions: Vec<ReactionCount>,
    /// How many members other than the author have read this message.
    pub read_count: i64,
    /// Who they are (at most 100; `read_count` has the total).
    pub read_by: Vec<Uuid>,
}

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct MessagePage {
    /// In seq order.
    pub items: Vec<Message>,
    /// More messages lie beyond this page in the direction asked for.
    pub has_more: bool,
}

#[derive(ApiResponse, Debug)]
pub enum SendResponse {
    /// The message was stored (or, for a repeated `Idempotency-Key`, had been).
    #[oai(status = 201)]
    Created(Json<Message>),
}

#[derive(ApiResponse, Debug)]
pub enum DeleteResponse {
    /// The message is deleted (or already was).
    #[oai(status = 204)]
    Deleted,
}

#[derive(Default)]
pub struct MessagesApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Messages")]
impl MessagesApi {
    /// Send a message
    ///
    /// With an `Idempotency-Key`, a retried request (same key, same body) returns the message
    /// the first one created instead of sending it twice; the same key with another body is 422.
    #[oai(path = "/conversations/:id/messages", method = "post", operation_id = "sendMessage")]
    async fn send(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        /// Any client-chosen string up to 255 characters, unique per user and message.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255))]
        idempotency_key: Header<Option<String>>,
        body: Json<NewMessage>,
    ) -> Result<SendResponse, ApiError> {
        let (caller, conversation) = (auth.0.id, ConversationId::from_uuid(id.0));
        let text = match (&body.0.text, &body.0.attachment) {
            (Some(text), _) => Some(validate_text(text, state.limits.message_max_chars)?),
            (None, Some(_)) => None,
            (None, None) => return Err(ApiError::bad_request("text", "a message needs text, an attachment or both")),
        };
        if let Some(attachment) = &body.0.attachment {
            validate_attachment(attachment)?;
        }
        let mentions = validate_mentions(&state.db, conversation, caller, body.0.mentions.as_deref()).await?;
        let message_id = MessageId::from_uuid(Uuid::now_v7());
        let attachment = body.0.attachment.clone();
        let client_message_id = body.0.client_message_id.clone().map(String::from);
        let event = Event::MessageCreated(MessageCreated {
            message_id,
            author_id: caller,
            body: text.clone(),
            reply_to: body.0.reply_to.map(MessageId::from_uuid),
            attachment: attachment.clone().map(|a| events::Attachment {
                url: a.url.into(),
                mime_type: a.mime_type.into(),
                size_bytes: a.size_bytes,
                name: a.name.map(Into::into),
            }),
            client_message_id: client_message_id.clone(),
            mentions: mentions.iter().copied().map(UserId::from_uuid).collect(),
        });
        outbox::ensure_publishable(&state.nats, &event, "text")?;
        // Seq 0 for now: the message's seq is taken when its group is stored.
        let event = outbox::EventRow {
            notifications: notifications::candidate_ids(&mentions, body.0.reply_to),
            ..outbox::EventRow::new(conversation, 0, caller, &event)
        };
        let idempotency =
            idempotency_key.0.map(|key| (key, serde_json::json!({ "conversation_id": id.0, "message": &body.0 })));
        let write = NewMessageWrite {
            id: message_id,
            author: caller,
            client_message_id: client_message_id.clone(),
            body: text.clone(),
            reply_to: body.0.reply_to,
            attachment: attachment.as_ref().map(serde_json::to_value).transpose().map_err(|_| ApiError::internal())?,
            mentions: mentions.clone(),
            event,
            idempotency: idempotency.clone(),
        };
        let sent = state.sending.submit(conversation, write).await.map_err(|_| ApiError::internal())??;
        let (seq, created_at) = match sent {
            Sent::Stored { seq, created_at } => (seq, created_at),
            Sent::KeyTaken => {
                let (key, request) = idempotency.ok_or_else(ApiError::internal)?;
                return replay(&state.db, caller, &key, &request).await;
            }
        };
        // A new message has no reactions and no readers: answer without reading it back.
        Ok(SendResponse::Created(Json(Message {
            id: *message_id.as_uuid(),
            conversation_id: id.0,
            seq,
            author_id: *caller.as_uuid(),
            text,
            reply_to: body.0.reply_to,
            attachment,
            mentions,
            client_message_id,
            created_at,
            edited_at: None,
            deleted: false,
            deleted_at: None,
            reactions: Vec::new(),
            read_count: 0,
            read_by: Vec::new(),
        })))
    }

    /// Page through messages
    ///
    /// Without cursors: the latest `limit` messages. `before_seq`: the `limit` messages just
    /// before it; `after_seq`: the `limit` messages just after it. Always returned in seq order.
    /// Deleted messages appear as tombstones without text.
    #[oai(path = "/conversations/:id/messages", method = "get", operation_id = "listMessages")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        #[oai(validator(minimum(value = "0")))] before_seq: Query<Option<i64>>,
        #[oai(validator(minimum(value = "0")))] after_seq: Query<Option<i64>>,
        /// 1 to 100.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<i64>,
    ) -> Result<Json<MessagePage>, ApiError> {
        let caller = auth.0.id;
        let member = membership::require(&state.db, ConversationId::from_uuid(id.0), caller).await?;
        let ascending = after_seq.0.is_some() && before_seq.0.is_none();
        // Two statement texts rather than one with a computed sort key, so both walk the
        // (conversation_id, seq) index instead of sorting the whole history.
        let order = if ascending { "asc" } else { "desc" };
        let query = format!(
            "select {MESSAGE_COLUMNS} from messages
              where conversation_id = $1 and seq >= $2
                and ($3::bigint is null or seq < $3) and ($4::bigint is null or seq > $4)
              order by seq {order} limit $5"
        );
        let mut rows: Vec<MessageRow> = sqlx::query_as(&query)
            .bind(id.0)
            .bind(member.visible_from_seq)
            .bind(before_seq.0)
            .bind(after_seq.0)
            .bind(limit.0 + 1)
            .fetch_all(&state.db)
            .await?;
        let has_more = rows.len() > usize::try_from(limit.0).unwrap_or(usize::MAX);
        rows.truncate(usize::try_from(limit.0).unwrap_or(usize::MAX));
        let mut items = enrich(&state.db, caller, rows).await?;
        items.sort_by_key(|message| message.seq);
        Ok(Json(MessagePage { items, has_more }))
    }

    /// One message
    ///
    /// As a page shows it (a deleted message is a tombstone without text). 404 when the message
    /// is not in this conversation or was sent before the caller could see it.
    #[oai(path = "/conversations/:id/messages/:message_id", method = "get", operation_id = "getMessage")]
    async fn get(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        message_id: Path<Uuid>,
    ) -> Result<Json<Message>, ApiError> {
        let caller = auth.0.id;
        let member = membership::require(&state.db, ConversationId::from_uuid(id.0), caller).await?;
        let rows: Vec<MessageRow> = sqlx::query_as(&format!(
            "select {MESSAGE_COLUMNS} from messages where id = $1 and conversation_id = $2 and seq >= $3"
        ))
        .bind(message_id.0)
        .bind(id.0)
        .bind(member.visible_from_seq)
        .fetch_all(&state.db)
        .await?;
        enrich(&state.db, caller, rows).await?.pop().map(Json).ok_or_else(|| ApiError::not_found("message"))
    }

    /// Edit a message
    ///
    /// Only its author, and only within the edit window (default 15 minutes; 403
    /// `edit_window_expired` after it). A deleted message cannot be edited (409).
    #[oai(path = "/conversations/:id/messages/:message_id", method = "patch", operation_id = "editMessage")]
    async fn edit(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        message_id: Path<Uuid>,
        body: Json<MessagePatch>,
    ) -> Result<Json<Message>, ApiError> {
        let (caller, conversation) = (auth.0.id, ConversationId::from_uuid(id.0));
        let text = validate_text(&body.0.text, state.limits.message_max_chars)?;
        let mentions = match body.0.mentions.as_deref() {
            Some(named) => Some(validate_mentions(&state.db, conversation, caller, Some(named)).await?),
            None => None,
        };
        let mut tx = state.db.begin().await?;
        let seq = outbox::next_seq(&mut tx, conversation, false).await?;
        let member = membership::require(&mut *tx, conversation, caller).await?;
        let target = find(&mut tx, id.0, message_id.0, member.visible_from_seq).await?;
        if target.author_id != *caller.as_uuid() {
            return Err(ApiError::forbidden(ProblemCode::NotAuthor, "only the author may edit a message"));
        }
        if target.deleted {
            return Err(ApiError::conflict(ProblemCode::MessageDeleted, "the message has been deleted"));
        }
        let window = chrono::Duration::from_std(state.limits.edit_window).unwrap_or(chrono::Duration::MAX);
        if Utc::now() - target.created_at > window {
            return Err(ApiError::forbidden(
                ProblemCode::EditWindowExpired,
                "the edit window for this message has closed",
            ));
        }
        let mentions = mentions.unwrap_or_else(|| target.mentions.clone());
        let edited_at: DateTime<Utc> = sqlx::query_scalar(
            "update messages set body = $2, mentions = $3, edited_at = now() where id = $1 returning edited_at",
        )
        .bind(message_id.0)
        .bind(&text)
        .bind(mentions_column(&mentions))
        .fetch_one(&mut *tx)
        .await?;
        let newly_named: Vec<Uuid> = mentions.iter().filter(|user| !target.mentions.contains(user)).copied().collect();
        let notice = MessageNotice {
            message_id: message_id.0,
            author: *caller.as_uuid(),
            seq: target.seq,
            text: Some(text.clone()),
            ids: notifications::candidate_ids(&newly_named, None),
            mentions: newly_named,
            reply_to: None,
        };
        if notice.notifies() {
            notifications::for_messages(&mut tx, id.0, std::slice::from_ref(&notice)).await?;
        }
        let event = Event::MessageEdited(MessageEdited {
            message_id: MessageId::from_uuid(message_id.0),
            body: Some(text),
            edited_at,
            mentions: mentions.into_iter().map(UserId::from_uuid).collect(),
        });
        outbox::ensure_publishable(&state.nats, &event, "text")?;
        let row =
            outbox::EventRow { notifications: notice.ids, ..outbox::EventRow::new(conversation, seq, caller, &event) };
        let recorded = outbox::append_row(&mut tx, &row).await?;
        crate::db::commit(tx).await?;
        state.outbox.committed(recorded);
        Ok(Json(load_one(&state.db, caller, message_id.0).await?))
    }

    /// Delete a message
    ///
    /// Its author, or an owner of the group. The text and attachment are erased everywhere,
    /// including from stored events; the tombstone keeps its seq.
    #[oai(path = "/conversations/:id/messages/:message_id", method = "delete", operation_id = "deleteMessage")]
    async fn delete(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        message_id: Path<Uuid>,
    ) -> Result<DeleteResponse, ApiError> {
        let (caller, conversation) = (auth.0.id, ConversationId::from_uuid(id.0));
        let mut tx = state.db.begin().await?;
        let seq = outbox::next_seq(&mut tx, conversation, false).await?;
        let member = membership::require(&mut *tx, conversation, caller).await?;
        let target = find(&mut tx, id.0, message_id.0, member.visible_from_seq).await?;
        if target.author_id != *caller.as_uuid() && !(member.is_group() && member.is_owner()) {
            return Err(ApiError::forbidden(
                ProblemCode::NotAuthor,
                "only the author or a group owner may delete a message",
            ));
        }
        if target.deleted {
            tx.rollback().await?;
            return Ok(DeleteResponse::Deleted);
        }
        sqlx::query(
            "update messages set body = null, attachment = null, mentions = null, deleted_at = now() where id = $1",
        )
        .bind(message_id.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query("delete from reactions where message_id = $1").bind(message_id.0).execute(&mut *tx).await?;
        // The text also lives in the events that created and edited the message.
        sqlx::query(
            "update events set data = data - 'body' - 'attachment' - 'mentions'
              where conversation_id = $1 and type in ('message.created', 'message.edited')
                and data ->> 'message_id' = $2::text",
        )
        .bind(id.0)
        .bind(message_id.0)
        .execute(&mut *tx)
        .await?;
        let event = Event::MessageDeleted(MessageDeleted { message_id: MessageId::from_uuid(message_id.0) });
        let recorded = outbox::append(&mut tx, conversation, seq, caller, &event).await?;
        crate::db::commit(tx).await?;
        state.outbox.committed(recorded);
        Ok(DeleteResponse::Deleted)
    }
}

fn default_limit() -> i64 {
    50
}

/// Trimmed, non-empty, at most `max_chars` characters.
fn validate_text(text: &str, max_chars: usize) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::bad_request("text", "text must not be empty"));
    }
    if text.chars().count() > max_chars {
        return Err(ApiError::bad_request("text", format!("text is longer than {max_chars} characters")));
    }
    if text.contains('\0') {
        return Err(ApiError::bad_request("text", "text must not contain NUL characters"));
    }
    Ok(text.to_owned())
}

/// The distinct users `mentions` names, each a member of the conversation (else 400). A caller
/// who is not a member gets 404 first, so that it cannot learn who is.
async fn validate_mentions(
    db: &PgPool,
    conversation: ConversationId,
    caller: UserId,
    mentions: Option<&[Uuid]>,
) -> Result<Vec<Uuid>, ApiError> {
    let mut named: Vec<Uuid> = mentions.unwrap_or_default().to_vec();
    named.sort_unstable();
    named.dedup();
    if named.is_empty() {
        return Ok(named);
    }
    let (caller_is_member, members): (bool, i64) = sqlx::query_as(
        "select coalesce(bool_or(user_id = $3), false), count(*) filter (where user_id = any($2))
           from conversation_members where conversation_id = $1 and (user_id = any($2) or user_id = $3)",
    )
    .bind(conversation.as_uuid())
    .bind(&named)
    .bind(caller.as_uuid())
    .fetch_one(db)
    .await?;
    if !caller_is_member {
        return Err(ApiError::not_found("conversation"));
    }
    if usize::try_from(members).ok() != Some(named.len()) {
        return Err(ApiError::bad_request("mentions", "every mentioned user must be a member of the conversation"));
    }
    Ok(named)
}

/// `messages.mentions`: a JSON array of user ids, null for none.
pub fn mentions_column(mentions: &[Uuid]) -> Option<serde_json::Value> {
    (!mentions.is_empty()).then(|| serde_json::json!(mentions))
}

fn validate_attachment(attachment: &Attachment) -> Result<(), ApiError> {
    if !is_https_url(&attachment.url) {
        return Err(ApiError::bad_request("attachment.url", "the attachment URL must be an https:// URL"));
    }
    Ok(())
}

async fn replay(db: &PgPool, caller: UserId, key: &str, request: &serde_json::Value) -> Result<SendResponse, ApiError> {
    let (same_request, message_id): (bool, Uuid) =
        sqlx::query_as("select request = $3, message_id from idempotency_keys where user_id = $1 and key = $2")
            .bind(caller.as_uuid())
            .bind(key)
            .bind(request)
            .fetch_one(db)
            .await?;
    if !same_request {
        return Err(ApiError::unprocessable(
            ProblemCode::IdempotencyKeyReused,
            "this Idempotency-Key was used for a different request",
        ));
    }
    Ok(SendResponse::Created(Json(load_one(db, caller, message_id).await?)))
}

struct Target {
    author_id: Uuid,
    seq: i64,
    created_at: DateTime<Utc>,
    deleted: bool,
    mentions: Vec<Uuid>,
}

/// The message, locked for update, if it belongs to the conversation and is visible to the caller.
async fn find(
    tx: &mut sqlx::PgConnection,
    conversation: Uuid,
    message: Uuid,
    visible_from_seq: i64,
) -> Result<Target, ApiError> {
    type Row = (Uuid, i64, DateTime<Utc>, bool, Option<sqlx::types::Json<Vec<Uuid>>>);
    let row: Option<Row> = sqlx::query_as(
        "select author_id, seq, created_at, deleted_at is not null, mentions from messages
          where id = $1 and conversation_id = $2 and seq >= $3 for update",
    )
    .bind(message)
    .bind(conversation)
    .bind(visible_from_seq)
    .fetch_optional(tx)
    .await?;
    let (author_id, seq, created_at, deleted, mentions) = row.ok_or_else(|| ApiError::not_found("message"))?;
    Ok(Target { author_id, seq, created_at, deleted, mentions: mentions.map(|json| json.0).unwrap_or_default() })
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    conversation_id: Uuid,
    seq: i64,
    author_id: Uuid,
    body: Option<String>,
    reply_to: Option<Uuid>,
    attachment: Option<sqlx::types::Json<Attachment>>,
    mentions: Option<sqlx::types::Json<Vec<Uuid>>>,
    client_message_id: Option<String>,
    created_at: DateTime<Utc>,
    edited_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
}

const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, author_id, body, reply_to, attachment, mentions, client_message_id, created_at, edited_at, deleted_at";

async fn load_one(db: &PgPool, caller: UserId, id: Uuid) -> Result<Message, ApiError> {
    load(db, caller, &[id]).await?.pop().ok_or_else(|| ApiError::not_found("message"))
}

/// Messages by id, with the caller's view of their reactions. Visibility is the caller's job.
pub async fn load(db: &PgPool, caller: UserId, ids: &[Uuid]) -> Result<Vec<Message>, ApiError> {
    let rows: Vec<MessageRow> = sqlx::query_as(&format!("select {MESSAGE_COLUMNS} from messages where id = any($1)"))
        .bind(ids)
        .fetch_all(db)
        .await?;
    enrich(db, caller, rows).await
}

/// The latest visible message of each conversation the caller is a member of, by conversation.
pub async fn latest(db: &PgPool, caller: UserId, conversations: &[Uuid]) -> Result<HashMap<Uuid, Message>, ApiError> {
    let rows: Vec<MessageRow> = sqlx::query_as(&format!(
        "select distinct on (msg.conversation_id) {}
           from messages msg
           join conversation_members me on me.conversation_id = msg.conversation_id and me.user_id = $2
          where msg.conversation_id = any($1) and msg.seq >= me.visible_from_seq
          order by msg.conversation_id, msg.seq desc",
        MESSAGE_COLUMNS.split(", ").map(|column| format!("msg.{column}")).collect::<Vec<_>>().join(", ")
    ))
    .bind(conversations)
    .bind(caller.as_uuid())
    .fetch_all(db)
    .await?;
    Ok(enrich(db, caller, rows).await?.into_iter().map(|message| (message.conversation_id, message)).collect())
}

async fn enrich(db: &PgPool, caller: UserId, rows: Vec<MessageRow>) -> Result<Vec<Message>, ApiError> {
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let counts: Vec<(Uuid, String, i64, bool)> = sqlx::query_as(
        "select message_id, emoji, count(*), bool_or(user_id = $2) from reactions
          where message_id = any($1) group by message_id, emoji order by message_id, min(created_at)",
    )
    .bind(&ids)
    .bind(caller.as_uuid())
    .fetch_all(db)
    .await?;
    let mut readers: HashMap<Uuid, (i64, Vec<Uuid>)> = sqlx::query_as::<_, (Uuid, i64, Vec<Uuid>)>(
        "select msg.id, count(m.user_id),
                coalesce((array_agg(m.user_id order by m.user_id) filter (where m.user_id is not null))[1:100], '{}')
           from messages msg
           left join conversation_members m
                  on m.conversation_id = msg.conversation_id and m.read_seq >= msg.seq and m.user_id <> msg.author_id
          where msg.id = any($1)
          group by msg.id",
    )
    .bind(&ids)
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|(id, count, users)| (id, (count, users)))
    .collect();
    Ok(rows
        .into_iter()
        .map(|row| Message {
            reactions: counts
                .iter()
                .filter(|(message, ..)| *message == row.id)
                .map(|(_, emoji, count, me)| ReactionCount { emoji: emoji.clone(), count: *count, me: *me })
                .collect(),
            id: row.id,
            conversation_id: row.conversation_id,
            seq: row.seq,
            author_id: row.author_id,
            text: row.body,
            reply_to: row.reply_to,
            attachment: row.attachment.map(|json| json.0),
            mentions: row.mentions.map(|json| json.0).unwrap_or_default(),
            client_message_id: row.client_message_id,
            created_at: row.created_at,
            edited_at: row.edited_at,
            deleted: row.deleted_at.is_some(),
            deleted_at: row.deleted_at,
            read_count: readers.get(&row.id).map_or(0, |(count, _)| *count),
            read_by: readers.remove(&row.id).map(|(_, users)| users).unwrap_or_default(),
        })
        .collect())
}

impl poem_openapi::types::Example for Attachment {
    fn example() -> Self {
        Self {
            url: "https://files.example.com/bike.jpg".into(),
            mime_type: "image/jpeg".into(),
            size_bytes: 204_800,
            name: Some("bike.jpg".into()),
        }
    }
}

impl poem_openapi::types::Example for NewMessage {
    fn example() -> Self {
        Self {
            text: Some("Is the bike still available?".into()),
            reply_to: None,
            attachment: None,
            mentions: None,
            client_message_id: Some("c-7f3a".into()),
        }
    }
}

impl poem_openapi::types::Example for MessagePatch {
    fn example() -> Self {
        Self { text: "Is the blue bike still available?".into(), mentions: None }
    }
}

impl poem_openapi::types::Example for Message {
    fn example() -> Self {
        Self {
            id: examples::MESSAGE,
            conversation_id: examples::CONVERSATION,
            seq: 2,
            author_id: examples::ALICE,
            text: Some("Is the bike still available?".into()),
            reply_to: None,
            attachment: None,
            mentions: Vec::new(),
            client_message_id: Some("c-7f3a".into()),
            created_at: examples::time(),
            edited_at: None,
            deleted: false,
            deleted_at: None,
            reactions: vec![ReactionCount { emoji: "👍".into(), count: 1, me: false }],
            read_count: 1,
            read_by: vec![examples::BOB],
        }
    }
}

impl poem_openapi::types::Example for MessagePage {
    fn example() -> Self {
        Self { items: vec![Message::example()], has_more: false }
    }
}
