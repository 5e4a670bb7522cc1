//! `/v1/me/notifications`: the caller's notification inbox (list, mark read, clear), and
//! `/v1/users/{id}/notifications`: a backend's own notifications (server API key). Every
//! change is also sent live to all of the user's connections (see `relay::notifications`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use parley_shared::ids::UserId;
use parley_shared::notifications::{NotificationKind, Priority};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::conversations::ensure_users;
use crate::auth::BearerAuth;
use crate::channels::server_keys::ServerAuth;
use crate::error::ApiError;
use crate::notifications::{NOTIFICATION_JSON, NewNotification, Title, record};
use crate::outbox::Recorded;
use crate::state::AppState;
use crate::text::{Text, clean_name};

/// Most bytes of a backend notification's `data`, as JSON text: it travels in every frame and push.
const DATA_MAX_BYTES: usize = 4096;

/// What caused a notification.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Mention,
    Reply,
    Direct,
    Added,
    CallMissed,
    App,
}

#[derive(Enum, Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum NotificationPriority {
    Low,
    #[default]
    Normal,
    /// Pushed at once, without the grace delay.
    High,
}

#[derive(Object, Debug, serde::Deserialize)]
#[oai(skip_serializing_if_is_none, example)]
pub struct Notification {
    /// UUIDv7: newer notifications have greater ids.
    pub id: Uuid,
    pub kind: Kind,
    pub priority: NotificationPriority,
    pub title: String,
    pub body: Option<String>,
    /// What it is about: `conversation_id`, `message_id`, `seq`, `actor_id` for the kinds
    /// Parley creates; whatever the backend sent for `app`.
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// Absent while unread.
    pub read_at: Option<DateTime<Utc>>,
}

#[derive(Object, Debug)]
#[oai(example)]
pub struct NotificationPage {
    /// Newest first.
    pub items: Vec<Notification>,
    /// Older notifications lie beyond this page: ask again with `before` = the last id.
    pub has_more: bool,
    /// All of the caller's unread notifications.
    pub unread_count: i64,
}

#[derive(Object, Debug)]
#[oai(example)]
pub struct InboxState {
    /// The caller's unread notifications after the change.
    pub unread_count: i64,
}

#[derive(Object, Debug, Default)]
#[oai(example)]
pub struct ReadUpTo {
    /// Marks this notification and every older one read; left out, all of them.
    pub up_to: Option<Uuid>,
}

/// A backend's notification for one user.
#[derive(Object, Debug)]
#[oai(example)]
pub struct NewAppNotification {
    /// Default `app`.
    #[oai(default)]
    pub kind: Option<Kind>,
    /// Default `normal`; `high` is pushed without the grace delay.
    #[oai(default)]
    pub priority: NotificationPriority,
    /// 1 to 200 characters.
    pub title: Text,
    /// At most 1,000 characters.
    #[oai(validator(max_length = 1000))]
    pub body: Option<Text>,
    /// A JSON object of at most 4 KiB (as JSON text), handed to the app as it is.
    pub data: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Enum, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum Status {
    #[default]
    All,
    Unread,
}

#[derive(ApiResponse, Debug)]
pub enum ClearResponse {
    /// Cleared (deleted).
    #[oai(status = 204)]
    Cleared,
}

#[derive(ApiResponse, Debug)]
pub enum CreatedResponse {
    /// Stored, and sent to the user's connections.
    #[oai(status = 201)]
    Created(Json<Notification>),
}

#[derive(Default)]
pub struct NotificationsApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Notifications")]
impl NotificationsApi {
    /// List the caller's notifications
    ///
    /// Newest first; `status=unread` lists only the pending ones. Page with `before`.
    #[oai(path = "/me/notifications", method = "get", operation_id = "listNotifications")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        #[oai(default)] status: Query<Status>,
        /// Only notifications older than this one.
        before: Query<Option<Uuid>>,
        #[oai(default = "default_limit", validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<i64>,
    ) -> Result<Json<NotificationPage>, ApiError> {
        let rows: Vec<sqlx::types::Json<Notification>> = sqlx::query_scalar(&format!(
            "select {NOTIFICATION_JSON} from notifications n
              where n.user_id = $1 and ($2 or n.read_at is null) and ($3::uuid is null or n.id < $3)
              order by n.id desc limit $4"
        ))
        .bind(auth.0.id.as_uuid())
        .bind(status.0 == Status::All)
        .bind(before.0)
        .bind(limit.0 + 1)
        .fetch_all(&state.db)
        .await?;
        let mut items: Vec<Notification> = rows.into_iter().map(|row| row.0).collect();
        let has_more = items.len() > usize::try_from(limit.0).unwrap_or(usize::MAX);
        items.truncate(usize::try_from(limit.0).unwrap_or(usize::MAX));
        let unread_count = unread_count(&state, auth.0.id).await?;
        Ok(Json(NotificationPage { items, has_more, unread_count }))
    }

