//! Pushing notifications to users' devices: Expo, Web Push, and the application's own webhook.
//!
//! Every API instance runs the dispatcher; one at a time works (a lease like the outbox
//! relay's, see [`crate::lease`]). It works from PostgreSQL only, so nothing is lost when it
//! dies: a notification for a user with a push target is queued (`push_queue`) in the
//! transaction that created it; [`decide`] turns a due queue entry into one delivery per target
//! (`push_deliveries`) when the user has no live connection, when it is `high` priority, or when
//! it is still unread after the grace delay, and drops it when read, cleared or muted;
//! [`deliver`] sends due deliveries, one loop per provider so that a slow provider delays only
//! its own pushes, and retries failures with backoff until `PARLEY_PUSH_MAX_ATTEMPTS`.
//! A push is sent at least once: a dispatcher that dies between a provider's answer and its
//! bookkeeping sends it again, with the same push id.

mod config;
mod decide;
mod deliver;
mod expo;
mod targets;
mod webhook;
mod webpush;

use std::sync::Arc;
use std::time::Duration;

use parley_shared::notifications::Notification;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use config::PushConfig;
pub use targets::{NewTarget, TargetError, validate_target};
pub use webhook::check_secrets;
pub use webpush::Vapid;

use crate::lease::{self, Lease};
use crate::presence::PresenceView;

/// Key of the advisory lock held by the working dispatcher ("parley push" in ASCII).
const DISPATCHER_LOCK: i64 = 0x7061_726c_7075_7368;
/// How long the dispatcher's lease outlives its last renewal.
const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often the dispatcher looks for due work.
const POLL: Duration = Duration::from_millis(200);

/// One push of one notification to one target.
#[derive(Clone, Debug)]
pub struct Push {
    /// The push's stable id: every retry of it carries the same one.
    pub id: Uuid,
    pub attempts: i32,
    pub user_id: Uuid,
    pub target: Target,
    pub notification: Notification,
    /// The user's unread notifications (the app icon's badge).
    pub badge: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Target {
    pub id: Uuid,
    pub kind: String,
    pub address: String,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
}

/// What became of one push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Worth trying again later (timeout, 5xx, 429).
    Retry(String),
    /// The target is gone for good (`DeviceNotRegistered`, 404/410): delete it.
    TargetGone,
    /// Refused for good: no retry can succeed.
    Rejected(String),
}

/// The dispatcher's counters (`parley_push_*`).
#[derive(Clone, Debug, Default)]
pub struct PushMetrics {
    /// Pushes by provider and outcome (`sent`, `retry`, `gone`, `rejected`, `dead`).
    pub pushes: Family<Vec<(String, String)>, Counter>,
}

impl PushMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("push", "Pushes to devices by provider and outcome", self.pushes.clone());
    }

    fn count(&self, provider: &str, outcome: &str) {
        self.pushes
            .get_or_create(&vec![("provider".into(), provider.into()), ("outcome".into(), outcome.into())])
            .inc();
    }
}

/// Everything the dispatcher needs.
pub struct Dispatcher {
    pub db: PgPool,
    pub database_url: String,
    pub presence: PresenceView,
    pub config: PushConfig,
    /// The VAPID identity, when Web Push is configured.
    pub vapid: Option<Arc<Vapid>>,
    pub metrics: PushMetrics,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Runs until `stop` is cancelled, working whenever it holds the lease.
    pub async fn run(self, stop: CancellationToken) {
        let dispatcher = Arc::new(self);
        while !stop.is_cancelled() {
            match dispatcher.acquire_lease(&stop).await {
                Ok(Some(lease)) => dispatcher.clone().work(lease, &stop).await,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "push dispatcher cannot reach PostgreSQL for its lease; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    async fn acquire_lease(&self, stop: &CancellationToken) -> Result<Option<Lease>, sqlx::Error> {
        let mut connection = lease::session(&self.database_url, LEASE_TTL).await?;
        tokio::select! {
            locked = sqlx::query("select pg_advisory_lock($1)").bind(DISPATCHER_LOCK).execute(&mut connection) => {
                locked?;
            }
            () = stop.cancelled() => return Ok(None),
        }
        let renewed = tokio::time::Instant::now();
        connection.ping().await?;
        tracing::info!("this instance now dispatches pushes");
        Ok(Some(Lease::keep(connection, LEASE_TTL, renewed, "push dispatcher")))
    }

    /// Decides and delivers while the lease holds: one task deciding, one per provider delivering.
    async fn work(self: Arc<Self>, lease: Lease, stop: &CancellationToken) {
        let done = stop.child_token();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(decide::run(self.clone(), done.clone()));
        for provider in deliver::PROVIDERS {
            tasks.spawn(deliver::run(self.clone(), provider, done.clone()));
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {
                    if !lease.fresh() {
                        tracing::warn!("push dispatcher lease is stale; waiting to take it again");
                        break;
                    }
                }
                () = lease.lost() => break,
                () = stop.cancelled() => break,
            }
        }
        done.cancel();
        while tasks.join_next().await.is_some() {}
    }
}

/// Waits one poll interval, or less when stopped; false when stopped.
async fn pause(done: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(POLL) => true,
        () = done.cancelled() => false,
    }
}
