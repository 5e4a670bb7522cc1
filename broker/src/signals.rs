//! Typing and presence signals: core NATS, never stored. One wildcard subscription per kind for
//! the whole broker; each signal goes to the local members of its conversation (from the
//! [`Index`]), never to the sender's own connections, and is dropped after one lookup when the
//! conversation has no local member.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parley_shared::events::Typing;
use parley_shared::ids::{ConversationId, UserId};
use parley_shared::presence::PresenceSignal;
use parley_shared::subjects::Subjects;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::hub::Hub;
use crate::index::{Delivery, Index};
use crate::metrics::Metrics;
use crate::outbound::Frame;

/// Who a signal is about.
trait Signal: DeserializeOwned {
    fn sender(&self) -> UserId;
}

impl Signal for Typing {
    fn sender(&self) -> UserId {
        self.actor
    }
}

impl Signal for PresenceSignal {
    fn sender(&self) -> UserId {
        self.user_id
    }
}

/// Relays typing and presence signals until the subscriptions end (the client drains at
/// shutdown).
pub async fn run(nats: async_nats::Client, subjects: Subjects, hub: Arc<Hub>, metrics: Arc<Metrics>) {
    let index = hub.index();
    let typing = relay::<Typing>(&nats, subjects.all_typing(), &subjects, index, &metrics);
    let presence = relay::<PresenceSignal>(&nats, subjects.all_presence(), &subjects, index, &metrics);
    tokio::join!(typing, presence);
}

async fn relay<S: Signal>(
    nats: &async_nats::Client,
    subject: String,
    subjects: &Subjects,
    index: &Index,
    metrics: &Metrics,
) {
    let mut messages = loop {
        match nats.subscribe(subject.clone()).await {
            Ok(messages) => break messages,
            Err(error) => {
                tracing::warn!(%error, %subject, "cannot subscribe to signals; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut members = Vec::new();
    while let Some(message) = messages.next().await {
        let Some(conversation) = conversation_of(subjects, &message.subject) else { continue };
        if index.members_for(conversation, None, &mut members) != Delivery::Delivered {
            continue;
        }
        let Ok(signal) = serde_json::from_slice::<S>(&message.payload) else { continue };
        // The signal as published is the frame.
        let Ok(text) = Utf8Bytes::try_from(message.payload.clone()) else { continue };
        let frame = Frame { text, occurred_at_micros: 0 };
        let sender = signal.sender();
        let mut overflowed = 0;
        for &user in members.iter().filter(|user| **user != sender) {
            overflowed += index.push_to_user(user, &frame);
        }
        metrics.slow_consumers.inc_by(overflowed as u64);
    }
}

/// The conversation id in `<prefix>.conv.<id>.<signal>`.
fn conversation_of(subjects: &Subjects, subject: &str) -> Option<ConversationId> {
    subject.strip_prefix(subjects.prefix())?.strip_prefix(".conv.")?.split('.').next()?.parse().ok()
}
