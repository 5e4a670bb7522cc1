//! The routing task: every event of the stream (from the [`feed`](crate::feed)) goes through
//! here, in stream order, to the local members of its conversation (or the user it names).
//!
//! An event for a conversation or user with no local interest is dropped after one index lookup,
//! before its JSON is parsed (the id is in the subject).
//!
//! Joining is sequenced with routing, so no event can fall between the API's membership snapshot
//! and live delivery: a connecting user first opens a *window* here, then asks the API for the
//! snapshot, then is *installed* here. While any window is open the router keeps every message
//! it routes in a journal; at install it replays, for that user only, what arrived since their
//! window opened and is newer than the snapshot, then queues `hello` and those events, and only
//! then adds the connection to live delivery, all between two messages.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use async_nats::{HeaderMap, Message};
use parley_shared::events::{Envelope, Event};
use parley_shared::ids::{ConversationId, UserId};
use parley_shared::membership::{ConversationPosition, Membership};
use parley_shared::publications::OFFSET_HEADER;
use parley_shared::subjects::{NOTIFICATION_KIND, Subjects};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::channel_index::{ChannelIndex, Position};
use crate::feed::FeedItem;
use crate::index::{Delivery, Index, MemberCount};
use crate::metrics::Metrics;
use crate::outbound::{Frame, Outbound};
use crate::protocol::event_frame;

/// Most messages (and bytes) the journal keeps for open windows; a join whose window lost
/// messages to this bound fails with 4004 and the client reconnects. At 20,000 events/s this
/// is over 3 s of events, far longer than a membership request takes.
const JOURNAL_MESSAGES: usize = 65_536;
const JOURNAL_BYTES: usize = 64 << 20;

/// Where a connection's join stands. The router (installing) and the connection's ticket
/// (leaving) settle it once, under the user's shard lock, so a connection that gave up while
/// its install was queued is never added.
pub const PENDING: u8 = 0;
pub const INSTALLED: u8 = 1;
pub const CANCELLED: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WindowId(u64);

/// Builds `hello` from the user's positions (however many: it keeps what it lists).
pub type HelloBuilder = Box<dyn FnOnce(&mut dyn Iterator<Item = ConversationPosition>) -> Frame + Send>;

/// A connection ready to go live.
pub struct InstallRequest {
    pub user: UserId,
    /// The first connection's window and the API's snapshot; `None` when the user's memberships
    /// are already known here.
    pub snapshot: Option<(Window, Vec<Membership>)>,
    pub outbound: Arc<Outbound>,
    pub state: Arc<AtomicU8>,
    pub hello: HelloBuilder,
}

struct Install {
    user: UserId,
    snapshot: Option<(WindowId, Vec<Membership>)>,
    outbound: Arc<Outbound>,
    state: Arc<AtomicU8>,
    hello: HelloBuilder,
    /// False when the window lost messages (the client must reconnect).
    done: oneshot::Sender<bool>,
}

enum Command {
    OpenWindow(oneshot::Sender<WindowId>),
    CloseWindow(WindowId),
    Install(Install),
    SubscribeChannel(ChannelInstall),
}

/// A connection subscribing to a durable channel, with the API's answer about it.
pub struct ChannelSubscription {
    pub key: Box<str>,
    /// Opened before the API was asked.
    pub window: Window,
    /// Where the API said the channel stood.
    pub position: Position,
    pub outbound: Arc<Outbound>,
    /// `subscribed`, with what was recovered.
    pub subscribed: Frame,
}

struct ChannelInstall {
    subscription: ChannelSubscription,
    window: WindowId,
    done: oneshot::Sender<bool>,
}

/// What the hub holds to talk to the router.
#[derive(Clone, Debug)]
pub struct RouterHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl RouterHandle {
    /// Opens a window: every message routed from now on is kept until it closes.
    pub async fn open_window(&self) -> Option<Window> {
        let (reply, opened) = oneshot::channel();
        self.commands.send(Command::OpenWindow(reply)).ok()?;
        let id = opened.await.ok()?;
        Some(Window { id, commands: Some(self.commands.clone()) })
    }

