//! The NATS contract as an AsyncAPI 3 document, generated from the Rust types so it cannot
//! drift from the code. The broker adds its requests to the API
//! (`parley_broker::asyncapi::nats_document`), `cargo xtask openapi` writes the whole to
//! `openapi/asyncapi-nats.yaml`, a test fails when the committed file differs, and CI validates
//! it with the reference AsyncAPI parser.

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::events::{Envelope, Typing};
use crate::notifications::NotificationFrame;
use crate::presence::PresenceAnnouncement;

/// Every persisted event type, with what it means.
pub const EVENT_KINDS: [(&str, &str); 11] = [
    (
        "conversation.created",
        "A conversation was created; also sent to each initial member's user subject, where `member_ids` lists only that member (`member_count` has the total).",
    ),
    ("conversation.updated", "A group was renamed."),
    ("member.added", "A user joined; also sent to that user's subject."),
    ("member.removed", "A user left or was removed; also sent to that user's subject."),
    ("message.created", "A message was sent; `client_message_id` lets the sender's devices match their copy."),
    ("message.edited", "A message's text changed."),
    ("message.deleted", "A message was deleted; its text is gone from every later read."),
    ("reaction.added", "A user reacted to a message."),
    ("reaction.removed", "A user took a reaction back."),
    ("receipt.delivered", "A member's delivered cursor moved forward."),
    ("receipt.read", "A member's read cursor moved forward."),
];

/// The kinds that also go to `<prefix>.user.<user_id>.<type>` (see `Event::user_recipients`).
const USER_KINDS: [&str; 3] = ["conversation.created", "member.added", "member.removed"];

