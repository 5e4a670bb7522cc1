//! The NATS subject scheme, built only from validated ids and `'static` event kinds, so no
//! client-supplied string can ever widen a subscription with `*`, `>` or `.`.
//!
//! | subject | carries | transport |
//! |---|---|---|
//! | `<prefix>.conv.<conversation_id>.<type>` | every persisted event of a conversation | JetStream |
//! | `<prefix>.user.<user_id>.<type>` | events one user must hear (membership changes) | JetStream |
//! | `<prefix>.user.<user_id>.notification` | changes of the user's notification inbox, as WebSocket frames (see [`crate::notifications`]) | JetStream |
//! | `<prefix>.conv.<conversation_id>.typing` | typing signals (one token shorter than any persisted kind, so the stream does not capture them, while `<prefix>.conv.<id>.>` covers both) | core NATS |
//! | `<prefix>.presence.<user_id>` | the user went online or offline: one message per change, with the conversations whose members hear it without asking | core NATS |
//! | `<prefix>.chan.<namespace>.<base64url(name)>` | publications of a durable channel (see [`crate::channels`]) | JetStream |
//! | `<prefix>.ephemeral.<namespace>.<base64url(name)>` | publications of an ephemeral channel | core NATS |
//! | `<prefix>.api.publish` | a backend publishes to channels (request/reply, answered by one API instance) | core NATS |
//! | `<prefix>.internal.channel.position` | a broker asks the API for a durable channel's position and missed publications (request/reply) | core NATS |
//! | `<prefix>.internal.channel.stats` | the API asks every broker for a channel's local subscribers (scatter-gather) | core NATS |
//! | `<prefix>.internal.outbox.wake` | "events were committed": wakes the outbox relay | core NATS |
//! | `<prefix>.internal.membership` | a broker asks the API for a user's conversations (request/reply) | core NATS |
//! | `<prefix>.internal.visibility` | a broker asks the API which of some users share a conversation with a user (request/reply) | core NATS |
//!
//! The prefix (default `parley`) lets several deployments, or tests, share one NATS.

use crate::channels::Channel;
use crate::ids::{ConversationId, UserId};

pub const DEFAULT_PREFIX: &str = "parley";

/// The last token of a user's notification subject: one token, where every event kind has two.
pub const NOTIFICATION_KIND: &str = "notification";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

#[derive(Debug, thiserror::Error)]
#[error("NATS subject prefix must be 1-32 characters of a-z, 0-9, '_' or '-', got {0:?}")]
pub struct InvalidPrefix(String);