    /// Queues `hello` (and what the window saw) and adds the connection to live delivery.
    /// False when that could not be done without a gap; the connection must close with 4004.
    pub async fn install(&self, request: InstallRequest) -> bool {
        let InstallRequest { user, snapshot, outbound, state, hello } = request;
        let snapshot = snapshot.map(|(mut window, snapshot)| {
            // The router closes it with the install.
            window.commands = None;
            (window.id, snapshot)
        });
        let (done, installed) = oneshot::channel();
        let install = Install { user, snapshot, outbound, state, hello, done };
        if self.commands.send(Command::Install(install)).is_err() {
            return false;
        }
        installed.await.unwrap_or(false)
    }
}

impl RouterHandle {
    /// Queues `subscribed`, then what the window saw of the channel after the API's position,
    /// and adds the connection to the channel's subscribers. False when the window lost
    /// messages to the journal's bound (the client should subscribe again).
    pub async fn subscribe_channel(&self, mut subscription: ChannelSubscription) -> bool {
        let window = subscription.window.id;
        // The router closes it with the install.
        subscription.window.commands = None;
        let (done, installed) = oneshot::channel();
        if self.commands.send(Command::SubscribeChannel(ChannelInstall { subscription, window, done })).is_err() {
            return false;
        }
        installed.await.unwrap_or(false)
    }
}

/// An open window; dropping it closes it.
#[derive(Debug)]
pub struct Window {
    id: WindowId,
    commands: Option<mpsc::UnboundedSender<Command>>,
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Some(commands) = &self.commands {
            let _ = commands.send(Command::CloseWindow(self.id));
        }
    }
}

/// Messages routed while windows are open, with the index each one had.
#[derive(Debug, Default)]
struct Journal {
    messages: VecDeque<Message>,
    /// The index of `messages[0]`.
    first: u64,
    bytes: usize,
    /// Open windows and the index of the first message each must see.
    windows: BTreeMap<WindowId, u64>,
    next_window: u64,
}

impl Journal {
    fn end(&self) -> u64 {
        self.first + self.messages.len() as u64
    }

    fn open(&mut self) -> WindowId {
        let id = WindowId(self.next_window);
        self.next_window += 1;
        self.windows.insert(id, self.end());
        id
    }

    fn close(&mut self, id: WindowId) {
        self.windows.remove(&id);
        let keep_from = self.windows.values().copied().min().unwrap_or(self.end());
        while self.first < keep_from {
            self.pop();
        }
    }

    fn record(&mut self, message: Message) {
        if self.windows.is_empty() {
            // Nothing kept, but the indices go on.
            self.first += 1;
            return;
        }
        self.bytes += message.length;
        self.messages.push_back(message);
        while self.messages.len() > JOURNAL_MESSAGES || self.bytes > JOURNAL_BYTES {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(message) = self.messages.pop_front() {
            self.bytes -= message.length;
            self.first += 1;
        }
    }

    /// What the window saw, unless some of it was dropped for the bound.
    fn since(&self, id: WindowId) -> Option<impl Iterator<Item = &Message>> {
        let start = *self.windows.get(&id)?;
        let skip = usize::try_from(start.checked_sub(self.first)?).ok()?;
        Some(self.messages.iter().skip(skip))
    }
}

/// Whom a subject is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Conversation(ConversationId),
    User(UserId),
    /// A change of the user's notification inbox; the payload is the frame.
    Notification(UserId),
}

