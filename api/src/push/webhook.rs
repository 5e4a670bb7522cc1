//! Pushes to the application's own webhook, signed by the Standard Webhooks scheme
//! (<https://www.standardwebhooks.com>): `webhook-id` (the push id, the same on every retry),
//! `webhook-timestamp` (Unix seconds) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of
//! "<id>.<timestamp>.<body>">`, one per configured secret, separated by spaces.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{Outcome, Push, PushConfig};

/// The secrets' key bytes: `whsec_<base64>` decoded (a secret without the prefix is used as it
/// is). Checked at start-up (see [`check_secrets`]).
pub(super) fn decode_secrets(secrets: &[String]) -> Vec<Vec<u8>> {
    secrets.iter().filter(|secret| !secret.trim().is_empty()).filter_map(|secret| decode_secret(secret).ok()).collect()
}

fn decode_secret(secret: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let secret = secret.trim();
    match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD.decode(encoded),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// Refuses a configuration whose webhook secrets cannot sign (bad base64, too short).
pub fn check_secrets(config: &PushConfig) -> anyhow::Result<()> {
    let secrets: Vec<&String> = config.webhook_secrets.iter().filter(|secret| !secret.trim().is_empty()).collect();
    for secret in &secrets {
        let key = decode_secret(secret)
            .map_err(|_| anyhow::anyhow!("a PARLEY_PUSH_WEBHOOK_SECRETS secret is not valid base64 after `whsec_`"))?;
        anyhow::ensure!(key.len() >= 24, "every PARLEY_PUSH_WEBHOOK_SECRETS secret must hold at least 24 bytes");
    }
    anyhow::ensure!(
        config.webhook_url.is_none() || !secrets.is_empty(),
        "PARLEY_PUSH_WEBHOOK_URL needs PARLEY_PUSH_WEBHOOK_SECRETS to sign its pushes"
    );
    Ok(())
}

/// `webhook-signature`: `v1,<signature>` for each secret.
pub(super) fn signature(secrets: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    let signed = |secret: &Vec<u8>| {
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    };
    secrets.iter().map(signed).collect::<Vec<_>>().join(" ")
}

/// One push: 2xx is sent; 410 Gone deletes the target; 429, 5xx and no answer are retried;
/// anything else is refused for good.
pub(super) async fn send(http: &reqwest::Client, config: &PushConfig, secrets: &[Vec<u8>], push: &Push) -> Outcome {
    let Some(url) = &config.webhook_url else {
        return Outcome::Rejected("no PARLEY_PUSH_WEBHOOK_URL is configured".into());
    };
    let body = json!({
        "type": "notification.push",
        "push_id": push.id,
        "user_id": push.user_id,
        "device_id": push.target.address,
        "badge": push.badge,
        "notification": push.notification,
    })
    .to_string();
    let id = push.id.to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let request = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature(secrets, &id, timestamp, body.as_bytes()))
        .body(body);
    match request.send().await {
        Ok(response) if response.status().is_success() => Outcome::Sent,
        Ok(response) if response.status().as_u16() == 410 => Outcome::TargetGone,
        Ok(response) if response.status().as_u16() == 429 || response.status().is_server_error() => {
            Outcome::Retry(format!("webhook answered {}", response.status()))
        }
        Ok(response) => Outcome::Rejected(format!("webhook answered {}", response.status())),
        Err(error) => Outcome::Retry(format!("webhook: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_one_for_each_secret() {
        // The Standard Webhooks specification's own example.
        let secret = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("base64");
        let body = br#"{"test": 2432232314}"#;
        let signed = signature(std::slice::from_ref(&secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let rotated = signature(&[secret, b"another-secret-of-enough-bytes".to_vec()], "id", 1, body);
        assert_eq!(rotated.split(' ').count(), 2);
    }
}
