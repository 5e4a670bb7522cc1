//! The two AsyncAPI documents: the public WebSocket protocol of this broker (frames, handshake,
//! close codes, the resume flow) and the internal NATS contract (`parley_shared::asyncapi` plus
//! the brokers' requests). `cargo xtask openapi` writes them to `openapi/asyncapi.yaml` and
//! `openapi/asyncapi-nats.yaml`; a test fails when either differs.

use parley_shared::membership::{MembershipReply, MembershipRequest, VisibilityReply, VisibilityRequest};
use parley_shared::publications::{
    PositionReply, PositionRequest, Publication, PublishReply, PublishRequest, StatsReply,
};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::protocol::{ClientFrame, CloseCode, ServerFrame};

/// The NATS contract (`openapi/asyncapi-nats.yaml`): the events, typing and presence subjects of
/// `parley_shared::asyncapi` plus the brokers' membership and visibility requests to the API.
pub fn nats_document() -> Value {
    let mut document = parley_shared::asyncapi::document();
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = "#/components/schemas/".into();
    let mut generator = SchemaGenerator::new(settings);
    let membership_request = generator.subschema_for::<MembershipRequest>();
    let membership_reply = generator.subschema_for::<MembershipReply>();
    let visibility_request = generator.subschema_for::<VisibilityRequest>();
    let visibility_reply = generator.subschema_for::<VisibilityReply>();
    let publication = generator.subschema_for::<Publication>();
    let publish_request = generator.subschema_for::<PublishRequest>();
    let publish_reply = generator.subschema_for::<PublishReply>();
    let position_request = generator.subschema_for::<PositionRequest>();
    let position_reply = generator.subschema_for::<PositionReply>();
    let stats_reply = generator.subschema_for::<StatsReply>();
    let channel_messages = [
        (
            "publication",
            "Channel publication",
            "One publication, exactly the WebSocket `publication` frame brokers forward; durable ones carry their offset in the `Parley-Offset` header too (and the publication id as `Nats-Msg-Id`).",
            publication,
        ),
        (
            "publishRequest",
            "Publish request",
            "A backend publishes: `channel` or `channels` (up to 1,000), `data`, optional `idempotency_key`; validated as `POST /v1/publications`.",
            publish_request,
        ),
        (
            "publishReply",
            "Publish reply",
            "Where each publication went (offset and epoch for durable channels), or the problem (RFC 7807 fields).",
            publish_reply,
        ),
        (
            "positionRequest",
            "Channel position request",
            "A broker asks where a durable channel stands and, with `since`, for every publication after it (at most `max_bytes` of them, else `recovered: false`).",
            position_request,
        ),
        (
            "positionReply",
            "Channel position reply",
            "The channel's epoch and latest offset, and (when `recovered`) the missed publications in order; or an error.",
            position_reply,
        ),
        (
            "statsRequest",
            "Channel stats request",
            "The API asks every broker how many of its connections subscribe to a channel; the payload is the channel key `<namespace>.<base64url(name)>`.",
            generator.subschema_for::<String>(),
        ),
        ("statsReply", "Channel stats reply", "One broker's local subscriber count.", stats_reply),
    ];
    insert_all(
        &mut document["components"]["messages"],
        channel_messages
            .into_iter()
            .map(|(name, title, summary, payload)| {
                let message = json!({ "name": name, "title": title, "summary": summary, "contentType": "application/json", "payload": payload });
                (name.to_owned(), message)
            })
            .collect(),
    );
    insert_all(&mut document["channels"], channel_channels());
    insert_all(&mut document["operations"], channel_operations());
    insert_all(&mut document["components"]["schemas"], generator.take_definitions(true).into_iter().collect());
    insert_all(
        &mut document["components"]["messages"],
        Map::from_iter([
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

/// The channel subjects of the NATS contract.
fn channel_channels() -> Map<String, Value> {
    let channel = |address: &str, title: &str, description: &str, messages: &[&str]| {
        let messages: Map<String, Value> = messages
            .iter()
            .map(|name| ((*name).to_owned(), json!({ "$ref": format!("#/components/messages/{name}") })))
            .collect();
        json!({ "address": address, "title": title, "description": description, "servers": [{ "$ref": "#/servers/nats" }], "messages": messages })
    };
    let name_parameters = json!({
        "namespace": { "description": "The channel's namespace (`[a-z][a-z0-9_-]{0,31}`)." },
        "name": { "description": "The channel's name, base64url-encoded without padding: one token whatever it holds." },
    });
    let mut durable = channel(
        "parley.chan.{namespace}.{name}",
        "Durable channel publications (JetStream)",
        "Published by the API's outbox relay after the publication committed to PostgreSQL, in offset order per channel; captured by the events stream, read by every broker through its one consumer.",
        &["publication"],
    );
    durable["parameters"] = name_parameters.clone();
    let mut ephemeral = channel(
        "parley.ephemeral.{namespace}.{name}",
        "Ephemeral channel publications (core NATS)",
        "Published by the API (or a broker, for a client's publish) at once; at most once, never stored. Brokers hold one wildcard subscription for all of them.",
        &["publication"],
    );
    ephemeral["parameters"] = name_parameters;
    Map::from_iter([
        ("channelPublications".to_owned(), durable),
        ("ephemeralPublications".to_owned(), ephemeral),
        (
            "publish".to_owned(),
            channel(
                "parley.api.publish",
                "Publish requests (request/reply)",
                "For backends on the same NATS (NATS permissions decide who may): answered by one API instance (queue group `parley-api`). Brokers use it for clients' publications into durable channels.",
                &["publishRequest", "publishReply"],
            ),
        ),
        (
            "channelPosition".to_owned(),
            channel(
                "parley.internal.channel.position",
                "Channel position requests (request/reply)",
                "A broker subscribing a client to a durable channel asks one API instance (queue group `parley-api`).",
                &["positionRequest", "positionReply"],
            ),
        ),
        (
            "channelStats".to_owned(),
            channel(
                "parley.internal.channel.stats",
                "Channel stats (scatter-gather)",
                "The API asks every broker at once (no queue group) and sums the replies that arrive within 500 ms.",
                &["statsRequest", "statsReply"],
            ),
        ),
    ])
}

/// Who sends and receives on the channel subjects.
fn channel_operations() -> Map<String, Value> {
    let reference =
        |channel: &str, message: &str| json!({ "$ref": format!("#/channels/{channel}/messages/{message}") });
    Map::from_iter([
        (
            "publishDurable".to_owned(),
            json!({ "action": "send", "title": "The API's relay publishes durable publications", "channel": { "$ref": "#/channels/channelPublications" }, "messages": [reference("channelPublications", "publication")] }),
        ),
        (
            "publishEphemeral".to_owned(),
            json!({ "action": "send", "title": "The API or a broker publishes ephemeral publications", "channel": { "$ref": "#/channels/ephemeralPublications" }, "messages": [reference("ephemeralPublications", "publication")] }),
        ),
        (
            "requestPublish".to_owned(),
            json!({
                "action": "send",
                "title": "A backend (or a broker) asks the API to publish",
                "channel": { "$ref": "#/channels/publish" },
                "messages": [reference("publish", "publishRequest")],
                "reply": { "channel": { "$ref": "#/channels/publish" }, "messages": [reference("publish", "publishReply")] },
            }),
        ),
        (
            "requestChannelPosition".to_owned(),
            json!({
                "action": "send",
                "title": "A broker asks the API where a durable channel stands",
                "channel": { "$ref": "#/channels/channelPosition" },
                "messages": [reference("channelPosition", "positionRequest")],
                "reply": { "channel": { "$ref": "#/channels/channelPosition" }, "messages": [reference("channelPosition", "positionReply")] },
            }),
        ),
        (
            "requestChannelStats".to_owned(),
            json!({
                "action": "send",
                "title": "The API asks every broker for a channel's subscribers",
                "channel": { "$ref": "#/channels/channelStats" },
                "messages": [reference("channelStats", "statsRequest")],
                "reply": { "channel": { "$ref": "#/channels/channelStats" }, "messages": [reference("channelStats", "statsReply")] },
            }),
        ),
    ])
}

/// The public WebSocket protocol (`openapi/asyncapi.yaml`, served at `/asyncapi.yaml`): every
/// frame is a named schema and a message of its own, so generators give named types.
pub fn websocket_document() -> Value {
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = "#/components/schemas/".into();
    let mut generator = SchemaGenerator::new(settings);
    generator.subschema_for::<ServerFrame>();
    generator.subschema_for::<ClientFrame>();
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    let server_frames = name_variants(&mut schemas, "ServerFrame", "", "Frame");
    let client_frames = name_variants(&mut schemas, "ClientFrame", "Client", "Frame");
    name_variants(&mut schemas, "Envelope", "", "Event");

    let mut messages = Map::new();
    let mut message_refs = |frames: &[String]| -> Vec<Value> {
        frames
            .iter()
            .map(|name| {
                let schema = &schemas[name];
                let summary = schema["description"].as_str().unwrap_or(name).to_owned();
                messages.insert(
                    name.clone(),
                    json!({
                        "name": name,
                        "title": schema["properties"]["type"]["const"],
                        "summary": summary,
                        "contentType": "application/json",
                        "payload": { "$ref": format!("#/components/schemas/{name}") },
                    }),
                );
                json!({ "$ref": format!("#/channels/websocket/messages/{name}") })
            })
            .collect()
    };
    let server_refs = message_refs(&server_frames);
    let client_refs = message_refs(&client_frames);
    let channel_messages: Map<String, Value> = messages
        .keys()
        .map(|name| (name.clone(), json!({ "$ref": format!("#/components/messages/{name}") })))
        .collect();

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Parley WebSocket protocol",
            "version": env!("CARGO_PKG_VERSION"),
            "description": WEBSOCKET_DESCRIPTION.replace("{close_codes}", &close_code_table()),
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "127.0.0.1:8081",
                "pathname": "/ws",
                "protocol": "ws",
                "description": "parley-broker (PARLEY_BROKER_LISTEN, PARLEY_WS_PATH). Use wss behind TLS. Authenticate with `Authorization: Bearer <jwt>`, or (browsers) the subprotocols `parley.v1, parley.bearer.<jwt>`, or an `auth` frame as the first frame.",
            },
        },
        "channels": {
            "websocket": {
                "address": "/ws",
                "title": "WebSocket connection",
                "description": "One connection of one authenticated user (or, where allowed, an anonymous one). The server relays every event of every conversation the user is a member of, to every connection of the user, and every publication of the channels the connection subscribes to.",
                "servers": [{ "$ref": "#/servers/broker" }],
                "messages": channel_messages,
            },
        },
        "operations": {
            "receiveFrames": {
                "action": "send",
                "title": "The broker sends frames to the client",
                "channel": { "$ref": "#/channels/websocket" },
                "messages": server_refs,
            },
            "sendFrames": {
                "action": "receive",
                "title": "The broker receives frames from the client",
                "channel": { "$ref": "#/channels/websocket" },
                "messages": client_refs,
            },
        },
        "components": { "messages": messages, "schemas": schemas },
    })
}