    /// Mark one notification read
    #[oai(path = "/me/notifications/:id/read", method = "post", operation_id = "markNotificationRead")]
    async fn read_one(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<Json<InboxState>, ApiError> {
        let found: bool = sqlx::query_scalar(
            "with marked as (
                 update notifications set read_at = now() where id = $1 and user_id = $2 and read_at is null returning id
             ), change as (
                 insert into notification_changes (user_id, change, notification_id) select $2, 'read', id from marked
             )
             select exists (select 1 from notifications where id = $1 and user_id = $2)",
        )
        .bind(id.0)
        .bind(auth.0.id.as_uuid())
        .fetch_one(&state.db)
        .await?;
        if !found {
            return Err(ApiError::not_found("notification"));
        }
        state.outbox.committed(Recorded::notifications());
        Ok(Json(InboxState { unread_count: unread_count(&state, auth.0.id).await? }))
    }

    /// Mark notifications read up to one
    ///
    /// Every notification up to and including `up_to` (all of them without it).
    #[oai(path = "/me/notifications/read", method = "post", operation_id = "markNotificationsRead")]
    async fn read_up_to(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        body: Json<ReadUpTo>,
    ) -> Result<Json<InboxState>, ApiError> {
        sqlx::query(
            "with marked as (
                 update notifications set read_at = now()
                  where user_id = $1 and read_at is null and ($2::uuid is null or id <= $2)
              returning id
             )
             insert into notification_changes (user_id, change, notification_id)
             select $1, 'read_up_to', coalesce($2, (array_agg(id order by id desc))[1]) from marked having count(*) > 0",
        )
        .bind(auth.0.id.as_uuid())
        .bind(body.0.up_to)
        .execute(&state.db)
        .await?;
        state.outbox.committed(Recorded::notifications());
        Ok(Json(InboxState { unread_count: unread_count(&state, auth.0.id).await? }))
    }

    /// Clear one notification
    #[oai(path = "/me/notifications/:id", method = "delete", operation_id = "clearNotification")]
    async fn clear_one(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<ClearResponse, ApiError> {
        let cleared = sqlx::query(
            "with cleared as (delete from notifications where id = $1 and user_id = $2 returning id)
             insert into notification_changes (user_id, change, notification_id) select $2, 'cleared', id from cleared",
        )
        .bind(id.0)
        .bind(auth.0.id.as_uuid())
        .execute(&state.db)
        .await?;
        if cleared.rows_affected() == 0 {
            return Err(ApiError::not_found("notification"));
        }
        state.outbox.committed(Recorded::notifications());
        Ok(ClearResponse::Cleared)
    }

    /// Clear all notifications
    #[oai(path = "/me/notifications", method = "delete", operation_id = "clearNotifications")]
    async fn clear_all(&self, state: Data<&AppState>, auth: BearerAuth) -> Result<ClearResponse, ApiError> {
        sqlx::query(
            "with cleared as (delete from notifications where user_id = $1 returning id)
             insert into notification_changes (user_id, change)
             select $1, 'cleared_all' from cleared having count(*) > 0",
        )
        .bind(auth.0.id.as_uuid())
        .execute(&state.db)
        .await?;
        state.outbox.committed(Recorded::notifications());
        Ok(ClearResponse::Cleared)
    }

    /// Notify a user (backends)
    ///
    /// With a server API key. The user need not have connected yet: the notification waits in
    /// their inbox.
    #[oai(path = "/users/:id/notifications", method = "post", operation_id = "createNotification")]
    async fn create(
        &self,
        state: Data<&AppState>,
        _auth: ServerAuth,
        id: Path<Uuid>,
        body: Json<NewAppNotification>,
    ) -> Result<CreatedResponse, ApiError> {
        let title = clean_name(&body.0.title)
            .filter(|title| (1..=200).contains(&title.chars().count()))
            .ok_or_else(|| ApiError::bad_request("title", "the title must be 1 to 200 visible characters"))?;
        let data = serde_json::Value::Object(body.0.data.unwrap_or_default().into_iter().collect());
        if data.to_string().len() > DATA_MAX_BYTES {
            return Err(ApiError::bad_request("data", format!("data must be at most {DATA_MAX_BYTES} bytes as JSON")));
        }
        let notification = NewNotification {
            id: Uuid::now_v7(),
            user: id.0,
            kind: shared_kind(body.0.kind.unwrap_or(Kind::App)),
            priority: shared_priority(body.0.priority),
            title: Title::Given(title),
            body: body.0.body.map(String::from),
            data,
        };
        let mut tx = state.db.begin().await?;
        ensure_users(&mut tx, &[id.0]).await?;
        record(&mut tx, None, std::slice::from_ref(&notification)).await?;
        crate::db::commit(tx).await?;
        state.outbox.committed(Recorded::notifications());
        let stored: sqlx::types::Json<Notification> =
            sqlx::query_scalar(&format!("select {NOTIFICATION_JSON} from notifications n where n.id = $1"))
                .bind(notification.id)
                .fetch_optional(&state.db)
                .await?
                .ok_or_else(|| ApiError::not_found("notification"))?;
        Ok(CreatedResponse::Created(Json(stored.0)))
    }
}

