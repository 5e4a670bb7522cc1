//! `/v1/conversations/{id}/typing`: a typing signal for clients without a WebSocket. Authorised
//! and rate limited; published on core NATS (`<prefix>.conv.<id>.typing`), never stored.

use chrono::Utc;
use parley_shared::events::{Typing, TypingData, TypingKind, TypingState};
use parley_shared::ids::ConversationId;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use crate::auth::BearerAuth;
use crate::error::ApiError;
use crate::membership;
use crate::state::AppState;

#[derive(ApiResponse, Debug)]
pub enum TypingResponse {
    /// The signal was accepted; the other members' clients show it for a few seconds.
    #[oai(status = 202)]
    Accepted,
}

#[derive(Default)]
pub struct TypingApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Conversations")]
impl TypingApi {
    /// Signal that the caller is typing
    ///
    /// At most one signal per 2 seconds per conversation (a burst of 3); more get 429.
    #[oai(path = "/conversations/:id/typing", method = "post", operation_id = "signalTyping")]
    async fn typing(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<TypingResponse, ApiError> {
        let conversation = ConversationId::from_uuid(id.0);
        membership::require(&state.db, conversation, auth.0.id).await?;
        state.rate_limits.typing(auth.0.id, conversation)?;
        let signal = Typing {
            kind: TypingKind::Typing,
            conversation_id: conversation,
            actor: auth.0.id,
            occurred_at: Utc::now(),
            data: TypingData { state: TypingState::Start },
        };
        // Best effort, like the signal itself: with NATS away it is dropped, not queued.
        let payload = serde_json::to_vec(&signal).map_err(|_| ApiError::internal())?;
        parley_shared::serve::publish_if_connected(&state.nats, state.subjects.typing(conversation), payload.into())
            .await;
        Ok(TypingResponse::Accepted)
    }
}
