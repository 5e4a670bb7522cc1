//! `/v1/me`: who the bearer token says the caller is.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use crate::auth::BearerAuth;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Object, Debug, sqlx::FromRow)]
#[oai(skip_serializing_if_is_none, example)]
pub struct User {
    /// The `sub` of the user's tokens.
    pub id: Uuid,
    /// From the token's `name` (else `preferred_username`) claim.
    pub display_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct MeApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Users")]
impl MeApi {
    /// The calling user
    ///
    /// The user's row is created, or its display name refreshed, whenever a token is seen.
    #[oai(path = "/me", method = "get", operation_id = "getMe")]
    async fn me(&self, state: Data<&AppState>, auth: BearerAuth) -> Result<Json<User>, ApiError> {
        let user = sqlx::query_as("select id, display_name, created_at, last_seen_at from users where id = $1")
            .bind(auth.0.id.as_uuid())
            .fetch_one(&state.db)
            .await?;
        Ok(Json(user))
    }
}

impl poem_openapi::types::Example for User {
    fn example() -> Self {
        Self {
            id: super::examples::ALICE,
            display_name: Some("Alice".into()),
            created_at: super::examples::time(),
            last_seen_at: Some(super::examples::time()),
        }
    }
}
