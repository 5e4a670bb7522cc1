//! One WebSocket connection: authenticate (if the handshake did not), join the hub, then one
//! loop over inbound frames, the outbound queue, the heartbeat/expiry timer and close requests,
//! until one side ends it. The loop polls reading and writing in one task (no split, no second
//! task): a connection costs one task and no buffers while idle.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use parley_shared::auth::Identity;
use parley_shared::events::TypingState;
use parley_shared::ids::{ConversationId, UserId};
use parley_shared::membership::ConversationPosition;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::channels::{Caller, Subscriptions, instant_of};
use crate::hub::{AnonymousTicket, Ticket};
use crate::latency;
use crate::metrics::CloseLabels;
use crate::outbound::{Frame, Outbound};
use crate::protocol::{
    ClientFrame, CloseCode, ErrorCode, Hello, ServerFrame, TYPING_MIN_INTERVAL, TYPING_TIMEOUT, parse_client_frame,
};
use crate::recent::most_recent;
use crate::server::Broker;
use crate::writer::FrameWriter;

pub type Socket = WebSocketStream<poem::Upgraded>;

/// Runs a connection whose WebSocket handshake is done, to its end.
///
/// Only the loop stays in this (long-lived, per-connection) future: authentication, joining,
/// closing and the rare inbound frames that await run in boxed futures, freed when they finish.
pub async fn run(broker: Arc<Broker>, ws: Socket, identity: Option<Identity>) {
    let Some((mut connection, seat)) = Box::pin(open(&broker, ws, identity)).await else { return };
    let ended = connection.run().await;
    // Out of the hub first, so nothing more is queued while the close handshake runs.
    broker.hub.forget_presence(&connection.outbound, &connection.following);
    if let Some(subscriptions) = &mut connection.subscriptions {
        broker.channels.leave_all(subscriptions, &connection.outbound);
    }
    drop(seat);
    match ended {
        Some(code) => Box::pin(close(&broker, connection.ws, connection.writer, code)).await,
        None => Box::pin(answer_close(&broker, connection.ws, connection.writer)).await,
    }
}