pub fn document() -> Value {
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = "#/components/schemas/".into();
    let mut generator = SchemaGenerator::new(settings);
    let envelope = generator.subschema_for::<Envelope>();
    let typing = generator.subschema_for::<Typing>();
    let presence = generator.subschema_for::<PresenceAnnouncement>();
    let notification = generator.subschema_for::<NotificationFrame>();
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    schemas.insert("EventHeaders".into(), event_headers());

    let mut messages = Map::new();
    for (kind, summary) in EVENT_KINDS {
        messages.insert(
            message_key(kind),
            json!({
                "name": kind,
                "title": kind,
                "summary": summary,
                "contentType": "application/json",
                "headers": { "$ref": "#/components/schemas/EventHeaders" },
                "payload": envelope.clone(),
            }),
        );
    }
    messages.insert(
        "typing".into(),
        json!({
            "name": "typing",
            "title": "typing",
            "summary": "A member is typing (`start`, renewed every few seconds) or stopped (`stop`). Not stored: no `id`, no `seq`.",
            "contentType": "application/json",
            "payload": typing,
        }),
    );
    messages.insert(
        "presence".into(),
        json!({
            "name": "presence",
            "title": "presence",
            "summary": "A user's first connection on any broker opened (`online`) or their last one closed (`offline`, with `last_seen_at`): published once per change by the broker (`offline` for the users of a broker that died comes from an API instance once the broker's lease expired). `audience` lists the user's conversations with at most `PARLEY_PRESENCE_AUTO_MAX_MEMBERS` members, whose members hear it without asking; brokers send the signal (without `audience`: the `presence` frame) once to each connection of those members and of anyone who subscribed to the user. Not stored.",
            "contentType": "application/json",
            "payload": presence,
        }),
    );
    messages.insert(
        "notification".into(),
        json!({
            "name": "notification",
            "title": "notification",
            "summary": "A change of one user's notification inbox (`notification`: created; `notifications.read`; `notifications.cleared`), as the WebSocket frame brokers forward byte for byte to every connection of the user. Published by the outbox relay after the change committed: a message's new notifications with the message's event (`Nats-Msg-Id` `notification/<id>`), every other change in order per user (`Nats-Msg-Id` `notification-change/<position>`). A frame carries the notification and `unread_count` as they are when it is published.",
            "contentType": "application/json",
            "payload": notification,
        }),
    );
    let refs = |kinds: &[&str]| -> Map<String, Value> {
        kinds
            .iter()
            .map(|kind| (message_key(kind), json!({ "$ref": format!("#/components/messages/{}", message_key(kind)) })))
            .collect()
    };
    let all_kinds: Vec<&str> = EVENT_KINDS.iter().map(|(kind, _)| *kind).collect();
    let channel_refs = |channel: &str, kinds: &[&str]| -> Vec<Value> {
        kinds
            .iter()
            .map(|kind| json!({ "$ref": format!("#/channels/{channel}/messages/{}", message_key(kind)) }))
            .collect()
    };

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Parley events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "What parley-api publishes to NATS. Persisted events go to JetStream (stream `<PREFIX>_EVENTS`, subjects `<prefix>.conv.*.*.>` and `<prefix>.user.>`), one message per event with `Nats-Msg-Id` = event id, in seq order per conversation. `<prefix>` is `PARLEY_NATS_PREFIX` (default `parley`). PostgreSQL is the durable record: a client that missed events replays them with `GET /v1/conversations/{id}/events?after_seq=`.\n\nEvolution: fields may be added to a payload (consumers ignore what they do not know); a field is never removed or given another meaning; a change that would break this is a new `type` (e.g. `message.created.v2`).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "Any NATS server or cluster with JetStream, as given by NATS_URL.",
            },
        },
        "channels": {
            "conversationEvents": {
                "address": "parley.conv.{conversationId}.{eventType}",
                "title": "Conversation events",
                "description": "Every persisted event of one conversation. Brokers read them all through one JetStream consumer of the events stream (with the user subjects), in stream order, and route them in process.",
                "parameters": {
                    "conversationId": { "description": "The conversation's id (a UUID)." },
                    "eventType": { "description": "The event's `type`.", "enum": all_kinds },
                },
                "messages": refs(&all_kinds),
            },
            "userEvents": {
                "address": "parley.user.{userId}.{eventType}",
                "title": "User events",
                "description": "Events one user must hear although they are not (or no longer) a member: the broker keeps its view of membership from these. `Nats-Msg-Id` is `<event id>/<user id>`.",
                "parameters": {
                    "userId": { "description": "The user's id (the JWT `sub`, a UUID)." },
                    "eventType": { "description": "The event's `type`.", "enum": USER_KINDS },
                },
                "messages": refs(&USER_KINDS),
            },
            "userNotifications": {
                "address": "parley.user.{userId}.notification",
                "title": "Notification inbox changes",
                "description": "JetStream (captured by the events stream with the user events). Brokers read them through their one consumer and forward each to the user's connections; a client that was offline lists `GET /v1/me/notifications`.",
                "parameters": { "userId": { "description": "The user whose inbox changed." } },
                "messages": { "notification": { "$ref": "#/components/messages/notification" } },
            },
            "typing": {
                "address": "parley.conv.{conversationId}.typing",
                "title": "Typing signals",
                "description": "Core NATS only: never stored, a lost signal is not recovered.",
                "parameters": { "conversationId": { "description": "The conversation's id (a UUID)." } },
                "messages": { "typing": { "$ref": "#/components/messages/typing" } },
            },
            "presence": {
                "address": "parley.presence.{userId}",
                "title": "Presence signals",
                "description": "Core NATS only. The current state is in the KV bucket `<PREFIX>_PRESENCE` (`user.<id>`: the user's sessions per broker and `last_seen_at`; `broker.<id>`: each broker's lease, renewed every third of `PARLEY_PRESENCE_TTL`); `GET /v1/users/{id}/presence` reads it.",
                "parameters": { "userId": { "description": "The user whose presence changed." } },
                "messages": { "presence": { "$ref": "#/components/messages/presence" } },
            },
        },
        "operations": {
            "publishConversationEvent": {
                "action": "send",
                "title": "parley-api publishes each committed event (outbox relay)",
                "channel": { "$ref": "#/channels/conversationEvents" },
                "messages": channel_refs("conversationEvents", &all_kinds),
            },
            "publishUserEvent": {
                "action": "send",
                "title": "parley-api publishes membership events to the users concerned",
                "channel": { "$ref": "#/channels/userEvents" },
                "messages": channel_refs("userEvents", &USER_KINDS),
            },
            "publishNotificationChange": {
                "action": "send",
                "title": "parley-api publishes each committed change of a user's notification inbox (outbox relay)",
                "channel": { "$ref": "#/channels/userNotifications" },
                "messages": [{ "$ref": "#/channels/userNotifications/messages/notification" }],
            },
            "publishTyping": {
                "action": "send",
                "title": "parley-api (POST …/typing) and parley-broker (the `typing` frame) publish typing signals",
                "channel": { "$ref": "#/channels/typing" },
                "messages": [{ "$ref": "#/channels/typing/messages/typing" }],
            },
            "publishPresence": {
                "action": "send",
                "title": "parley-broker (a user's first connection / last disconnection) and parley-api (sweeping an expired broker lease) publish presence changes",
                "channel": { "$ref": "#/channels/presence" },
                "messages": [{ "$ref": "#/channels/presence/messages/presence" }],
            },
        },
        "components": { "messages": messages, "schemas": schemas },
    })
}

/// `message.created` → `messageCreated`.
fn message_key(kind: &str) -> String {
    let mut key = String::new();
    let mut upper = false;
    for c in kind.chars() {
        if c == '.' {
            upper = true;
        } else if upper {
            key.extend(c.to_uppercase());
            upper = false;
        } else {
            key.push(c);
        }
    }
    key
}

fn event_headers() -> Value {
    json!({
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "The event id (user subjects: `<event id>/<user id>`); JetStream drops a republished event with the same id.",
            },
            "traceparent": {
                "type": "string",
                "description": "W3C trace context of the publish, a child of the request that wrote the event.",
            },
        },
        "required": ["Nats-Msg-Id"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_variant_has_a_documented_message_and_no_message_lacks_a_variant() {
        let document = document();
        let variants: Vec<&str> = document["components"]["schemas"]["Envelope"]["oneOf"]
            .as_array()
            .expect("Envelope is a oneOf of the event variants")
            .iter()
            .map(|variant| variant["properties"]["type"]["const"].as_str().expect("a type constant"))
            .collect();
        let documented: Vec<&str> = EVENT_KINDS.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(variants, documented);
    }
}
