//! The WebSocket protocol: JSON text frames in both directions and the close codes.
//!
//! Server → client: `hello` (first frame), `event` (a persisted conversation event, the same
//! envelope as on NATS and `GET …/events`), `publication` (a channel's), `subscribed`,
//! `unsubscribed`, `published`, `typing`, `presence`, `pong`, `authenticated`, `error`.
//! Client → server: `auth` (first frame when the handshake carried no token; later, to refresh
//! the token), `ping`, `subscribe`, `unsubscribe`, `publish`, `typing`, `presence.(un)subscribe`.

use chrono::{DateTime, Utc};
use parley_shared::events::{Envelope, TypingData, TypingState};
use parley_shared::ids::{ConversationId, UserId};
use parley_shared::membership::ConversationPosition;
use parley_shared::notifications::{NotificationCreated, NotificationsCleared, NotificationsRead};
use parley_shared::presence::PresenceStatus;
use parley_shared::publications::{ChannelPosition, Publication};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Why the server closed a connection. Codes 4000–4099 (and 1012) mean "reconnect, with
/// backoff, and resume"; 4100–4199 mean "do not reconnect until the cause is fixed".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// The broker is shutting down or restarting.
    Shutdown,
    /// The client read too slowly: its outbound queue hit its bound, or a write stalled past the
    /// write timeout.
    SlowConsumer,
    /// The token expired and no `auth` frame refreshed it.
    TokenExpired,
    /// The user already has the maximum number of connections to this broker; this one was refused.
    TooManyConnections,
    /// Nothing arrived from the client (not even a pong) within the idle timeout, or within the
    /// pong timeout after a ping (a dead peer).
    IdleTimeout,
    /// The broker could not learn the user's conversations (API or NATS unavailable), or events
    /// it missed are no longer in the NATS stream (it cannot replay them).
    Unavailable,
    /// The token in an `auth` frame is missing, invalid, expired or for another user.
    BadToken,
    /// No `auth` frame arrived within the auth deadline.
    AuthTimeout,
    /// A frame exceeded the maximum frame size.
    FrameTooLarge,
    /// The client sent frames faster than the inbound rate limit.
    RateLimited,
    /// The frames broke the WebSocket protocol (invalid UTF-8 in a text frame, bad framing, a
    /// malformed close frame): RFC 6455's own protocol-error code.
    ProtocolError,
}

impl CloseCode {
    pub const ALL: [Self; 11] = [
        Self::Shutdown,
        Self::SlowConsumer,
        Self::TokenExpired,
        Self::TooManyConnections,
        Self::IdleTimeout,
        Self::Unavailable,
        Self::BadToken,
        Self::AuthTimeout,
        Self::FrameTooLarge,
        Self::RateLimited,
        Self::ProtocolError,
    ];

    pub const fn code(self) -> u16 {
        match self {
            Self::Shutdown => 1012,
            Self::SlowConsumer => 4000,
            Self::TokenExpired => 4001,
            Self::TooManyConnections => 4002,
            Self::IdleTimeout => 4003,
            Self::Unavailable => 4004,
            Self::BadToken => 4100,
            Self::AuthTimeout => 4101,
            Self::FrameTooLarge => 4102,
            Self::RateLimited => 4103,
            Self::ProtocolError => 1002,
        }
    }