/// A connection's place in the hub: a user's, or an anonymous one's.
#[derive(Debug)]
enum Seat {
    User(#[allow(dead_code, reason = "held for its drop")] Ticket),
    Anonymous(#[allow(dead_code, reason = "held for its drop")] AnonymousTicket),
}

/// Authenticates (if the handshake did not), joins the hub and queues `hello`; or closes.
async fn open(broker: &Broker, mut ws: Socket, identity: Option<Identity>) -> Option<(Connection<'_>, Seat)> {
    let identity = match identity {
        Some(identity) => identity,
        None => match first_frame(broker, &mut ws).await {
            Ok(First::Auth(identity)) => identity,
            Ok(First::Anonymous(message)) => return Box::pin(open_anonymous(broker, ws, message)).await,
            Err(code) => {
                close(broker, ws, FrameWriter::default(), code).await;
                return None;
            }
        },
    };
    let outbound = Arc::new(Outbound::new(broker.settings.queue_bound));
    let id = uuid::Uuid::now_v7();
    let hello = hello_for(broker, id, Some(&identity));
    let max_conversations = broker.settings.hello_max_conversations;
    let hello = move |positions: &mut dyn Iterator<Item = ConversationPosition>| {
        let (recent, conversations_truncated) =
            most_recent(positions.map(|position| (position.last_seq, position.conversation_id)), max_conversations);
        let conversations = recent
            .into_iter()
            .map(|(last_seq, conversation_id)| ConversationPosition { conversation_id, last_seq })
            .collect();
        let hello = Hello { conversations, conversations_truncated, ..hello };
        Frame { text: ServerFrame::Hello(hello).to_text(), occurred_at_micros: 0 }
    };
    match broker.hub.join(identity.user_id, Arc::clone(&outbound), hello).await {
        Ok(ticket) => Some((Connection::new(broker, ws, outbound, Some(identity), id), Seat::User(ticket))),
        Err(error) => {
            close(broker, ws, FrameWriter::default(), error.close_code()).await;
            None
        }
    }
}

/// An anonymous connection: `hello` without a user, then its first frame handled.
async fn open_anonymous(broker: &Broker, ws: Socket, first: Message) -> Option<(Connection<'_>, Seat)> {
    let outbound = Arc::new(Outbound::new(broker.settings.queue_bound));
    let ticket = match broker.hub.join_anonymous(&outbound) {
        Ok(ticket) => ticket,
        Err(error) => {
            close(broker, ws, FrameWriter::default(), error.close_code()).await;
            return None;
        }
    };
    let id = uuid::Uuid::now_v7();
    outbound.push(ServerFrame::Hello(hello_for(broker, id, None)).to_frame());
    let mut connection = Connection::new(broker, ws, outbound, None, id);
    match connection.on_inbound(first).await {
        Ok(()) => Some((connection, Seat::Anonymous(ticket))),
        Err(code) => {
            drop(ticket);
            match code {
                Some(code) => close(broker, connection.ws, connection.writer, code).await,
                None => answer_close(broker, connection.ws, connection.writer).await,
            }
            None
        }
    }
}

/// `hello` without conversations (a user's are added once the hub knows them).
fn hello_for(broker: &Broker, id: uuid::Uuid, identity: Option<&Identity>) -> Hello {
    Hello {
        connection_id: id.to_string(),
        user_id: identity.map(|identity| identity.user_id),
        expires_at: identity.map(|identity| identity.expires_at),
        heartbeat_interval_ms: millis(broker.settings.heartbeat_interval),
        idle_timeout_ms: millis(broker.settings.idle_timeout),
        typing_timeout_ms: millis(TYPING_TIMEOUT),
        limits: broker.settings.limits,
        conversations: Vec::new(),
        conversations_truncated: false,
    }
}

/// The client closed (or vanished): sends what tungstenite queued in reply to its close frame
/// (the code echoed, or 1002 for a code a peer may not send), after the batch under way, so
/// the client sees a clean close (RFC 6455 §5.5.1). A vanished client makes this fail at once.
async fn answer_close(broker: &Broker, mut ws: Socket, mut writer: FrameWriter) {
    let reply = async {
        poll_fn(|cx| writer.poll_write(ws.get_mut(), cx)).await?;
        // Once the reply is out, tungstenite reports the connection closed: that is success.
        futures_util::SinkExt::flush(&mut ws).await
    };
    let _ = tokio::time::timeout(broker.settings.close_timeout, reply).await;
}

/// What the first frame of a connection whose handshake carried no token made of it.
enum First {
    Auth(Identity),
    /// Anonymous connections are allowed and the first frame was not `auth`: it is handled once
    /// the connection is open.
    Anonymous(Message),
}

/// The first frame of a connection whose handshake carried no token must be `auth`, unless
/// anonymous connections are allowed.
async fn first_frame(broker: &Broker, ws: &mut Socket) -> Result<First, CloseCode> {
    let first =
        tokio::time::timeout(broker.settings.auth_timeout, ws.next()).await.map_err(|_| CloseCode::AuthTimeout)?;
    let Some(Ok(message)) = first else { return Err(CloseCode::BadToken) };
    let parsed = match &message {
        Message::Text(text) => Some(parse_client_frame(text)),
        _ => None,
    };
    match parsed {
        Some(Ok(ClientFrame::Auth { token })) => {
            broker.metrics.frames_in.inc();
            broker.verifier.verify(&token).await.map(First::Auth).map_err(|_| CloseCode::BadToken)
        }
        _ if broker.settings.allow_anonymous => Ok(First::Anonymous(message)),
        _ => Err(CloseCode::BadToken),
    }
}

/// Finishes the batch under way, sends the close frame and waits (bounded) for the client's
/// reply.
async fn close(broker: &Broker, mut ws: Socket, mut writer: FrameWriter, code: CloseCode) {
    broker.metrics.closes.get_or_create(&CloseLabels { reason: code.reason() }).inc();
    tracing::debug!(code = code.code(), reason = code.reason(), "closing connection");
    let frame = CloseFrame { code: code.code().into(), reason: code.reason().into() };
    let handshake = async {
        poll_fn(|cx| writer.poll_write(ws.get_mut(), cx)).await?;
        ws.close(Some(frame)).await?;
        while ws.next().await.transpose()?.is_some() {}
        Ok::<_, WsError>(())
    };
    let _ = tokio::time::timeout(broker.settings.close_timeout, handshake).await;
}

struct Connection<'a> {
    broker: &'a Broker,
    ws: Socket,
    outbound: Arc<Outbound>,
    /// `None` on an anonymous connection.
    user: Option<UserId>,
    /// The token's `channels` claim (patterns of `granted` channels).
    channel_claims: Box<[String]>,
    /// Channel subscriptions, made on the first `subscribe` (most connections have none).
    subscriptions: Option<Box<Subscriptions>>,
    expires: Instant,
    last_inbound: Instant,
    next_heartbeat: Instant,
    timer: Pin<Box<Sleep>>,
    inbound_rate: DefaultDirectRateLimiter,
    /// The last typing `start` relayed, to throttle renewals.
    last_typing: Option<(ConversationId, Instant)>,
    /// Users this connection follows with `presence.subscribe` (empty for most: no allocation).
    following: Vec<UserId>,
    /// Text frames bypass tungstenite's output buffer (see [`FrameWriter`]).
    writer: FrameWriter,
    ping_due: bool,
    /// tungstenite may hold a frame not yet flushed: it was given a ping, or it read a frame
    /// (a ping or close it then owes an answer to). Only then is its flush needed.
    tungstenite_unflushed: bool,
    /// `hello`'s `connection_id`, for the logs.
    id: uuid::Uuid,
    /// Since when the socket has not taken the rest of a batch (the client reads nothing, or
    /// its link is gone): closed as a slow consumer after `PARLEY_BROKER_WRITE_TIMEOUT`.
    write_stalled_since: Option<Instant>,
    /// The last ping not followed by anything from the client: a peer that answers nothing
    /// within `PARLEY_BROKER_PONG_TIMEOUT` is dead.
    ping_sent_at: Option<Instant>,
}

/// What woke the loop.
enum Step {
    Inbound(Message),
    /// A member left one of the user's conversations and this connection follows someone.
    PresenceRecheck,
    Timer,
    /// The connection ends with this close code, or with none when the client is gone or broke
    /// the protocol in a way that leaves nothing to say.
    Ended(Option<CloseCode>),
}

impl<'a> Connection<'a> {
    fn new(
        broker: &'a Broker,
        ws: Socket,
        outbound: Arc<Outbound>,
        identity: Option<Identity>,
        id: uuid::Uuid,
    ) -> Self {
        let now = Instant::now();
        let next_heartbeat = now + broker.settings.heartbeat_interval;
        // An anonymous connection has no token to expire.
        let expires = identity.as_ref().map_or_else(
            || instant_of(chrono::DateTime::<chrono::Utc>::MAX_UTC),
            |identity| instant_of(identity.expires_at),
        );
        let (user, channel_claims) = match identity {
            Some(identity) => (Some(identity.user_id), identity.channels.into_boxed_slice()),
            None => (None, Box::default()),
        };
        Self {
            broker,
            ws,
            outbound,
            user,
            channel_claims,
            subscriptions: None,
            expires,
            last_inbound: now,
            next_heartbeat,
            timer: Box::pin(tokio::time::sleep_until(next_heartbeat.min(expires))),
            inbound_rate: RateLimiter::direct_with_clock(broker.settings.inbound_quota, broker.rate_clock.clone()),
            last_typing: None,
            following: Vec::new(),
            writer: FrameWriter::default(),
            ping_due: false,
            tungstenite_unflushed: false,
            id,
            write_stalled_since: None,
            ping_sent_at: None,
        }
    }

