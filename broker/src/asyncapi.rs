//! The complete AsyncAPI document: the NATS contract from `parley_shared::asyncapi` plus the
//! WebSocket protocol of this broker (frames, handshake, close codes, the resume flow).
//! `cargo xtask openapi` writes it to `openapi/asyncapi.yaml`; a test fails when they differ.

use parley_shared::membership::{MembershipReply, MembershipRequest, VisibilityReply, VisibilityRequest};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::protocol::{ClientFrame, CloseCode, ServerFrame};

pub fn document() -> Value {
    let mut document = parley_shared::asyncapi::document();
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = "#/components/schemas/".into();
    let mut generator = SchemaGenerator::new(settings);
    let server_frame = generator.subschema_for::<ServerFrame>();
    let client_frame = generator.subschema_for::<ClientFrame>();
    let membership_request = generator.subschema_for::<MembershipRequest>();
    let membership_reply = generator.subschema_for::<MembershipReply>();
    let visibility_request = generator.subschema_for::<VisibilityRequest>();
    let visibility_reply = generator.subschema_for::<VisibilityReply>();
    let schemas = generator.take_definitions(true);

    document["info"]["title"] = json!("Parley events and WebSocket protocol");
    document["info"]["description"] = json!(format!(
        "{}\n\n{}",
        document["info"]["description"].as_str().unwrap_or_default(),
        WEBSOCKET_DESCRIPTION.replace("{close_codes}", &close_code_table())
    ));
    document["servers"]["broker"] = json!({
        "host": "127.0.0.1:8081",
        "pathname": "/ws",
        "protocol": "ws",
        "description": "parley-broker (PARLEY_BROKER_LISTEN, PARLEY_WS_PATH). Use wss behind TLS. Authenticate with `Authorization: Bearer <jwt>`, or (browsers) the subprotocols `parley.v1, parley.bearer.<jwt>`, or an `auth` frame as the first frame.",
    });
    insert_all(&mut document["components"]["schemas"], schemas.into_iter().collect());
    insert_all(
        &mut document["components"]["messages"],
        Map::from_iter([
            (
                "serverFrame".into(),
                json!({
                    "name": "serverFrame",
                    "title": "Server frame",
                    "summary": "A JSON text frame from the broker: `hello` (always first), `event`, `typing`, `presence`, `presence.subscribed`, `pong`, `authenticated` or `error`.",
                    "contentType": "application/json",
                    "payload": server_frame,
                }),
            ),
            (
                "clientFrame".into(),
                json!({
                    "name": "clientFrame",
                    "title": "Client frame",
                    "summary": "A JSON text frame from the client: `auth`, `ping`, `typing`, `presence.subscribe` or `presence.unsubscribe`. Anything else gets an `error` frame; the connection stays open.",
                    "contentType": "application/json",
                    "payload": client_frame,
                }),
            ),
            (
                "membershipRequest".into(),
                json!({
                    "name": "membershipRequest",
                    "title": "Membership request",
                    "summary": "A broker asks for a connecting user's conversations, a page at a time (`after` = the previous page's `next`).",
                    "contentType": "application/json",
                    "payload": membership_request,
                }),
            ),
            (
                "membershipReply".into(),
                json!({
                    "name": "membershipReply",
                    "title": "Membership reply",
                    "summary": "One page (up to 1,000, by id) of the user's conversations with each one's latest seq and member count, and `next` when more follow; or an error.",
                    "contentType": "application/json",
                    "payload": membership_reply,
                }),
            ),
            (
                "visibilityRequest".into(),
                json!({
                    "name": "visibilityRequest",
                    "title": "Visibility request",
                    "summary": "A broker asks which of some users (at most 1,000) share a conversation with a user, before it lets the user follow their presence.",
                    "contentType": "application/json",
                    "payload": visibility_request,
                }),
            ),
            (
                "visibilityReply".into(),
                json!({
                    "name": "visibilityReply",
                    "title": "Visibility reply",
                    "summary": "The candidates who share a conversation with the user (the user themself included), or an error.",
                    "contentType": "application/json",
                    "payload": visibility_reply,
                }),
            ),
        ]),
    );
    insert_all(
        &mut document["channels"],
        Map::from_iter([
            (
                "websocket".into(),
                json!({
                    "address": "/ws",
                    "title": "WebSocket connection",
                    "description": "One connection of one authenticated user. The server relays every event of every conversation the user is a member of, to every connection of the user.",
                    "servers": [{ "$ref": "#/servers/broker" }],
                    "messages": {
                        "serverFrame": { "$ref": "#/components/messages/serverFrame" },
                        "clientFrame": { "$ref": "#/components/messages/clientFrame" },
                    },
                }),
            ),
            (
                "membership".into(),
                json!({
                    "address": "parley.internal.membership",
                    "title": "Membership requests (request/reply)",
                    "description": "Core NATS request/reply between brokers and API instances (queue group `parley-api`: one instance answers).",
                    "servers": [{ "$ref": "#/servers/nats" }],
                    "messages": {
                        "membershipRequest": { "$ref": "#/components/messages/membershipRequest" },
                        "membershipReply": { "$ref": "#/components/messages/membershipReply" },
                    },
                }),
            ),
            (
                "visibility".into(),
                json!({
                    "address": "parley.internal.visibility",
                    "title": "Visibility requests (request/reply)",
                    "description": "Core NATS request/reply between brokers and API instances (queue group `parley-api`: one instance answers).",
                    "servers": [{ "$ref": "#/servers/nats" }],
                    "messages": {
                        "visibilityRequest": { "$ref": "#/components/messages/visibilityRequest" },
                        "visibilityReply": { "$ref": "#/components/messages/visibilityReply" },
                    },
                }),
            ),
        ]),
    );
    insert_all(
        &mut document["operations"],
        Map::from_iter([
            (
                "receiveFrames".into(),
                json!({
                    "action": "send",
                    "title": "The broker sends frames to the client",
                    "channel": { "$ref": "#/channels/websocket" },
                    "messages": [{ "$ref": "#/channels/websocket/messages/serverFrame" }],
                }),
            ),
            (
                "sendFrames".into(),
                json!({
                    "action": "receive",
                    "title": "The broker receives frames from the client",
                    "channel": { "$ref": "#/channels/websocket" },
                    "messages": [{ "$ref": "#/channels/websocket/messages/clientFrame" }],
                }),
            ),
            (
                "requestMembership".into(),
                json!({
                    "action": "send",
                    "title": "A broker asks the API for a connecting user's conversations",
                    "channel": { "$ref": "#/channels/membership" },
                    "messages": [{ "$ref": "#/channels/membership/messages/membershipRequest" }],
                    "reply": {
                        "channel": { "$ref": "#/channels/membership" },
                        "messages": [{ "$ref": "#/channels/membership/messages/membershipReply" }],
                    },
                }),
            ),
            (
                "requestVisibility".into(),
                json!({
                    "action": "send",
                    "title": "A broker asks the API who may follow whose presence",
                    "channel": { "$ref": "#/channels/visibility" },
                    "messages": [{ "$ref": "#/channels/visibility/messages/visibilityRequest" }],
                    "reply": {
                        "channel": { "$ref": "#/channels/visibility" },
                        "messages": [{ "$ref": "#/channels/visibility/messages/visibilityReply" }],
                    },
                }),
            ),
        ]),
    );
    document
}

