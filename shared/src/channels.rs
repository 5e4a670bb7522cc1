//! Application channels: names, their namespaces' rules, and how a name becomes a NATS subject.
//!
//! A channel is `<namespace>:<name>`. The namespace decides who may subscribe, whether clients
//! may publish, and whether publications are kept (`durable`: a gapless per-channel `offset`,
//! stored in PostgreSQL before the publish call answers, kept for recovery) or not
//! (`ephemeral`: core NATS, at most once). Namespaces come from a TOML file
//! (`PARLEY_CHANNELS_CONFIG`) or the built-in default; `user` is always there: `user:<user_id>`
//! is private to that user, the application's way to reach every device of one user.
//!
//! A name is never spliced into a subject: it travels base64url-encoded as one token
//! (`<namespace>.<base64url(name)>`), so `.`, `*`, `>` or whitespace cannot widen or redirect a
//! subscription whatever the charset allows.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use crate::ids::UserId;

/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 32;
/// Longest name (after the `:`), in bytes.
pub const MAX_NAME_BYTES: usize = 160;
/// Largest `data` of one publication, as JSON text.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// The namespace every deployment has: `user:<user_id>`, private to that user.
pub const USER_NAMESPACE: &str = "user";

/// A valid channel name: `<namespace>:<name>`, namespace `[a-z][a-z0-9_-]{0,31}`, name 1-160
/// bytes of `A-Z a-z 0-9 _ - . : @ = + , /`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel {
    full: String,
    /// Where the `:` is.
    colon: usize,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    #[error("a channel is <namespace>:<name>; {0:?} has no ':'")]
    NoNamespace(String),
    #[error("a namespace is 1-32 characters of a-z, 0-9, '_' or '-', starting with a letter")]
    BadNamespace,
    #[error("a channel name is 1-160 characters of A-Z, a-z, 0-9 and _ - . : @ = + , /")]
    BadName,
}

impl Channel {
    pub fn parse(channel: &str) -> Result<Self, ChannelError> {
        let (namespace, name) = channel.split_once(':').ok_or_else(|| ChannelError::NoNamespace(channel.into()))?;
        if !valid_namespace(namespace) {
            return Err(ChannelError::BadNamespace);
        }
        let name_char = |b: u8| b.is_ascii_alphanumeric() || b"_-.:@=+,/".contains(&b);
        if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.bytes().all(name_char) {
            return Err(ChannelError::BadName);
        }
        Ok(Self { full: channel.to_owned(), colon: namespace.len() })
    }

    /// `user:<user_id>`.
    pub fn of_user(user: UserId) -> Self {
        Self { full: format!("{USER_NAMESPACE}:{user}"), colon: USER_NAMESPACE.len() }
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn namespace(&self) -> &str {
        &self.full[..self.colon]
    }

    pub fn name(&self) -> &str {
        &self.full[self.colon + 1..]
    }

    /// `<namespace>.<base64url(name)>`: the tail of the channel's subjects, and the broker's key
    /// for it (read straight from a subject, without decoding).
    pub fn key(&self) -> String {
        let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.name());
        format!("{}.{name}", self.namespace())
    }

    /// The channel a [`Self::key`] stands for, if it is one.
    pub fn from_key(key: &str) -> Option<Self> {
        let (namespace, encoded) = key.split_once('.')?;
        let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).ok()?;
        Self::parse(&format!("{namespace}:{}", std::str::from_utf8(&name).ok()?)).ok()
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full)
    }
}

fn valid_namespace(namespace: &str) -> bool {
    (1..=MAX_NAMESPACE_BYTES).contains(&namespace.len())
        && namespace.as_bytes()[0].is_ascii_lowercase()
        && namespace.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Who may subscribe to a namespace's channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscribers {
    /// Anyone, anonymous connections included (where the broker allows them).
    Public,
    /// Any authenticated user.
    Authenticated,
    /// A user whose token's `channels` claim has a matching pattern, or who presents a
    /// subscription token for the channel.
    Granted,
    /// `user:<id>`: only that user.
    Owner,
}

