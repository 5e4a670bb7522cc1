//! Building and running the broker.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use governor::Quota;
use parley_shared::address_limit::AddressLimit;
use parley_shared::http_server;
use poem::listener::TcpAcceptor;
use poem::{EndpointExt, Route, get};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::channel_index::ChannelIndex;
use crate::channels::Channels;
use crate::config::Config;
use crate::feed::Feed;
use crate::feed::FeedItem;
use crate::hub::{Hub, HubLimits};
use crate::index::Index;
use crate::metrics::Metrics;
use crate::outbound::QueueBound;
use crate::presence::{self, PresenceWorker};
use crate::protocol::{CloseCode, Limits};
use crate::relay::Relay;
use crate::router::Router;
use crate::routes;
use crate::server::{Broker, Settings};

/// A bound, ready-to-serve broker: tests build it on port 0 and read [`Application::local_addr`].
pub struct Application {
    acceptor: TcpAcceptor,
    local_addr: SocketAddr,
    broker: Arc<Broker>,
    relay: Relay,
    workers: Workers,
    config: Config,
}

/// The broker's background tasks, built with it and started when it serves.
struct Workers {
    presence: PresenceWorker,
    feed: Feed,
    feed_items: tokio::sync::mpsc::Sender<FeedItem>,
    router: Router,
    nats_reconnected: Arc<Notify>,
    events_lost: Arc<Notify>,
}

impl Workers {
    /// Starts every task; the caller aborts them at shutdown.
    fn spawn(self, broker: &Arc<Broker>, relay: &Relay, resync_spread: Duration) -> Vec<tokio::task::JoinHandle<()>> {
        let Self { presence, feed, feed_items, router, nats_reconnected, events_lost } = self;
        let signals = crate::signals::run(relay.nats().clone(), relay.subjects().clone(), Arc::clone(broker));
        vec![
            tokio::spawn(run_feed(feed, feed_items, nats_reconnected)),
            tokio::spawn(router.run()),
            tokio::spawn(signals),
            tokio::spawn(update_gauges(Arc::clone(broker))),
            tokio::spawn(presence.run()),
            tokio::spawn(resync_after_lost_events(Arc::clone(broker), events_lost, resync_spread)),
        ]
    }
}

/// Messages the feed may read ahead of the router.
const FEED_BUFFER: usize = 1024;

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

impl Application {
    /// Starts the NATS client (retrying in the background until NATS answers: `/ready` says
    /// when) and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let verifier = Arc::new(config.service.auth.build()?);
        let metrics = Arc::new(Metrics::default());
        let nats_reconnected = Arc::new(Notify::new());
        let on_nats_event = {
            let (metrics, reconnected) = (Arc::clone(&metrics), Arc::clone(&nats_reconnected));
            let was_disconnected = AtomicBool::new(false);
            move |event| match event {
                async_nats::Event::Disconnected => was_disconnected.store(true, Ordering::Relaxed),
                async_nats::Event::Connected if was_disconnected.swap(false, Ordering::Relaxed) => {
                    metrics.nats_reconnects.inc();
                    reconnected.notify_one();
                }
                _ => {}
            }
        };
        let nats = parley_shared::nats::connect(&config.service.nats, "parley-broker", on_nats_event).await?;
        let relay = Relay::new(nats, config.service.nats_prefix.clone(), config.membership_timeout);
        let (presence, presence_worker) =
            presence::channel(relay.nats().clone(), config.service.nats_prefix.clone(), config.presence_ttl);
        let index = Arc::new(Index::default());
        let channel_index = Arc::new(ChannelIndex::default());
        let (live_tx, live) = tokio::sync::watch::channel(false);
        let subjects = config.service.nats_prefix.clone();
        let feed = Feed::new(relay.nats().clone(), subjects.stream_name(), Arc::clone(&metrics), live_tx);
        let (feed_items, feed_rx) = tokio::sync::mpsc::channel(FEED_BUFFER);
        let events_lost = Arc::new(Notify::new());
        let (router, router_handle) = Router::new(
            Arc::clone(&index),
            Arc::clone(&channel_index),
            subjects,
            Arc::clone(&metrics),
            feed_rx,
            Arc::clone(&events_lost),
        );
        let rate_clock = governor::clock::DefaultClock::default();
        let channels = Channels {
            index: channel_index,
            namespaces: config.service.channels.clone(),
            router: router_handle.clone(),
            relay: relay.clone(),
            verifier: Arc::clone(&verifier),
            metrics: Arc::clone(&metrics),
            max_subscriptions: config.max_subscriptions,
            feed_live: live.clone(),
            rate_clock: rate_clock.clone(),
        };
        let hub = Arc::new(Hub::new(
            index,
            router_handle,
            live,
            relay.clone(),
            presence,
            Arc::clone(&metrics),
            HubLimits {
                max_connections_per_user: config.max_connections_per_user,
                auto_max_members: config.service.presence_auto_max_members,
            },
        ));
        let settings = Settings {
            allowed_origins: config.allowed_origins.iter().filter(|origin| !origin.is_empty()).cloned().collect(),
            allow_query_token: config.allow_query_token,
            allow_anonymous: config.allow_anonymous,
            heartbeat_interval: config.heartbeat_interval,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            pong_timeout: config.pong_timeout,
            auth_timeout: config.auth_timeout,
            close_timeout: config.close_timeout,
            inbound_quota: inbound_quota(config.max_frames_per_second),
            queue_bound: QueueBound { frames: config.outbound_queue_frames, bytes: config.outbound_queue_bytes },
            hello_max_conversations: config.hello_max_conversations,
            limits: Limits {
                max_frame_bytes: config.max_frame_bytes,
                max_frames_per_second: config.max_frames_per_second,
                max_connections_per_user: config.max_connections_per_user,
                outbound_queue_frames: config.outbound_queue_frames,
                max_presence_subscriptions: config.presence_subscriptions,
                max_subscriptions: config.max_subscriptions,
            },
        };
        let broker = Arc::new(Broker {
            hub,
            channels,
            verifier,
            metrics,
            settings,
            connections: TaskTracker::new(),
            rate_clock,
        });
        let (acceptor, local_addr) = bind(config.listen, config.socket_send_buffer)?;
        let workers = Workers { presence: presence_worker, feed, feed_items, router, nats_reconnected, events_lost };
        Ok(Self { acceptor, local_addr, broker, relay, workers, config })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves; then stops accepting, closes every connection with
    /// 1012, waits for them up to the shutdown timeout and drains the NATS client.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Self { acceptor, local_addr, broker, relay, workers, config } = self;
        tracing::info!(%local_addr, ws_path = %config.ws_path, "parley-broker listening");
        let tasks = workers.spawn(&broker, &relay, config.resync_spread);
        let handshakes = AddressLimit::new(
            &config.service.address_limit,
            crate::server::without_credentials,
            crate::server::too_many_handshakes,
        );
        let app = Route::new()
            .at(&config.ws_path, get(crate::server::upgrade).with(handshakes))
            .nest("/", routes::health::routes())
            .data(Arc::clone(&broker));
        let stop = async {
            shutdown.await;
            broker.hub.close_all(CloseCode::Shutdown);
            broker.connections.close();
        };
        http_server::serve(acceptor, app, &config.service.http, stop, config.service.shutdown_timeout).await;
        if tokio::time::timeout(config.service.shutdown_timeout, broker.connections.wait()).await.is_err() {
            tracing::warn!(open = broker.connections.len(), "connections still open at the shutdown deadline");
        }
        for task in tasks {
            task.abort();
        }
        broker.hub.clear();
        broker.channels.index.clear();
        if let Err(error) = relay.nats().drain().await {
            tracing::warn!(%error, "NATS drain at shutdown failed");
        }
        tracing::info!("parley-broker stopped");
        Ok(())
    }
}

