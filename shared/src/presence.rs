//! Presence: who is online, in a NATS KV bucket every process can read, and the signal that
//! tells the members of a user's conversations when that changes.
//!
//! The bucket `<PREFIX>_PRESENCE` (history 1, no expiry, so `last_seen_at` outlives a session):
//! - `broker.<broker_id>` → [`BrokerLease`]: a broker's lease, renewed every third of its TTL
//!   while the broker runs.
//! - `user.<user_id>` → [`UserPresence`]: the brokers the user has connections on, and when the
//!   user was last seen.
//!
//! A user is online while one of their sessions is on a broker whose lease is live. One lease
//! per broker, not one TTL'd key per user: a broker with 19,000 users renews one key, not
//! 19,000. A broker killed with SIGKILL stops renewing; once its lease has expired the API's
//! sweeper removes its sessions and announces who went offline.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, UserId};
use crate::subjects::Subjects;

/// A user went online or offline: the `presence` frame clients get, and the heart of the
/// [`PresenceAnnouncement`] published once per change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PresenceSignal {
    #[serde(rename = "type")]
    pub kind: PresenceKind,
    pub user_id: UserId,
    pub status: PresenceStatus,
    /// When the user was last connected; set when `status` is `offline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<DateTime<Utc>>,
    pub occurred_at: DateTime<Utc>,
}

impl PresenceSignal {
    /// `last_seen_at` is kept only for `offline`.
    pub fn new(
        user: UserId,
        status: PresenceStatus,
        last_seen_at: Option<DateTime<Utc>>,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        let last_seen_at = last_seen_at.filter(|_| status == PresenceStatus::Offline);
        Self { kind: PresenceKind::Presence, user_id: user, status, last_seen_at, occurred_at }
    }
}

/// Most conversations an announcement lists: the user's most recently active ones (highest
/// `last_seq`). About 40 KB of JSON, far inside NATS' payload limit, for a user in any number of
/// conversations; members of the others follow the user with `presence.subscribe`.
pub const MAX_AUDIENCE: usize = 1_000;

/// Published once per change on `<prefix>.presence.<user_id>`: the signal, and the user's
/// conversations whose members hear it without asking (those with at most
/// `PARLEY_PRESENCE_AUTO_MAX_MEMBERS` members; at most [`MAX_AUDIENCE`] of them). Every broker receives it and sends the signal
/// once to each connection that should see it: local members of those conversations, and
/// connections that subscribed to the user's presence (`presence.subscribe`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PresenceAnnouncement {
    #[serde(flatten)]
    pub signal: PresenceSignal,
    pub audience: Vec<ConversationId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PresenceKind {
    #[serde(rename = "presence")]
    Presence,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    Online,
    Offline,
}

/// A broker's lease on its sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerLease {
    /// When the broker last renewed the lease (the last moment its users are known online).
    pub renewed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// One user's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPresence {
    /// Broker id → when the user's first connection there opened.
    pub sessions: BTreeMap<String, DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl UserPresence {
    /// Online while one session is on a broker whose lease `is_live`.
    pub fn is_online(&self, is_live: impl Fn(&str) -> bool) -> bool {
        self.sessions.keys().any(|broker| is_live(broker))
    }
}

impl BrokerLease {
    pub fn new(now: DateTime<Utc>, ttl: Duration) -> Self {
        Self { renewed_at: now, expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX) }
    }

    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}

pub fn bucket_name(subjects: &Subjects) -> String {
    format!("{}_PRESENCE", subjects.prefix().to_ascii_uppercase().replace('-', "_"))
}

pub fn user_key(user: UserId) -> String {
    format!("user.{user}")
}

pub fn broker_key(broker: &str) -> String {
    format!("broker.{broker}")
}

/// What a key of the bucket names.
#[derive(Debug, PartialEq, Eq)]
pub enum Key<'a> {
    User(UserId),
    Broker(&'a str),
}

pub fn parse_key(key: &str) -> Option<Key<'_>> {
    if let Some(user) = key.strip_prefix("user.") {
        return user.parse().ok().map(Key::User);
    }
    key.strip_prefix("broker.").filter(|id| !id.is_empty()).map(Key::Broker)
}

/// Opens the bucket, creating it (with `replicas` copies) if it does not exist yet.
pub async fn open_bucket(
    jetstream: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
) -> Result<kv::Store, async_nats::Error> {
    let name = bucket_name(subjects);
    if let Ok(store) = jetstream.get_key_value(&name).await {
        return Ok(store);
    }
    if answers_account_info(&jetstream.client().server_info().version) {
        let config =
            kv::Config { bucket: name.clone(), history: 1, num_replicas: replicas.max(1), ..Default::default() };
        return match jetstream.create_key_value(config).await {
            Ok(store) => Ok(store),
            // Another instance created it meanwhile (perhaps by hand, under an older server).
            Err(error) => jetstream.get_key_value(&name).await.map_err(|_| error.into()),
        };
    }
    // nats-server 2.9: the stream a KV bucket is, created directly, as `create_key_value`
    // would, whose first step (reading the account info) fails on 2.9's reply.
    let stream = jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: replicas.max(1),
        ..Default::default()
    };
    jetstream.get_or_create_stream(stream).await?;
    Ok(jetstream.get_key_value(&name).await?)
}