    /// The close frame's reason text (also the metric label).
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::SlowConsumer => "slow_consumer",
            Self::TokenExpired => "token_expired",
            Self::TooManyConnections => "too_many_connections",
            Self::IdleTimeout => "idle_timeout",
            Self::Unavailable => "unavailable",
            Self::BadToken => "bad_token",
            Self::AuthTimeout => "auth_timeout",
            Self::FrameTooLarge => "frame_too_large",
            Self::RateLimited => "rate_limited",
            Self::ProtocolError => "protocol_error",
        }
    }

    /// Whether a client should reconnect (with backoff) and resume.
    pub const fn reconnect(self) -> bool {
        matches!(
            self,
            Self::Shutdown
                | Self::SlowConsumer
                | Self::TokenExpired
                | Self::TooManyConnections
                | Self::IdleTimeout
                | Self::Unavailable
        )
    }

    /// What the client should do, for the documentation.
    pub const fn advice(self) -> &'static str {
        match self {
            Self::Shutdown => "Reconnect at once (to any broker) and resume.",
            Self::SlowConsumer => "Reconnect with backoff and resume; read frames faster.",
            Self::TokenExpired => {
                "Get a fresh token, reconnect and resume; refresh with an `auth` frame before `exp` next time."
            }
            Self::TooManyConnections => "Close another connection of this user, or reconnect later with backoff.",
            Self::IdleTimeout => "Reconnect and resume; answer WebSocket pings (browsers do) or send `ping` frames.",
            Self::Unavailable => "Reconnect with backoff and resume.",
            Self::BadToken => "Do not reconnect with this token: get a valid one first.",
            Self::AuthTimeout => "Send the `auth` frame first, at once after the connection opens.",
            Self::FrameTooLarge => "Client bug: frames must stay under `limits.max_frame_bytes`.",
            Self::RateLimited => "Client bug: stay under `limits.max_frames_per_second`.",
            Self::ProtocolError => "Client bug: send valid WebSocket text frames.",
        }
    }
}

/// Client → server frames.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Authenticates the connection (as its first frame) or refreshes its token (later; it must
    /// name the same user).
    Auth { token: String },
    /// Asks for a `pong` (browsers cannot see WebSocket pings; this lets them detect a dead link).
    Ping,
    /// The user is typing in a conversation they are a member of (`start`, renewed every few
    /// seconds while typing) or stopped (`stop`). Relayed to the other members' connections.
    Typing { conversation_id: ConversationId, state: TypingState },
    /// Follow these users' presence (besides the co-members of small conversations, whom every
    /// connection follows anyway): only users who share a conversation with the caller, at most
    /// `limits.max_presence_subscriptions` per connection. Answered by `presence.subscribed`
    /// (and an `error` `not_visible` naming the users refused).
    #[serde(rename = "presence.subscribe")]
    PresenceSubscribe { user_ids: Vec<UserId> },
    /// Stop following these users' presence.
    #[serde(rename = "presence.unsubscribe")]
    PresenceUnsubscribe { user_ids: Vec<UserId> },
    /// Subscribe to a channel (`<namespace>:<name>`, see README "Channels"). `token`: a
    /// subscription token for a `granted` channel the user's own token does not grant. `since`:
    /// the last position the client holds on a durable channel; `subscribed` then carries every
    /// publication after it (`recovered: true`) or none (`recovered: false`: read the rest from
    /// `GET /v1/channels/{channel}/publications`). Subscribing again to a channel the
    /// connection has, with a fresh `token`, extends the subscription.
    Subscribe {
        channel: String,
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        since: Option<ChannelPosition>,
    },
    /// Stop receiving a channel's publications (answered by `unsubscribed`).
    Unsubscribe { channel: String },
    /// Publish into a channel this connection subscribes to, where the namespace lets clients
    /// (`client_publish`); answered by `published` (with the offset, on durable channels).
    Publish { channel: String, data: serde_json::Value },
}

