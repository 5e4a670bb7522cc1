//! Web Push (RFC 8030): the payload encrypted for the subscription (RFC 8291, `aes128gcm`) and
//! the request signed with the server's VAPID key (RFC 8292), by `web-push-native`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parley_shared::notifications::Priority;
use serde_json::json;
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ES256KeyPair};
use web_push_native::{Auth, WebPushBuilder, p256};

use super::{Outcome, Push, PushConfig};

/// How long a push service keeps a push for a device that is offline (the `TTL` header).
const TIME_TO_LIVE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// The server's VAPID identity.
pub struct Vapid {
    key: ES256KeyPair,
    subject: String,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid").field("subject", &self.subject).finish_non_exhaustive()
    }
}

impl Vapid {
    /// From `PARLEY_VAPID_PRIVATE_KEY`; `None` when it is not set (Web Push is then off).
    pub fn from_config(config: &PushConfig) -> anyhow::Result<Option<Self>> {
        let Some(encoded) = config.vapid_private_key.as_deref().map(str::trim).filter(|key| !key.is_empty()) else {
            return Ok(None);
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|_| anyhow::anyhow!("PARLEY_VAPID_PRIVATE_KEY is not base64url"))?;
        let key = ES256KeyPair::from_bytes(&bytes)
            .map_err(|_| anyhow::anyhow!("PARLEY_VAPID_PRIVATE_KEY is not a P-256 private key"))?;
        Ok(Some(Self { key, subject: config.vapid_subject.clone() }))
    }

    /// The public key browsers subscribe with (`applicationServerKey`), base64url.
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.public_key().public_key().to_bytes_uncompressed())
    }
}

/// A subscription's keys, decoded and checked: `p256dh` a P-256 point, `auth` 16 bytes.
pub fn subscription_keys(p256dh: &str, auth: &str) -> Result<(p256::PublicKey, Auth), &'static str> {
    let decode = |text: &str| URL_SAFE_NO_PAD.decode(text.trim_end_matches('='));
    let public =
        decode(p256dh).ok().and_then(|bytes| p256::PublicKey::from_sec1_bytes(&bytes).ok()).ok_or("keys.p256dh")?;
    let secret = decode(auth).ok().filter(|bytes| bytes.len() == 16).ok_or("keys.auth")?;
    let mut auth = Auth::default();
    auth.copy_from_slice(&secret);
    Ok((public, auth))
}

/// One push: 2xx is sent; 404 and 410 (the subscription expired or was withdrawn) delete the
/// target; 429, 5xx and no answer are retried; anything else is refused for good.
pub(super) async fn send(http: &reqwest::Client, vapid: Option<&Vapid>, push: &Push) -> Outcome {
    let Some(vapid) = vapid else {
        return Outcome::Rejected("no PARLEY_VAPID_PRIVATE_KEY is configured".into());
    };
    let target = &push.target;
    let keys =
        subscription_keys(target.p256dh.as_deref().unwrap_or_default(), target.auth.as_deref().unwrap_or_default());
    let (Ok(endpoint), Ok((public, auth))) = (target.address.parse(), keys) else {
        return Outcome::Rejected("the stored subscription is not valid".into());
    };
    let notification = &push.notification;
    let payload = json!({
        "push_id": push.id,
        "notification_id": notification.id,
        "kind": notification.kind,
        "title": notification.title,
        "body": notification.body,
        "data": notification.data,
        "badge": push.badge,
    });
    let built = WebPushBuilder::new(endpoint, public, auth)
        .with_valid_duration(TIME_TO_LIVE)
        .with_vapid(&vapid.key, &vapid.subject)
        .build(payload.to_string());
    let mut request = match built
        .map_err(|error| error.to_string())
        .and_then(|request| reqwest::Request::try_from(request).map_err(|error| error.to_string()))
    {
        Ok(request) => request,
        Err(error) => return Outcome::Rejected(format!("cannot build the Web Push request: {error}")),
    };
    let urgency = match notification.priority {
        Priority::High => "high",
        Priority::Normal => "normal",
        Priority::Low => "low",
    };
    request.headers_mut().insert("urgency", reqwest::header::HeaderValue::from_static(urgency));
    match http.execute(request).await {
        Ok(response) if response.status().is_success() => Outcome::Sent,
        Ok(response) if matches!(response.status().as_u16(), 404 | 410) => Outcome::TargetGone,
        Ok(response) if response.status().as_u16() == 429 || response.status().is_server_error() => {
            Outcome::Retry(format!("push service answered {}", response.status()))
        }
        Ok(response) => Outcome::Rejected(format!("push service answered {}", response.status())),
        Err(error) => Outcome::Retry(format!("push service: {error}")),
    }
}
