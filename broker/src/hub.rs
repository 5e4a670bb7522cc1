//! Who is connected to this broker and what each of them may see.
//!
//! - users → their connections on this broker and their memberships (from the API's snapshot
//!   at connect time, kept current by membership events);
//! - conversations with at least one connected member → those members, the latest `seq` seen,
//!   and the one NATS subscription this broker holds for the conversation (reference-counted by
//!   its local members: dropped with the last one).
//!
//! One lock guards both maps; it is never held across an `.await`, and delivering an event under
//! it only pushes onto bounded queues.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use parley_shared::events::{Envelope, Event};
use parley_shared::ids::{ConversationId, UserId};
use parley_shared::membership::ConversationPosition;

use crate::metrics::Metrics;
use crate::outbound::{Frame, Outbound, Pushed};
use crate::presence::PresenceReports;
use crate::protocol::CloseCode;
use crate::relay::{ConversationSubscription, Relay};

#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    relay: Relay,
    presence: PresenceReports,
    metrics: Arc<Metrics>,
    max_connections_per_user: usize,
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<UserId, UserEntry>,
    conversations: HashMap<ConversationId, ConversationEntry>,
    shutting_down: bool,
}

#[derive(Debug, Default)]
struct UserEntry {
    connections: Vec<Arc<Outbound>>,
    /// Connections past authentication that have not had their `hello` yet.
    joining: usize,
    memberships: HashMap<ConversationId, Membership>,
    /// Whether presence was told of this user's arrival (and so will be of their departure).
    arrived: bool,
}

impl UserEntry {
    fn member_of(&self) -> impl Iterator<Item = ConversationId> + '_ {
        self.memberships.iter().filter(|(_, membership)| membership.member).map(|(&conversation, _)| conversation)
    }
}

/// Whether the user is a member, as of which `seq` of the conversation: a change only applies
/// when it is newer, so the snapshot and the two event paths can arrive in any order.
#[derive(Clone, Copy, Debug)]
struct Membership {
    member: bool,
    as_of_seq: i64,
}

#[derive(Debug)]
struct ConversationEntry {
    members: HashSet<UserId>,
    last_seq: i64,
    subscription: ConversationSubscription,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("the user has too many connections")]
    TooManyConnections,
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("the user's conversations could not be fetched")]
    Unavailable,
}

impl JoinError {
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::TooManyConnections => CloseCode::TooManyConnections,
            Self::ShuttingDown => CloseCode::Shutdown,
            Self::Unavailable => CloseCode::Unavailable,
        }
    }
}

/// A connection's place in the hub; leaving happens on drop, whatever ends the connection.
#[must_use = "dropping the ticket removes the connection from the hub"]
#[derive(Debug)]
pub struct Ticket {
    hub: Arc<Hub>,
    user: UserId,
    outbound: Option<Arc<Outbound>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.hub.leave(self.user, self.outbound.as_ref());
    }
}

/// How long a new connection waits for its conversations' subscriptions to be in place.
const SUBSCRIBE_DEADLINE: Duration = Duration::from_secs(5);

impl Hub {
    pub fn new(
        relay: Relay,
        presence: PresenceReports,
        metrics: Arc<Metrics>,
        max_connections_per_user: usize,
    ) -> Self {
        Self { state: Mutex::default(), relay, presence, metrics, max_connections_per_user }
    }

    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Registers a connection of `user`: learns the user's conversations (unless another of
    /// their connections here already did), subscribes to them, then queues `hello` (built from
    /// the positions at that instant) as the connection's first frame and starts delivering.
    /// Every event after a `last_seq` in `hello` reaches this connection.
    pub async fn join(
        self: &Arc<Self>,
        user: UserId,
        outbound: Arc<Outbound>,
        hello: impl FnOnce(Vec<ConversationPosition>) -> Frame,
    ) -> Result<Ticket, JoinError> {
        let known = {
            let mut state = self.lock();
            if state.shutting_down {
                return Err(JoinError::ShuttingDown);
            }
            let entry = state.users.entry(user).or_default();
            if entry.connections.len() + entry.joining >= self.max_connections_per_user {
                return Err(JoinError::TooManyConnections);
            }
            entry.joining += 1;
            !entry.connections.is_empty()
        };
        // From here on the ticket undoes the `joining` count, whatever happens.
        let mut ticket = Ticket { hub: Arc::clone(self), user, outbound: None };
        if !known {
            self.learn_memberships(user).await?;
            self.record_arrival(user).await;
        }
        let mut state = self.lock();
        let State { users, conversations, shutting_down } = &mut *state;
        if *shutting_down {
            return Err(JoinError::ShuttingDown);
        }
        let entry = users.get_mut(&user).ok_or(JoinError::ShuttingDown)?;
        let positions: Vec<ConversationPosition> = entry
            .memberships
            .iter()
            .filter(|(_, membership)| membership.member)
            .map(|(&conversation_id, membership)| ConversationPosition {
                conversation_id,
                last_seq: conversations.get(&conversation_id).map_or(membership.as_of_seq, |c| c.last_seq),
            })
            .collect();
        outbound.push(hello(positions));
        entry.joining -= 1;
        entry.connections.push(Arc::clone(&outbound));
        ticket.outbound = Some(outbound);
        self.metrics.connections.inc();
        self.metrics.users.set(gauge_value(users.len()));
        Ok(ticket)
    }