/// `<prefix>.conv.<id>.<type>` or `<prefix>.user.<id>.<type>` (stream events and signals
/// alike), or `<prefix>.user.<id>.notification`.
pub fn target_of(subjects: &Subjects, subject: &str) -> Option<Target> {
    let rest = subject.strip_prefix(subjects.prefix())?;
    let (scope, rest) = rest.strip_prefix('.')?.split_once('.')?;
    let (id, kind) = rest.split_once('.').unwrap_or((rest, ""));
    match scope {
        "conv" => id.parse().ok().map(Target::Conversation),
        "user" if kind == NOTIFICATION_KIND => id.parse().ok().map(Target::Notification),
        "user" => id.parse().ok().map(Target::User),
        _ => None,
    }
}

/// The envelope (to route it) and the frame (to send it), built once per message.
fn decode(message: &Message) -> Option<(Envelope, Frame)> {
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

/// A notification's payload is its frame (not parsed here; the API built it).
fn notification_frame(message: &Message) -> Option<Frame> {
    let text = Utf8Bytes::try_from(message.payload.clone()).ok()?;
    Some(Frame { text, occurred_at_micros: 0 })
}

/// A durable publication's offset, from its header (the payload is not parsed).
fn offset_of(message: &Message) -> Option<i64> {
    message.headers.as_ref()?.get(OFFSET_HEADER)?.as_str().parse().ok()
}

/// A channel publication (durable from the feed, or ephemeral) to its local subscribers; the
/// payload is the frame. Dropped after one lookup when nobody here subscribes.
pub fn route_publication(channels: &ChannelIndex, metrics: &Metrics, key: &str, message: &Message) {
    let frame = || Some(Frame { text: Utf8Bytes::try_from(message.payload.clone()).ok()?, occurred_at_micros: 0 });
    let namespace = key.split('.').next().unwrap_or_default();
    match channels.deliver(key, offset_of(message), frame) {
        Some(delivered) => {
            metrics.publications(namespace, delivered.sent);
            metrics.slow_consumers.inc_by(delivered.overflowed as u64);
        }
        None => {
            metrics.events_dropped.inc();
        }
    }
}

/// A span for the delivery, continuing the trace the API started for the request.
fn delivery_span(headers: Option<&HeaderMap>) -> opentelemetry::global::BoxedSpan {
    let parent = headers.and_then(|headers| headers.get("traceparent")).map(|value| value.as_str());
    parley_shared::telemetry::child_span("broker.deliver", parent).0
}

/// The membership change an event makes for `user`, if any: (conversation, member now).
fn membership_change(envelope: &Envelope, user: UserId) -> Option<bool> {
    match &envelope.event {
        Event::MemberAdded(change) if change.user_id == user => Some(true),
        Event::MemberRemoved(change) if change.user_id == user => Some(false),
        Event::ConversationCreated(created) if created.member_ids.contains(&user) => Some(true),
        _ => None,
    }
}

/// What a conversation event says about the conversation's size.
fn member_count_change(event: &Event) -> Option<MemberCount> {
    match event {
        Event::MemberAdded(_) => Some(MemberCount::Delta(1)),
        Event::MemberRemoved(_) => Some(MemberCount::Delta(-1)),
        Event::ConversationCreated(created) => {
            created.member_count.and_then(|count| u32::try_from(count).ok()).map(MemberCount::Is)
        }
        _ => None,
    }
}

/// The user an event is addressed to on their own subject (who hears it from there).
fn addressee(envelope: &Envelope) -> Option<UserId> {
    match &envelope.event {
        Event::MemberAdded(change) | Event::MemberRemoved(change) => Some(change.user_id),
        _ => None,
    }
}

pub struct Router {
    index: Arc<Index>,
    channels: Arc<ChannelIndex>,
    subjects: Subjects,
    metrics: Arc<Metrics>,
    commands: mpsc::UnboundedReceiver<Command>,
    feed: mpsc::Receiver<FeedItem>,
    /// Told when the stream no longer holds events this broker missed.
    lost: Arc<Notify>,
    journal: Journal,
    /// Reused for each delivery's member list.
    members: Vec<UserId>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

impl Router {
    pub fn new(
        index: Arc<Index>,
        channels: Arc<ChannelIndex>,
        subjects: Subjects,
        metrics: Arc<Metrics>,
        feed: mpsc::Receiver<FeedItem>,
        lost: Arc<Notify>,
    ) -> (Self, RouterHandle) {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let router = Self {
            index,
            channels,
            subjects,
            metrics,
            commands,
            feed,
            lost,
            journal: Journal::default(),
            members: Vec::new(),
        };
        (router, RouterHandle { commands: commands_tx })
    }

    /// Routes until the feed ends (at shutdown).
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                Some(command) = self.commands.recv() => self.command(command),
                item = self.feed.recv() => match item {
                    Some(FeedItem::Event(message)) => {
                        self.route(&message);
                        self.journal.record(message);
                    }
                    Some(FeedItem::Lost) => {
                        self.metrics.feed_lost.inc();
                        self.lost.notify_one();
                    }
                    None => return,
                },
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::OpenWindow(reply) => {
                let id = self.journal.open();
                if reply.send(id).is_err() {
                    self.journal.close(id);
                }
            }
            Command::CloseWindow(id) => self.journal.close(id),
            Command::Install(install) => self.install(install),
            Command::SubscribeChannel(install) => self.subscribe_channel(install),
        }
    }

    fn route(&mut self, message: &Message) {
        match target_of(&self.subjects, &message.subject) {
            Some(Target::Conversation(conversation)) => self.route_conversation(conversation, message),
            Some(Target::User(user)) => self.route_user(user, message),
            Some(Target::Notification(user)) => self.route_notification(user, message),
            None => {
                if let Some(key) = self.subjects.channel_key(&message.subject) {
                    route_publication(&self.channels, &self.metrics, key, message);
                }
            }
        }
    }

    fn subscribe_channel(&mut self, install: ChannelInstall) {
        let ChannelInstall { subscription, window, done } = install;
        let ChannelSubscription { key, position, outbound, subscribed, .. } = subscription;
        let mut frames = vec![subscribed];
        let mut last = position.offset;
        let Some(seen) = self.journal.since(window) else {
            self.journal.close(window);
            let _ = done.send(false);
            return;
        };
        for message in seen.filter(|message| self.subjects.channel_key(&message.subject) == Some(&*key)) {
            let Some(offset) = offset_of(message).filter(|offset| *offset > last) else { continue };
            let Ok(text) = Utf8Bytes::try_from(message.payload.clone()) else { continue };
            frames.push(Frame { text, occurred_at_micros: 0 });
            last = offset;
        }
        self.journal.close(window);
        self.channels.subscribe(&key, outbound, frames, last, Some(Position { offset: last, ..position }));
        let _ = done.send(true);
    }

    /// Membership changes apply first (so the next event already sees them), then every
    /// connection of every local member gets the frame, except a user the event is addressed
    /// to on their own subject, who gets it from there.
    fn route_conversation(&mut self, conversation: ConversationId, message: &Message) {
        if !self.index.has_conversation(conversation) {
            self.metrics.events_dropped.inc();
            return;
        }
        let Some((envelope, frame)) = decode(message) else { return };
        // Every initial member hears it on their own subject.
        if matches!(envelope.event, Event::ConversationCreated(_)) {
            return;
        }
        let addressed = addressee(&envelope);
        if let Some(change) = member_count_change(&envelope.event) {
            self.index.count_members(conversation, change);
        }
        if let Some((user, member)) = addressed.and_then(|user| Some((user, membership_change(&envelope, user)?))) {
            self.index.set_membership(user, conversation, member, envelope.seq);
        }
        let _span = delivery_span(message.headers.as_ref());
        let Some(pushes) = self.index.deliver(conversation, Some(envelope.seq), addressed, &frame, &mut self.members)
        else {
            self.metrics.events_dropped.inc();
            return;
        };
        if matches!(envelope.event, Event::MemberRemoved(_))
            && self.index.members_for(conversation, &mut self.members) == Delivery::Delivered
        {
            // Someone these members follow may no longer share a conversation with them.
            for &user in &self.members {
                self.index.ask_presence_recheck(user);
            }
        }
        self.metrics.events_routed.inc();
        self.metrics.slow_consumers.inc_by(pushes.overflowed as u64);
    }

    /// An event on `<prefix>.user.<user>.…`: updates the user's memberships and goes to every
    /// connection of that user.
    fn route_user(&mut self, user: UserId, message: &Message) {
        if !self.index.has_user(user) {
            self.metrics.events_dropped.inc();
            return;
        }
        let Some((envelope, frame)) = decode(message) else { return };
        self.apply_own_change(user, &envelope);
        let _span = delivery_span(message.headers.as_ref());
        let overflowed = self.index.push_to_user(user, &frame);
        self.metrics.events_routed.inc();
        self.metrics.slow_consumers.inc_by(overflowed as u64);
    }

    /// A notification frame to every local connection of its user, as it came.
    fn route_notification(&mut self, user: UserId, message: &Message) {
        if !self.index.has_user(user) {
            self.metrics.events_dropped.inc();
            return;
        }
        let Some(frame) = notification_frame(message) else { return };
        let overflowed = self.index.push_to_user(user, &frame);
        self.metrics.events_routed.inc();
        self.metrics.slow_consumers.inc_by(overflowed as u64);
    }

    /// A membership change the user hears on their own subject.
    fn apply_own_change(&self, user: UserId, envelope: &Envelope) {
        if let Some(member) = membership_change(envelope, user) {
            self.index.set_membership(user, envelope.conversation_id, member, envelope.seq);
            if !member {
                self.index.ask_presence_recheck(user);
            }
            if let (true, Event::ConversationCreated(_)) = (member, &envelope.event)
                && let Some(count) = member_count_change(&envelope.event)
            {
                self.index.count_members(envelope.conversation_id, count);
            }
        }
    }

    fn install(&mut self, install: Install) {
        let Install { user, snapshot, outbound, state, hello, done } = install;
        let mut replay = Vec::new();
        let hello = match snapshot {
            Some((window, snapshot)) => {
                let first = self.install_snapshot(user, window, &snapshot, &mut replay);
                self.journal.close(window);
                match first {
                    Some(true) => hello(
                        &mut snapshot
                            .iter()
                            .map(|m| ConversationPosition { conversation_id: m.conversation_id, last_seq: m.last_seq }),
                    ),
                    Some(false) => hello(&mut self.positions(user).into_iter()),
                    None => {
                        let _ = done.send(false);
                        return;
                    }
                }
            }
            None => hello(&mut self.positions(user).into_iter()),
        };
        let frames = std::iter::once(hello).chain(replay);
        self.index.with_known_user(user, |entry| {
            if state.compare_exchange(PENDING, INSTALLED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                for frame in frames {
                    outbound.push(frame);
                }
                entry.joining -= 1;
                entry.connections.push(outbound);
            }
        });
        self.index.connections_changed(user);
        let _ = done.send(true);
    }

    /// Installs the user's memberships from the snapshot and collects, for this connection,
    /// what the window saw after the snapshot. `Some(false)` if another connection of the user
    /// installed them first (this one then starts from the index's positions); `None` if the
    /// journal no longer holds the whole window.
    fn install_snapshot(
        &mut self,
        user: UserId,
        window: WindowId,
        snapshot: &[Membership],
        replay: &mut Vec<Frame>,
    ) -> Option<bool> {
        let Some(seen) = self.journal.since(window) else {
            tracing::warn!("a join's window outgrew the journal; the client reconnects");
            return None;
        };
        if !self.index.install(user, snapshot) {
            return Some(false);
        }
        let mut seen = seen.peekable();
        if seen.peek().is_none() {
            // The usual case: nothing to replay, and no need for a map of every position.
            return Some(true);
        }
        let mut known: HashMap<ConversationId, i64> =
            snapshot.iter().map(|m| (m.conversation_id, m.last_seq)).collect();
        for message in seen {
            match target_of(&self.subjects, &message.subject) {
                Some(Target::Conversation(conversation)) if known.contains_key(&conversation) => {
                    let Some((envelope, frame)) = decode(message) else { continue };
                    // The user's own copy (below) carries what is addressed to them.
                    if addressee(&envelope) == Some(user) || matches!(envelope.event, Event::ConversationCreated(_)) {
                        continue;
                    }
                    let Some(last) = known.get_mut(&conversation) else { continue };
                    if envelope.seq > *last {
                        *last = envelope.seq;
                        self.index.note_seq(conversation, envelope.seq);
                        replay.push(frame);
                    }
                }
                Some(Target::Notification(addressed)) if addressed == user => {
                    replay.extend(notification_frame(message));
                }
                Some(Target::User(addressed)) if addressed == user => {
                    let Some((envelope, frame)) = decode(message) else { continue };
                    let conversation = envelope.conversation_id;
                    if known.get(&conversation).is_some_and(|last| envelope.seq <= *last) {
                        continue;
                    }
                    match membership_change(&envelope, user) {
                        Some(true) => drop(known.insert(conversation, envelope.seq)),
                        Some(false) => drop(known.remove(&conversation)),
                        None => {}
                    }
                    self.apply_own_change(user, &envelope);
                    replay.push(frame);
                }
                _ => {}
            }
        }
        Some(true)
    }

    /// The user's conversations as this broker knows them now.
    fn positions(&self, user: UserId) -> Vec<ConversationPosition> {
        let conversations =
            self.index.with_known_user(user, |entry| entry.conversations().to_vec()).unwrap_or_default();
        conversations
            .into_iter()
            .filter_map(|conversation_id| {
                let last_seq = self.index.last_seq(conversation_id)?;
                Some(ConversationPosition { conversation_id, last_seq })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_read_from_stream_subjects_only() {
        let subjects = Subjects::default();
        let user = UserId::from_uuid(uuid::Uuid::now_v7());
        let conversation = ConversationId::from_uuid(uuid::Uuid::now_v7());
        assert_eq!(target_of(&subjects, &subjects.user_event(user, "member.added")), Some(Target::User(user)));
        assert_eq!(
            target_of(&subjects, &subjects.conversation_event(conversation, "message.created")),
            Some(Target::Conversation(conversation))
        );
        assert_eq!(target_of(&subjects, &subjects.user_notifications(user)), Some(Target::Notification(user)));
        assert_eq!(target_of(&subjects, "parley.user.not-a-uuid.member.added"), None);
        assert_eq!(target_of(&subjects, "other.user.x.member.added"), None);
        assert_eq!(target_of(&subjects, "parleyx.conv.x.y"), None);
    }

    #[test]
    fn the_journal_keeps_messages_only_for_open_windows() {
        let message = |n: u8| Message {
            subject: "s".into(),
            reply: None,
            payload: bytes::Bytes::from(vec![n]),
            headers: None,
            status: None,
            description: None,
            length: 1,
        };
        let mut journal = Journal::default();
        journal.record(message(0));
        let window = journal.open();
        journal.record(message(1));
        let later = journal.open();
        journal.record(message(2));
        let seen: Vec<u8> = journal.since(window).expect("whole").map(|m| m.payload[0]).collect();
        assert_eq!(seen, [1, 2]);
        journal.close(window);
        let seen: Vec<u8> = journal.since(later).expect("whole").map(|m| m.payload[0]).collect();
        assert_eq!(seen, [2]);
        assert_eq!(journal.messages.len(), 1, "what only the closed window needed is gone");
        journal.close(later);
        assert!(journal.messages.is_empty());
        journal.record(message(3));
        assert!(journal.messages.is_empty(), "nothing is kept while no window is open");
    }
}
