//! Server API keys: what backends present to publish and to read channel stats. Several keys
//! are valid at once (rotation: add the new one, move the backends, remove the old one). They
//! are compared in constant time, never logged, and never accepted on user routes.

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::ApiKey;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// Shortest key accepted in `PARLEY_SERVER_API_KEYS`: a guessable key would defeat the point.
pub const MIN_KEY_CHARS: usize = 24;

#[derive(Clone, Default)]
pub struct ServerKeys {
    keys: Vec<String>,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKeys").field("count", &self.keys.len()).finish()
    }
}

impl ServerKeys {
    /// The configured keys; a key shorter than [`MIN_KEY_CHARS`] is a configuration error.
    pub fn new(keys: &[String]) -> anyhow::Result<Self> {
        let keys: Vec<String> = keys.iter().map(|key| key.trim().to_owned()).filter(|key| !key.is_empty()).collect();
        if keys.iter().any(|key| key.chars().count() < MIN_KEY_CHARS) {
            anyhow::bail!("every PARLEY_SERVER_API_KEYS key must be at least {MIN_KEY_CHARS} characters");
        }
        Ok(Self { keys })
    }

    /// Whether `presented` is one of the keys. Every key is compared, each in constant time, so
    /// the time taken says nothing about which key (or how much of one) matched.
    pub fn accepts(&self, presented: &str) -> bool {
        self.keys.iter().fold(0u8, |matched, key| matched | key.as_bytes().ct_eq(presented.as_bytes()).unwrap_u8()) == 1
    }
}

/// A backend with a server API key, as `X-API-Key: <key>` or `Authorization: ApiKey <key>`.
#[derive(SecurityScheme, Debug)]
pub enum ServerAuth {
    Header(HeaderKey),
    Authorization(AuthorizationKey),
}

/// `X-API-Key: <key>` (one of `PARLEY_SERVER_API_KEYS`).
#[derive(SecurityScheme, Debug)]
#[oai(ty = "api_key", key_name = "X-API-Key", key_in = "header", checker = "check_header")]
pub struct HeaderKey(());

/// `Authorization: ApiKey <key>` (one of `PARLEY_SERVER_API_KEYS`).
#[derive(SecurityScheme, Debug)]
#[oai(ty = "api_key", key_name = "Authorization", key_in = "header", checker = "check_authorization")]
pub struct AuthorizationKey(());

async fn check_header(request: &Request, key: ApiKey) -> poem::Result<()> {
    check(request, &key.key)
}

async fn check_authorization(request: &Request, key: ApiKey) -> poem::Result<()> {
    let key = key.key.strip_prefix("ApiKey ").ok_or_else(|| {
        ApiError::unauthorized(
            "server routes take a server API key (X-API-Key or Authorization: ApiKey), not a user token",
        )
    })?;
    check(request, key)
}

fn check(request: &Request, key: &str) -> poem::Result<()> {
    let state = request.data::<AppState>().ok_or_else(ApiError::internal)?;
    if state.server_keys.accepts(key.trim()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("the server API key is not valid").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configured_key_is_accepted_and_nothing_else() {
        let (old, new) = ("o".repeat(MIN_KEY_CHARS), "n".repeat(MIN_KEY_CHARS + 8));
        let keys = ServerKeys::new(&[old.clone(), format!(" {new} "), String::new()]).expect("valid");
        assert!(keys.accepts(&old) && keys.accepts(&new));
        assert!(!keys.accepts(&old[1..]) && !keys.accepts("") && !keys.accepts(&format!("{old}x")));
        assert!(!ServerKeys::default().accepts(""), "no keys: nothing is accepted");
        assert!(ServerKeys::new(&["short".into()]).is_err());
    }
}
