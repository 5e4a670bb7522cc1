//! `/v1/conversations/{id}/events`: the stored event log, the replay source for clients that
//! reconnect or notice a gap in `seq`.

use chrono::{DateTime, Utc};
use parley_shared::ids::ConversationId;
use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use crate::auth::BearerAuth;
use crate::error::{ApiError, Problem, ProblemCode, ProblemJson};
use crate::membership;
use crate::state::AppState;

/// One domain event, exactly as brokers deliver it over WebSocket (see asyncapi.yaml).
#[derive(Object, Debug, sqlx::FromRow)]
#[oai(skip_serializing_if_is_none, example)]
pub struct StoredEvent {
    /// UUIDv7; also the NATS message id.
    pub id: Uuid,
    /// Event kind, e.g. `message.created`.
    #[oai(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: String,
    pub conversation_id: Uuid,
    /// Gapless and increasing within the conversation.
    pub seq: i64,
    /// The user whose action caused the event.
    #[sqlx(rename = "actor_id")]
    pub actor: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// The kind's payload. Text of deleted messages is removed from stored events.
    pub data: serde_json::Value,
}

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct EventPage {
    /// In seq order.
    pub items: Vec<StoredEvent>,
    /// More events follow; ask again with `after_seq` = the last item's seq.
    pub has_more: bool,
    /// The conversation's latest seq when this page was read.
    pub last_seq: i64,
}

#[derive(ApiResponse, Debug)]
pub enum ListResponse {
    #[oai(status = 200)]
    Page(Json<EventPage>),
    /// Events after `after_seq` are no longer stored (`PARLEY_EVENT_RETENTION`): reload the
    /// conversation (`GET …/messages`), then continue from its `last_seq`.
    #[oai(status = 410)]
    Pruned(ProblemJson),
}

#[derive(Default)]
pub struct EventsApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Events")]
impl EventsApi {
    /// Replay a conversation's events
    ///
    /// The events with seq greater than `after_seq`, in order. A client that reconnects calls
    /// this from the last seq it holds until `has_more` is false, then continues live,
    /// ignoring any live event whose seq it already has.
    #[oai(path = "/conversations/:id/events", method = "get", operation_id = "listEvents")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        /// The last seq the client holds; 0 for everything visible to the caller.
        #[oai(default, validator(minimum(value = "0")))]
        after_seq: Query<i64>,
        /// 1 to 500.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<i64>,
    ) -> Result<ListResponse, ApiError> {
        let member = membership::require(&state.db, ConversationId::from_uuid(id.0), auth.0.id).await?;
        // Read before the events: every seq up to it is committed, so a missing one was pruned.
        let last_seq: i64 = sqlx::query_scalar("select last_seq from conversations where id = $1")
            .bind(id.0)
            .fetch_one(&state.db)
            .await?;
        let mut items: Vec<StoredEvent> = sqlx::query_as(
            "select id, type, conversation_id, seq, actor_id, occurred_at, data from events
              where conversation_id = $1 and seq > greatest($2, $3 - 1)
              order by seq limit $4",
        )
        .bind(id.0)
        .bind(after_seq.0)
        .bind(member.visible_from_seq)
        .bind(limit.0 + 1)
        .fetch_all(&state.db)
        .await?;
        let has_more = items.len() > usize::try_from(limit.0).unwrap_or(usize::MAX);
        items.truncate(usize::try_from(limit.0).unwrap_or(usize::MAX));
        // seq is gapless, so a page that starts later than asked means the events in between
        // were pruned.
        // Saturating: `after_seq` may be any non-negative i64 (schemathesis sends i64::MAX).
        let first_wanted = after_seq.0.max(member.visible_from_seq - 1).saturating_add(1);
        let first_stored = items.first().map_or(last_seq.saturating_add(1), |event| event.seq);
        if first_stored > first_wanted && first_wanted <= last_seq {
            let detail = format!(
                "events {first_wanted}..{} are no longer stored; reload the conversation's messages and continue from its last_seq",
                first_stored - 1
            );
            return Ok(ListResponse::Pruned(ProblemJson::new(Problem::new(
                StatusCode::GONE,
                ProblemCode::HistoryPruned,
                detail,
            ))));
        }
        Ok(ListResponse::Page(Json(EventPage { items, has_more, last_seq })))
    }
}

fn default_limit() -> i64 {
    100
}

impl poem_openapi::types::Example for StoredEvent {
    fn example() -> Self {
        Self {
            id: uuid::Uuid::from_u128(0x0191d0c4_5e6f_7a00_8000_0000000e0e17),
            kind: "message.created".into(),
            conversation_id: super::examples::CONVERSATION,
            seq: 2,
            actor: super::examples::ALICE,
            occurred_at: super::examples::time(),
            data: serde_json::json!({
                "message_id": super::examples::MESSAGE,
                "author_id": super::examples::ALICE,
                "body": "Is the bike still available?",
                "client_message_id": "c-7f3a"
            }),
        }
    }
}

impl poem_openapi::types::Example for EventPage {
    fn example() -> Self {
        Self { items: vec![<StoredEvent as poem_openapi::types::Example>::example()], has_more: false, last_seq: 2 }
    }
}