/// How long a typing indicator shows after the last `start` unless a `stop` comes first.
pub const TYPING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6);
/// A connection's `start` for the same conversation within this interval is not relayed again.
pub const TYPING_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Server → client frames.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Hello(Hello),
    /// A persisted conversation event; `event.seq` orders and deduplicates it per conversation.
    Event {
        event: Envelope,
    },
    Pong,
    /// Another member is typing (`start`) or stopped (`stop`); hide the indicator after
    /// `hello.typing_timeout_ms` without a renewal. Never stored, never replayed.
    Typing {
        conversation_id: ConversationId,
        actor: UserId,
        occurred_at: DateTime<Utc>,
        data: TypingData,
    },
    /// A member of one of the user's conversations went `online` (first connection on any
    /// broker) or `offline` (last one closed, or their broker's lease expired), with
    /// `last_seen_at`. Sent once per change to each connection that follows the user (a
    /// co-member of a conversation with at most `PARLEY_PRESENCE_AUTO_MAX_MEMBERS` members, or a
    /// `presence.subscribe`). Not replayed: read `GET /v1/users/{id}/presence` (or the
    /// conversation's `members[].presence`) after connecting.
    Presence {
        user_id: UserId,
        status: PresenceStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_seen_at: Option<DateTime<Utc>>,
        occurred_at: DateTime<Utc>,
    },
    /// An `auth` frame refreshed the token.
    Authenticated {
        expires_at: DateTime<Utc>,
    },
    /// A publication of a channel this connection subscribes to. `offset` (durable channels) is
    /// gapless and increasing within the channel: keep the last one with its `epoch` to resume
    /// with `since`.
    Publication {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<i64>,
        /// Durable channels: the history `offset` belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        data: serde_json::Value,
    },
    /// The connection now receives the channel's publications. Durable channels: `offset` and
    /// `epoch` say where the channel stood (every later publication follows on this
    /// connection); with `since`, `recovered` says whether `publications` holds every
    /// publication after it, in order (never some of them).
    Subscribed {
        channel: String,
        recovered: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        publications: Vec<Publication>,
    },
    /// The connection no longer receives the channel's publications (it asked, or the
    /// subscription token expired: an `error` `token_expired` comes first).
    Unsubscribed {
        channel: String,
    },
    /// A `publish` was accepted (durable channels: stored, at `offset`).
    Published {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<i64>,
    },
    /// The users a `presence.subscribe` now follows (all the connection follows, not only the
    /// new ones).
    #[serde(rename = "presence.subscribed")]
    PresenceSubscribed {
        user_ids: Vec<UserId>,
    },
    /// A new notification in the user's inbox (on every connection of the user), with the
    /// unread count. Not replayed: list `GET /v1/me/notifications?status=unread` after connecting.
    Notification(NotificationCreated),
    /// Notifications were marked read, on this device or another.
    #[serde(rename = "notifications.read")]
    NotificationsRead(NotificationsRead),
    /// Notifications were cleared, on this device or another.
    #[serde(rename = "notifications.cleared")]
    NotificationsCleared(NotificationsCleared),
    /// A frame was not understood or not allowed; the connection stays open. `user_ids` names
    /// the users a `presence.subscribe` was refused for (`not_visible`, `too_many_subscriptions`);
    /// `channel` the channel a `subscribe`, `unsubscribe` or `publish` was refused for.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        user_ids: Vec<UserId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Hello {
    pub connection_id: String,
    /// Absent on an anonymous connection (`PARLEY_BROKER_ALLOW_ANONYMOUS`), which may only
    /// subscribe to public channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The token's expiry: refresh it with an `auth` frame before then (absent when anonymous).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The server sends a WebSocket ping this often.
    pub heartbeat_interval_ms: u64,
    /// A connection with no inbound traffic (frames, pongs) for this long is closed.
    pub idle_timeout_ms: u64,
    /// Show a typing indicator until `stop` or this long after the last `start`.
    pub typing_timeout_ms: u64,
    pub limits: Limits,
    /// Every conversation of the user with its latest `seq` at the moment this connection
    /// started receiving events: every later event arrives on this connection; backfill up to
    /// `last_seq` over `GET /v1/conversations/{id}/events?after_seq=`. At most
    /// `PARLEY_BROKER_HELLO_MAX_CONVERSATIONS` (1,000), the highest `last_seq` first.
    pub conversations: Vec<ConversationPosition>,
    /// True when the user has more conversations than `conversations` lists: read the others'
    /// `last_seq` from `GET /v1/conversations` (their events arrive live all the same).
    pub conversations_truncated: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_frames_per_second: u32,
    pub max_connections_per_user: usize,
    pub outbound_queue_frames: usize,
    pub max_presence_subscriptions: usize,
    /// Channels one connection may subscribe to at once.
    pub max_subscriptions: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not JSON, or lacks a field.
    MalformedFrame,
    /// The frame's `type` is not one the server knows.
    UnknownType,
    /// Binary frames carry nothing in this protocol.
    BinaryNotSupported,
    /// The frame names a conversation the user is not a member of (or that does not exist).
    NotAMember,
    /// `presence.subscribe` named users who share no conversation with the caller.
    NotVisible,
    /// `presence.subscribe` would follow more users than `limits.max_presence_subscriptions`.
    TooManySubscriptions,
    /// The broker could not check a `presence.subscribe` or a `subscribe` now, or pass on a
    /// `publish` (the API or NATS did not answer); retry.
    Unavailable,
    /// The channel is not the caller's to subscribe to or publish into (or the connection is
    /// anonymous and the frame needs a user).
    Forbidden,
    /// The channel's namespace is not configured.
    UnknownNamespace,
    /// The channel name is malformed (see README "Channels").
    BadChannel,
    /// The subscription token has expired (the subscription ends; subscribe again with a fresh one).
    TokenExpired,
    /// `publish` data is larger than the namespace allows.
    TooLarge,
    /// `publish` came faster than the namespace's `client_publish_per_second`.
    RateLimited,
    /// `unsubscribe` or `publish` named a channel this connection does not subscribe to, or
    /// `subscribe` (without a token) one it already does.
    NotSubscribed,
    AlreadySubscribed,
}