/// Moves each inline variant of `union`'s `oneOf` (tagged by a `type` constant) into a schema
/// of its own, `<prefix><Type>` + `suffix` (`message.created` → `MessageCreatedEvent`), and
/// returns the new names in order.
fn name_variants(schemas: &mut Map<String, Value>, union: &str, prefix: &str, suffix: &str) -> Vec<String> {
    let Some(variants) =
        schemas.get_mut(union).and_then(|schema| schema.get_mut("oneOf")).and_then(Value::as_array_mut)
    else {
        return Vec::new();
    };
    let mut named = Vec::new();
    for variant in variants.iter_mut() {
        let Some(tag) = variant["properties"]["type"]["const"].as_str() else { continue };
        let name = format!("{prefix}{}{suffix}", pascal_case(tag));
        let mut schema = std::mem::replace(variant, json!({ "$ref": format!("#/components/schemas/{name}") }));
        schema["title"] = json!(name);
        named.push((name, schema));
    }
    let names = named.iter().map(|(name, _)| name.clone()).collect();
    schemas.extend(named);
    names
}

/// `presence.subscribed` → `PresenceSubscribed`.
fn pascal_case(tag: &str) -> String {
    tag.split(['.', '_'])
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|first| first.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
        })
        .collect()
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

**Handshake.** Credentials, one of: `Authorization: Bearer <jwt>` (non-browser clients); the subprotocol list `parley.v1, parley.bearer.<jwt>` (browsers; the server selects `parley.v1`); or no credentials and an `auth` frame `{\"type\":\"auth\",\"token\":\"<jwt>\"}` as the very first frame within `PARLEY_BROKER_AUTH_TIMEOUT` (5 s). `?access_token=` is refused unless `PARLEY_BROKER_ALLOW_QUERY_TOKEN` is set. A bad token in the handshake (or two `Authorization` headers) gets HTTP 401 (problem+json); a browser `Origin` outside `PARLEY_BROKER_ALLOWED_ORIGINS` gets 403; a `Sec-WebSocket-Version` other than 13 gets 426 with `Sec-WebSocket-Version: 13`. Handshakes without a token and handshakes refused with 401 are limited per client address (`PARLEY_UNAUTHENTICATED_RATE_PER_SECOND`, `PARLEY_UNAUTHENTICATED_BURST`): past the limit, 429 `rate_limited` with `Retry-After`.

