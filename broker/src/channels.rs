//! Channel frames of a connection: `subscribe` (authorise, recover, join the
//! [`ChannelIndex`]), `unsubscribe`, `publish`, and subscription tokens that expire.
//!
//! Authorisation, by the namespace's `subscribe` rule: `public` — anyone, anonymous connections
//! included; `authenticated` — any user; `granted` — a user whose token's `channels` claim has a
//! matching pattern, or who presents a subscription token for this channel (its `exp` then ends
//! the subscription, not the connection); `owner` (`user:<id>`) — that user only.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parley_shared::auth::{AuthError, Verifier};
use parley_shared::channels::{Channel, Namespace, Namespaces, Subscribers, pattern_grants};
use parley_shared::ids::UserId;
use parley_shared::publications::{ChannelPosition, Publication};
use tokio::time::Instant;

use crate::channel_index::{ChannelIndex, Position};
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::protocol::{ErrorCode, ServerFrame};
use crate::relay::Relay;
use crate::router::{ChannelSubscription, RouterHandle};

/// Most bytes of publications `subscribed` recovers; a client further behind is told
/// `recovered: false` and reads the REST pages (the socket's write buffer keeps the size of the
/// largest frame written, so recoveries stay well below it).
pub const MAX_RECOVERY_BYTES: usize = 128 * 1024;

/// Who a connection speaks for.
#[derive(Clone, Copy, Debug)]
pub enum Caller<'a> {
    Anonymous,
    User { id: UserId, channels: &'a [String] },
}

/// A refusal: the `error` frame's code and message.
type Refusal = (ErrorCode, String);

#[derive(Debug)]
struct Subscription {
    channel: Channel,
    key: Box<str>,
    /// When the subscription token it was granted by expires.
    expires: Option<Instant>,
}

/// One connection's channel subscriptions (empty for most: no allocation).
#[derive(Debug, Default)]
pub struct Subscriptions {
    list: Vec<Subscription>,
    /// Publish rate limiters, one per namespace the connection published into.
    publish_rates: Vec<(String, DefaultDirectRateLimiter)>,
}

impl Subscriptions {
    fn find(&self, channel: &Channel) -> Option<usize> {
        self.list.iter().position(|subscription| subscription.channel == *channel)
    }

    /// The earliest subscription token expiry, for the connection's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.list.iter().filter_map(|subscription| subscription.expires).min()
    }
}

#[derive(Debug)]
pub struct Channels {
    pub index: Arc<ChannelIndex>,
    pub namespaces: Namespaces,
    pub router: RouterHandle,
    pub relay: Relay,
    pub verifier: Arc<Verifier>,
    pub metrics: Arc<Metrics>,
    pub max_subscriptions: usize,
    /// True once the events feed has a consumer.
    pub feed_live: tokio::sync::watch::Receiver<bool>,
    pub rate_clock: governor::clock::DefaultClock,
}

impl Channels {
    /// Handles `subscribe`; the `error` frame to answer with when refused (`subscribed` is
    /// queued by the subscription itself, ahead of any publication).
    pub async fn subscribe(
        &self,
        caller: Caller<'_>,
        subscriptions: &mut Subscriptions,
        outbound: &Arc<Outbound>,
        name: &str,
        token: Option<&str>,
        since: Option<ChannelPosition>,
    ) -> Option<ServerFrame> {
        let refused = |(code, message): Refusal| Some(ServerFrame::channel_error(code, name, message));
        let (channel, namespace) = match self.resolve(name) {
            Ok(resolved) => resolved,
            Err(refusal) => return refused(refusal),
        };
        let expires = match self.authorize(caller, &channel, namespace, token).await {
            Ok(expires) => expires.map(instant_of),
            Err(refusal) => return refused(refusal),
        };
        if let Some(at) = subscriptions.find(&channel) {
            if token.is_none() {
                return refused((ErrorCode::AlreadySubscribed, "this connection subscribes to it already".into()));
            }
            subscriptions.list[at].expires = expires;
            let position = self.index.position(&channel.key());
            return Some(subscribed(&channel, true, position.as_ref(), Vec::new()));
        }
        if subscriptions.list.len() >= self.max_subscriptions {
            let message = format!("a connection subscribes to at most {} channels", self.max_subscriptions);
            return refused((ErrorCode::TooManySubscriptions, message));
        }
        let key: Box<str> = channel.key().into();
        if namespace.is_durable() {
            if let Err(refusal) = self.subscribe_durable(&channel, &key, outbound, since).await {
                return refused(refusal);
            }
        } else {
            self.index.subscribe(
                &key,
                Arc::clone(outbound),
                [subscribed(&channel, false, None, Vec::new()).to_frame()],
                0,
                None,
            );
        }
        self.metrics.subscribed(channel.namespace(), 1);
        subscriptions.list.push(Subscription { channel, key, expires });
        None
    }

