//! The JWT claims Parley reads, and the HS256 signer used for development tokens.

use chrono::{DateTime, Utc};
use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::{AuthError, Identity, SubscriptionGrant};
use crate::ids::UserId;

/// Registered claims Parley checks plus the display-name claims it reads.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// Channel patterns the user may subscribe to in `granted` namespaces (see
    /// [`crate::channels::pattern_grants`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Only in a subscription token: the one channel it grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl Claims {
    /// Claims for `user` valid from now for `ttl`.
    pub fn for_user(user: UserId, name: Option<String>, ttl: std::time::Duration) -> Self {
        let now = Utc::now().timestamp();
        Self {
            sub: user.to_string(),
            iat: Some(now),
            exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            name,
            ..Self::default()
        }
    }

    pub(super) fn into_identity(self) -> Result<Identity, AuthError> {
        // A subscription token grants one channel; it must not pass as an access token.
        if self.channel.is_some() {
            return Err(AuthError::WrongType("subscription token".into()));
        }
        let user_id = self.sub.parse::<UserId>().map_err(|_| AuthError::InvalidSubject)?;
        let expires_at = DateTime::<Utc>::from_timestamp(self.exp, 0).ok_or(AuthError::Malformed)?;
        let display_name = self.name.or(self.preferred_username).filter(|name| !name.trim().is_empty());
        Ok(Identity { user_id, display_name, expires_at, channels: self.channels })
    }

    pub(super) fn into_grant(self) -> Result<SubscriptionGrant, AuthError> {
        let channel = self.channel.ok_or_else(|| AuthError::MissingClaim("channel".into()))?;
        let user_id = self.sub.parse::<UserId>().map_err(|_| AuthError::InvalidSubject)?;
        let expires_at = DateTime::<Utc>::from_timestamp(self.exp, 0).ok_or(AuthError::Malformed)?;
        Ok(SubscriptionGrant { user_id, channel, expires_at })
    }
}

/// Signs `claims` with HS256. For development tokens (`cargo xtask token`) and tests; production
/// tokens come from the application's identity provider.
pub fn issue_hs256(secret: &str, claims: &Claims) -> String {
    jsonwebtoken::encode(&Header::default(), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("HS256 signing of serialisable claims cannot fail")
}
