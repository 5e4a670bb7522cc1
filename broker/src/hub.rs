//! Who is connected here, and joining and leaving: the façade the connections use over the
//! [`Index`] (the routing table) and the [`router`](crate::router) (which sequences installs
//! with event delivery).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use parley_shared::ids::{ConversationId, UserId};
use parley_shared::membership::{ConversationPosition, Membership};
use tokio::sync::watch;

use crate::index::Index;
use crate::metrics::Metrics;
use crate::outbound::{Frame, Outbound};
use crate::presence::PresenceReports;
use crate::protocol::{CloseCode, ErrorCode, ServerFrame};
use crate::recent::audience;
use crate::relay::Relay;
use crate::router::{CANCELLED, INSTALLED, InstallRequest, PENDING, RouterHandle};

#[derive(Debug)]
pub struct Hub {
    index: Arc<Index>,
    router: RouterHandle,
    /// True once the event feed has a consumer: joining waits for it.
    feed_live: watch::Receiver<bool>,
    relay: Relay,
    presence: PresenceReports,
    metrics: Arc<Metrics>,
    limits: HubLimits,
    shutting_down: AtomicBool,
    /// Anonymous connections (no user, so not in the index), by address: shutdown and resync
    /// reach them too.
    anonymous: Mutex<HashMap<usize, Arc<Outbound>>>,
}

#[derive(Clone, Copy, Debug)]
pub struct HubLimits {
    pub max_connections_per_user: usize,
    /// See `PARLEY_PRESENCE_AUTO_MAX_MEMBERS`.
    pub auto_max_members: u32,
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

/// An anonymous connection's place in the hub, given up on drop.
#[must_use = "dropping the ticket removes the connection from the hub"]
#[derive(Debug)]
pub struct AnonymousTicket {
    hub: Arc<Hub>,
    outbound: Arc<Outbound>,
}

impl Drop for AnonymousTicket {
    fn drop(&mut self) {
        self.hub.anonymous_connections().remove(&address(&self.outbound));
        self.hub.metrics.anonymous_connections.dec();
    }
}

/// An identity for a connection while its `Arc` lives.
fn address(outbound: &Arc<Outbound>) -> usize {
    Arc::as_ptr(outbound) as usize
}

/// A connection's place in the hub; leaving happens on drop, whatever ends the connection.
#[must_use = "dropping the ticket removes the connection from the hub"]
#[derive(Debug)]
pub struct Ticket {
    hub: Arc<Hub>,
    user: UserId,
    outbound: Arc<Outbound>,
    state: Arc<AtomicU8>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.hub.leave(self.user, &self.outbound, &self.state);
    }
}

