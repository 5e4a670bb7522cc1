//! `/v1/me/push-targets`: the devices the caller's notifications are pushed to;
//! `/v1/push/config`: what a client needs to register one; and
//! `/v1/conversations/{id}/settings`: muting a conversation's pushes.

use chrono::{DateTime, Utc};
use parley_shared::ids::ConversationId;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Union};
use uuid::Uuid;

use super::{ApiTags, examples};
use crate::auth::BearerAuth;
use crate::error::{ApiError, ProblemCode};
use crate::push::{NewTarget, TargetError, validate_target};
use crate::state::AppState;
use crate::{membership, text::Text};

/// An Expo push token (`ExponentPushToken[…]`), from `getExpoPushTokenAsync`.
#[derive(Object, Debug)]
#[oai(example)]
pub struct ExpoTarget {
    pub token: Text,
}

/// A browser's `PushSubscription` (its `toJSON()`), subscribed with the server's VAPID key
/// (`GET /v1/push/config`).
#[derive(Object, Debug)]
#[oai(example)]
pub struct WebPushTarget {
    pub subscription: WebPushSubscription,
}

#[derive(Object, Debug)]
pub struct WebPushSubscription {
    /// The push service's `https://` URL for this browser.
    pub endpoint: Text,
    pub keys: WebPushKeys,
}

#[derive(Object, Debug)]
pub struct WebPushKeys {
    /// The browser's P-256 public key, base64url.
    pub p256dh: Text,
    /// The browser's 16-byte authentication secret, base64url.
    pub auth: Text,
}

/// A device the application pushes to itself (FCM, APNs): Parley calls the application's
/// webhook (`PARLEY_PUSH_WEBHOOK_URL`) with this id.
#[derive(Object, Debug)]
#[oai(example)]
pub struct WebhookTarget {
    /// The application's own id for the device, 1 to 512 characters.
    pub device_id: Text,
}

#[derive(Union, Debug)]
#[oai(discriminator_name = "kind", one_of)]
pub enum NewPushTarget {
    #[oai(mapping = "expo")]
    Expo(ExpoTarget),
    #[oai(mapping = "webpush")]
    WebPush(WebPushTarget),
    #[oai(mapping = "webhook")]
    Webhook(WebhookTarget),
}

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct PushTarget {
    pub id: Uuid,
    /// `expo`, `webpush` or `webhook`.
    pub kind: String,
    /// The Expo token, the Web Push endpoint or the webhook device id.
    pub address: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Object, Debug)]
#[oai(example)]
pub struct PushTargetList {
    pub items: Vec<PushTarget>,
}

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct PushSetup {
    /// The `applicationServerKey` browsers subscribe with (base64url); absent when Web Push is
    /// not configured.
    pub vapid_public_key: Option<String>,
    /// Target kinds this server pushes to.
    pub kinds: Vec<String>,
}

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct ConversationSettings {
    /// No pushes for this conversation until then (its notifications still reach the inbox and
    /// live connections); `null` or absent: not muted. A far-future time mutes for good.
    pub muted_until: Option<DateTime<Utc>>,
}

#[derive(ApiResponse, Debug)]
pub enum RegisterResponse {
    /// Registered.
    #[oai(status = 201)]
    Created(Json<PushTarget>),
    /// It was registered already.
    #[oai(status = 200)]
    Existing(Json<PushTarget>),
}

#[derive(ApiResponse, Debug)]
pub enum RemoveResponse {
    /// Removed: nothing more is pushed to it.
    #[oai(status = 204)]
    Removed,
}

#[derive(sqlx::FromRow)]
struct TargetRow {
    id: Uuid,
    kind: String,
    address: String,
    created_at: DateTime<Utc>,
    inserted: bool,
}