    /// Records the user's session here before their first `hello`; from then on the user's
    /// departure is reported when their last connection leaves.
    async fn record_arrival(&self, user: UserId) {
        let conversations = {
            let mut state = self.lock();
            let Some(entry) = state.users.get_mut(&user) else { return };
            entry.arrived = true;
            entry.member_of().collect()
        };
        self.presence.arrived(user, conversations).await;
    }

    /// The snapshot, the subscriptions, and — when a subscription was new — a second snapshot
    /// taken once NATS has registered it, so no event falls between "read" and "subscribed".
    async fn learn_memberships(self: &Arc<Self>, user: UserId) -> Result<(), JoinError> {
        let snapshot = self.relay.membership(user).await.map_err(|error| {
            tracing::warn!(%error, "membership request failed");
            JoinError::Unavailable
        })?;
        let pending = self.merge_snapshot(user, &snapshot);
        if pending.is_empty() {
            return Ok(());
        }
        let subscribed = async {
            for mut ready in pending {
                let _ = ready.wait_for(|ready| *ready).await;
            }
            self.relay.flush().await
        };
        match tokio::time::timeout(SUBSCRIBE_DEADLINE, subscribed).await {
            Ok(Ok(())) => {}
            _ => return Err(JoinError::Unavailable),
        }
        let snapshot = self.relay.membership(user).await.map_err(|_| JoinError::Unavailable)?;
        self.merge_snapshot(user, &snapshot);
        Ok(())
    }

    /// Applies a snapshot; returns the readiness of subscriptions not yet in place.
    fn merge_snapshot(
        self: &Arc<Self>,
        user: UserId,
        snapshot: &[ConversationPosition],
    ) -> Vec<tokio::sync::watch::Receiver<bool>> {
        let mut state = self.lock();
        let mut pending = Vec::new();
        for position in snapshot {
            self.set_membership(&mut state, user, position.conversation_id, true, position.last_seq, true);
            if let Some(conversation) = state.conversations.get_mut(&position.conversation_id) {
                conversation.last_seq = conversation.last_seq.max(position.last_seq);
                if !*conversation.subscription.ready.borrow() {
                    pending.push(conversation.subscription.ready.clone());
                }
            }
        }
        pending
    }

    /// Records that `user` is (or is no longer) a member as of `seq`, if that is news, and keeps
    /// the conversation's local members and subscription in step. Only users connected here
    /// (or connecting) are tracked. `inclusive` lets a snapshot at the same seq confirm a state.
    fn set_membership(
        self: &Arc<Self>,
        state: &mut State,
        user: UserId,
        conversation: ConversationId,
        member: bool,
        seq: i64,
        inclusive: bool,
    ) {
        let Some(entry) = state.users.get_mut(&user) else { return };
        let record = entry.memberships.entry(conversation).or_insert(Membership { member: false, as_of_seq: i64::MIN });
        let newer = if inclusive { seq >= record.as_of_seq } else { seq > record.as_of_seq };
        if !newer {
            return;
        }
        *record = Membership { member, as_of_seq: seq };
        if member {
            let entry = state.conversations.entry(conversation).or_insert_with(|| ConversationEntry {
                members: HashSet::new(),
                last_seq: seq,
                subscription: self.relay.subscribe_conversation(Arc::clone(self), conversation),
            });
            entry.members.insert(user);
        } else {
            remove_local_member(&mut state.conversations, conversation, user);
        }
        self.metrics.subscriptions.set(gauge_value(state.conversations.len()));
    }

    fn leave(&self, user: UserId, outbound: Option<&Arc<Outbound>>) {
        let mut state = self.lock();
        let State { users, conversations, shutting_down } = &mut *state;
        let Some(entry) = users.get_mut(&user) else { return };
        match outbound {
            Some(outbound) => {
                entry.connections.retain(|connection| !Arc::ptr_eq(connection, outbound));
                self.metrics.connections.dec();
            }
            None => entry.joining -= 1,
        }
        if entry.connections.is_empty() && entry.joining == 0 {
            let entry = users.remove(&user).unwrap_or_default();
            // At shutdown the sessions stay: clients reconnect elsewhere, and the lease expires.
            if entry.arrived && !*shutting_down {
                self.presence.left(user, entry.member_of().collect());
            }
            for conversation in entry.member_of() {
                remove_local_member(conversations, conversation, user);
            }
        }
        self.metrics.users.set(gauge_value(users.len()));
        self.metrics.subscriptions.set(gauge_value(conversations.len()));
    }

