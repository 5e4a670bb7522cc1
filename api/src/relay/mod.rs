//! The outbox relay: publishes committed events from PostgreSQL to JetStream.
//!
//! Why nothing is lost: an event is a row written in the same transaction as its change, and
//! a row stays unpublished (`published_at is null`) until JetStream has acknowledged it. A
//! process that dies between commit and publish leaves the row for whichever relay runs next.
//!
//! Why nothing is reordered or duplicated within a conversation: a conversation's events are
//! sent in seq order on one NATS connection (up to 64 ahead of their acknowledgements, see
//! `publisher`), a round marks published only the prefix JetStream acknowledged, and a batch
//! is always a seq-prefix of every conversation's unpublished events (see the `position`
//! migration). Republishing an event, after a lost acknowledgement or by two relays at once,
//! carries the same `Nats-Msg-Id` (the event id), which JetStream drops within its duplicate
//! window.
//!
//! One relay at a time: every API instance runs this task, but only the holder of a PostgreSQL
//! advisory lock publishes; the others wait on the lock and take over the moment the holder's
//! session ends: at once on a crash, one `PARLEY_RELAY_LEASE_TTL` after its last renewal when
//! it is frozen or cut off (see `lease`). Correctness does not depend on the lock, it only
//! saves duplicate work. Writers wake the relay at once after commit: in process when
//! this instance holds the lock, else through a core-NATS wake-up message; a poll every
//! `PARLEY_OUTBOX_POLL_INTERVAL` catches anything a lost wake-up missed.

mod drain;
mod notifications;
mod prune;
mod publications;
mod publisher;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_util::{FutureExt, StreamExt};
use parley_shared::channels::Namespaces;
use parley_shared::subjects::Subjects;
use sqlx::{Connection, PgPool};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::lease::{self, Lease};
use crate::metrics::OutboxMetrics;
use crate::outbox::Recorded;
use publisher::Publisher;

/// How often the publishing relay deletes events past `PARLEY_EVENT_RETENTION`.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// A round cut short because the NATS client moved to another server.
#[derive(Debug, thiserror::Error)]
#[error("the NATS connection was replaced during the round")]
struct Reconnected;

/// Key of the advisory lock held by the publishing relay ("parley outbox" in ASCII).
const LEADER_LOCK: i64 = 0x7061_726c_6f75_7462;

#[derive(Args, Clone, Debug)]
pub struct RelayConfig {
    /// How long the events stream keeps events (clients recover older ones over REST).
    #[arg(long, env = "PARLEY_STREAM_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub stream_max_age: Duration,
    /// Replicas of the events stream (1, or 3 on a NATS cluster).
    #[arg(long, env = "PARLEY_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// Window in which JetStream drops a republished event (same `Nats-Msg-Id`). Keep it longer
    /// than the longest NATS outage you want exactly-once delivery across.
    #[arg(long, env = "PARLEY_STREAM_DUPLICATE_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub stream_duplicate_window: Duration,
    /// Most events the relay reads and publishes per round.
    #[arg(long, env = "PARLEY_OUTBOX_BATCH", default_value_t = 500)]
    pub outbox_batch: i64,
    /// How often the relay looks for unpublished events without being woken.
    #[arg(long, env = "PARLEY_OUTBOX_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub outbox_poll_interval: Duration,
    /// How long published events stay in PostgreSQL for replay (`GET …/events`); older ones are
    /// deleted and replay asks for them answers 410. `0s` keeps them forever.
    #[arg(long, env = "PARLEY_EVENT_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub event_retention: Duration,
    /// How long notifications stay in users' inboxes, read or not. `0s` keeps them forever.
    #[arg(long, env = "PARLEY_NOTIFICATION_RETENTION", default_value = "90d", value_parser = humantime::parse_duration)]
    pub notification_retention: Duration,
    /// How long one publish may wait (for a slot, for JetStream's acknowledgement) before the
    /// round is logged as stalled and retried.
    #[arg(long, env = "PARLEY_PUBLISH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub publish_timeout: Duration,
    /// How long the relay lease outlives its holder's last renewal (renewed every third of it):
    /// a frozen or cut-off holder is replaced this long after it stopped.
    #[arg(long, env = "PARLEY_RELAY_LEASE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub relay_lease_ttl: Duration,
}

/// What request handlers hold: tells the relay that events were committed.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    /// Call right after the transaction that recorded the event committed.
    pub fn committed(&self, _event: Recorded) {
        self.wake.notify_one();
    }
}

