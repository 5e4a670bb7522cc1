//! The broker's side of NATS: one client per process; the membership request; the one
//! subscription to every user's events; one subscription per conversation with local interest.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use futures_util::StreamExt;
use parley_shared::events::{Envelope, Typing, TypingData, TypingKind, TypingState};
use parley_shared::ids::{ConversationId, UserId};
use parley_shared::membership::{ConversationPosition, MembershipReply, MembershipRequest};
use parley_shared::presence::PresenceSignal;
use parley_shared::subjects::Subjects;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::hub::Hub;
use crate::outbound::Frame;
use crate::protocol::event_frame;

#[derive(Clone, Debug)]
pub struct Relay {
    nats: async_nats::Client,
    subjects: Subjects,
    request_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("membership request failed: {0}")]
    Request(#[from] async_nats::RequestError),
    #[error("membership reply is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the API could not answer: {0}")]
    Refused(String),
}

/// This broker's subscription to one conversation's events; unsubscribes when dropped.
#[derive(Debug)]
pub struct ConversationSubscription {
    task: JoinHandle<()>,
    /// Becomes true once the subscription has been sent to NATS.
    pub ready: watch::Receiver<bool>,
}

impl Drop for ConversationSubscription {
    fn drop(&mut self) {
        // Dropping the task's `Subscriber` sends the UNSUB.
        self.task.abort();
    }
}

impl Relay {
    pub fn new(nats: async_nats::Client, subjects: Subjects, request_timeout: Duration) -> Self {
        Self { nats, subjects, request_timeout }
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The user's conversations and their positions, from whichever API instance answers.
    pub async fn membership(&self, user: UserId) -> Result<Vec<ConversationPosition>, MembershipError> {
        let payload = serde_json::to_vec(&MembershipRequest { user_id: user })?;
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(self.request_timeout));
        let reply = self.nats.send_request(self.subjects.membership_request(), request).await?;
        match serde_json::from_slice(&reply.payload)? {
            MembershipReply::Conversations(positions) => Ok(positions),
            MembershipReply::Error(message) => Err(MembershipError::Refused(message)),
        }
    }

    /// Publishes a typing signal on core NATS (dropped while NATS is away: it is ephemeral).
    pub async fn publish_typing(&self, conversation: ConversationId, actor: UserId, state: TypingState) {
        let typing = Typing {
            kind: TypingKind::Typing,
            conversation_id: conversation,
            actor,
            occurred_at: chrono::Utc::now(),
            data: TypingData { state },
        };
        let payload = serde_json::to_vec(&typing).unwrap_or_default();
        parley_shared::serve::publish_if_connected(&self.nats, self.subjects.typing(conversation), payload.into())
            .await;
    }

    /// Waits until NATS has processed everything sent so far (subscriptions included).
    pub async fn flush(&self) -> Result<(), async_nats::client::FlushError> {
        self.nats.flush().await
    }

    pub fn subscribe_conversation(&self, hub: Arc<Hub>, conversation: ConversationId) -> ConversationSubscription {
        let (ready_tx, ready) = watch::channel(false);
        let nats = self.nats.clone();
        let subject = self.subjects.conversation_events(conversation);
        let task = tokio::spawn(async move {
            let mut messages = match nats.subscribe(subject).await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, %conversation, "cannot subscribe to a conversation");
                    return;
                }
            };
            let _ = ready_tx.send(true);
            while let Some(message) = messages.next().await {
                if message.subject.ends_with(".typing") {
                    if let Some((typing, frame)) = decode_signal::<Typing>(&message) {
                        hub.deliver_signal(conversation, typing.actor, &frame);
                    }
                } else if message.subject.ends_with(".presence") {
                    if let Some((presence, frame)) = decode_signal::<PresenceSignal>(&message) {
                        hub.deliver_signal(conversation, presence.user_id, &frame);
                    }
                } else if let Some((envelope, frame)) = decode(&message) {
                    let _span = delivery_span(message.headers.as_ref());
                    hub.deliver_conversation_event(&envelope, &frame);
                }
            }
        });
        ConversationSubscription { task, ready }
    }

    /// Relays every user's events to the connections of that user, until the subscription ends
    /// (the client drains at shutdown). One subscription for all users: membership changes are
    /// rare, and a subscription per connected user would cost every connection a NATS channel.
    pub async fn run_user_events(self, hub: Arc<Hub>) {
        let mut messages = loop {
            match self.nats.subscribe(self.subjects.all_user_events()).await {
                Ok(messages) => break messages,
                Err(error) => {
                    tracing::warn!(%error, "cannot subscribe to user events; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        while let Some(message) = messages.next().await {
            let Some(user) = user_of(&self.subjects, message.subject.as_str()) else { continue };
            if let Some((envelope, frame)) = decode(&message) {
                let _span = delivery_span(message.headers.as_ref());
                hub.deliver_user_event(user, &envelope, &frame);
            }
        }
    }
}

/// The envelope (to route it) and the frame (to send it), built once per NATS message.
fn decode(message: &async_nats::Message) -> Option<(Envelope, Frame)> {
    let envelope: Envelope = match serde_json::from_slice(&message.payload) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::warn!(%error, subject = %message.subject, "undecodable event on NATS; skipped");
            return None;
        }
    };
    let frame =
        Frame { text: event_frame(&message.payload)?, occurred_at_micros: envelope.occurred_at.timestamp_micros() };
    Some((envelope, frame))
}

/// A typing or presence signal and its frame: the signal as published is the frame.
fn decode_signal<T: serde::de::DeserializeOwned>(message: &async_nats::Message) -> Option<(T, Frame)> {
    let signal: T = serde_json::from_slice(&message.payload).ok()?;
    let text = Utf8Bytes::try_from(message.payload.clone()).ok()?;
    Some((signal, Frame { text, occurred_at_micros: 0 }))
}

/// A span for the delivery, continuing the trace the API started for the request.
fn delivery_span(headers: Option<&HeaderMap>) -> opentelemetry::global::BoxedSpan {
    let parent = headers.and_then(|headers| headers.get("traceparent")).map(|value| value.as_str());
    parley_shared::telemetry::child_span("broker.deliver", parent).0
}

/// The user id in `<prefix>.user.<id>.<type>`.
fn user_of(subjects: &Subjects, subject: &str) -> Option<UserId> {
    let rest = subject.strip_prefix(subjects.prefix())?.strip_prefix(".user.")?;
    rest.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_read_from_a_user_subject_only() {
        let subjects = Subjects::default();
        let user = UserId::from_uuid(uuid::Uuid::now_v7());
        assert_eq!(user_of(&subjects, &subjects.user_event(user, "member.added")), Some(user));
        assert_eq!(user_of(&subjects, "parley.user.not-a-uuid.member.added"), None);
        assert_eq!(user_of(&subjects, "other.user.x.member.added"), None);
    }
}