impl ServerFrame {
    pub fn to_text(&self) -> Utf8Bytes {
        serde_json::to_string(self).unwrap_or_default().into()
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error { code, message: message.into(), user_ids: Vec::new(), channel: None }
    }

    /// An error about one channel.
    pub fn channel_error(code: ErrorCode, channel: &str, message: impl Into<String>) -> Self {
        Self::Error { code, message: message.into(), user_ids: Vec::new(), channel: Some(channel.to_owned()) }
    }

    pub fn to_frame(&self) -> crate::outbound::Frame {
        crate::outbound::Frame { text: self.to_text(), occurred_at_micros: 0 }
    }
}

/// The `event` frame around an envelope exactly as it came from NATS, without re-serialising it.
pub fn event_frame(envelope_json: &[u8]) -> Option<Utf8Bytes> {
    let mut frame = Vec::with_capacity(envelope_json.len() + 26);
    frame.extend_from_slice(br#"{"type":"event","event":"#);
    frame.extend_from_slice(envelope_json);
    frame.push(b'}');
    Utf8Bytes::try_from(bytes::Bytes::from(frame)).ok()
}

/// Parses a client's text frame, or says why it could not (the `error` frame's code and message).
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, (ErrorCode, String)> {
    serde_json::from_str(text).map_err(|error| {
        let unknown = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|value| value.get("type").and_then(|kind| kind.as_str().map(str::to_owned)))
            .filter(|kind| {
                !matches!(
                    kind.as_str(),
                    "auth"
                        | "ping"
                        | "typing"
                        | "presence.subscribe"
                        | "presence.unsubscribe"
                        | "subscribe"
                        | "unsubscribe"
                        | "publish"
                )
            });
        match unknown {
            Some(kind) => (ErrorCode::UnknownType, format!("unknown frame type {kind:?}")),
            None => (ErrorCode::MalformedFrame, format!("malformed frame: {error}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use parley_shared::events::{Event, MessageDeleted};
    use parley_shared::ids::{ConversationId, EventId, MessageId};
    use parley_shared::presence::PresenceSignal;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn notification_frames_as_the_api_publishes_them_are_the_documented_frames() {
        use parley_shared::notifications::{Notification, NotificationFrame, NotificationKind, Priority};
        let notification = Notification {
            id: Uuid::now_v7(),
            kind: NotificationKind::Mention,
            priority: Priority::Normal,
            title: "Alice mentioned you".into(),
            body: Some("hi @bob".into()),
            data: serde_json::json!({ "seq": 4 }),
            created_at: Utc::now(),
            read_at: None,
        };
        let created = NotificationCreated { notification, unread_count: 1 };
        let read = NotificationsRead { id: None, up_to: Some(Uuid::now_v7()), unread_count: 0 };
        let cleared = NotificationsCleared { id: None, all: true, unread_count: 0 };
        let pairs = [
            (NotificationFrame::Created(created.clone()), ServerFrame::Notification(created)),
            (NotificationFrame::Read(read.clone()), ServerFrame::NotificationsRead(read)),
            (NotificationFrame::Cleared(cleared.clone()), ServerFrame::NotificationsCleared(cleared)),
        ];
        for (published, documented) in pairs {
            assert_eq!(serde_json::to_value(published).ok(), serde_json::to_value(documented).ok());
        }
    }

    #[test]
    fn event_frame_wraps_the_envelope_as_the_documented_frame() {
        let envelope = Envelope {
            id: EventId::from_uuid(Uuid::now_v7()),
            conversation_id: ConversationId::from_uuid(Uuid::now_v7()),
            seq: 3,
            actor: UserId::from_uuid(Uuid::now_v7()),
            occurred_at: Utc::now(),
            event: Event::MessageDeleted(MessageDeleted { message_id: MessageId::from_uuid(Uuid::now_v7()) }),
        };
        let raw = serde_json::to_vec(&envelope).expect("serialise");
        let frame: serde_json::Value = serde_json::from_str(&event_frame(&raw).expect("utf-8")).expect("json");
        let documented = serde_json::to_value(ServerFrame::Event { event: envelope }).expect("serialise");
        assert_eq!(frame, documented);
    }

    #[test]
    fn a_typing_signal_from_nats_is_the_documented_typing_frame() {
        let typing = parley_shared::events::Typing {
            kind: parley_shared::events::TypingKind::Typing,
            conversation_id: ConversationId::from_uuid(Uuid::now_v7()),
            actor: UserId::from_uuid(Uuid::now_v7()),
            occurred_at: Utc::now(),
            data: TypingData { state: TypingState::Start },
        };
        let documented = ServerFrame::Typing {
            conversation_id: typing.conversation_id,
            actor: typing.actor,
            occurred_at: typing.occurred_at,
            data: typing.data,
        };
        assert_eq!(serde_json::to_value(&typing).expect("json"), serde_json::to_value(documented).expect("json"));
    }

    #[test]
    fn a_presence_signal_from_nats_is_the_documented_presence_frame() {
        let user = UserId::from_uuid(Uuid::now_v7());
        let signal = PresenceSignal::new(user, PresenceStatus::Offline, Some(Utc::now()), Utc::now());
        let documented = ServerFrame::Presence {
            user_id: user,
            status: signal.status,
            last_seen_at: signal.last_seen_at,
            occurred_at: signal.occurred_at,
        };
        assert_eq!(serde_json::to_value(&signal).expect("json"), serde_json::to_value(documented).expect("json"));
    }

    #[test]
    fn client_frames_parse_and_bad_ones_get_the_right_error() {
        assert_eq!(parse_client_frame(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping));
        assert_eq!(parse_client_frame(r#"{"type":"auth","token":"t"}"#), Ok(ClientFrame::Auth { token: "t".into() }));
        let code = |text: &str| match parse_client_frame(text) {
            Err((code, _)) => code,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(code(r#"{"type":"subscribe"}"#), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"{"type":"subscribe_all"}"#), ErrorCode::UnknownType);
        assert_eq!(code("not json"), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"{"type":"auth"}"#), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"[1,2]"#), ErrorCode::MalformedFrame);
    }

    #[test]
    fn a_publication_from_nats_is_the_documented_publication_frame() {
        let publication = parley_shared::publications::Publication::durable(
            "public:bounty.b-42",
            3,
            "5f0c1e9a2b4d",
            serde_json::json!({ "bounty_id": "b-42" }),
        );
        let documented = ServerFrame::Publication {
            channel: publication.channel.clone(),
            offset: publication.offset,
            epoch: publication.epoch.clone(),
            data: publication.data.clone(),
        };
        assert_eq!(serde_json::to_value(&publication).expect("json"), serde_json::to_value(documented).expect("json"));
    }

    #[test]
    fn close_codes_fall_in_their_documented_ranges() {
        for code in CloseCode::ALL {
            let value = code.code();
            let documented = match value {
                1012 | 4000..4100 => code.reconnect(),
                1002 | 4100..4200 => !code.reconnect(),
                _ => false,
            };
            assert!(documented, "{code:?}");
        }
        assert!(CloseCode::Shutdown.reconnect() && CloseCode::SlowConsumer.reconnect());
        assert!(!CloseCode::BadToken.reconnect() && !CloseCode::FrameTooLarge.reconnect());
        assert!(!CloseCode::ProtocolError.reconnect(), "a client bug: reconnecting would repeat it");
    }
}
