//! The API's side of presence (bucket layout in [`parley_shared::presence`]):
//! - [`PresenceView`]: a copy of the bucket kept current by a KV watch, so presence in
//!   responses costs no NATS round trip;
//! - [`PresenceKeeper`]: creates the bucket, runs the watch, and sweeps: once a broker's lease
//!   has expired (killed, host lost) it removes that broker's sessions and announces who went
//!   offline. Every API instance sweeps; compare-and-set lets one of them win each user, and
//!   only the winner announces.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use parley_shared::ids::UserId;
use parley_shared::presence::{self, BrokerLease, Key, PresenceAnnouncement, PresenceSignal, UserPresence};
use parley_shared::subjects::Subjects;
use poem_openapi::{Enum, Object};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::membership;

/// How often expired leases are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum PresenceStatus {
    /// At least one WebSocket connection is open, on any broker.
    Online,
    Offline,
}

/// A user's presence as responses show it.
#[derive(Object, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(skip_serializing_if_is_none, example)]
pub struct Presence {
    pub status: PresenceStatus,
    /// When the user's last connection closed (offline users who have ever connected).
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default)]
pub struct PresenceView {
    bucket: Arc<RwLock<Bucket>>,
}

#[derive(Debug, Default)]
struct Bucket {
    users: HashMap<UserId, UserPresence>,
    leases: HashMap<String, BrokerLease>,
}

impl PresenceView {
    pub fn of(&self, user: UserId) -> Presence {
        let bucket = self.bucket.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Utc::now();
        let Some(record) = bucket.users.get(&user) else {
            return Presence { status: PresenceStatus::Offline, last_seen_at: None };
        };
        if record.is_online(|broker| bucket.leases.get(broker).is_some_and(|lease| lease.is_live(now))) {
            Presence { status: PresenceStatus::Online, last_seen_at: None }
        } else {
            // A session on an expired lease not swept yet: last seen when the lease was renewed.
            let expired = record.sessions.keys().filter_map(|broker| bucket.leases.get(broker));
            let last_seen_at = expired.map(|lease| lease.renewed_at).chain(record.last_seen_at).max();
            Presence { status: PresenceStatus::Offline, last_seen_at }
        }
    }

    /// Brokers whose lease is live: how many answers a scatter-gather to every broker expects.
    pub fn live_brokers(&self) -> usize {
        let bucket = self.bucket.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Utc::now();
        bucket.leases.values().filter(|lease| lease.is_live(now)).count()
    }

    fn apply(&self, entry: &kv::Entry) {
        let mut bucket = self.bucket.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let removed = entry.operation != kv::Operation::Put;
        match presence::parse_key(&entry.key) {
            Some(Key::User(user)) => match serde_json::from_slice(&entry.value) {
                Ok(record) if !removed => drop(bucket.users.insert(user, record)),
                _ => drop(bucket.users.remove(&user)),
            },
            Some(Key::Broker(broker)) => match serde_json::from_slice(&entry.value) {
                Ok(lease) if !removed => drop(bucket.leases.insert(broker.to_owned(), lease)),
                _ => drop(bucket.leases.remove(broker)),
            },
            None => {}
        }
    }

    fn clear(&self) {
        *self.bucket.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Bucket::default();
    }

    /// Brokers whose lease has expired, each with the users that still have a session there.
    fn expired(&self, now: DateTime<Utc>) -> Vec<(String, BrokerLease, Vec<UserId>)> {
        let bucket = self.bucket.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        bucket
            .leases
            .iter()
            .filter(|(_, lease)| !lease.is_live(now))
            .map(|(broker, lease)| {
                let users = bucket.users.iter().filter(|(_, record)| record.sessions.contains_key(broker));
                (broker.clone(), *lease, users.map(|(user, _)| *user).collect())
            })
            .collect()
    }
}

pub struct PresenceKeeper {
    pub view: PresenceView,
    pub db: PgPool,
    pub nats: async_nats::Client,
    pub subjects: Subjects,
    pub replicas: usize,
    /// See `PARLEY_PRESENCE_AUTO_MAX_MEMBERS`.
    pub auto_max_members: u32,
}

impl PresenceKeeper {
    /// Watches and sweeps until `stop`, starting over after a NATS failure.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            if let Err(error) = self.watch_and_sweep(&stop).await {
                tracing::warn!(%error, "presence watch failed; retrying");
                self.view.clear();
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn watch_and_sweep(&self, stop: &CancellationToken) -> Result<(), async_nats::Error> {
        let jetstream = async_nats::jetstream::new(self.nats.clone());
        let store = presence::open_bucket(&jetstream, &self.subjects, self.replicas).await?;
        let mut entries = store.watch_with_history(">").await?;
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                entry = entries.next() => match entry {
                    Some(entry) => self.view.apply(&entry?),
                    None => return Err("the presence watch ended".into()),
                },
                _ = sweep.tick() => self.sweep(&store).await?,
            }
        }
    }

    /// Ends the sessions of every broker whose lease expired; a user left with no session is
    /// announced offline, last seen when that broker last renewed its lease.
    async fn sweep(&self, store: &kv::Store) -> Result<(), async_nats::Error> {
        for (broker, lease, users) in self.view.expired(Utc::now()) {
            for user in users {
                let (before, after) = presence::update_user(store, user, |record| {
                    if record.sessions.remove(&broker).is_some() {
                        record.last_seen_at = record.last_seen_at.max(Some(lease.renewed_at));
                    }
                })
                .await?;
                if before.sessions.contains_key(&broker) && after.sessions.is_empty() {
                    let audience = membership::audience_of(&self.db, user, self.auto_max_members).await?;
                    let offline = presence::PresenceStatus::Offline;
                    let signal = PresenceSignal::new(user, offline, after.last_seen_at, Utc::now());
                    presence::announce(&self.nats, &self.subjects, &PresenceAnnouncement { signal, audience }).await;
                }
            }
            // Every session is gone: the lease has nothing left to vouch for.
            store.purge(presence::broker_key(&broker)).await?;
        }
        Ok(())
    }
}