    /// An event from a conversation's subject: membership changes apply first (so the next
    /// event on this subscription already sees them), then every connection of every local
    /// member gets the frame — except users the event is addressed to on their own subject,
    /// who get it from there.
    pub fn deliver_conversation_event(self: &Arc<Self>, envelope: &Envelope, frame: &Frame) {
        let mut state = self.lock();
        let conversation = envelope.conversation_id;
        match &envelope.event {
            Event::MemberAdded(change) => {
                self.set_membership(&mut state, change.user_id, conversation, true, envelope.seq, false);
            }
            Event::MemberRemoved(change) => {
                self.set_membership(&mut state, change.user_id, conversation, false, envelope.seq, false);
            }
            _ => {}
        }
        let State { users, conversations, .. } = &mut *state;
        let Some(local) = conversations.get_mut(&conversation) else { return };
        local.last_seq = local.last_seq.max(envelope.seq);
        let addressed = match &envelope.event {
            // Every initial member hears it on their own subject.
            Event::ConversationCreated(_) => return,
            Event::MemberAdded(change) | Event::MemberRemoved(change) => Some(change.user_id),
            _ => None,
        };
        for user in local.members.iter().filter(|user| Some(**user) != addressed) {
            if let Some(entry) = users.get(user) {
                self.push_all(&entry.connections, frame);
            }
        }
    }

    /// An event from `<prefix>.user.<user>.…`: updates the user's memberships and goes to every
    /// connection of that user.
    pub fn deliver_user_event(self: &Arc<Self>, user: UserId, envelope: &Envelope, frame: &Frame) {
        let mut state = self.lock();
        if !state.users.contains_key(&user) {
            return;
        }
        let conversation = envelope.conversation_id;
        match &envelope.event {
            Event::MemberAdded(change) if change.user_id == user => {
                self.set_membership(&mut state, user, conversation, true, envelope.seq, false);
            }
            Event::MemberRemoved(change) if change.user_id == user => {
                self.set_membership(&mut state, user, conversation, false, envelope.seq, false);
            }
            Event::ConversationCreated(created) if created.member_ids.contains(&user) => {
                self.set_membership(&mut state, user, conversation, true, envelope.seq, false);
            }
            _ => {}
        }
        if let Some(local) = state.conversations.get_mut(&conversation) {
            local.last_seq = local.last_seq.max(envelope.seq);
        }
        if let Some(entry) = state.users.get(&user) {
            self.push_all(&entry.connections, frame);
        }
    }

    /// A typing or presence signal about `sender` goes to every connection of every local
    /// member of the conversation but the sender's own.
    pub fn deliver_signal(&self, conversation: ConversationId, sender: UserId, frame: &Frame) {
        let state = self.lock();
        let Some(local) = state.conversations.get(&conversation) else { return };
        for user in local.members.iter().filter(|user| **user != sender) {
            if let Some(entry) = state.users.get(user) {
                self.push_all(&entry.connections, frame);
            }
        }
    }

    /// Whether this broker knows `user` to be a member of `conversation` now.
    pub fn is_member(&self, user: UserId, conversation: ConversationId) -> bool {
        let state = self.lock();
        state
            .users
            .get(&user)
            .and_then(|entry| entry.memberships.get(&conversation))
            .is_some_and(|membership| membership.member)
    }

    fn push_all(&self, connections: &[Arc<Outbound>], frame: &Frame) {
        for connection in connections {
            if connection.push(frame.clone()) == Pushed::Overflowed {
                self.metrics.slow_consumers.inc();
            }
        }
    }

    /// Refuses new connections and asks every open one to close with `code`.
    pub fn close_all(&self, code: CloseCode) {
        self.lock().shutting_down = true;
        for connection in self.open_connections() {
            connection.close(code);
        }
    }

    /// Every open connection, at this moment.
    pub fn open_connections(&self) -> Vec<Arc<Outbound>> {
        self.lock().users.values().flat_map(|entry| entry.connections.iter().cloned()).collect()
    }

    /// Drops every subscription (at shutdown, once the connections are gone).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.conversations.clear();
        state.users.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update under this lock is complete before any call that could panic.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `user` is no longer a local member of `conversation`; the last one out drops the entry, and
/// with it the NATS subscription.
fn remove_local_member(
    conversations: &mut HashMap<ConversationId, ConversationEntry>,
    conversation: ConversationId,
    user: UserId,
) {
    if let Some(local) = conversations.get_mut(&conversation) {
        local.members.remove(&user);
        if local.members.is_empty() {
            conversations.remove(&conversation);
        }
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
