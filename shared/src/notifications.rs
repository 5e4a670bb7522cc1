//! Live notification frames: every change of a user's notification inbox, published by the
//! API's relay to `<prefix>.user.<user_id>.notification` (JetStream) and forwarded by brokers
//! byte for byte to every connection of that user, so that all their devices agree.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What caused a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A message names the user in its `mentions`.
    Mention,
    /// A message answers one of the user's messages.
    Reply,
    /// Someone started a direct conversation with the user.
    Direct,
    /// Someone added the user to a group.
    Added,
    /// A call the user did not answer.
    CallMissed,
    /// Posted by the application's backend.
    App,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mention => "mention",
            Self::Reply => "reply",
            Self::Direct => "direct",
            Self::Added => "added",
            Self::CallMissed => "call_missed",
            Self::App => "app",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    /// Pushed at once, without waiting for the grace delay.
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

/// One notification, as `GET /v1/me/notifications` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Notification {
    /// UUIDv7: newer notifications have greater ids.
    pub id: Uuid,
    pub kind: NotificationKind,
    pub priority: Priority,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// What it is about: `conversation_id`, `message_id`, `seq`, `actor_id` for the kinds
    /// Parley creates; whatever the backend sent for `app`.
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<DateTime<Utc>>,
}

/// A new notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationCreated {
    pub notification: Notification,
    /// The user's unread notifications when the relay published this.
    pub unread_count: i64,
}

/// Notifications were marked read: one (`id`), or every one up to and including `up_to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationsRead {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<Uuid>,
    pub unread_count: i64,
}

/// Notifications were cleared (deleted): one (`id`), or all of them (`all`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationsCleared {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    pub all: bool,
    pub unread_count: i64,
}

/// The frames as they travel (the broker's `ServerFrame` documents the same three).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum NotificationFrame {
    #[serde(rename = "notification")]
    Created(NotificationCreated),
    #[serde(rename = "notifications.read")]
    Read(NotificationsRead),
    #[serde(rename = "notifications.cleared")]
    Cleared(NotificationsCleared),
}
