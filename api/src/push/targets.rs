//! Checking a push target before it is stored: an Expo token's form, a Web Push subscription's
//! keys and endpoint (https, and not an address inside our own network), a webhook device id.

use std::net::IpAddr;

use super::PushConfig;
use super::webpush::subscription_keys;

/// A target as a user registers it.
#[derive(Debug)]
pub enum NewTarget<'a> {
    Expo { token: &'a str },
    WebPush { endpoint: &'a str, p256dh: &'a str, auth: &'a str },
    Webhook { device_id: &'a str },
}

/// A target fit to store: `push_targets` columns.
#[derive(Debug, PartialEq, Eq)]
pub struct ValidTarget {
    pub kind: &'static str,
    pub address: String,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
}

/// Why a target was refused, and which request field is at fault.
#[derive(Debug, PartialEq, Eq)]
pub struct TargetError {
    pub field: &'static str,
    pub detail: String,
}

fn refuse(field: &'static str, detail: impl Into<String>) -> TargetError {
    TargetError { field, detail: detail.into() }
}

pub fn validate_target(config: &PushConfig, target: NewTarget<'_>) -> Result<ValidTarget, TargetError> {
    match target {
        NewTarget::Expo { token } => {
            let inner = token
                .strip_prefix("ExponentPushToken[")
                .or_else(|| token.strip_prefix("ExpoPushToken["))
                .and_then(|rest| rest.strip_suffix(']'));
            if !inner.is_some_and(|inner| (1..=200).contains(&inner.len()) && !inner.contains([']', '['])) {
                return Err(refuse("token", "an Expo push token looks like ExponentPushToken[…]"));
            }
            Ok(ValidTarget { kind: "expo", address: token.to_owned(), p256dh: None, auth: None })
        }
        NewTarget::WebPush { endpoint, p256dh, auth } => {
            if config.vapid_private_key.as_deref().is_none_or(str::is_empty) {
                return Err(refuse("kind", "Web Push is not configured on this server (PARLEY_VAPID_PRIVATE_KEY)"));
            }
            check_endpoint(endpoint, config.allow_private_endpoints)?;
            subscription_keys(p256dh, auth).map_err(|field| {
                let what = if field == "keys.auth" { "16 bytes" } else { "a P-256 public key" };
                refuse(field, format!("{field} must be {what}, base64url-encoded"))
            })?;
            Ok(ValidTarget {
                kind: "webpush",
                address: endpoint.to_owned(),
                p256dh: Some(p256dh.to_owned()),
                auth: Some(auth.to_owned()),
            })
        }
        NewTarget::Webhook { device_id } => {
            if config.webhook_url.is_none() {
                return Err(refuse(
                    "kind",
                    "webhook pushes are not configured on this server (PARLEY_PUSH_WEBHOOK_URL)",
                ));
            }
            if !(1..=512).contains(&device_id.chars().count()) || device_id.chars().any(char::is_control) {
                return Err(refuse(
                    "device_id",
                    "the device id must be 1 to 512 characters, without control characters",
                ));
            }
            Ok(ValidTarget { kind: "webhook", address: device_id.to_owned(), p256dh: None, auth: None })
        }
    }
}

/// An `https://` URL of at most 2,048 characters whose host is not a loopback, private,
/// link-local or unspecified address, nor `localhost` (unless development allows it).
fn check_endpoint(endpoint: &str, allow_private: bool) -> Result<(), TargetError> {
    let url = url::Url::parse(endpoint).map_err(|_| refuse("endpoint", "the endpoint must be a URL"))?;
    if endpoint.len() > 2048 || !(url.scheme() == "https" || (allow_private && url.scheme() == "http")) {
        return Err(refuse("endpoint", "the endpoint must be an https:// URL of at most 2,048 characters"));
    }
    let internal = match url.host() {
        Some(url::Host::Ipv4(ip)) => is_internal(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_internal(IpAddr::V6(ip)),
        Some(url::Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost") || !domain.contains('.')
        }
        None => true,
    };
    if internal && !allow_private {
        return Err(refuse(
            "endpoint",
            "the endpoint must be a public push service, not an address inside this network",
        ));
    }
    Ok(())
}

fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified() || ip.is_broadcast()
                // 100.64.0.0/10, carrier-grade NAT.
                || (ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || ip.to_ipv4_mapped().is_some_and(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_inside_the_network_are_refused_unless_development_allows_them() {
        for endpoint in [
            "http://fcm.googleapis.com/x",
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://192.168.0.1:8443/x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://localhost/x",
            "https://push.localhost/x",
            "https://intranet/x",
            "https://100.64.0.1/x",
            "not a url",
        ] {
            assert!(check_endpoint(endpoint, false).is_err(), "{endpoint}");
        }
        assert!(check_endpoint("https://fcm.googleapis.com/fcm/send/abc", false).is_ok());
        assert!(check_endpoint("https://8.8.8.8/x", false).is_ok());
        assert!(check_endpoint("http://127.0.0.1:9000/push", true).is_ok());
    }
}
