//! `/v1/search/messages`: full-text search over the caller's conversations only.

use parley_shared::ids::UserId;
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::messages::{self, Message};
use crate::auth::BearerAuth;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct SearchPage {
    /// Best match first.
    pub items: Vec<Message>,
    /// Pass as `offset` for the next page; absent on the last page.
    pub next_offset: Option<i64>,
}

#[derive(Default)]
pub struct SearchApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Search")]
impl SearchApi {
    /// Search messages
    ///
    /// Web-search syntax (`"exact phrase"`, `-excluded`, `or`), ranked by relevance, over the
    /// conversations the caller belongs to and the messages they may see; deleted messages never
    /// match. Words are matched as written, without stemming, so every language works alike.
    #[oai(path = "/search/messages", method = "get", operation_id = "searchMessages")]
    async fn search(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        /// The query, 1 to 200 characters.
        #[oai(validator(min_length = 1, max_length = 200))]
        q: Query<String>,
        /// 1 to 50.
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "50")))]
        limit: Query<i64>,
        /// 0 to 1,000.
        #[oai(default, validator(minimum(value = "0"), maximum(value = "1000")))]
        offset: Query<i64>,
    ) -> Result<Json<SearchPage>, ApiError> {
        let caller: UserId = auth.0.id;
        if q.0.contains('\0') {
            return Err(ApiError::bad_request("q", "the query must not contain NUL characters"));
        }
        let mut ids: Vec<Uuid> = sqlx::query_scalar(
            "select msg.id
               from messages msg
               join conversation_members me on me.conversation_id = msg.conversation_id and me.user_id = $1
              where msg.search @@ websearch_to_tsquery('simple', $2)
                and msg.deleted_at is null and msg.seq >= me.visible_from_seq
              order by ts_rank(msg.search, websearch_to_tsquery('simple', $2)) desc, msg.created_at desc
              limit $3 offset $4",
        )
        .bind(caller.as_uuid())
        .bind(&q.0)
        .bind(limit.0 + 1)
        .bind(offset.0)
        .fetch_all(&state.db)
        .await?;
        let more = ids.len() > usize::try_from(limit.0).unwrap_or(usize::MAX);
        ids.truncate(usize::try_from(limit.0).unwrap_or(usize::MAX));
        let found = messages::load(&state.db, caller, &ids).await?;
        // Keep the ranking order.
        let items = ids.iter().filter_map(|id| found.iter().find(|message| message.id == *id).cloned()).collect();
        Ok(Json(SearchPage { items, next_offset: more.then_some(offset.0 + limit.0) }))
    }
}

fn default_limit() -> i64 {
    20
}

impl poem_openapi::types::Example for SearchPage {
    fn example() -> Self {
        Self { items: vec![<Message as poem_openapi::types::Example>::example()], next_offset: Some(20) }
    }
}
