//! `/v1/conversations/{id}/delivered` and `/read`: the caller's cursors. They only move
//! forward: an older seq is accepted and changes nothing. Reading implies delivery.

use parley_shared::events::{Event, Receipt};
use parley_shared::ids::ConversationId;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use crate::auth::BearerAuth;
use crate::error::ApiError;
use crate::state::AppState;
use crate::{membership, outbox};

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct ReceiptBody {
    /// The latest seq the caller has received (or read).
    #[oai(validator(minimum(value = "0")))]
    pub seq: i64,
}

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct Cursors {
    pub delivered_seq: i64,
    pub read_seq: i64,
    /// Messages by others after the read cursor.
    pub unread_count: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Delivered,
    Read,
}

#[derive(Default)]
pub struct ReceiptsApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Receipts")]
impl ReceiptsApi {
    /// Confirm delivery up to a seq
    #[oai(path = "/conversations/:id/delivered", method = "post", operation_id = "markDelivered")]
    async fn delivered(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: Json<ReceiptBody>,
    ) -> Result<Json<Cursors>, ApiError> {
        move_cursor(&state, &auth, id.0, body.0.seq, Kind::Delivered).await
    }

    /// Mark read up to a seq
    #[oai(path = "/conversations/:id/read", method = "post", operation_id = "markRead")]
    async fn read(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: Json<ReceiptBody>,
    ) -> Result<Json<Cursors>, ApiError> {
        move_cursor(&state, &auth, id.0, body.0.seq, Kind::Read).await
    }
}

async fn move_cursor(
    state: &AppState,
    auth: &BearerAuth,
    id: Uuid,
    seq: i64,
    kind: Kind,
) -> Result<Json<Cursors>, ApiError> {
    let (caller, conversation) = (auth.0.id, ConversationId::from_uuid(id));
    let mut tx = state.db.begin().await?;
    let event_seq = outbox::next_seq(&mut tx, conversation, false).await?;
    membership::require(&mut *tx, conversation, caller).await?;
    if seq >= event_seq {
        return Err(ApiError::bad_request("seq", format!("the conversation's latest seq is {}", event_seq - 1)));
    }
    let moved: Option<(i64, i64)> = sqlx::query_as(
        "update conversation_members
            set delivered_seq = greatest(delivered_seq, $3),
                read_seq = case when $4 then greatest(read_seq, $3) else read_seq end
          where conversation_id = $1 and user_id = $2
            and (delivered_seq < $3 or ($4 and read_seq < $3))
      returning delivered_seq, read_seq",
    )
    .bind(id)
    .bind(caller.as_uuid())
    .bind(seq)
    .bind(kind == Kind::Read)
    .fetch_optional(&mut *tx)
    .await?;
    if moved.is_some() {
        let receipt = Receipt { user_id: caller, seq };
        let event = if kind == Kind::Read { Event::ReceiptRead(receipt) } else { Event::ReceiptDelivered(receipt) };
        let recorded = outbox::append(&mut tx, conversation, event_seq, caller, &event).await?;
        crate::db::commit(tx).await?;
        state.outbox.committed(recorded);
    } else {
        // An older seq changes nothing, and records nothing: give the seq back.
        tx.rollback().await?;
    }
    let cursors = sqlx::query_as::<_, (i64, i64, i64)>(
        "select m.delivered_seq, m.read_seq,
                (select count(*) from messages msg where msg.conversation_id = m.conversation_id
                    and msg.seq > greatest(m.read_seq, m.visible_from_seq - 1)
                    and msg.author_id <> m.user_id and msg.deleted_at is null)
           from conversation_members m where m.conversation_id = $1 and m.user_id = $2",
    )
    .bind(id)
    .bind(caller.as_uuid())
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("conversation"))?;
    Ok(Json(Cursors { delivered_seq: cursors.0, read_seq: cursors.1, unread_count: cursors.2 }))
}

impl poem_openapi::types::Example for ReceiptBody {
    fn example() -> Self {
        Self { seq: 2 }
    }
}

impl poem_openapi::types::Example for Cursors {
    fn example() -> Self {
        Self { delivered_seq: 2, read_seq: 2, unread_count: 0 }
    }
}
