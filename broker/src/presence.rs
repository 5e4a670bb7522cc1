//! This broker's part of presence (layout in [`parley_shared::presence`]): it renews its lease,
//! records a session when a user's first connection here opens and removes it when their last
//! one closes, and tells the user's conversations when that made them online or offline.
//!
//! Changes go through one worker in arrival order, so a quick disconnect and reconnect of the
//! same user can't be applied backwards.

use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::Utc;
use parley_shared::ids::{ConversationId, UserId};
use parley_shared::presence::{self, BrokerLease, PresenceSignal, PresenceStatus};
use parley_shared::subjects::Subjects;
use tokio::sync::mpsc;

/// A user's first connection on this broker opened, or their last one closed.
#[derive(Debug)]
enum Change {
    Arrived(UserId, Vec<ConversationId>),
    Left(UserId, Vec<ConversationId>),
}

/// Where the hub reports arrivals and departures.
#[derive(Clone, Debug)]
pub struct PresenceReports {
    changes: mpsc::UnboundedSender<Change>,
}

impl PresenceReports {
    pub fn arrived(&self, user: UserId, conversations: Vec<ConversationId>) {
        let _ = self.changes.send(Change::Arrived(user, conversations));
    }

    pub fn left(&self, user: UserId, conversations: Vec<ConversationId>) {
        let _ = self.changes.send(Change::Left(user, conversations));
    }
}

pub struct PresenceWorker {
    nats: async_nats::Client,
    subjects: Subjects,
    broker_id: String,
    ttl: Duration,
    changes: mpsc::UnboundedReceiver<Change>,
}

/// The reports handle for the hub and the worker that applies them.
pub fn channel(nats: async_nats::Client, subjects: Subjects, ttl: Duration) -> (PresenceReports, PresenceWorker) {
    let (changes, receiver) = mpsc::unbounded_channel();
    let broker_id = uuid::Uuid::now_v7().simple().to_string();
    (PresenceReports { changes }, PresenceWorker { nats, subjects, broker_id, ttl, changes: receiver })
}

impl PresenceWorker {
    /// Runs until the hub is gone (every reports handle dropped).
    pub async fn run(mut self) {
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
        self.renew(&store).await;
        let mut renewal = tokio::time::interval(self.ttl / 3);
        renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = renewal.tick() => self.renew(&store).await,
                change = self.changes.recv() => match change {
                    Some(change) => self.apply(&store, change).await,
                    None => return,
                },
            }
        }
    }

    async fn renew(&self, store: &kv::Store) {
        let lease = BrokerLease::new(Utc::now(), self.ttl);
        let value = serde_json::to_vec(&lease).unwrap_or_default();
        if let Err(error) = store.put(presence::broker_key(&self.broker_id), value.into()).await {
            tracing::warn!(%error, "presence lease not renewed");
        }
    }

    async fn apply(&self, store: &kv::Store, change: Change) {
        let now = Utc::now();
        let (user, conversations, status) = match &change {
            Change::Arrived(user, conversations) => (*user, conversations, PresenceStatus::Online),
            Change::Left(user, conversations) => (*user, conversations, PresenceStatus::Offline),
        };
        let updated = presence::update_user(store, user, |record| match status {
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
            presence::announce(&self.nats, &self.subjects, &signal, conversations).await;
        }
    }
}
