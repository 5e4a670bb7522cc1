//! This broker's part of presence (layout in [`parley_shared::presence`]): it renews its lease,
//! records a session when a user's first connection here opens and removes it when their last
//! one closes, and announces (once per change) when that made them online or offline.
//!
//! A user's changes go through one lane (of [`LANES`]) in order, so a quick disconnect and
//! reconnect can't be applied backwards; different users' changes proceed in parallel. A first
//! connection gets its `hello` once its session is recorded, so a user moving from broker B to
//! broker A never looks offline in between (A's session exists before B's is removed).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::Utc;
use parley_shared::ids::{ConversationId, UserId};
use parley_shared::presence::{self, BrokerLease, PresenceAnnouncement, PresenceSignal, PresenceStatus};
use parley_shared::subjects::Subjects;
use tokio::sync::{mpsc, oneshot};

/// Parallel lanes; each user always uses the same one.
const LANES: usize = 16;
/// How long a first connection waits for its session to be recorded (presence is best effort:
/// after this the `hello` goes out anyway).
const ARRIVAL_WAIT: Duration = Duration::from_secs(2);

/// A user's first connection on this broker opened, or their last one closed; with the
/// conversations whose members hear it without asking.
#[derive(Debug)]
enum Change {
    Arrived(UserId, Vec<ConversationId>, oneshot::Sender<()>),
    Left(UserId, Vec<ConversationId>),
}

/// Where the hub reports arrivals and departures.
#[derive(Clone, Debug)]
pub struct PresenceReports {
    lanes: Arc<[mpsc::UnboundedSender<Change>]>,
}

impl PresenceReports {
    /// Records the session; returns once it is recorded (or after [`ARRIVAL_WAIT`]).
    pub async fn arrived(&self, user: UserId, audience: Vec<ConversationId>) {
        let (recorded, done) = oneshot::channel();
        let _ = self.lane(user).send(Change::Arrived(user, audience, recorded));
        let _ = tokio::time::timeout(ARRIVAL_WAIT, done).await;
    }

    pub fn left(&self, user: UserId, audience: Vec<ConversationId>) {
        let _ = self.lane(user).send(Change::Left(user, audience));
    }

    fn lane(&self, user: UserId) -> &mpsc::UnboundedSender<Change> {
        // UUIDv7's low bits are random.
        let lane = usize::try_from(user.as_uuid().as_u128() % LANES as u128).unwrap_or(0);
        &self.lanes[lane]
    }
}

pub struct PresenceWorker {
    nats: async_nats::Client,
    subjects: Subjects,
    broker_id: String,
    ttl: Duration,
    lanes: Vec<mpsc::UnboundedReceiver<Change>>,
}

/// The reports handle for the hub and the worker that applies them.
pub fn channel(nats: async_nats::Client, subjects: Subjects, ttl: Duration) -> (PresenceReports, PresenceWorker) {
    let (senders, receivers) = (0..LANES).map(|_| mpsc::unbounded_channel()).unzip::<_, _, Vec<_>, Vec<_>>();
    let broker_id = uuid::Uuid::now_v7().simple().to_string();
    (PresenceReports { lanes: senders.into() }, PresenceWorker { nats, subjects, broker_id, ttl, lanes: receivers })
}

impl PresenceWorker {
    /// Renews the lease and applies changes until aborted at shutdown.
    pub async fn run(self) {
        let jetstream = async_nats::jetstream::new(self.nats.clone());
        // The API creates the bucket; until one has started, wait (changes queue up meanwhile).
        let bucket = presence::bucket_name(&self.subjects);
        let store = loop {
            match jetstream.get_key_value(&bucket).await {
                Ok(store) => break store,
                Err(error) => {
                    tracing::debug!(%error, %bucket, "presence bucket not available yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let Self { nats, subjects, broker_id, ttl, lanes } = self;
        let lane = Lane { nats, subjects, broker_id, store };
        lane.renew(ttl).await;
        let mut tasks = tokio::task::JoinSet::new();
        for changes in lanes {
            tasks.spawn(lane.clone().run(changes));
        }
        let mut renewal = tokio::time::interval(ttl / 3);
        renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            renewal.tick().await;
            lane.renew(ttl).await;
        }
    }
}

/// What applying a change needs; one clone per lane.
#[derive(Clone)]
struct Lane {
    nats: async_nats::Client,
    subjects: Subjects,
    broker_id: String,
    store: kv::Store,
}

impl Lane {
    async fn run(self, mut changes: mpsc::UnboundedReceiver<Change>) {
        while let Some(change) = changes.recv().await {
            match change {
                Change::Arrived(user, audience, recorded) => {
                    self.apply(user, audience, PresenceStatus::Online).await;
                    let _ = recorded.send(());
                }
                Change::Left(user, audience) => self.apply(user, audience, PresenceStatus::Offline).await,
            }
        }
    }

    async fn renew(&self, ttl: Duration) {
        let lease = BrokerLease::new(Utc::now(), ttl);
        let value = serde_json::to_vec(&lease).unwrap_or_default();
        if let Err(error) = self.store.put(presence::broker_key(&self.broker_id), value.into()).await {
            tracing::warn!(%error, "presence lease not renewed");
        }
    }

    async fn apply(&self, user: UserId, audience: Vec<ConversationId>, status: PresenceStatus) {
        let now = Utc::now();
        let updated = presence::update_user(&self.store, user, |record| match status {
            PresenceStatus::Online => {
                record.sessions.entry(self.broker_id.clone()).or_insert(now);
            }
            PresenceStatus::Offline => {
                record.sessions.remove(&self.broker_id);
                record.last_seen_at = Some(now);
            }
        })
        .await;
        let (before, after) = match updated {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%error, "presence not recorded");
                return;
            }
        };
        // Announce only a real change: online for the first session anywhere, offline with the last.
        let changed = match status {
            PresenceStatus::Online => before.sessions.is_empty(),
            PresenceStatus::Offline => after.sessions.is_empty() && !before.sessions.is_empty(),
        };
        if changed {
            let signal = PresenceSignal::new(user, status, after.last_seen_at, now);
            presence::announce(&self.nats, &self.subjects, &PresenceAnnouncement { signal, audience }).await;
        }
    }
}