/// Reads the events stream into the router; after a NATS reconnect, resumes it from where this
/// broker left off (the server may have lost the consumer).
async fn run_feed(mut feed: Feed, items: tokio::sync::mpsc::Sender<FeedItem>, reconnected: Arc<Notify>) {
    loop {
        let item = tokio::select! {
            () = reconnected.notified() => {
                feed.resume();
                continue;
            }
            item = feed.next() => item,
        };
        if items.send(item).await.is_err() {
            return;
        }
    }
}

/// Keeps the index gauges current (counting walks every shard, so not on every change).
async fn update_gauges(broker: Arc<Broker>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticks.tick().await;
        let (users, conversations, memberships) = broker.hub.index().sizes();
        let gauge = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
        broker.metrics.users.set(gauge(users));
        broker.metrics.index_conversations.set(gauge(conversations));
        broker.metrics.index_memberships.set(gauge(memberships));
        broker.metrics.index_channels.set(gauge(broker.channels.index.sizes().0));
    }
}

/// Events this broker missed are no longer in the stream (it was away longer than the stream
/// keeps events, or the stream was recreated): its clients are told to reconnect and resume
/// (close code 4004), which recovers them from the API's event log. The closes are spread
/// evenly over `spread`, so this does not send every client to the API at the same instant;
/// until its turn a connection keeps receiving live events, and its resume covers the gap
/// whenever it comes.
async fn resync_after_lost_events(broker: Arc<Broker>, lost: Arc<Notify>, spread: Duration) {
    // At most one batch of closes per this step.
    const STEP: Duration = Duration::from_millis(10);
    loop {
        lost.notified().await;
        let connections = broker.hub.open_connections();
        tracing::warn!(
            connections = connections.len(),
            ?spread,
            "events this broker missed are gone from the stream: closing connections so clients resume"
        );
        let most_batches = u32::try_from(spread.as_millis() / STEP.as_millis()).unwrap_or(u32::MAX).max(1);
        let batches = u32::try_from(connections.len()).unwrap_or(u32::MAX).min(most_batches);
        if batches == 0 {
            continue;
        }
        let per_batch = connections.len().div_ceil(usize::try_from(batches).unwrap_or(1));
        let mut ticks = tokio::time::interval((spread / batches).max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for batch in connections.chunks(per_batch) {
            ticks.tick().await;
            for connection in batch {
                connection.close(CloseCode::Unavailable);
            }
        }
    }
}

/// The listener; accepted sockets inherit its send buffer size.
fn bind(addr: SocketAddr, send_buffer: u32) -> anyhow::Result<(TcpAcceptor, SocketAddr)> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if send_buffer > 0 {
        socket.set_send_buffer_size(send_buffer)?;
    }
    socket.bind(addr).with_context(|| format!("binding the listen address {addr}"))?;
    // The kernel caps the backlog at net.core.somaxconn; connection storms need it deep.
    let listener = socket.listen(4096)?;
    let local_addr = listener.local_addr()?;
    Ok((TcpAcceptor::from_tokio(listener)?, local_addr))
}

/// `per_second` frames a second, in bursts of up to twice that.
fn inbound_quota(per_second: u32) -> Quota {
    let rate = std::num::NonZeroU32::new(per_second).unwrap_or(std::num::NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(rate.saturating_mul(std::num::NonZeroU32::new(2).unwrap_or(rate)))
}