fn insert_all(target: &mut Value, entries: Map<String, Value>) {
    if let Some(target) = target.as_object_mut() {
        target.extend(entries);
    }
}

fn close_code_table() -> String {
    let mut table = String::from("| code | reason | kind | what the client should do |\n|---|---|---|---|\n");
    for code in CloseCode::ALL {
        let kind = if code.reconnect() { "reconnect" } else { "terminal" };
        table.push_str(&format!("| {} | `{}` | {kind} | {} |\n", code.code(), code.reason(), code.advice()));
    }
    table
}

const WEBSOCKET_DESCRIPTION: &str = "## WebSocket protocol (parley-broker, `GET /ws`)

**Handshake.** Credentials, one of: `Authorization: Bearer <jwt>` (non-browser clients); the subprotocol list `parley.v1, parley.bearer.<jwt>` (browsers; the server selects `parley.v1`); or no credentials and an `auth` frame `{\"type\":\"auth\",\"token\":\"<jwt>\"}` as the very first frame within `PARLEY_BROKER_AUTH_TIMEOUT` (5 s). `?access_token=` is refused unless `PARLEY_BROKER_ALLOW_QUERY_TOKEN` is set. A bad token in the handshake gets HTTP 401 (problem+json); a browser `Origin` outside `PARLEY_BROKER_ALLOWED_ORIGINS` gets 403.