impl Hub {
    pub fn new(
        index: Arc<Index>,
        router: RouterHandle,
        feed_live: watch::Receiver<bool>,
        relay: Relay,
        presence: PresenceReports,
        metrics: Arc<Metrics>,
        limits: HubLimits,
    ) -> Self {
        Self {
            index,
            router,
            feed_live,
            relay,
            presence,
            metrics,
            limits,
            shutting_down: AtomicBool::new(false),
            anonymous: Mutex::default(),
        }
    }

    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Registers a connection of `user`: learns the user's conversations (unless another of
    /// their connections here already did), then queues `hello` (positions at that instant) as
    /// the connection's first frame and starts delivering. Every event after a `last_seq` in
    /// `hello` reaches this connection.
    pub async fn join(
        self: &Arc<Self>,
        user: UserId,
        outbound: Arc<Outbound>,
        hello: impl FnOnce(&mut dyn Iterator<Item = ConversationPosition>) -> Frame + Send + 'static,
    ) -> Result<Ticket, JoinError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(JoinError::ShuttingDown);
        }
        let known = self.index.with_user(user, |entry| {
            if entry.connections.len() + entry.joining >= self.limits.max_connections_per_user {
                return Err(JoinError::TooManyConnections);
            }
            entry.joining += 1;
            Ok(entry.installed)
        })?;
        // From here on the ticket undoes the `joining` count, whatever happens.
        let state = Arc::new(AtomicU8::new(PENDING));
        let ticket = Ticket { hub: Arc::clone(self), user, outbound: Arc::clone(&outbound), state: Arc::clone(&state) };
        let snapshot = if known { None } else { Some(self.learn_memberships(user).await?) };
        let request = InstallRequest { user, snapshot, outbound, state, hello: Box::new(hello) };
        if !self.router.install(request).await {
            return Err(JoinError::Unavailable);
        }
        self.metrics.connections.inc();
        // `close_all` may have run while this one was being installed.
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(JoinError::ShuttingDown);
        }
        Ok(ticket)
    }

    /// The API's snapshot of the user's memberships, asked for once the router keeps what it
    /// routes for this join; and the user's session recorded for presence.
    async fn learn_memberships(&self, user: UserId) -> Result<(crate::router::Window, Vec<Membership>), JoinError> {
        if !crate::feed::wait_live(&self.feed_live).await {
            return Err(JoinError::Unavailable);
        }
        let window = self.router.open_window().await.ok_or(JoinError::Unavailable)?;
        let snapshot = self.relay.membership(user).await.map_err(|error| {
            tracing::warn!(%error, "membership request failed");
            JoinError::Unavailable
        })?;
        self.record_arrival(user, &snapshot).await;
        Ok((window, snapshot))
    }

    /// Records the user's session here before their first `hello`; from then on the user's
    /// departure is reported when their last connection leaves.
    async fn record_arrival(&self, user: UserId, snapshot: &[Membership]) {
        let first = self.index.with_known_user(user, |entry| !std::mem::replace(&mut entry.arrived, true));
        if first == Some(true) {
            let max = i64::from(self.limits.auto_max_members);
            let small = snapshot.iter().filter(|m| m.member_count <= max).map(|m| (m.last_seq, m.conversation_id));
            self.presence.arrived(user, audience(small)).await;
        }
    }

    fn leave(&self, user: UserId, outbound: &Arc<Outbound>, state: &AtomicU8) {
        self.index.with_known_user(user, |entry| match state.swap(CANCELLED, Ordering::AcqRel) {
            INSTALLED => {
                entry.connections.retain(|connection| !Arc::ptr_eq(connection, outbound));
                self.metrics.connections.dec();
            }
            PENDING => entry.joining -= 1,
            _ => {}
        });
        self.index.connections_changed(user);
        if let Some((entry, audience)) = self.index.remove_user_if_idle(user, self.limits.auto_max_members) {
            // At shutdown the sessions stay: clients reconnect elsewhere, and the lease expires.
            if entry.arrived && !self.shutting_down.load(Ordering::Acquire) {
                self.presence.left(user, audience);
            }
        }
    }

    /// Follows `candidates`' presence on `outbound` (already following `following`, at most
    /// `limit` in all): the frame to answer with, and the users now followed.
    pub async fn presence_subscribe(
        &self,
        user: UserId,
        outbound: &Arc<Outbound>,
        following: &mut Vec<UserId>,
        candidates: Vec<UserId>,
        limit: usize,
    ) -> Vec<ServerFrame> {
        let mut candidates: Vec<UserId> = candidates.into_iter().filter(|c| !following.contains(c)).collect();
        candidates.sort_unstable();
        candidates.dedup();
        let room = limit.saturating_sub(following.len());
        let mut frames = Vec::new();
        if candidates.len() > room {
            let refused = candidates.split_off(room);
            frames.push(ServerFrame::Error {
                code: ErrorCode::TooManySubscriptions,
                message: format!("a connection follows at most {limit} users"),
                user_ids: refused,
                channel: None,
            });
        }
        let visible = match self.relay.visible(user, candidates.clone()).await {
            Ok(visible) => visible,
            Err(error) => {
                tracing::warn!(%error, "visibility request failed");
                frames.push(ServerFrame::error(ErrorCode::Unavailable, "could not check these users now; retry"));
                return frames;
            }
        };
        let refused: Vec<UserId> = candidates.into_iter().filter(|c| !visible.contains(c)).collect();
        if !refused.is_empty() {
            frames.push(ServerFrame::Error {
                code: ErrorCode::NotVisible,
                message: "these users share no conversation with you".into(),
                user_ids: refused,
                channel: None,
            });
        }
        for watched in visible {
            self.index.watch(watched, (user, Arc::clone(outbound)));
            following.push(watched);
        }
        frames.insert(0, ServerFrame::PresenceSubscribed { user_ids: following.clone() });
        frames
    }

    /// After a member left one of `user`'s conversations: stops following, on `outbound`, the
    /// users who no longer share a conversation with `user`. The frames to send: the new
    /// `presence.subscribed` list if it changed, and an `unavailable` error if the API could
    /// not say (then every subscription is dropped: presence is never relayed unchecked).
    pub async fn presence_recheck(
        &self,
        user: UserId,
        outbound: &Arc<Outbound>,
        following: &mut Vec<UserId>,
    ) -> Vec<ServerFrame> {
        let (visible, failed) = match self.relay.visible(user, following.clone()).await {
            Ok(visible) => (visible, false),
            Err(error) => {
                tracing::warn!(%error, "visibility request failed; dropping the connection's presence subscriptions");
                (Vec::new(), true)
            }
        };
        let gone: Vec<UserId> = following.iter().copied().filter(|followed| !visible.contains(followed)).collect();
        if gone.is_empty() {
            return Vec::new();
        }
        self.presence_unsubscribe(outbound, following, &gone);
        let mut frames = vec![ServerFrame::PresenceSubscribed { user_ids: following.clone() }];
        if failed {
            frames.push(ServerFrame::error(
                ErrorCode::Unavailable,
                "could not check the users you follow again; subscribe again",
            ));
        }
        frames
    }

    /// Stops following `users`' presence on `outbound`.
    pub fn presence_unsubscribe(&self, outbound: &Arc<Outbound>, following: &mut Vec<UserId>, users: &[UserId]) {
        self.forget_presence(outbound, users);
        following.retain(|user| !users.contains(user));
    }

    /// Drops `outbound`'s subscriptions to `users`' presence (at close: all it had).
    pub fn forget_presence(&self, outbound: &Arc<Outbound>, users: &[UserId]) {
        for user in users {
            self.index.unwatch(*user, outbound);
        }
    }

    /// Whether this broker knows `user` to be a member of `conversation` now.
    pub fn is_member(&self, user: UserId, conversation: ConversationId) -> bool {
        self.index.with_known_user(user, |entry| entry.is_member(conversation)).unwrap_or(false)
    }

    /// Registers an anonymous connection (it joins no user and learns no conversation).
    pub fn join_anonymous(self: &Arc<Self>, outbound: &Arc<Outbound>) -> Result<AnonymousTicket, JoinError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(JoinError::ShuttingDown);
        }
        self.anonymous_connections().insert(address(outbound), Arc::clone(outbound));
        self.metrics.anonymous_connections.inc();
        Ok(AnonymousTicket { hub: Arc::clone(self), outbound: Arc::clone(outbound) })
    }

    fn anonymous_connections(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Arc<Outbound>>> {
        self.anonymous.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses new connections and asks every open one to close with `code`.
    pub fn close_all(&self, code: CloseCode) {
        self.shutting_down.store(true, Ordering::Release);
        for connection in self.open_connections() {
            connection.close(code);
        }
    }

    /// Every open connection, at this moment.
    pub fn open_connections(&self) -> Vec<Arc<Outbound>> {
        let mut connections = self.index.open_connections();
        connections.extend(self.anonymous_connections().values().cloned());
        connections
    }

    /// Forgets everyone (at shutdown, once the connections are gone).
    pub fn clear(&self) {
        self.index.clear();
    }
}
