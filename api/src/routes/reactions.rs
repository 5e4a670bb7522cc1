//! `/v1/conversations/{id}/messages/{message_id}/reactions/{emoji}`: add or remove the caller's
//! reaction. Both are idempotent; an event is recorded only when something changed.

use parley_shared::events::{Event, ReactionChange};
use parley_shared::ids::{ConversationId, MessageId};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use crate::auth::BearerAuth;
use crate::error::{ApiError, ProblemCode};
use crate::state::AppState;
use crate::{membership, outbox};

#[derive(ApiResponse, Debug)]
pub enum ReactionResponse {
    /// Done (or nothing to do).
    #[oai(status = 204)]
    Done,
}

#[derive(Default)]
pub struct ReactionsApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Messages")]
impl ReactionsApi {
    /// React to a message
    ///
    /// `emoji` is one emoji (skin tones and sequences included), URL-encoded.
    #[oai(
        path = "/conversations/:id/messages/:message_id/reactions/:emoji",
        method = "put",
        operation_id = "addReaction"
    )]
    async fn add(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        message_id: Path<Uuid>,
        emoji: Path<String>,
    ) -> Result<ReactionResponse, ApiError> {
        self.change(&state, &auth, id.0, message_id.0, &emoji.0, true).await
    }

    /// Remove the caller's reaction
    #[oai(
        path = "/conversations/:id/messages/:message_id/reactions/:emoji",
        method = "delete",
        operation_id = "removeReaction"
    )]
    async fn remove(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        message_id: Path<Uuid>,
        emoji: Path<String>,
    ) -> Result<ReactionResponse, ApiError> {
        self.change(&state, &auth, id.0, message_id.0, &emoji.0, false).await
    }
}

impl ReactionsApi {
    async fn change(
        &self,
        state: &AppState,
        auth: &BearerAuth,
        id: Uuid,
        message_id: Uuid,
        emoji: &str,
        add: bool,
    ) -> Result<ReactionResponse, ApiError> {
        let emoji = emojis::get(emoji).ok_or_else(|| ApiError::bad_request("emoji", "not a single emoji"))?.as_str();
        let (caller, conversation) = (auth.0.id, ConversationId::from_uuid(id));
        let mut tx = state.db.begin().await?;
        let seq = outbox::next_seq(&mut tx, conversation, false).await?;
        let member = membership::require(&mut *tx, conversation, caller).await?;
        let deleted: Option<bool> = sqlx::query_scalar(
            "select deleted_at is not null from messages where id = $1 and conversation_id = $2 and seq >= $3",
        )
        .bind(message_id)
        .bind(id)
        .bind(member.visible_from_seq)
        .fetch_optional(&mut *tx)
        .await?;
        match deleted {
            None => return Err(ApiError::not_found("message")),
            Some(true) => return Err(ApiError::conflict(ProblemCode::MessageDeleted, "the message has been deleted")),
            Some(false) => {}
        }
        let changed = if add {
            sqlx::query("insert into reactions (message_id, emoji, user_id) values ($1, $2, $3) on conflict do nothing")
        } else {
            sqlx::query("delete from reactions where message_id = $1 and emoji = $2 and user_id = $3")
        }
        .bind(message_id)
        .bind(emoji)
        .bind(caller.as_uuid())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !changed {
            // Nothing happened: give the seq back.
            tx.rollback().await?;
            return Ok(ReactionResponse::Done);
        }
        let change =
            ReactionChange { message_id: MessageId::from_uuid(message_id), emoji: emoji.to_owned(), user_id: caller };
        let event = if add { Event::ReactionAdded(change) } else { Event::ReactionRemoved(change) };
        let recorded = outbox::append(&mut tx, conversation, seq, caller, &event).await?;
        crate::db::commit(tx).await?;
        state.outbox.committed(recorded);
        Ok(ReactionResponse::Done)
    }
}
