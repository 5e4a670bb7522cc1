//! A per-address limit on requests that prove nobody: requests without credentials (as each
//! service defines them) and every request answered 401. Guessing tokens or hammering public
//! endpoints from one address gets 429 with `Retry-After` once the address's bucket is empty,
//! before any work is done.
//!
//! The client's address is the peer's, or, when the peer is a trusted proxy
//! (`PARLEY_TRUSTED_PROXIES`), the right-most `X-Forwarded-For` entry that is not one: entries
//! left of it may be forged by the client.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use poem::http::{StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

#[derive(Args, Clone, Debug)]
pub struct AddressLimitArgs {
    /// Sustained rate, per client address and second, of requests without credentials and of
    /// requests answered 401; more get 429.
    #[arg(long, env = "PARLEY_UNAUTHENTICATED_RATE_PER_SECOND", default_value_t = 20)]
    pub unauthenticated_rate_per_second: u32,
    /// How many of those one address may burst above the sustained rate.
    #[arg(long, env = "PARLEY_UNAUTHENTICATED_BURST", default_value_t = 100)]
    pub unauthenticated_burst: u32,
    /// Proxies (addresses or CIDR networks, comma-separated) whose `X-Forwarded-For` names the
    /// client address for that limit.
    #[arg(long, env = "PARLEY_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,
}

/// Proxies whose `X-Forwarded-For` is believed: addresses or networks, comma-separated.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        let parse = |entry: &str| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{entry:?} is neither an IP address nor a network (CIDR)"))
        };
        let entries = list.split(',').map(str::trim).filter(|entry| !entry.is_empty()).map(parse);
        Ok(Self(Arc::new(entries.collect::<Result<_, _>>()?)))
    }
}

impl TrustedProxies {
    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The address a request comes from (see the module documentation).
    fn client_address(&self, peer: IpAddr, forwarded_for: impl DoubleEndedIterator<Item = IpAddr>) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for.rev() {
            client = hop;
            if !self.trusts(hop) {
                break;
            }
        }
        client
    }
}

#[derive(Clone)]
pub struct AddressLimit {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses whose bucket ran dry, until when.
    refused: moka::sync::Cache<IpAddr, Instant>,
    trusted: TrustedProxies,
    /// Whether a request counts even when it is not refused: it carries no credentials.
    without_credentials: fn(&Request) -> bool,
    /// The 429 answer, given the seconds to wait.
    refusal: fn(u64) -> Response,
}

impl std::fmt::Debug for AddressLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressLimit").field("trusted", &self.trusted).finish_non_exhaustive()
    }
}

impl AddressLimit {
    pub fn new(
        args: &AddressLimitArgs,
        without_credentials: fn(&Request) -> bool,
        refusal: fn(u64) -> Response,
    ) -> Self {
        let per_second = NonZeroU32::new(args.unauthenticated_rate_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(args.unauthenticated_burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: Arc::new(RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))),
            refused: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(3600)).build(),
            trusted: args.trusted_proxies.clone(),
            without_credentials,
            refusal,
        }
    }

    /// How long `address` must still wait, if it must.
    fn refused_for(&self, address: IpAddr) -> Option<Duration> {
        let until = self.refused.get(&address)?;
        until.checked_duration_since(Instant::now()).filter(|wait| !wait.is_zero())
    }

    /// Takes one token of `address`'s bucket; an empty bucket refuses the address until it refills.
    fn charge(&self, address: IpAddr) {
        if let Err(not_until) = self.limiter.check_key(&address) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            self.refused.insert(address, Instant::now() + wait);
        }
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
    }
}

impl<E: Endpoint> Middleware<E> for AddressLimit {
    type Output = AddressLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AddressLimitEndpoint { inner, limit: self.clone() }
    }
}

#[derive(Debug)]
pub struct AddressLimitEndpoint<E> {
    inner: E,
    limit: AddressLimit,
}

impl<E: Endpoint> Endpoint for AddressLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        // Canonical: an IPv4 peer of a dual-stack listener arrives as `::ffff:a.b.c.d`.
        let Some(peer) = request.remote_addr().as_socket_addr().map(|address| address.ip().to_canonical()) else {
            return self.inner.call(request).await.map(IntoResponse::into_response);
        };
        let forwarded_for = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok().map(|hop| hop.to_canonical()))
            .collect::<Vec<_>>();
        let address = self.limit.trusted.client_address(peer, forwarded_for.into_iter());
        if let Some(wait) = self.limit.refused_for(address) {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = (self.limit.refusal)(seconds.max(1));
            // The body is not read: the connection cannot carry another request.
            response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            return Ok(response);
        }
        let anonymous = (self.limit.without_credentials)(&request);
        let response = match self.inner.call(request).await {
            Ok(response) => response.into_response(),
            Err(error) => error.into_response(),
        };
        if anonymous || response.status() == StatusCode::UNAUTHORIZED {
            self.limit.charge(address);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.7".parse().expect("valid list");
        let hops = || [ip("6.6.6.6"), ip("203.0.113.9"), ip("10.1.2.3")].into_iter();
        // From a trusted proxy: the right-most hop that is not a proxy (the forged 6.6.6.6 is
        // left of it and ignored).
        assert_eq!(trusted.client_address(ip("192.168.1.7"), hops()), ip("203.0.113.9"));
        // From anyone else: the peer, whatever the header says.
        assert_eq!(trusted.client_address(ip("198.51.100.1"), hops()), ip("198.51.100.1"));
        // Only proxies in the chain: the left-most.
        assert_eq!(trusted.client_address(ip("10.0.0.1"), [ip("10.0.0.2")].into_iter()), ip("10.0.0.2"));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("".parse::<TrustedProxies>().expect("empty is none").0.is_empty());
    }

    #[test]
    fn an_address_is_refused_once_its_bucket_is_empty_and_others_are_not() {
        let args = AddressLimitArgs {
            unauthenticated_rate_per_second: 1,
            unauthenticated_burst: 3,
            trusted_proxies: TrustedProxies::default(),
        };
        let limit = AddressLimit::new(&args, |_| false, |_| Response::default());
        for _ in 0..3 {
            limit.charge(ip("203.0.113.9"));
        }
        assert_eq!(limit.refused_for(ip("203.0.113.9")), None, "three fit the burst");
        limit.charge(ip("203.0.113.9"));
        let wait = limit.refused_for(ip("203.0.113.9")).expect("the fourth empties it");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(limit.refused_for(ip("198.51.100.1")), None);
    }
}
