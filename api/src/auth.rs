//! The bearer security scheme of every `/v1` route, and "create or refresh the user on sight".

use std::time::Duration;

use parley_shared::ids::UserId;
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use sqlx::PgPool;

use crate::error::ApiError;
use crate::state::AppState;
use crate::text::clean_name;

/// Who is calling: the verified `sub` of the bearer JWT.
#[derive(Clone, Debug)]
pub struct Caller {
    pub id: UserId,
    /// The display name the token carries (`name`, else `preferred_username`), cut to
    /// [`DISPLAY_NAME_MAX_CHARS`].
    pub token_name: Option<String>,
    /// The token's `channels` claim (patterns of `granted` channels).
    pub channels: Vec<String>,
}

/// `Authorization: Bearer <JWT>`, verified against the configured key source.
#[derive(SecurityScheme, Debug)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "authenticate")]
pub struct BearerAuth(pub Caller);

async fn authenticate(request: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let state = request.data::<AppState>().ok_or_else(ApiError::internal)?;
    // Two `Authorization` headers are ambiguous (which one did a proxy add?): refuse both.
    if request.headers().get_all(poem::http::header::AUTHORIZATION).iter().nth(1).is_some() {
        return Err(ApiError::unauthorized("send exactly one Authorization header").into());
    }
    // A backend's key never stands in for a user, nor travels beside one.
    if request.headers().contains_key("x-api-key") {
        return Err(ApiError::unauthorized("server API keys are not accepted on user routes").into());
    }
    let identity = state.verifier.verify(&bearer.token).await.map_err(ApiError::from)?;
    if request.method() != poem::http::Method::GET {
        state.rate_limits.write(identity.user_id)?;
    }
    // A token's name is cleaned like a chosen one; one with nothing visible left stands for
    // the user's id rather than a blank.
    let token_name = identity
        .display_name
        .as_deref()
        .map(|name| clean_name(name).unwrap_or_else(|| identity.user_id.to_string()))
        .map(|name| truncate(&name, DISPLAY_NAME_MAX_CHARS).to_owned());
    let caller = Caller { id: identity.user_id, token_name, channels: identity.channels };
    state.users.seen(&state.db, &caller).await?;
    // For the access log line of this request (see `request_span`).
    tracing::Span::current().record("user_id", tracing::field::display(caller.id));
    Ok(caller)
}

/// Users whose row is known to be current, so most requests skip the upsert.
#[derive(Debug)]
pub struct SeenUsers {
    recent: moka::sync::Cache<UserId, Option<String>>,
}

impl Default for SeenUsers {
    fn default() -> Self {
        Self {
            recent: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(60)).build(),
        }
    }
}

impl SeenUsers {
    /// Creates the user's row, or refreshes its display name (unless the user chose one) and
    /// `last_seen_at`, at most once a minute per user and process (and at once when the name in
    /// the token changed).
    pub async fn seen(&self, db: &PgPool, caller: &Caller) -> Result<(), ApiError> {
        if self.recent.get(&caller.id).as_ref() == Some(&caller.token_name) {
            return Ok(());
        }
        sqlx::query(
            "insert into users (id, display_name, last_seen_at) values ($1, $2, now())
             on conflict (id) do update
                set display_name = case when users.display_name_chosen_at is null
                                        then coalesce(excluded.display_name, users.display_name)
                                        else users.display_name end,
                    last_seen_at = now()",
        )
        .bind(caller.id.as_uuid())
        .bind(caller.token_name.as_deref())
        .execute(db)
        .await?;
        self.recent.insert(caller.id, caller.token_name.clone());
        Ok(())
    }
}

/// The longest display name stored (the `users` table checks it too).
pub const DISPLAY_NAME_MAX_CHARS: usize = 200;

fn truncate(name: &str, max_chars: usize) -> &str {
    name.char_indices().nth(max_chars).map_or(name, |(end, _)| &name[..end])
}
