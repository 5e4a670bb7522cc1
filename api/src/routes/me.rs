//! `/v1/me` (who the bearer token says the caller is, and what they say about themselves) and
//! `/v1/users/{id}` (the users the caller may see).

use chrono::{DateTime, Utc};
use parley_shared::ids::UserId;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use crate::auth::{BearerAuth, DISPLAY_NAME_MAX_CHARS};
use crate::error::ApiError;
use crate::membership;
use crate::presence::Presence;
use crate::state::AppState;
use crate::text::{clean_name, is_https_url};

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct User {
    /// The `sub` of the user's tokens.
    pub id: Uuid,
    /// The name the user chose (`PATCH /v1/me`), else their token's `name` (or
    /// `preferred_username`) claim.
    pub display_name: Option<String>,
    /// An `https://` URL the user chose.
    pub avatar_url: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When a request last carried this user's token.
    pub last_seen_at: Option<DateTime<Utc>>,
    pub presence: Presence,
    /// The caller's unread notifications (`GET /v1/me` only).
    pub unread_notifications: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    display_name: Option<String>,
    avatar_url: Option<String>,
    created_at: DateTime<Utc>,
    last_seen_at: Option<DateTime<Utc>>,
}

/// A JSON merge patch of the caller's profile: a field left out stays as it is.
#[derive(Object, Debug)]
#[oai(example)]
pub struct ProfilePatch {
    /// 1 to 200 characters after trimming; it then wins over the name in the user's tokens.
    /// `null` goes back to the tokens' name.
    pub display_name: MaybeUndefined<String>,
    /// An `https://` URL of at most 2,048 characters. `null` removes it.
    pub avatar_url: MaybeUndefined<String>,
}

const AVATAR_URL_MAX_CHARS: usize = 2048;

#[derive(Default)]
pub struct MeApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Users")]
impl MeApi {
    /// The calling user
    ///
    /// The user's row is created, or its display name refreshed, whenever a token is seen.
    #[oai(path = "/me", method = "get", operation_id = "getMe")]
    async fn me(&self, state: Data<&AppState>, auth: BearerAuth) -> Result<Json<User>, ApiError> {
        let mut me = load(&state, auth.0.id).await?;
        me.unread_notifications = Some(super::notifications::unread_count(&state, auth.0.id).await?);
        Ok(Json(me))
    }

    /// Change the caller's display name or avatar
    #[oai(path = "/me", method = "patch", operation_id = "updateMe")]
    async fn update(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        body: Json<ProfilePatch>,
    ) -> Result<Json<User>, ApiError> {
        let chosen_name = body.0.display_name.value().map(|name| validate_display_name(name)).transpose()?;
        // Sent as null: back to the name in the caller's token.
        let display_name = chosen_name.clone().or_else(|| auth.0.token_name.clone());
        if let Some(url) = body.0.avatar_url.value()
            && (!is_https_url(url) || url.chars().count() > AVATAR_URL_MAX_CHARS)
        {
            return Err(ApiError::bad_request(
                "avatar_url",
                format!("the avatar URL must be an https:// URL of at most {AVATAR_URL_MAX_CHARS} characters"),
            ));
        }
        // $2 and $5: whether the field was sent.
        sqlx::query(
            "update users
                set display_name = case when $2 then $3 else display_name end,
                    display_name_chosen_at = case when $2 then case when $4 then now() end
                                                  else display_name_chosen_at end,
                    avatar_url = case when $5 then $6 else avatar_url end
              where id = $1",
        )
        .bind(auth.0.id.as_uuid())
        .bind(!body.0.display_name.is_undefined())
        .bind(display_name)
        .bind(chosen_name.is_some())
        .bind(!body.0.avatar_url.is_undefined())
        .bind(body.0.avatar_url.value())
        .execute(&state.db)
        .await?;
        load(&state, auth.0.id).await.map(Json)
    }

    /// A user
    ///
    /// The caller, or a user who shares a conversation with them; 404 for anyone else (as
    /// for presence), whether or not they exist.
    #[oai(path = "/users/:id", method = "get", operation_id = "getUser")]
    async fn user(&self, state: Data<&AppState>, auth: BearerAuth, id: Path<Uuid>) -> Result<Json<User>, ApiError> {
        let user = UserId::from_uuid(id.0);
        membership::require_visible(&state.db, auth.0.id, user).await?;
        load(&state, user).await.map(Json)
    }
}

async fn load(state: &AppState, user: UserId) -> Result<User, ApiError> {
    let row: UserRow =
        sqlx::query_as("select id, display_name, avatar_url, created_at, last_seen_at from users where id = $1")
            .bind(user.as_uuid())
            .fetch_optional(&state.db)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(User {
        id: row.id,
        display_name: row.display_name,
        avatar_url: row.avatar_url,
        created_at: row.created_at,
        last_seen_at: row.last_seen_at,
        presence: state.presence.of(user),
        unread_notifications: None,
    })
}

/// Cleaned (see [`clean_name`]), 1 to 200 characters, no control characters.
fn validate_display_name(name: &str) -> Result<String, ApiError> {
    let name = clean_name(name).unwrap_or_default();
    let chars = name.chars().count();
    if chars == 0 || chars > DISPLAY_NAME_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "display_name",
            format!("the display name must be 1 to {DISPLAY_NAME_MAX_CHARS} characters, without control characters"),
        ));
    }
    Ok(name)
}

impl poem_openapi::types::Example for User {
    fn example() -> Self {
        Self {
            id: super::examples::ALICE,
            display_name: Some("Alice".into()),
            avatar_url: Some("https://cdn.example.com/avatars/alice.png".into()),
            created_at: super::examples::time(),
            last_seen_at: Some(super::examples::time()),
            presence: poem_openapi::types::Example::example(),
            unread_notifications: Some(2),
        }
    }
}

impl poem_openapi::types::Example for ProfilePatch {
    fn example() -> Self {
        Self {
            display_name: MaybeUndefined::Value("Alice Liddell".into()),
            avatar_url: MaybeUndefined::Value("https://cdn.example.com/avatars/alice.png".into()),
        }
    }
}