    /// Joins a durable channel at the position this broker knows, or else at the API's (with
    /// what `since` missed), through the router so no publication falls in between.
    async fn subscribe_durable(
        &self,
        channel: &Channel,
        key: &str,
        outbound: &Arc<Outbound>,
        since: Option<ChannelPosition>,
    ) -> Result<(), Refusal> {
        let known_since = since.as_ref().map(|since| (since.epoch.as_str(), since.offset));
        let at_known =
            |position: &Position| subscribed(channel, since.is_some(), Some(position), Vec::new()).to_frame();
        if self.index.subscribe_at_known(key, outbound, known_since, at_known) {
            return Ok(());
        }
        let unavailable = || (ErrorCode::Unavailable, "could not reach the channel's history now; retry".to_owned());
        // Publications stored before the feed's first consumer would be neither recovered nor routed.
        if !crate::feed::wait_live(&self.feed_live).await {
            return Err(unavailable());
        }
        let window = self.router.open_window().await.ok_or_else(unavailable)?;
        let recovering = since.is_some();
        let state = self.relay.channel_position(channel, since, MAX_RECOVERY_BYTES).await.map_err(|error| {
            tracing::warn!(%error, "channel position request failed");
            unavailable()
        })?;
        let position = Position { epoch: state.position.epoch.into(), offset: state.position.offset };
        let frame = subscribed(channel, recovering && state.recovered, Some(&position), state.publications).to_frame();
        let subscription = ChannelSubscription {
            key: key.into(),
            window,
            position,
            outbound: Arc::clone(outbound),
            subscribed: frame,
        };
        if self.router.subscribe_channel(subscription).await { Ok(()) } else { Err(unavailable()) }
    }

    /// Handles `unsubscribe`.
    pub fn unsubscribe(&self, subscriptions: &mut Subscriptions, outbound: &Arc<Outbound>, name: &str) -> ServerFrame {
        let found = Channel::parse(name).ok().and_then(|channel| subscriptions.find(&channel));
        let Some(at) = found else {
            return ServerFrame::channel_error(
                ErrorCode::NotSubscribed,
                name,
                "this connection does not subscribe to it",
            );
        };
        let subscription = subscriptions.list.swap_remove(at);
        self.leave(&subscription, outbound);
        ServerFrame::Unsubscribed { channel: name.to_owned() }
    }