/// Everything the relay task needs.
pub struct Relay {
    pub db: PgPool,
    pub database_url: String,
    pub nats: async_nats::Client,
    pub subjects: Subjects,
    pub config: RelayConfig,
    pub outbox: Outbox,
    pub metrics: OutboxMetrics,
    /// Durable namespaces' history limits, for pruning publications.
    pub namespaces: Arc<Namespaces>,
    /// Counts the NATS client's connections: a round waiting on a link that has since been
    /// replaced (a frozen server, say) stops and starts again at once, rather than waiting out
    /// the publish timeout for answers that cannot come.
    pub nats_connections: watch::Receiver<u64>,
}

impl std::fmt::Debug for Relay {
    // Hand-written: `database_url` may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("subjects", &self.subjects).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Relay {
    /// Runs until `stop` is cancelled; then, if it holds the lease, publishes what is left
    /// (the caller bounds how long it may take).
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        while !stop.is_cancelled() {
            match self.acquire_lease(&stop).await {
                Ok(Some(lease)) => {
                    backoff.reset();
                    self.metrics.leader.set(1);
                    self.lead(lease, &stop).await;
                    self.metrics.leader.set(0);
                }
                Ok(None) => return,
                Err(error) => {
                    let delay = backoff.next();
                    tracing::warn!(%error, ?delay, "outbox relay cannot reach PostgreSQL for its lease; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Waits for the advisory lock on a session of its own, meanwhile forwarding this
    /// instance's wake-ups to the relay that holds it. `None` when stopped first.
    async fn acquire_lease(&self, stop: &CancellationToken) -> Result<Option<Lease>, sqlx::Error> {
        let ttl = self.config.relay_lease_ttl;
        let mut connection = lease::session(&self.database_url, ttl).await?;
        {
            let lock = sqlx::query("select pg_advisory_lock($1)").bind(LEADER_LOCK).execute(&mut connection);
            tokio::pin!(lock);
            loop {
                tokio::select! {
                    locked = &mut lock => { locked?; break; }
                    () = self.outbox.wake.notified() => self.forward_wake().await,
                    () = stop.cancelled() => return Ok(None),
                }
            }
        }
        // The lease counts from a statement sent after the lock was granted.
        let renewed = tokio::time::Instant::now();
        connection.ping().await?;
        tracing::info!("this instance now publishes the outbox");
        Ok(Some(Lease::keep(connection, ttl, renewed, "outbox relay")))
    }

    async fn forward_wake(&self) {
        // The relay cannot publish while NATS is away, so a lost wake-up costs nothing.
        parley_shared::serve::publish_if_connected(&self.nats, self.subjects.outbox_wake(), bytes::Bytes::new()).await;
    }

    /// Publishes while it holds `lease`; returns when the lease is lost or on stop.
    async fn lead(&self, lease: Lease, stop: &CancellationToken) {
        // Pipelined publishes hold their ack permits until the chain awaits them (see
        // `publisher`); a round has at most `outbox_batch` of them for events and as many for
        // channel publications. The default 5,000 stay for user copies, each awaited as sent,
        // so a permit is never waited for by the chain that holds the ones it needs.
        let pipelined = usize::try_from(self.config.outbox_batch).unwrap_or(0).saturating_mul(2);
        let jetstream = async_nats::jetstream::ContextBuilder::new()
            .timeout(self.config.publish_timeout)
            .max_ack_inflight(pipelined + 5_000)
            .build(self.nats.clone());
        let mut wakes = match self.nats.subscribe(self.subjects.outbox_wake()).await {
            Ok(wakes) => Some(wakes),
            Err(error) => {
                tracing::warn!(%error, "cannot subscribe to outbox wake-ups; relying on polling");
                None
            }
        };
        let mut poll = tokio::time::interval(self.config.outbox_poll_interval);
        let retention = Some(self.config.event_retention).filter(|retention| !retention.is_zero());
        let mut prune =
            tokio::time::interval(retention.map_or(PRUNE_EVERY, |r| PRUNE_EVERY.min(r)).max(Duration::from_secs(1)));
        let mut backoff = Backoff::default();
        let mut stream_ready = false;
        let mut connections = self.nats_connections.clone();
        loop {
            if !lease.fresh() {
                // A holder that was frozen past its lease may already have been replaced.
                tracing::warn!("outbox relay lease is stale; waiting to take it again");
                return;
            }
            connections.mark_unchanged();
            let round = async {
                if !stream_ready {
                    stream::ensure(&jetstream, &self.subjects, &self.config).await?;
                    stream_ready = true;
                }
                self.publish_pending(&jetstream).await
            };
            // Stopping a round anywhere is safe: what was published but not marked yet is
            // published again, and JetStream drops the duplicate by its `Nats-Msg-Id`.
            let round = async {
                tokio::select! {
                    outcome = round => outcome,
                    Ok(()) = connections.changed() => Err(anyhow::Error::new(Reconnected)),
                    () = lease.lost() => Err(anyhow::anyhow!("the relay lease was lost during the round")),
                }
            };
            let retry = match round.await {
                Ok(()) => {
                    backoff.reset();
                    None
                }
                Err(error) => {
                    // The stream may be what is missing (a NATS that lost its store): make sure
                    // of it again before the next round. Not after a stall or a reconnect: that
                    // asks the JetStream API, which waits for a new meta leader (5 s on 2.12)
                    // when a frozen node held it, while the stream's leader answers publishes.
                    let stalled = matches!(
                        error.downcast_ref::<drain::Unpublished>(),
                        Some(drain::Unpublished { failure: publisher::Failure::Stalled(_), .. })
                    );
                    if !stalled && !error.is::<Reconnected>() {
                        stream_ready = false;
                    }
                    let delay = backoff.next();
                    self.metrics.failures.inc();
                    let lag = self.measure_lag().await;
                    match error.downcast_ref::<drain::Unpublished>() {
                        Some(stuck @ drain::Unpublished { failure: publisher::Failure::Stalled(timeout), .. }) => {
                            self.metrics.stalls.inc();
                            tracing::warn!(event_id = %stuck.event, conversation_id = %stuck.conversation, ?timeout, ?delay,
                                lag_seconds = lag, "outbox relay made no progress within the publish timeout; retrying");
                        }
                        _ => tracing::warn!(%error, ?delay, lag_seconds = lag,
                            "publishing the outbox failed; events stay queued in PostgreSQL"),
                    }
                    Some(delay)
                }
            };
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                () = self.outbox.wake.notified(), if retry.is_none() => {}
                Some(_) = next_wake(&mut wakes), if retry.is_none() => {}
                () = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
                () = lease.lost() => return,
                _ = poll.tick() => {
                    self.measure_lag().await;
                }
                _ = prune.tick() => {
                    let retention = self.config.event_retention;
                    if !retention.is_zero() {
                        match prune::published_before(&self.db, retention).await {
                            Ok(0) => {}
                            Ok(deleted) => tracing::info!(deleted, "pruned published events past their retention"),
                            Err(error) => tracing::warn!(%error, "pruning published events failed"),
                        }
                    }
                    match prune::notifications(&self.db, self.config.notification_retention).await {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(deleted, "pruned notifications past their retention"),
                        Err(error) => tracing::warn!(%error, "pruning notifications failed"),
                    }
                    match prune::publications(&self.db, &self.namespaces).await {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(deleted, "pruned channel publications past their history"),
                        Err(error) => tracing::warn!(%error, "pruning channel publications failed"),
                    }
                }
                () = stop.cancelled() => {
                    // One last round, so a graceful stop leaves nothing for the next relay.
                    if let Err(error) = self.publish_pending(&jetstream).await {
                        tracing::warn!(%error, "final outbox round failed; another instance will publish the rest");
                    }
                    return;
                }
            }
        }
    }

    async fn publish_pending(&self, jetstream: &async_nats::jetstream::Context) -> anyhow::Result<()> {
        let publisher = Publisher::new(jetstream, &self.subjects, self.config.publish_timeout);
        let batch = self.config.outbox_batch;
        let events = drain::publish_pending(&self.db, &publisher, batch, &self.metrics);
        let publications = publications::publish_pending(&self.db, &publisher, batch, &self.metrics);
        let notifications = notifications::publish_pending(&self.db, &publisher, batch, &self.metrics);
        let (events, publications, notifications) = tokio::join!(events, publications, notifications);
        events.and(publications).and(notifications)
    }

    /// Updates the lag gauge from the oldest unpublished event; returns it in seconds.
    async fn measure_lag(&self) -> f64 {
        let lag: Result<Option<f64>, _> = sqlx::query_scalar(
            "select extract(epoch from clock_timestamp() - min(occurred_at))::float8 from events where published_at is null",
        )
        .fetch_one(&self.db)
        .await;
        let lag = lag.ok().flatten().unwrap_or(0.0).max(0.0);
        self.metrics.lag_seconds.set(lag);
        lag
    }
}

/// The next wake-up from another instance, together with any already queued behind it: one
/// round publishes everything they announce, so a burst of commits costs one round, not one each.
async fn next_wake(wakes: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    let Some(wakes) = wakes else { return std::future::pending().await };
    let wake = wakes.next().await?;
    while let Some(Some(_)) = wakes.next().now_or_never() {}
    Some(wake)
}

/// Exponential backoff from 50 ms to 2 s: short enough that a recovered NATS or PostgreSQL is
/// used within about two seconds.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let delay = Duration::from_millis(50).saturating_mul(2u32.saturating_pow(self.failures.min(6)));
        self.failures += 1;
        delay.min(Duration::from_secs(2))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}
