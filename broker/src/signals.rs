//! Typing and presence signals: core NATS, never stored, one wildcard subscription per kind
//! for the whole broker.
//!
//! - Typing (`<prefix>.conv.<id>.typing`) goes to the local members of its conversation, never
//!   to the typist's own connections, and is dropped after one lookup when the conversation has
//!   no local member.
//! - Presence (`<prefix>.presence.<user>`, one message per change) goes once to each local
//!   connection that should see it: those of local members of the conversations the message
//!   lists (the user's conversations small enough to hear it without asking), and those that
//!   subscribed to the user's presence. Never twice to one connection, never to the user's own.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parley_shared::events::Typing;
use parley_shared::ids::UserId;
use parley_shared::presence::PresenceAnnouncement;
use parley_shared::subjects::Subjects;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::index::{Delivery, Index};
use crate::metrics::Metrics;
use crate::outbound::{Frame, Outbound, Pushed};
use crate::protocol::TYPING_TIMEOUT;
use crate::router::{Target, route_publication, target_of};
use crate::server::Broker;
use parley_shared::publications::StatsReply;

/// Relays typing and presence signals until the subscriptions end (the client drains at
/// shutdown).
pub async fn run(nats: async_nats::Client, subjects: Subjects, broker: Arc<Broker>) {
    let (index, metrics) = (broker.hub.index(), &broker.metrics);
    let typing = async {
        let mut messages = subscribe(&nats, subjects.all_typing()).await;
        let mut members = Vec::new();
        while let Some(message) = messages.next().await {
            relay_typing(&subjects, index, metrics, &message, &mut members);
        }
    };
    let presence = async {
        let mut messages = subscribe(&nats, subjects.all_presence()).await;
        let mut scratch = Scratch::default();
        while let Some(message) = messages.next().await {
            relay_presence(index, metrics, &message.payload, &mut scratch);
        }
    };
    let channels = &broker.channels.index;
    let publications = async {
        let mut messages = subscribe(&nats, subjects.all_ephemeral_channels()).await;
        while let Some(message) = messages.next().await {
            if let Some(key) = subjects.channel_key(&message.subject) {
                route_publication(channels, metrics, key, &message);
            }
        }
    };
    let stats = async {
        let mut requests = subscribe(&nats, subjects.channel_stats_request()).await;
        while let Some(request) = requests.next().await {
            let (Some(reply), Ok(key)) = (request.reply, std::str::from_utf8(&request.payload)) else { continue };
            let subscribers = u64::try_from(channels.subscribers(key)).unwrap_or(u64::MAX);
            let answer = serde_json::to_vec(&StatsReply { subscribers }).unwrap_or_default();
            parley_shared::serve::publish_if_connected(&nats, reply.to_string(), answer.into()).await;
        }
    };
    tokio::join!(typing, presence, publications, stats);
}

async fn subscribe(nats: &async_nats::Client, subject: String) -> async_nats::Subscriber {
    loop {
        match nats.subscribe(subject.clone()).await {
            Ok(messages) => return messages,
            Err(error) => {
                tracing::warn!(%error, %subject, "cannot subscribe to signals; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn relay_typing(
    subjects: &Subjects,
    index: &Index,
    metrics: &Metrics,
    message: &async_nats::Message,
    members: &mut Vec<UserId>,
) {
    let Some(Target::Conversation(conversation)) = target_of(subjects, &message.subject) else { return };
    if !index.has_conversation(conversation) {
        return;
    }
    let Ok(typing) = serde_json::from_slice::<Typing>(&message.payload) else { return };
    // A signal that waited longer than an indicator shows (a broker frozen, a backlog) would
    // only flash an indicator for typing that has ended.
    if (chrono::Utc::now() - typing.occurred_at).to_std().is_ok_and(|age| age > TYPING_TIMEOUT) {
        metrics.stale_signals.inc();
        return;
    }
    // The signal as published is the frame.
    let Ok(text) = Utf8Bytes::try_from(message.payload.clone()) else { return };
    let frame = Frame { text, occurred_at_micros: 0 };
    if let Some(pushes) = index.deliver(conversation, None, Some(typing.actor), &frame, members) {
        metrics.slow_consumers.inc_by(pushes.overflowed as u64);
    }
}

/// Buffers reused from one presence message to the next.
#[derive(Default)]
struct Scratch {
    members: Vec<UserId>,
    audience: HashSet<UserId>,
    watchers: Vec<crate::index::Watcher>,
}

fn relay_presence(index: &Index, metrics: &Metrics, payload: &[u8], scratch: &mut Scratch) {
    let Ok(announcement) = serde_json::from_slice::<PresenceAnnouncement>(payload) else { return };
    let user = announcement.signal.user_id;
    scratch.audience.clear();
    for &conversation in &announcement.audience {
        if index.members_for(conversation, &mut scratch.members) == Delivery::Delivered {
            scratch.audience.extend(scratch.members.iter().copied());
        }
    }
    scratch.audience.remove(&user);
    index.watchers_of(user, &mut scratch.watchers);
    if scratch.audience.is_empty() && scratch.watchers.is_empty() {
        return;
    }
    let Ok(text) = serde_json::to_string(&announcement.signal) else { return };
    let frame = Frame { text: text.into(), occurred_at_micros: 0 };
    let (mut sent, mut overflowed) = (0u64, 0usize);
    for &member in &scratch.audience {
        let (pushed, full) = index.push_to_user_counted(member, &frame);
        sent += pushed;
        overflowed += full;
    }
    // A watcher whose user is in the audience already has it.
    for (watcher, connection) in &scratch.watchers {
        if *watcher != user && !scratch.audience.contains(watcher) {
            sent += 1;
            overflowed += usize::from(push(connection, &frame));
        }
    }
    metrics.presence_frames.inc_by(sent);
    metrics.slow_consumers.inc_by(overflowed as u64);
}

/// Pushes one frame; whether the queue overflowed.
fn push(connection: &Outbound, frame: &Frame) -> bool {
    connection.push(frame.clone()) == Pushed::Overflowed
}