**Frames.** JSON text frames. The first server frame is `hello`: connection id, user, token expiry, heartbeat interval, idle timeout, limits, and every conversation of the user with its `last_seq`. Then `event` frames carry the same envelope as NATS and `GET /v1/conversations/{id}/events` (`id`, `type`, `conversation_id`, `seq`, `actor`, `occurred_at`, `data`; a `message.created` carries the sender's `client_message_id`). The client may send `ping` (answered by `pong`), `auth` (a fresh token for the same user, answered by `authenticated`, which moves the expiry) and `typing` (`{\"type\":\"typing\",\"conversation_id\":…,\"state\":\"start\"|\"stop\"}`; renew `start` every 3 s while typing; renewals within 1 s are not relayed; a conversation the user is not in gets an `error` `not_a_member`). Other members' connections, on every broker, get `typing` frames (never the typist's own connections); an indicator expires `hello.typing_timeout_ms` (6 s) after the last `start`. `presence` frames (`{\"type\":\"presence\",\"user_id\",\"status\":\"online\"|\"offline\",\"last_seen_at\",\"occurred_at\"}`) tell a connection when a user it follows opened their first connection on any broker or closed their last one; the users of a broker that died go offline within `PARLEY_PRESENCE_TTL` (30 s) plus 1 s. A connection follows, without asking, every co-member of its user's conversations that have at most `PARLEY_PRESENCE_AUTO_MAX_MEMBERS` (100) members; for anyone else (members of larger groups) send `{\"type\":\"presence.subscribe\",\"user_ids\":[…]}` for the users you show (and `presence.unsubscribe` when you stop): only users who share a conversation with you, at most `limits.max_presence_subscriptions` (500) per connection; the answer is `presence.subscribed` with everyone the connection follows, and an `error` (`not_visible`, `too_many_subscriptions`) with `user_ids` for those refused. When a member leaves one of your conversations, the broker checks the users you follow again and drops those who no longer share a conversation with you, sending `presence.subscribed` with what is left (if the check cannot be made, every subscription is dropped with an `error` `unavailable`: subscribe again). A user's changes reach, without asking, the members of at most 1,000 of that user's small conversations (the most recently active); subscribe to see a user in more. One frame per change per connection, however many conversations you share. After connecting, read the current state from `GET /v1/users/{id}/presence` or `members[].presence` in the conversation list. Unknown, malformed and binary frames get an `error` frame and the connection stays open. The server sends a WebSocket ping every heartbeat interval; a connection with no inbound traffic for the idle timeout is closed.

**Resume (miss nothing, on any broker).** Keep, per conversation, the highest `seq` you have delivered (`delivered`). On every (re)connect: read `hello.conversations` (if `hello.conversations_truncated` is true, the user has more conversations than `hello` lists: take the others' `last_seq` from `GET /v1/conversations`, whose events arrive live all the same); for each conversation whose `last_seq` > `delivered`, page `GET /v1/conversations/{id}/events?after_seq=<delivered>` until you reach `last_seq`; apply live `event` frames as they come, dropping any with `seq` <= `delivered`. Every event after `hello`'s `last_seq` arrives on the connection, so nothing falls between the two. If a live event's `seq` is more than `delivered + 1` (an event too large for NATS, which the server skips), backfill the gap the same way. A NATS outage does not close connections: the broker replays what it missed from the JetStream stream and live events arrive late, in order. It closes with 4004 only when it cannot replay (the stream no longer holds what it missed: the outage outlasted `PARLEY_STREAM_MAX_AGE`, or NATS lost its store), spread over `PARLEY_BROKER_RESYNC_SPREAD`. If `GET …/events` answers 410 `history_pruned`, reload the conversation's messages and continue from its `last_seq`. Deduplicate by `(conversation_id, seq)`.

**Channels.** A channel is `<namespace>:<name>` (namespace `[a-z][a-z0-9_-]{0,31}`; name 1–160 characters of `A-Z a-z 0-9 _ - . : @ = + , /`); namespaces are configured on the server (`PARLEY_CHANNELS_CONFIG`; by default `public`, `live`, `granted`, and always `user:<user_id>`). Send `{\"type\":\"subscribe\",\"channel\":…}` (optionally `token`: a subscription token for a `granted` channel; `since`: `{offset, epoch}` on a durable channel); the answer is `subscribed` (durable channels: the channel's `offset` and `epoch`; with `since`, `recovered: true` and every missed publication in `publications`, in order, or `recovered: false` and none: page `GET /v1/channels/{channel}/publications?after_offset=` then), and then `publication` frames `{\"type\":\"publication\",\"channel\",\"offset\"?,\"epoch\"?,\"data\"}`; keep the last `offset` with its `epoch` to resume. `unsubscribe` is answered by `unsubscribed`; `publish` (where the namespace allows clients, into a channel the connection subscribes to) by `published` (with the offset on durable channels). Refusals are `error` frames naming the `channel`: `forbidden`, `unknown_namespace`, `bad_channel`, `too_many_subscriptions` (more than `limits.max_subscriptions`), `token_expired`, `already_subscribed`, `not_subscribed`, `too_large`, `rate_limited`, `unavailable`. A subscription granted by a subscription token ends when the token expires (`error` `token_expired`, then `unsubscribed`); subscribe again with a fresh token before then to extend it. **Anonymous connections** (`PARLEY_BROKER_ALLOW_ANONYMOUS`): connect without credentials and send any frame other than `auth` first (usually `subscribe`): the connection gets a `hello` without `user_id` and may only subscribe to channels of `public` namespaces.

**Close codes.** 4000–4099 and 1012: reconnect with backoff (jittered, 0.5 s doubling to 30 s) and resume. 4100–4199 and 1002 (the WebSocket protocol broken: bad framing, invalid UTF-8, a malformed close frame): terminal, do not reconnect until the cause is fixed. A client's close frame is answered with a close frame before the broker closes TCP (so browsers report `wasClean`): its code echoed, or 1002 for a code a peer may not send (0–999, 1004–1006, 1015, 1016–2999, 5000 and up); the broker's own closes use the codes below.

{close_codes}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_asyncapi_documents_match_the_code() {
        for (committed, document) in [
            (include_str!("../../openapi/asyncapi.yaml"), websocket_document()),
            (include_str!("../../openapi/asyncapi-nats.yaml"), nats_document()),
        ] {
            let committed: Value = serde_norway::from_str(committed).expect("valid YAML");
            assert!(
                committed == document,
                "openapi/asyncapi*.yaml differ from the code; run `cargo xtask openapi` and commit the result"
            );
        }
    }

    #[test]
    fn every_frame_and_event_is_a_named_schema() {
        let document = websocket_document();
        let schemas = document["components"]["schemas"].as_object().expect("schemas");
        for union in ["ServerFrame", "ClientFrame", "Envelope"] {
            for variant in schemas[union]["oneOf"].as_array().expect("a oneOf") {
                let reference = variant["$ref"].as_str().expect("each variant is a reference");
                assert!(schemas.contains_key(reference.trim_start_matches("#/components/schemas/")), "{reference}");
            }
        }
        assert!(schemas.contains_key("HelloFrame") && schemas.contains_key("ClientTypingFrame"));
        assert!(schemas.contains_key("MessageCreatedEvent"));
        let messages = document["components"]["messages"].as_object().expect("messages");
        assert_eq!(messages.len(), 15 + 8, "one message per server and client frame");
    }

    #[test]
    fn every_close_code_is_documented() {
        let description = websocket_document()["info"]["description"].as_str().unwrap_or_default().to_owned();
        for code in CloseCode::ALL {
            assert!(description.contains(&format!("| {} | `{}` |", code.code(), code.reason())), "{code:?}");
        }
    }
}
