//! `/v1/users/{id}/presence`: whether a user is connected to any broker, for users who share a
//! conversation with the caller (anyone else is a 404, as if the user did not exist).

use parley_shared::ids::UserId;
use poem::web::Data;
use poem_openapi::OpenApi;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use uuid::Uuid;

use super::{ApiTags, examples};
use crate::auth::BearerAuth;
use crate::error::ApiError;
use crate::membership;
use crate::presence::{Presence, PresenceStatus};
use crate::state::AppState;

#[derive(Default)]
pub struct PresenceApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Users")]
impl PresenceApi {
    /// A user's presence
    ///
    /// Only for the caller and users who share a conversation with them; for anyone else 404.
    /// Changes arrive live as `presence` frames on the WebSocket.
    #[oai(path = "/users/:id/presence", method = "get", operation_id = "getPresence")]
    async fn presence(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<Json<Presence>, ApiError> {
        let user = UserId::from_uuid(id.0);
        membership::require_visible(&state.db, auth.0.id, user).await?;
        Ok(Json(state.presence.of(user)))
    }
}

impl poem_openapi::types::Example for Presence {
    fn example() -> Self {
        Self { status: PresenceStatus::Offline, last_seen_at: Some(examples::time()) }
    }
}
