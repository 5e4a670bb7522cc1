//! The push dispatcher's settings.

use std::time::Duration;

use clap::Args;

#[derive(Args, Clone, Debug)]
pub struct PushConfig {
    /// How long a notification may stay unread, while its user has a live connection, before it
    /// is pushed anyway. A user with no connection is pushed at once; `high` priority always is.
    #[arg(long, env = "PARLEY_PUSH_GRACE_DELAY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace_delay: Duration,
    /// Attempts per push (the first included) before it is given up (state `dead`, counted in
    /// `parley_push_dead_total`). Retries back off exponentially from 1 s (at most 5 minutes
    /// apart), with jitter.
    #[arg(long, env = "PARLEY_PUSH_MAX_ATTEMPTS", default_value_t = 10)]
    pub max_attempts: i32,
    /// How long one provider request may take before it counts as failed (and is retried).
    #[arg(long, env = "PARLEY_PUSH_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Requests in flight to one provider at once: a slow provider holds back only its own pushes.
    #[arg(long, env = "PARLEY_PUSH_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Push targets one user may register; more get 409.
    #[arg(long, env = "PARLEY_PUSH_TARGETS_PER_USER", default_value_t = 20)]
    pub targets_per_user: i64,
    /// Expo's push API (`…/push/send`); a compatible service or a test receiver may stand in.
    #[arg(long, env = "PARLEY_EXPO_PUSH_URL", default_value = "https://exp.host/--/api/v2/push/send")]
    pub expo_url: String,
    /// An Expo access token, when the Expo project requires one (sent as a bearer token).
    #[arg(long, env = "PARLEY_EXPO_ACCESS_TOKEN", hide_env_values = true)]
    pub expo_access_token: Option<String>,
    /// Where `webhook` targets are pushed: the application's endpoint, which forwards to FCM or
    /// APNs itself. None by default: `webhook` targets are refused.
    #[arg(long, env = "PARLEY_PUSH_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// Secrets that sign webhook pushes (Standard Webhooks: `whsec_<base64>`), comma-separated:
    /// each push is signed with every one, so a secret can be rotated without a gap.
    #[arg(
        long,
        env = "PARLEY_PUSH_WEBHOOK_SECRETS",
        value_delimiter = ',',
        default_value = "",
        hide_env_values = true
    )]
    pub webhook_secrets: Vec<String>,
    /// The VAPID private key (RFC 8292) that signs Web Push requests: the P-256 scalar,
    /// base64url (as `web-push generate-vapid-keys` prints it). None: `webpush` targets are refused.
    #[arg(long, env = "PARLEY_VAPID_PRIVATE_KEY", hide_env_values = true)]
    pub vapid_private_key: Option<String>,
    /// The VAPID `sub` claim: a `mailto:` or `https:` contact for push services.
    #[arg(long, env = "PARLEY_VAPID_SUBJECT", default_value = "mailto:admin@example.com")]
    pub vapid_subject: String,
    /// Development only: accept Web Push endpoints on loopback and private addresses, and
    /// over `http://` (test receivers). Never in production: it lets users make the API call
    /// into its own network.
    #[arg(long, env = "PARLEY_PUSH_ALLOW_PRIVATE_ENDPOINTS", default_value_t = false)]
    pub allow_private_endpoints: bool,
}