**Frames.** JSON text frames. The first server frame is `hello`: connection id, user, token expiry, heartbeat interval, idle timeout, limits, and every conversation of the user with its `last_seq`. Then `event` frames carry the same envelope as NATS and `GET /v1/conversations/{id}/events` (`id`, `type`, `conversation_id`, `seq`, `actor`, `occurred_at`, `data`; a `message.created` carries the sender's `client_message_id`). The client may send `ping` (answered by `pong`), `auth` (a fresh token for the same user, answered by `authenticated`, which moves the expiry) and `typing` (`{\"type\":\"typing\",\"conversation_id\":…,\"state\":\"start\"|\"stop\"}`; renew `start` every 3 s while typing; renewals within 1 s are not relayed; a conversation the user is not in gets an `error` `not_a_member`). Other members' connections, on every broker, get `typing` frames (never the typist's own connections); an indicator expires `hello.typing_timeout_ms` (6 s) after the last `start`. `presence` frames (`{\"type\":\"presence\",\"user_id\",\"status\":\"online\"|\"offline\",\"last_seen_at\",\"occurred_at\"}`) tell a connection when a user it follows opened their first connection on any broker or closed their last one; the users of a broker that died go offline within `PARLEY_PRESENCE_TTL` (30 s) plus 1 s. A connection follows, without asking, every co-member of its user's conversations that have at most `PARLEY_PRESENCE_AUTO_MAX_MEMBERS` (100) members; for anyone else (members of larger groups) send `{\"type\":\"presence.subscribe\",\"user_ids\":[…]}` for the users you show (and `presence.unsubscribe` when you stop): only users who share a conversation with you, at most `limits.max_presence_subscriptions` (500) per connection; the answer is `presence.subscribed` with everyone the connection follows, and an `error` (`not_visible`, `too_many_subscriptions`) with `user_ids` for those refused. When a member leaves one of your conversations, the broker checks the users you follow again and drops those who no longer share a conversation with you, sending `presence.subscribed` with what is left (if the check cannot be made, every subscription is dropped with an `error` `unavailable`: subscribe again). A user's changes reach, without asking, the members of at most 1,000 of that user's small conversations (the most recently active); subscribe to see a user in more. One frame per change per connection, however many conversations you share. After connecting, read the current state from `GET /v1/users/{id}/presence` or `members[].presence` in the conversation list. Unknown, malformed and binary frames get an `error` frame and the connection stays open. The server sends a WebSocket ping every heartbeat interval; a connection with no inbound traffic for the idle timeout is closed.

**Resume (miss nothing, on any broker).** Keep, per conversation, the highest `seq` you have delivered (`delivered`). On every (re)connect: read `hello.conversations` (if `hello.conversations_truncated` is true, the user has more conversations than `hello` lists: take the others' `last_seq` from `GET /v1/conversations`, whose events arrive live all the same); for each conversation whose `last_seq` > `delivered`, page `GET /v1/conversations/{id}/events?after_seq=<delivered>` until you reach `last_seq`; apply live `event` frames as they come, dropping any with `seq` <= `delivered`. Every event after `hello`'s `last_seq` arrives on the connection, so nothing falls between the two. If a live event's `seq` is more than `delivered + 1` (an event too large for NATS, which the server skips), backfill the gap the same way. A NATS outage does not close connections: the broker replays what it missed from the JetStream stream and live events arrive late, in order. It closes with 4004 only when it cannot replay (the stream no longer holds what it missed: the outage outlasted `PARLEY_STREAM_MAX_AGE`, or NATS lost its store), spread over `PARLEY_BROKER_RESYNC_SPREAD`. If `GET …/events` answers 410 `history_pruned`, reload the conversation's messages and continue from its `last_seq`. Deduplicate by `(conversation_id, seq)`.

**Close codes.** 4000–4099 and 1012: reconnect with backoff (jittered, 0.5 s doubling to 30 s) and resume. 4100–4199 and 1002 (the WebSocket protocol broken: bad framing, invalid UTF-8, a malformed close frame): terminal, do not reconnect until the cause is fixed. A client's close frame is answered with a close frame before the broker closes TCP (so browsers report `wasClean`): its code echoed, or 1002 for a code a peer may not send (0–999, 1004–1006, 1015, 1016–2999, 5000 and up); the broker's own closes use the codes below.

{close_codes}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_asyncapi_yaml_matches_the_code() {
        let committed: Value = serde_norway::from_str(include_str!("../../openapi/asyncapi.yaml")).expect("valid YAML");
        assert!(
            committed == document(),
            "openapi/asyncapi.yaml differs from the code; run `cargo xtask openapi` and commit the result"
        );
    }

    #[test]
    fn every_close_code_is_documented() {
        let description = document()["info"]["description"].as_str().unwrap_or_default().to_owned();
        for code in CloseCode::ALL {
            assert!(description.contains(&format!("| {} | `{}` |", code.code(), code.reason())), "{code:?}");
        }
    }
}