#[derive(Default)]
pub struct PushApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Notifications")]
impl PushApi {
    /// Register a push target
    ///
    /// Notifications are pushed to it when the caller has no live connection, or when they are
    /// still unread after the grace delay (see README "Notifications"). Registering the same
    /// target again answers 200 with it.
    #[oai(path = "/me/push-targets", method = "post", operation_id = "registerPushTarget")]
    async fn register(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        body: Json<NewPushTarget>,
    ) -> Result<RegisterResponse, ApiError> {
        let new = match &body.0 {
            NewPushTarget::Expo(expo) => NewTarget::Expo { token: &expo.token },
            NewPushTarget::WebPush(web) => NewTarget::WebPush {
                endpoint: &web.subscription.endpoint,
                p256dh: &web.subscription.keys.p256dh,
                auth: &web.subscription.keys.auth,
            },
            NewPushTarget::Webhook(webhook) => NewTarget::Webhook { device_id: &webhook.device_id },
        };
        let target = validate_target(&state.push, new).map_err(|TargetError { field, detail }| {
            let field = match (&body.0, field) {
                (NewPushTarget::WebPush(_), "endpoint" | "keys.p256dh" | "keys.auth") => {
                    format!("subscription.{field}")
                }
                _ => field.to_owned(),
            };
            ApiError::bad_request(&field, detail)
        })?;
        let mut tx = state.db.begin().await?;
        // Serialises one user's registrations, so that two at once cannot pass the limit.
        sqlx::query("select 1 from users where id = $1 for update").bind(auth.0.id.as_uuid()).execute(&mut *tx).await?;
        let row: TargetRow = sqlx::query_as(
            "with inserted as (
                 insert into push_targets (id, user_id, kind, address, p256dh, auth)
                 select $1, $2, $3, $4, $5, $6
                  where (select count(*) from push_targets where user_id = $2) < $7
                 on conflict (user_id, kind, address) do update set p256dh = excluded.p256dh, auth = excluded.auth
                 returning id, kind, address, created_at, id = $1 as inserted
             )
             select * from inserted
             union all
             select id, kind, address, created_at, false from push_targets
              where user_id = $2 and kind = $3 and address = $4 and not exists (select 1 from inserted)",
        )
        .bind(Uuid::now_v7())
        .bind(auth.0.id.as_uuid())
        .bind(target.kind)
        .bind(&target.address)
        .bind(&target.p256dh)
        .bind(&target.auth)
        .bind(state.push.targets_per_user)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                ProblemCode::TooManyPushTargets,
                format!("a user may register at most {} push targets; remove one first", state.push.targets_per_user),
            )
        })?;
        crate::db::commit(tx).await?;
        let inserted = row.inserted;
        let target = PushTarget { id: row.id, kind: row.kind, address: row.address, created_at: row.created_at };
        Ok(if inserted { RegisterResponse::Created(Json(target)) } else { RegisterResponse::Existing(Json(target)) })
    }

    /// List the caller's push targets
    #[oai(path = "/me/push-targets", method = "get", operation_id = "listPushTargets")]
    async fn list(&self, state: Data<&AppState>, auth: BearerAuth) -> Result<Json<PushTargetList>, ApiError> {
        let rows: Vec<TargetRow> = sqlx::query_as(
            "select id, kind, address, created_at, false as inserted from push_targets where user_id = $1 order by id",
        )
        .bind(auth.0.id.as_uuid())
        .fetch_all(&state.db)
        .await?;
        let items = rows
            .into_iter()
            .map(|row| PushTarget { id: row.id, kind: row.kind, address: row.address, created_at: row.created_at })
            .collect();
        Ok(Json(PushTargetList { items }))
    }

    /// Remove a push target
    #[oai(path = "/me/push-targets/:id", method = "delete", operation_id = "removePushTarget")]
    async fn remove(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<RemoveResponse, ApiError> {
        let removed = sqlx::query("delete from push_targets where id = $1 and user_id = $2")
            .bind(id.0)
            .bind(auth.0.id.as_uuid())
            .execute(&state.db)
            .await?;
        if removed.rows_affected() == 0 {
            return Err(ApiError::not_found("push target"));
        }
        Ok(RemoveResponse::Removed)
    }

    /// How to register push targets here
    #[oai(path = "/push/config", method = "get", operation_id = "getPushConfig")]
    async fn setup(&self, state: Data<&AppState>, _auth: BearerAuth) -> Result<Json<PushSetup>, ApiError> {
        let mut kinds = vec!["expo".to_owned()];
        if state.vapid.is_some() {
            kinds.push("webpush".into());
        }
        if state.push.webhook_url.is_some() {
            kinds.push("webhook".into());
        }
        Ok(Json(PushSetup { vapid_public_key: state.vapid.as_ref().map(|vapid| vapid.public_key()), kinds }))
    }

    /// The caller's settings for a conversation
    #[oai(path = "/conversations/:id/settings", method = "get", operation_id = "getConversationSettings")]
    async fn settings(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<Json<ConversationSettings>, ApiError> {
        let muted_until: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
            "select muted_until from conversation_members where conversation_id = $1 and user_id = $2",
        )
        .bind(id.0)
        .bind(auth.0.id.as_uuid())
        .fetch_optional(&state.db)
        .await?;
        let muted_until = muted_until.ok_or_else(|| ApiError::not_found("conversation"))?;
        Ok(Json(ConversationSettings { muted_until }))
    }

    /// Mute or unmute a conversation's pushes
    #[oai(path = "/conversations/:id/settings", method = "put", operation_id = "updateConversationSettings")]
    async fn update_settings(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: Json<ConversationSettings>,
    ) -> Result<Json<ConversationSettings>, ApiError> {
        membership::require(&state.db, ConversationId::from_uuid(id.0), auth.0.id).await?;
        sqlx::query("update conversation_members set muted_until = $3 where conversation_id = $1 and user_id = $2")
            .bind(id.0)
            .bind(auth.0.id.as_uuid())
            .bind(body.0.muted_until)
            .execute(&state.db)
            .await?;
        Ok(Json(ConversationSettings { muted_until: body.0.muted_until }))
    }
}