impl Subjects {
    pub fn new(prefix: &str) -> Result<Self, InvalidPrefix> {
        let valid = (1..=32).contains(&prefix.len())
            && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if valid { Ok(Self { prefix: prefix.to_owned() }) } else { Err(InvalidPrefix(prefix.to_owned())) }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.conv.<id>.<kind>`; `kind` is an event's `type` (a constant, never client input).
    pub fn conversation_event(&self, conversation: ConversationId, kind: &'static str) -> String {
        format!("{}.conv.{conversation}.{kind}", self.prefix)
    }

    /// Every persisted event of one conversation.
    pub fn conversation_events(&self, conversation: ConversationId) -> String {
        format!("{}.conv.{conversation}.>", self.prefix)
    }

    pub fn user_event(&self, user: UserId, kind: &'static str) -> String {
        format!("{}.user.{user}.{kind}", self.prefix)
    }

    /// Changes of one user's notification inbox (the payload is the WebSocket frame).
    pub fn user_notifications(&self, user: UserId) -> String {
        format!("{}.user.{user}.{NOTIFICATION_KIND}", self.prefix)
    }

    /// Every user-scoped event of one user.
    pub fn user_events(&self, user: UserId) -> String {
        format!("{}.user.{user}.>", self.prefix)
    }

    pub fn typing(&self, conversation: ConversationId) -> String {
        format!("{}.conv.{conversation}.typing", self.prefix)
    }

    /// A user's presence changes (one message per change, whatever their conversations).
    pub fn presence(&self, user: UserId) -> String {
        format!("{}.presence.{user}", self.prefix)
    }

    /// Every conversation's typing signals: a broker's one subscription for them.
    pub fn all_typing(&self) -> String {
        format!("{}.conv.*.typing", self.prefix)
    }

    /// Every user's presence changes: a broker's one subscription for them.
    pub fn all_presence(&self) -> String {
        format!("{}.presence.*", self.prefix)
    }

    /// Publications of a durable channel (captured by the stream).
    pub fn channel(&self, channel: &Channel) -> String {
        format!("{}.chan.{}", self.prefix, channel.key())
    }

    /// Publications of an ephemeral channel (core NATS only).
    pub fn ephemeral_channel(&self, channel: &Channel) -> String {
        format!("{}.ephemeral.{}", self.prefix, channel.key())
    }

    /// Every ephemeral channel's publications: a broker's one subscription for them.
    pub fn all_ephemeral_channels(&self) -> String {
        format!("{}.ephemeral.*.*", self.prefix)
    }

    /// The routing key (see [`Channel::key`]) of a durable or ephemeral channel subject.
    pub fn channel_key<'s>(&self, subject: &'s str) -> Option<&'s str> {
        let rest = subject.strip_prefix(self.prefix.as_str())?.strip_prefix('.')?;
        rest.strip_prefix("chan.").or_else(|| rest.strip_prefix("ephemeral."))
    }

    /// Where backends on the same NATS publish to channels (request/reply).
    pub fn publish_request(&self) -> String {
        format!("{}.api.publish", self.prefix)
    }

    /// Requests for a durable channel's position and the publications after an offset.
    pub fn channel_position_request(&self) -> String {
        format!("{}.internal.channel.position", self.prefix)
    }

    /// Scatter-gather requests for a channel's subscribers on every broker.
    pub fn channel_stats_request(&self) -> String {
        format!("{}.internal.channel.stats", self.prefix)
    }

    /// Requests asking which of some users share a conversation with a user (answered by one
    /// API instance): who may subscribe to whose presence.
    pub fn visibility_request(&self) -> String {
        format!("{}.internal.visibility", self.prefix)
    }

    pub fn outbox_wake(&self) -> String {
        format!("{}.internal.outbox.wake", self.prefix)
    }

    /// Requests for a user's conversations and their positions, answered by one API instance.
    pub fn membership_request(&self) -> String {
        format!("{}.internal.membership", self.prefix)
    }

    /// Every user-scoped event of every user: a broker's one subscription for membership changes.
    pub fn all_user_events(&self) -> String {
        format!("{}.user.*.>", self.prefix)
    }

    /// What the events stream captures: every persisted conversation and user event, and every
    /// durable channel's publications. Persisted kinds have two or more tokens
    /// (`message.created`), so `conv.<id>.typing` is not captured.
    pub fn stream_subjects(&self) -> Vec<String> {
        vec![
            format!("{}.conv.*.*.>", self.prefix),
            format!("{}.user.>", self.prefix),
            format!("{}.chan.*.*", self.prefix),
        ]
    }

    /// The JetStream stream's name, e.g. `PARLEY_EVENTS` (stream names cannot contain '.').
    pub fn stream_name(&self) -> String {
        format!("{}_EVENTS", self.prefix.to_ascii_uppercase().replace('-', "_"))
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Self { prefix: DEFAULT_PREFIX.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn subjects_follow_the_documented_scheme() {
        let subjects = Subjects::default();
        let conversation = ConversationId::from_uuid(Uuid::nil());
        let user = UserId::from_uuid(Uuid::max());
        assert_eq!(
            subjects.conversation_event(conversation, "message.created"),
            "parley.conv.00000000-0000-0000-0000-000000000000.message.created"
        );
        assert_eq!(subjects.user_events(user), "parley.user.ffffffff-ffff-ffff-ffff-ffffffffffff.>");
        assert_eq!(subjects.typing(conversation), "parley.conv.00000000-0000-0000-0000-000000000000.typing");
        assert_eq!(subjects.stream_name(), "PARLEY_EVENTS");
        let channel = Channel::parse("public:a.b").expect("valid");
        assert_eq!(subjects.channel(&channel), "parley.chan.public.YS5i");
        assert_eq!(subjects.channel_key(&subjects.channel(&channel)), Some("public.YS5i"));
        assert_eq!(subjects.channel_key(&subjects.ephemeral_channel(&channel)), Some("public.YS5i"));
        assert_eq!(subjects.channel_key("parley.conv.x.y"), None);
    }

    #[test]
    fn prefixes_that_could_change_a_subjects_shape_are_refused() {
        for bad in ["", "a.b", "a*", ">", "A", "a b", &"x".repeat(33)] {
            assert!(Subjects::new(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Subjects::new("test-1_a").expect("valid prefix").stream_name(), "TEST_1_A_EVENTS");
    }
}