/// Whether a namespace's publications are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Core NATS, at most once, no offsets, no history.
    Ephemeral,
    /// A gapless per-channel offset; stored before the publish call answers; kept for recovery.
    Durable,
}

/// One namespace's rules.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub subscribe: Subscribers,
    pub delivery: Delivery,
    /// Whether connections that may subscribe may also publish (anonymous ones never may).
    #[serde(default)]
    pub client_publish: bool,
    /// Largest `data` of one publication, in bytes (at most 64 KiB).
    #[serde(default = "default_max_data_bytes")]
    pub max_data_bytes: usize,
    /// Publications per second one connection may make into the namespace (bursts of twice that).
    #[serde(default = "default_client_publish_per_second")]
    pub client_publish_per_second: u32,
    /// Durable: most publications kept per channel for recovery.
    #[serde(default = "default_history_size")]
    pub history_size: u32,
    /// Durable: how long publications are kept for recovery.
    #[serde(default = "default_history_ttl", deserialize_with = "humantime_duration")]
    pub history_ttl: Duration,
}

fn default_max_data_bytes() -> usize {
    MAX_DATA_BYTES
}
fn default_client_publish_per_second() -> u32 {
    10
}
fn default_history_size() -> u32 {
    1000
}
fn default_history_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn humantime_duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

impl Namespace {
    fn new(subscribe: Subscribers, delivery: Delivery) -> Self {
        Self {
            subscribe,
            delivery,
            client_publish: false,
            max_data_bytes: MAX_DATA_BYTES,
            client_publish_per_second: default_client_publish_per_second(),
            history_size: default_history_size(),
            history_ttl: default_history_ttl(),
        }
    }

    pub fn is_durable(&self) -> bool {
        self.delivery == Delivery::Durable
    }
}

/// Every namespace of a deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespaces {
    namespaces: BTreeMap<String, Namespace>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    namespace: BTreeMap<String, Namespace>,
}

impl Default for Namespaces {
    /// `public` (anyone, durable), `live` (anyone, ephemeral), `granted` (by claim or
    /// subscription token, durable) and `user`.
    fn default() -> Self {
        let namespaces = [
            ("public", Namespace::new(Subscribers::Public, Delivery::Durable)),
            ("live", Namespace::new(Subscribers::Public, Delivery::Ephemeral)),
            ("granted", Namespace::new(Subscribers::Granted, Delivery::Durable)),
        ];
        Self::with_user(namespaces.into_iter().map(|(name, namespace)| (name.to_owned(), namespace)).collect())
    }
}

impl Namespaces {
    fn with_user(mut namespaces: BTreeMap<String, Namespace>) -> Self {
        let user = Namespace { history_size: 100, ..Namespace::new(Subscribers::Owner, Delivery::Durable) };
        namespaces.insert(USER_NAMESPACE.to_owned(), user);
        Self { namespaces }
    }

    /// Parses a TOML document of `[namespace.<name>]` tables.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|error| error.to_string())?;
        for (name, namespace) in &file.namespace {
            if !valid_namespace(name) {
                return Err(format!("namespace {name:?}: {}", ChannelError::BadNamespace));
            }
            if name == USER_NAMESPACE {
                return Err(format!("namespace {USER_NAMESPACE:?} is built in and cannot be configured"));
            }
            if namespace.subscribe == Subscribers::Owner {
                return Err(format!("namespace {name:?}: subscribe = \"owner\" is only for the user namespace"));
            }
            if !(1..=MAX_DATA_BYTES).contains(&namespace.max_data_bytes) {
                return Err(format!("namespace {name:?}: max_data_bytes must be 1-{MAX_DATA_BYTES}"));
            }
            if namespace.is_durable() && (namespace.history_size == 0 || namespace.history_ttl.is_zero()) {
                return Err(format!("namespace {name:?}: a durable namespace keeps some history (size and ttl > 0)"));
            }
        }
        Ok(Self::with_user(file.namespace))
    }

    /// Reads the file `PARLEY_CHANNELS_CONFIG` names.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
        Self::from_toml(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    pub fn get(&self, namespace: &str) -> Option<&Namespace> {
        self.namespaces.get(namespace)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Namespace)> {
        self.namespaces.iter().map(|(name, namespace)| (name.as_str(), namespace))
    }
}