impl poem_openapi::types::Example for ExpoTarget {
    fn example() -> Self {
        Self { token: "ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx]".into() }
    }
}

impl poem_openapi::types::Example for WebPushTarget {
    fn example() -> Self {
        Self {
            subscription: WebPushSubscription {
                endpoint: "https://fcm.googleapis.com/fcm/send/dQw4w9WgXcQ:APA91b".into(),
                keys: WebPushKeys {
                    p256dh: "BLn9b-VR0ca83knDNZ32dCHGyjJp-1riX9ZTN40MqV8K_LpQmLqxC_DoHvqvFXO_nGdAB4W9dogZb_sM-uV4JbY"
                        .into(),
                    auth: "_ordMnz7uTCmrpBTeUV4Bw".into(),
                },
            },
        }
    }
}

impl poem_openapi::types::Example for WebhookTarget {
    fn example() -> Self {
        Self { device_id: "fcm:dQw4w9WgXcQ".into() }
    }
}

impl poem_openapi::types::Example for PushTarget {
    fn example() -> Self {
        Self {
            id: examples::MESSAGE,
            kind: "expo".into(),
            address: "ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx]".into(),
            created_at: examples::time(),
        }
    }
}

impl poem_openapi::types::Example for PushTargetList {
    fn example() -> Self {
        Self { items: vec![PushTarget::example()] }
    }
}

impl poem_openapi::types::Example for PushSetup {
    fn example() -> Self {
        Self {
            vapid_public_key: Some(
                "BLn9b-VR0ca83knDNZ32dCHGyjJp-1riX9ZTN40MqV8K_LpQmLqxC_DoHvqvFXO_nGdAB4W9dogZb_sM-uV4JbY".into(),
            ),
            kinds: vec!["expo".into(), "webpush".into()],
        }
    }
}

impl poem_openapi::types::Example for ConversationSettings {
    fn example() -> Self {
        Self { muted_until: Some(examples::time()) }
    }
}