    /// Ends the subscriptions whose token has expired: for each, `error` `token_expired` and
    /// `unsubscribed`.
    pub fn expire(
        &self,
        subscriptions: &mut Subscriptions,
        outbound: &Arc<Outbound>,
        now: Instant,
    ) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        while let Some(at) = subscriptions.list.iter().position(|s| s.expires.is_some_and(|expires| expires <= now)) {
            let subscription = subscriptions.list.swap_remove(at);
            self.leave(&subscription, outbound);
            let channel = subscription.channel.as_str();
            frames.push(ServerFrame::channel_error(ErrorCode::TokenExpired, channel, "the subscription token expired"));
            frames.push(ServerFrame::Unsubscribed { channel: channel.to_owned() });
        }
        frames
    }

    /// Drops every subscription of a closing connection.
    pub fn leave_all(&self, subscriptions: &mut Subscriptions, outbound: &Arc<Outbound>) {
        for subscription in std::mem::take(&mut subscriptions.list) {
            self.leave(&subscription, outbound);
        }
    }

    fn leave(&self, subscription: &Subscription, outbound: &Arc<Outbound>) {
        self.index.unsubscribe(&subscription.key, outbound);
        self.metrics.subscribed(subscription.channel.namespace(), -1);
    }

    /// Handles `publish`: into a channel this connection subscribes to, where the namespace lets
    /// clients publish, within its size and rate limits.
    pub async fn publish(
        &self,
        caller: Caller<'_>,
        subscriptions: &mut Subscriptions,
        name: &str,
        data: serde_json::Value,
    ) -> ServerFrame {
        let refused = |code, message: &str| ServerFrame::channel_error(code, name, message);
        let Some((channel, namespace)) = Channel::parse(name)
            .ok()
            .filter(|channel| subscriptions.find(channel).is_some())
            .and_then(|channel| Some((channel.clone(), self.namespaces.get(channel.namespace())?)))
        else {
            return refused(ErrorCode::NotSubscribed, "publish into a channel this connection subscribes to");
        };
        if matches!(caller, Caller::Anonymous) || !namespace.client_publish {
            return refused(ErrorCode::Forbidden, "clients may not publish into this namespace");
        }
        let size = serde_json::to_vec(&data).map_or(usize::MAX, |json| json.len());
        if size > namespace.max_data_bytes {
            return refused(ErrorCode::TooLarge, &format!("data may be at most {} bytes", namespace.max_data_bytes));
        }
        if !self.publish_allowed(subscriptions, channel.namespace(), namespace) {
            return refused(ErrorCode::RateLimited, "too many publications into this namespace; slow down");
        }
        if !namespace.is_durable() {
            return if self.relay.publish_ephemeral(&channel, data).await {
                ServerFrame::Published { channel: name.to_owned(), offset: None }
            } else {
                refused(ErrorCode::Unavailable, "NATS is unavailable; retry")
            };
        }
        match self.relay.publish_durable(&channel, &data).await {
            Ok(offset) => ServerFrame::Published { channel: name.to_owned(), offset },
            Err(error) => {
                tracing::warn!(%error, "client publication not stored");
                refused(ErrorCode::Unavailable, "the publication could not be stored now; retry")
            }
        }
    }

    fn publish_allowed(&self, subscriptions: &mut Subscriptions, name: &str, namespace: &Namespace) -> bool {
        let rates = &mut subscriptions.publish_rates;
        let at = match rates.iter().position(|(known, _)| known == name) {
            Some(at) => at,
            None => {
                let rate =
                    std::num::NonZeroU32::new(namespace.client_publish_per_second).unwrap_or(std::num::NonZeroU32::MIN);
                let burst = rate.saturating_mul(std::num::NonZeroU32::new(2).unwrap_or(rate));
                let limiter =
                    RateLimiter::direct_with_clock(Quota::per_second(rate).allow_burst(burst), self.rate_clock.clone());
                rates.push((name.to_owned(), limiter));
                rates.len() - 1
            }
        };
        rates[at].1.check().is_ok()
    }

    fn resolve(&self, name: &str) -> Result<(Channel, &Namespace), Refusal> {
        let channel = Channel::parse(name).map_err(|error| (ErrorCode::BadChannel, error.to_string()))?;
        let namespace = self
            .namespaces
            .get(channel.namespace())
            .ok_or_else(|| (ErrorCode::UnknownNamespace, format!("no namespace {:?}", channel.namespace())))?;
        Ok((channel, namespace))
    }

    /// Whether `caller` may subscribe; the subscription token's expiry when one granted it.
    async fn authorize(
        &self,
        caller: Caller<'_>,
        channel: &Channel,
        namespace: &Namespace,
        token: Option<&str>,
    ) -> Result<Option<DateTime<Utc>>, Refusal> {
        let forbidden = |message: &str| Err((ErrorCode::Forbidden, message.to_owned()));
        let (user, claims) = match (namespace.subscribe, caller) {
            (Subscribers::Public, _) => return Ok(None),
            (_, Caller::Anonymous) => return forbidden("anonymous connections may only subscribe to public channels"),
            (_, Caller::User { id, channels }) => (id, channels),
        };
        match namespace.subscribe {
            Subscribers::Public | Subscribers::Authenticated => Ok(None),
            Subscribers::Owner if channel.name() == user.to_string() => Ok(None),
            Subscribers::Owner => forbidden("a user channel is its user's alone"),
            Subscribers::Granted => match token {
                Some(token) => match self.verifier.verify_subscription(token).await {
                    Ok(grant) if grant.user_id == user && grant.channel == channel.as_str() => {
                        Ok(Some(grant.expires_at))
                    }
                    Ok(_) => forbidden("the subscription token is for another user or channel"),
                    Err(AuthError::Expired) => Err((ErrorCode::TokenExpired, "the subscription token expired".into())),
                    Err(error) => Err((ErrorCode::Forbidden, format!("the subscription token is not valid: {error}"))),
                },
                None if claims.iter().any(|pattern| pattern_grants(pattern, channel)) => Ok(None),
                None => forbidden("your token does not grant this channel; present a subscription token"),
            },
        }
    }
}

/// The `subscribed` frame.
fn subscribed(
    channel: &Channel,
    recovered: bool,
    position: Option<&Position>,
    publications: Vec<Publication>,
) -> ServerFrame {
    ServerFrame::Subscribed {
        channel: channel.as_str().to_owned(),
        recovered,
        offset: position.map(|position| position.offset),
        epoch: position.map(|position| position.epoch.to_string()),
        publications,
    }
}

/// The monotonic instant of a wall-clock time (now, if it has passed).
pub fn instant_of(at: DateTime<Utc>) -> Instant {
    let left = (at - Utc::now()).to_std().unwrap_or_default();
    // A far-future expiry must not overflow the timer.
    Instant::now() + left.min(std::time::Duration::from_secs(365 * 24 * 3600))
}