    /// Serves the connection; returns the close code to send, or `None` when there is no one
    /// left to send it to.
    async fn run(&mut self) -> Option<CloseCode> {
        loop {
            let step = poll_fn(|cx| self.poll_step(cx)).await;
            let outcome = match step {
                Step::Inbound(message) => Box::pin(self.on_inbound(message)).await,
                Step::PresenceRecheck => {
                    let hub = &self.broker.hub;
                    let Some(user) = self.user else { continue };
                    let frames = Box::pin(hub.presence_recheck(user, &self.outbound, &mut self.following)).await;
                    for frame in frames {
                        self.outbound.push(Frame { text: frame.to_text(), occurred_at_micros: 0 });
                    }
                    Ok(())
                }
                Step::Timer => self.on_timer(),
                Step::Ended(Some(CloseCode::SlowConsumer)) => {
                    tracing::info!(connection_id = %self.id, "outbound queue full; closing a slow consumer");
                    Err(Some(CloseCode::SlowConsumer))
                }
                Step::Ended(code) => Err(code),
            };
            if let Err(code) = outcome {
                return code;
            }
        }
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        // Most connections follow no one: no atomic swap on their every wake-up. A request left
        // set while following no one only costs one needless check after a later subscribe.
        if !self.following.is_empty() && self.outbound.take_presence_recheck() {
            return Poll::Ready(Step::PresenceRecheck);
        }
        let awaiting_pong = self.ping_sent_at.is_some();
        if let Err(code) = self.poll_write(cx) {
            return Poll::Ready(Step::Ended(code));
        }
        // The deadlines move when a write stalls or clears, or a ping went out.
        let stalled = self.writer.is_mid_frame();
        let stall_changed = stalled != self.write_stalled_since.is_some();
        if stall_changed {
            self.write_stalled_since = stalled.then(Instant::now);
        }
        if stall_changed || self.ping_sent_at.is_some() != awaiting_pong {
            self.reset_timer();
        }
        // Reading may write (tungstenite answers pings), so it waits while a frame is half out;
        // a client that does not read is not read from either, until the queue bound closes it.
        if !self.writer.is_mid_frame() {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    self.tungstenite_unflushed = true;
                    return Poll::Ready(Step::Inbound(message));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Step::Ended(read_error_code(&error))),
                Poll::Ready(None) => return Poll::Ready(Step::Ended(None)),
                Poll::Pending => {}
            }
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Step::Timer);
        }
        Poll::Pending
    }

    /// Moves every queued frame into the socket until it would block; a close asked for ends
    /// the connection (also while the socket is full).
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<(), Option<CloseCode>> {
        let clear = self.poll_clear(cx)?;
        let frames = self.outbound.poll_take(cx, clear).map_err(Some)?;
        if frames.is_empty() {
            return Ok(());
        }
        self.broker.metrics.frames_out.inc_by(frames.len() as u64);
        self.writer.reserve(frames.len(), frames.bytes());
        // One clock read per batch: every frame of a batch is written at about the same time.
        let mut now_micros = None;
        let mut latencies = latency::Batch::default();
        for frame in frames {
            if frame.occurred_at_micros > 0 {
                let now = *now_micros.get_or_insert_with(|| chrono::Utc::now().timestamp_micros());
                latencies.observe_micros(now.saturating_sub(frame.occurred_at_micros).max(0).unsigned_abs());
            }
            self.writer.push_text(frame.text.as_bytes());
        }
        self.broker.metrics.delivery_latency.record(&latencies);
        match self.writer.poll_write(self.ws.get_mut(), cx) {
            Poll::Ready(Err(_)) => Err(None),
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
        }
    }

    /// Whether the socket is clear for a new batch: the batch under way written (nothing else may
    /// be written inside a frame), then a due ping and whatever tungstenite holds.
    fn poll_clear(&mut self, cx: &mut Context<'_>) -> Result<bool, Option<CloseCode>> {
        match self.writer.poll_write(self.ws.get_mut(), cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Err(None),
            Poll::Pending => return Ok(false),
        }
        let mut ws = Pin::new(&mut self.ws);
        if self.ping_due {
            match ws.as_mut().poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Err(None),
                Poll::Pending => return Ok(false),
            }
            ws.as_mut().start_send(Message::Ping(Default::default())).map_err(|_| None)?;
            self.ping_due = false;
            self.tungstenite_unflushed = true;
            self.ping_sent_at.get_or_insert_with(Instant::now);
        }
        // Whatever tungstenite holds (a ping, a pong it owes the client) goes out before the
        // next batch, so its frames and the writer's follow each other whole.
        if self.tungstenite_unflushed {
            match ws.poll_flush(cx) {
                Poll::Ready(Ok(())) => self.tungstenite_unflushed = false,
                Poll::Ready(Err(_)) => return Err(None),
                Poll::Pending => return Ok(false),
            }
        }
        Ok(true)
    }

    async fn on_inbound(&mut self, message: Message) -> Result<(), Option<CloseCode>> {
        self.last_inbound = Instant::now();
        self.ping_sent_at = None;
        self.broker.metrics.frames_in.inc();
        if self.inbound_rate.check().is_err() {
            return Err(Some(CloseCode::RateLimited));
        }
        let reply = match message {
            Message::Text(text) => match parse_client_frame(&text) {
                Ok(ClientFrame::Ping) => ServerFrame::Pong,
                Ok(ClientFrame::Subscribe { channel, token, since }) => {
                    let caller = caller(self.user, &self.channel_claims);
                    let subscriptions = self.subscriptions.get_or_insert_default();
                    let channels = &self.broker.channels;
                    let refused =
                        channels.subscribe(caller, subscriptions, &self.outbound, &channel, token.as_deref(), since);
                    let Some(refused) = refused.await else {
                        self.reset_timer();
                        return Ok(());
                    };
                    refused
                }
                Ok(ClientFrame::Unsubscribe { channel }) => {
                    let subscriptions = self.subscriptions.get_or_insert_default();
                    self.broker.channels.unsubscribe(subscriptions, &self.outbound, &channel)
                }
                Ok(ClientFrame::Publish { channel, data }) => {
                    let caller = caller(self.user, &self.channel_claims);
                    let subscriptions = self.subscriptions.get_or_insert_default();
                    self.broker.channels.publish(caller, subscriptions, &channel, data).await
                }
                Ok(_) if self.user.is_none() => ServerFrame::error(
                    ErrorCode::Forbidden,
                    "an anonymous connection may only subscribe to public channels",
                ),
                Ok(ClientFrame::Auth { token }) => self.refresh(&token).await?,
                Ok(ClientFrame::Typing { conversation_id, state }) => match self.typing(conversation_id, state).await {
                    Some(error) => error,
                    None => return Ok(()),
                },
                Ok(ClientFrame::PresenceSubscribe { user_ids }) => {
                    let Some(user) = self.user else { return Ok(()) };
                    let limit = self.broker.settings.limits.max_presence_subscriptions;
                    let hub = &self.broker.hub;
                    let frames =
                        hub.presence_subscribe(user, &self.outbound, &mut self.following, user_ids, limit).await;
                    for frame in frames {
                        self.outbound.push(Frame { text: frame.to_text(), occurred_at_micros: 0 });
                    }
                    return Ok(());
                }
                Ok(ClientFrame::PresenceUnsubscribe { user_ids }) => {
                    self.broker.hub.presence_unsubscribe(&self.outbound, &mut self.following, &user_ids);
                    ServerFrame::PresenceSubscribed { user_ids: self.following.clone() }
                }
                Err((code, message)) => ServerFrame::error(code, message),
            },
            Message::Binary(_) => ServerFrame::error(ErrorCode::BinaryNotSupported, "send JSON text frames"),
            // tungstenite answers pings itself and finishes the close handshake on the next flush.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(()),
            Message::Close(_) => return Err(None),
        };
        self.outbound.push(Frame { text: reply.to_text(), occurred_at_micros: 0 });
        Ok(())
    }

    /// A later `auth` frame: a valid token for the same user moves the expiry (and replaces
    /// the `channels` claim for later subscriptions).
    async fn refresh(&mut self, token: &str) -> Result<ServerFrame, Option<CloseCode>> {
        match self.broker.verifier.verify(token).await {
            Ok(identity) if Some(identity.user_id) == self.user => {
                self.channel_claims = identity.channels.into_boxed_slice();
                self.expires = instant_of(identity.expires_at);
                self.reset_timer();
                Ok(ServerFrame::Authenticated { expires_at: identity.expires_at })
            }
            _ => Err(Some(CloseCode::BadToken)),
        }
    }

    /// Relays a typing signal of a member; renewals faster than [`TYPING_MIN_INTERVAL`] are
    /// dropped (a keystroke each must not become a NATS message each). Returns an error frame
    /// for a conversation the user is not in.
    async fn typing(&mut self, conversation: ConversationId, state: TypingState) -> Option<ServerFrame> {
        let user = self.user?;
        if !self.broker.hub.is_member(user, conversation) {
            return Some(ServerFrame::error(ErrorCode::NotAMember, "not a member of this conversation"));
        }
        let now = Instant::now();
        if state == TypingState::Start {
            let recent = self
                .last_typing
                .is_some_and(|(last, at)| last == conversation && now.duration_since(at) < TYPING_MIN_INTERVAL);
            if recent {
                return None;
            }
            self.last_typing = Some((conversation, now));
        } else {
            self.last_typing = None;
        }
        self.broker.hub.relay().publish_typing(conversation, user, state).await;
        None
    }

    fn on_timer(&mut self) -> Result<(), Option<CloseCode>> {
        let now = Instant::now();
        if now >= self.expires {
            return Err(Some(CloseCode::TokenExpired));
        }
        if let Some(subscriptions) = &mut self.subscriptions {
            for frame in self.broker.channels.expire(subscriptions, &self.outbound, now) {
                self.outbound.push(frame.to_frame());
            }
        }
        let settings = &self.broker.settings;
        if self.write_stalled_since.is_some_and(|since| now >= since + settings.write_timeout) {
            tracing::info!(connection_id = %self.id, "a write stalled past the write timeout; closing a slow consumer");
            return Err(Some(CloseCode::SlowConsumer));
        }
        // While a write is stalled the client is not read (its pong may be waiting): the
        // write timeout decides then.
        if !self.writer.is_mid_frame() && self.ping_sent_at.is_some_and(|sent| now >= sent + settings.pong_timeout) {
            tracing::info!(connection_id = %self.id, "no answer to a ping within the pong timeout; closing a dead peer");
            return Err(Some(CloseCode::IdleTimeout));
        }
        if now >= self.next_heartbeat {
            if now.duration_since(self.last_inbound) >= self.broker.settings.idle_timeout {
                return Err(Some(CloseCode::IdleTimeout));
            }
            self.ping_due = true;
            self.next_heartbeat = now + self.broker.settings.heartbeat_interval;
        }
        self.reset_timer();
        Ok(())
    }

    fn reset_timer(&mut self) {
        let settings = &self.broker.settings;
        let pong_deadline =
            self.ping_sent_at.filter(|_| !self.writer.is_mid_frame()).map(|sent| sent + settings.pong_timeout);
        let deadlines = [
            self.subscriptions.as_ref().and_then(|subscriptions| subscriptions.next_expiry()),
            self.write_stalled_since.map(|since| since + settings.write_timeout),
            pong_deadline,
        ];
        let next = deadlines.into_iter().flatten().fold(self.next_heartbeat.min(self.expires), Instant::min);
        self.timer.as_mut().reset(next);
    }
}

fn caller(user: Option<UserId>, channel_claims: &[String]) -> Caller<'_> {
    match user {
        Some(id) => Caller::User { id, channels: channel_claims },
        None => Caller::Anonymous,
    }
}

/// The close code a read error deserves, if the connection can still carry one.
fn read_error_code(error: &WsError) -> Option<CloseCode> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match error {
        WsError::Capacity(_) => Some(CloseCode::FrameTooLarge),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) | WsError::Utf8(_) => Some(CloseCode::ProtocolError),
        _ => None,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
