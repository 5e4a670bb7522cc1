//! A cached JSON Web Key Set.
//!
//! Keys are fetched lazily, kept for `max_age`, and refetched early when a token names a `kid`
//! the cache does not know (the issuer rotated its keys). That refetch is rate-limited to one per
//! `min_refetch`, so a flood of tokens with made-up `kid`s costs the issuer at most one request
//! per interval. Concurrent misses share one fetch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

use super::{AuthError, VerificationKey};

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
pub struct JwksOptions {
    /// Refetch after this long even when every `kid` is known.
    pub max_age: Duration,
    /// Never refetch more often than this.
    pub min_refetch: Duration,
}

#[derive(Debug, Default)]
struct Cached {
    keys: HashMap<String, VerificationKey>,
    /// The only key of a set whose single key has no `kid`.
    sole_key: Option<VerificationKey>,
    fetched_at: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct JwksCache {
    url: String,
    options: JwksOptions,
    http: reqwest::Client,
    cached: RwLock<Cached>,
    /// Held while fetching, so concurrent misses wait for one fetch instead of starting many.
    fetching: Mutex<()>,
}

impl JwksCache {
    pub(super) fn new(url: String, options: JwksOptions) -> Self {
        let http = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build().unwrap_or_default();
        Self { url, options, http, cached: RwLock::default(), fetching: Mutex::new(()) }
    }

    /// The key for `kid`, fetching the set first when it is stale or does not know `kid`.
    pub(super) async fn key(&self, kid: Option<&str>) -> Result<VerificationKey, AuthError> {
        if let Some(key) = self.lookup_fresh(kid).await? {
            return Ok(key);
        }
        let _fetching = self.fetching.lock().await;
        // Another task may have fetched while this one waited for the lock.
        if let Some(key) = self.lookup_fresh(kid).await? {
            return Ok(key);
        }
        let recently_fetched =
            self.cached.read().await.fetched_at.is_some_and(|at| at.elapsed() < self.options.min_refetch);
        if !recently_fetched {
            match self.fetch().await {
                Ok(fresh) => *self.cached.write().await = fresh,
                // Keep serving the keys we have: an issuer outage must not log everyone out.
                Err(error) => tracing::warn!(url = %self.url, %error, "JWKS fetch failed"),
            }
        }
        let cached = self.cached.read().await;
        if cached.fetched_at.is_none() {
            return Err(AuthError::KeysUnavailable);
        }
        find(&cached, kid)?.ok_or(AuthError::UnknownKey)
    }

    /// `Ok(None)` when the cache is stale or lacks `kid`.
    async fn lookup_fresh(&self, kid: Option<&str>) -> Result<Option<VerificationKey>, AuthError> {
        let cached = self.cached.read().await;
        match cached.fetched_at {
            Some(at) if at.elapsed() < self.options.max_age => find(&cached, kid),
            _ => Ok(None),
        }
    }

    async fn fetch(&self) -> Result<Cached, reqwest::Error> {
        let set: JwkSet = self.http.get(&self.url).send().await?.error_for_status()?.json().await?;
        let mut cached = Cached { fetched_at: Some(Instant::now()), ..Cached::default() };
        let usable: Vec<(Option<String>, VerificationKey)> =
            set.keys.iter().filter_map(|jwk| Some((jwk.common.key_id.clone(), verification_key(jwk)?))).collect();
        if let [(None, key)] = usable.as_slice() {
            cached.sole_key = Some(key.clone());
        }
        cached.keys = usable.into_iter().filter_map(|(kid, key)| Some((kid?, key))).collect();
        tracing::debug!(url = %self.url, keys = cached.keys.len(), "JWKS fetched");
        Ok(cached)
    }
}

fn find(cached: &Cached, kid: Option<&str>) -> Result<Option<VerificationKey>, AuthError> {
    match kid {
        Some(kid) => Ok(cached.keys.get(kid).cloned()),
        None => match (&cached.sole_key, cached.keys.len()) {
            (Some(key), _) => Ok(Some(key.clone())),
            (None, 1) => Ok(cached.keys.values().next().cloned()),
            (None, 0) => Ok(None),
            _ => Err(AuthError::MissingKeyId),
        },
    }
}

/// A public signing key from a JWK. Symmetric (`oct`) keys and encryption-only keys are skipped:
/// a published key set must never be usable as an HMAC secret.
fn verification_key(jwk: &Jwk) -> Option<VerificationKey> {
    use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return None;
    }
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
        // A key that names its algorithm accepts only that one.
        Some(named) => vec![Algorithm::try_from(named).ok()?],
        None => key.family().algorithms().to_vec(),
    };
    Some(VerificationKey { key, algorithms })
}