fn default_limit() -> i64 {
    50
}

/// The caller's unread notifications (also in `GET /v1/me`).
pub async fn unread_count(state: &AppState, user: UserId) -> Result<i64, ApiError> {
    Ok(sqlx::query_scalar("select count(*) from notifications where user_id = $1 and read_at is null")
        .bind(user.as_uuid())
        .fetch_one(&state.db)
        .await?)
}

fn shared_kind(kind: Kind) -> NotificationKind {
    match kind {
        Kind::Mention => NotificationKind::Mention,
        Kind::Reply => NotificationKind::Reply,
        Kind::Direct => NotificationKind::Direct,
        Kind::Added => NotificationKind::Added,
        Kind::CallMissed => NotificationKind::CallMissed,
        Kind::App => NotificationKind::App,
    }
}

fn shared_priority(priority: NotificationPriority) -> Priority {
    match priority {
        NotificationPriority::Low => Priority::Low,
        NotificationPriority::Normal => Priority::Normal,
        NotificationPriority::High => Priority::High,
    }
}

impl poem_openapi::types::Example for Notification {
    fn example() -> Self {
        Self {
            id: super::examples::MESSAGE,
            kind: Kind::Mention,
            priority: NotificationPriority::Normal,
            title: "Alice mentioned you".into(),
            body: Some("@bob is the bike still available?".into()),
            data: serde_json::json!({
                "conversation_id": super::examples::CONVERSATION,
                "message_id": super::examples::MESSAGE,
                "seq": 2,
                "actor_id": super::examples::ALICE,
            }),
            created_at: super::examples::time(),
            read_at: None,
        }
    }
}

impl poem_openapi::types::Example for NotificationPage {
    fn example() -> Self {
        Self { items: vec![Notification::example()], has_more: false, unread_count: 1 }
    }
}

impl poem_openapi::types::Example for InboxState {
    fn example() -> Self {
        Self { unread_count: 0 }
    }
}

impl poem_openapi::types::Example for ReadUpTo {
    fn example() -> Self {
        Self { up_to: Some(super::examples::MESSAGE) }
    }
}

impl poem_openapi::types::Example for NewAppNotification {
    fn example() -> Self {
        Self {
            kind: Some(Kind::App),
            priority: NotificationPriority::High,
            title: "Your order has shipped".into(),
            body: Some("It arrives on Thursday.".into()),
            data: Some(BTreeMap::from([("order_id".to_owned(), serde_json::json!("o-1042"))])),
        }
    }
}