/// Whether a nats-server of `version` sends an account-info reply async-nats can read: 2.10
/// and newer.
fn answers_account_info(version: &str) -> bool {
    let mut parts = version.split(['.', '-']).map(|part| part.parse::<u32>().ok());
    matches!((parts.next().flatten(), parts.next().flatten()), (Some(major), Some(minor)) if (major, minor) >= (2, 10))
}

/// Compare-and-set attempts before [`update_user`] gives up.
const MAX_CONFLICTS: u32 = 20;

/// Changes one user's record with compare-and-set (retried when another process wrote in
/// between); returns the record before and after.
pub async fn update_user(
    store: &kv::Store,
    user: UserId,
    change: impl Fn(&mut UserPresence),
) -> Result<(UserPresence, UserPresence), async_nats::Error> {
    let key = user_key(user);
    let mut conflicts = 0;
    loop {
        let entry = store.entry(key.clone()).await?.filter(|entry| entry.operation == kv::Operation::Put);
        let before: UserPresence =
            entry.as_ref().and_then(|entry| serde_json::from_slice(&entry.value).ok()).unwrap_or_default();
        let mut after = before.clone();
        change(&mut after);
        if after == before {
            return Ok((before, after));
        }
        let value = serde_json::to_vec(&after)?.into();
        // A conflict means another process wrote in between: read again.
        let conflict = match entry {
            Some(entry) => match store.update(&key, value, entry.revision).await {
                Ok(_) => false,
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => true,
                Err(error) => return Err(error.into()),
            },
            None => match store.create(&key, value).await {
                Ok(_) => false,
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => true,
                Err(error) => return Err(error.into()),
            },
        };
        if !conflict {
            return Ok((before, after));
        }
        conflicts += 1;
        if conflicts > MAX_CONFLICTS {
            return Err(format!("presence of {user}: {conflicts} write conflicts in a row").into());
        }
    }
}

/// Publishes the change once, for every broker (best effort, like every ephemeral signal).
pub async fn announce(nats: &async_nats::Client, subjects: &Subjects, announcement: &PresenceAnnouncement) {
    let payload: bytes::Bytes = serde_json::to_vec(announcement).unwrap_or_default().into();
    crate::serve::publish_if_connected(nats, subjects.presence(announcement.signal.user_id), payload).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_created_through_the_client_from_nats_server_2_10_on() {
        for version in ["2.10.0", "2.12.8", "2.11.0-RC.1", "3.0.0"] {
            assert!(answers_account_info(version), "{version}");
        }
        for version in ["2.9.10", "2.2.0", "", "garbage"] {
            assert!(!answers_account_info(version), "{version}");
        }
    }

    #[test]
    fn keys_round_trip_and_nothing_else_parses() {
        let user = UserId::from_uuid(uuid::Uuid::now_v7());
        assert_eq!(parse_key(&user_key(user)), Some(Key::User(user)));
        assert_eq!(parse_key(&broker_key("b1")), Some(Key::Broker("b1")));
        assert_eq!(parse_key("user.nope"), None);
        assert_eq!(parse_key("broker."), None);
        assert_eq!(parse_key("other.x"), None);
    }

    #[test]
    fn a_user_is_online_only_through_a_live_broker() {
        let now = Utc::now();
        let mut record = UserPresence::default();
        assert!(!record.is_online(|_| true));
        record.sessions.insert("a".into(), now);
        assert!(record.is_online(|broker| broker == "a"));
        assert!(!record.is_online(|broker| broker == "b"));
        let lease = BrokerLease::new(now, Duration::from_secs(3));
        assert!(lease.is_live(now + chrono::Duration::seconds(2)));
        assert!(!lease.is_live(now + chrono::Duration::seconds(3)));
    }

    #[test]
    fn the_signal_has_the_documented_shape() {
        let user = UserId::from_uuid(uuid::Uuid::nil());
        let seen = Some(DateTime::UNIX_EPOCH);
        let json = serde_json::to_value(PresenceSignal::new(user, PresenceStatus::Offline, seen, Utc::now()))
            .expect("serialise");
        assert_eq!(json["type"], "presence");
        assert_eq!(json["status"], "offline");
        assert_eq!(json["last_seen_at"], "1970-01-01T00:00:00Z");
        let online = serde_json::to_value(PresenceSignal::new(user, PresenceStatus::Online, seen, Utc::now()))
            .expect("serialise");
        assert!(online.get("last_seen_at").is_none(), "{online}");
    }
}
