//! The domain-event contract between the API (producer) and the broker and clients (consumers).
//!
//! An event is an [`Envelope`] around one [`Event`]. On the wire (NATS, WebSocket, the catch-up
//! endpoint) it is one JSON object: `{"id", "type", "conversation_id", "seq", "actor",
//! "occurred_at", "data"}`. `seq` is gapless and increasing per conversation, so a consumer can
//! order, deduplicate and detect gaps with `(conversation_id, seq)` alone.
//!
//! Evolution: fields may be added to a payload (consumers ignore what they do not know); a
//! field is never removed or given another meaning, and a new kind is a new `type`. A change
//! that would break that rule is a new `type` name (e.g. `message.created.v2`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, EventId, MessageId, UserId};

/// One stored event with its position in its conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    pub id: EventId,
    pub conversation_id: ConversationId,
    pub seq: i64,
    pub actor: UserId,
    pub occurred_at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: Event,
}

/// Every kind of persisted conversation event, tagged by `type` with its payload in `data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "conversation.created")]
    ConversationCreated(ConversationCreated),
    #[serde(rename = "conversation.updated")]
    ConversationUpdated(ConversationUpdated),
    #[serde(rename = "member.added")]
    MemberAdded(MemberChange),
    #[serde(rename = "member.removed")]
    MemberRemoved(MemberChange),
    #[serde(rename = "message.created")]
    MessageCreated(MessageCreated),
    #[serde(rename = "message.edited")]
    MessageEdited(MessageEdited),
    #[serde(rename = "message.deleted")]
    MessageDeleted(MessageDeleted),
    #[serde(rename = "reaction.added")]
    ReactionAdded(ReactionChange),
    #[serde(rename = "reaction.removed")]
    ReactionRemoved(ReactionChange),
    #[serde(rename = "receipt.delivered")]
    ReceiptDelivered(Receipt),
    #[serde(rename = "receipt.read")]
    ReceiptRead(Receipt),
}

impl Event {
    /// The `type` string, e.g. `message.created`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ConversationCreated(_) => "conversation.created",
            Self::ConversationUpdated(_) => "conversation.updated",
            Self::MemberAdded(_) => "member.added",
            Self::MemberRemoved(_) => "member.removed",
            Self::MessageCreated(_) => "message.created",
            Self::MessageEdited(_) => "message.edited",
            Self::MessageDeleted(_) => "message.deleted",
            Self::ReactionAdded(_) => "reaction.added",
            Self::ReactionRemoved(_) => "reaction.removed",
            Self::ReceiptDelivered(_) => "receipt.delivered",
            Self::ReceiptRead(_) => "receipt.read",
        }
    }

    /// The `data` payload as JSON, as it is stored.
    pub fn data(&self) -> serde_json::Value {
        let mut tagged = serde_json::to_value(self).unwrap_or_default();
        tagged.get_mut("data").map(serde_json::Value::take).unwrap_or_default()
    }

    /// Users who must hear this event on their own subject (`<prefix>.user.<id>.<type>`) as
    /// well as on the conversation's: whoever joined or left, and everyone in a new
    /// conversation. The broker keeps its view of membership from these.
    pub fn user_recipients(&self) -> Vec<UserId> {
        match self {
            Self::MemberAdded(change) | Self::MemberRemoved(change) => vec![change.user_id],
            Self::ConversationCreated(created) => created.member_ids.clone(),
            _ => Vec::new(),
        }
    }

    /// The event as `user` hears it on their own subject: a `conversation.created` lists only
    /// them among the members (`None`: the event as is).
    pub fn for_recipient(&self, user: UserId) -> Option<Self> {
        match self {
            Self::ConversationCreated(created) if created.member_ids.len() > 1 => {
                let member_count = created.member_count.or(Some(created.member_ids.len()));
                Some(Self::ConversationCreated(ConversationCreated {
                    member_ids: vec![user],
                    member_count,
                    ..created.clone()
                }))
            }
            _ => None,
        }
    }

    /// Rebuilds an event from its stored `type` and `data`.
    pub fn from_parts(kind: &str, data: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "type": kind, "data": data }))
    }
}

/// An app's reference that scopes a direct conversation, e.g. a marketplace listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Context {
    pub kind: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationCreated {
    /// `direct` or `group`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Context>,
    /// Every initial member on the conversation's subject and in the stored event; on a user's
    /// own subject (and so on their WebSocket) only that user, so that creating a group of n
    /// members costs O(n) bytes rather than O(n²). `member_count` has the total either way.
    pub member_ids: Vec<UserId>,
    /// How many initial members there are (absent in events stored before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<usize>,
}

impl ConversationCreated {
    pub fn new(kind: &str, title: Option<String>, context: Option<Context>, member_ids: Vec<UserId>) -> Self {
        let member_count = Some(member_ids.len());
        Self { kind: kind.into(), title, context, member_ids, member_count }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationUpdated {
    pub title: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberChange {
    pub user_id: UserId,
    /// `owner` or `member`; present on `member.added`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Attachment {
    pub url: String,
    pub mime_type: String,
    pub size_bytes: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageCreated {
    pub message_id: MessageId,
    pub author_id: UserId,
    /// Absent in stored events once the message has been deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// The sender's own id for the message, so the sender's devices can match their
    /// optimistic copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
    /// The members the message names (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<UserId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageEdited {
    pub message_id: MessageId,
    /// Absent in stored events once the message has been deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub edited_at: DateTime<Utc>,
    /// The members the message names after the edit (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<UserId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageDeleted {
    pub message_id: MessageId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReactionChange {
    pub message_id: MessageId,
    pub emoji: String,
    pub user_id: UserId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Receipt {
    pub user_id: UserId,
    pub seq: i64,
}

/// An ephemeral signal (core NATS only, never stored): `{"type": "typing", "conversation_id",
/// "actor", "occurred_at", "data": {"state"}}`. No `id` or `seq`: a lost signal is not recovered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Typing {
    #[serde(rename = "type")]
    pub kind: TypingKind,
    pub conversation_id: ConversationId,
    pub actor: UserId,
    pub occurred_at: DateTime<Utc>,
    pub data: TypingData,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TypingKind {
    #[serde(rename = "typing")]
    Typing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TypingData {
    pub state: TypingState,
}

/// `start` renews the indicator (clients hide it a few seconds after the last one); `stop` ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TypingState {
    Start,
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_serialises_flat_with_type_and_data_and_round_trips() {
        let envelope = Envelope {
            id: EventId::from_uuid(uuid::Uuid::now_v7()),
            conversation_id: ConversationId::from_uuid(uuid::Uuid::now_v7()),
            seq: 7,
            actor: UserId::from_uuid(uuid::Uuid::now_v7()),
            occurred_at: Utc::now(),
            event: Event::MessageDeleted(MessageDeleted { message_id: MessageId::from_uuid(uuid::Uuid::now_v7()) }),
        };
        let json = serde_json::to_value(&envelope).expect("serialise");
        assert_eq!(json["type"], "message.deleted");
        assert_eq!(json["seq"], 7);
        assert!(json["data"]["message_id"].is_string());
        assert_eq!(serde_json::from_value::<Envelope>(json).expect("deserialise"), envelope);
    }

    #[test]
    fn stored_parts_rebuild_the_event() {
        let event = Event::ReceiptRead(Receipt { user_id: UserId::from_uuid(uuid::Uuid::now_v7()), seq: 3 });
        assert_eq!(Event::from_parts(event.kind(), event.data()).expect("parts"), event);
    }
}