/// Whether a `channels` claim pattern grants `channel`: equal, or a prefix ending in `*`
/// (`granted:team-7.*` grants `granted:team-7.board`). A pattern never crosses namespaces:
/// `*` alone or `gra*` grants nothing.
pub fn pattern_grants(pattern: &str, channel: &Channel) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            prefix.split_once(':').is_some_and(|(namespace, _)| namespace == channel.namespace())
                && channel.as_str().starts_with(prefix)
        }
        None => pattern == channel.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_into_namespace_and_name() {
        let channel = Channel::parse("public:bounty.b-42").expect("valid");
        assert_eq!((channel.namespace(), channel.name()), ("public", "bounty.b-42"));
        assert_eq!(Channel::parse("a:b:c").expect("valid").name(), "b:c");
        for bad in ["public", ":x", "Public:x", "1a:x", "public:", "public:a b", "public:a*", "public:a>", "public:é"]
        {
            assert!(Channel::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Channel::parse(&format!("p:{}", "x".repeat(MAX_NAME_BYTES))).is_ok());
        assert!(Channel::parse(&format!("p:{}", "x".repeat(MAX_NAME_BYTES + 1))).is_err());
    }

    #[test]
    fn a_key_is_one_subject_token_after_the_namespace_whatever_the_name() {
        let channel = Channel::parse("public:a.b.c/d=e").expect("valid");
        let key = channel.key();
        let (namespace, token) = key.split_once('.').expect("two parts");
        assert_eq!(namespace, "public");
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        assert_eq!(Channel::from_key(&key), Some(channel));
        assert_eq!(Channel::from_key("public.***"), None);
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix_within_their_namespace() {
        let channel = Channel::parse("granted:team-7.board").expect("valid");
        assert!(pattern_grants("granted:team-7.board", &channel));
        assert!(pattern_grants("granted:team-7.*", &channel));
        assert!(pattern_grants("granted:*", &channel));
        assert!(!pattern_grants("granted:team-7", &channel));
        assert!(!pattern_grants("granted:team-8.*", &channel));
        assert!(!pattern_grants("*", &channel));
        assert!(!pattern_grants("gran*", &channel));
    }

    #[test]
    fn a_config_file_defines_namespaces_and_the_user_namespace_stays_built_in() {
        let namespaces = Namespaces::from_toml(
            r#"
            [namespace.scores]
            subscribe = "public"
            delivery = "ephemeral"
            client_publish = true
            client_publish_per_second = 5

            [namespace.orders]
            subscribe = "granted"
            delivery = "durable"
            history_size = 10
            history_ttl = "1h"
            "#,
        )
        .expect("valid");
        let orders = namespaces.get("orders").expect("orders");
        assert_eq!((orders.history_size, orders.history_ttl), (10, Duration::from_secs(3600)));
        assert!(namespaces.get("scores").expect("scores").client_publish);
        assert_eq!(namespaces.get("user").expect("user").subscribe, Subscribers::Owner);
        assert!(namespaces.get("public").is_none(), "a file replaces the default namespaces");
        for bad in [
            "[namespace.user]\nsubscribe = \"public\"\ndelivery = \"durable\"",
            "[namespace.x]\nsubscribe = \"owner\"\ndelivery = \"durable\"",
            "[namespace.X]\nsubscribe = \"public\"\ndelivery = \"durable\"",
            "[namespace.x]\nsubscribe = \"public\"\ndelivery = \"durable\"\nmax_data_bytes = 70000",
            "[namespace.x]\nsubscribe = \"public\"\ndelivery = \"sometimes\"",
            "[namespace.x]\nsubscribe = \"public\"\ndelivery = \"durable\"\ncolour = \"red\"",
        ] {
            assert!(Namespaces::from_toml(bad).is_err(), "{bad}");
        }
    }
}
