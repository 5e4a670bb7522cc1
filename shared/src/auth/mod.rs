//! Bearer-token verification shared by the API and the broker.
//!
//! A [`Verifier`] is built once from [`AuthArgs`] and turns a compact JWT into an [`Identity`], or
//! into an [`AuthError`] that says what was wrong without ever containing the token.
//!
//! Keys come from exactly one source: an HS256 shared secret (the development default), a PEM
//! public key (RSA, EC or Ed25519) or a JWKS URL ([`jwks`]). Each key accepts only the
//! algorithms of its own family, so an HMAC token "signed" with an RSA public key (algorithm
//! confusion) and `alg: none` are both rejected before any signature check.

mod claims;
mod config;
mod jwks;

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::ids::UserId;

pub use claims::{Claims, issue_hs256};
pub use config::{AuthArgs, DEV_SECRET};
pub use jwks::JwksOptions;

/// Who a verified token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    /// `name`, else `preferred_username`, when the token carries one.
    pub display_name: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// The `channels` claim: patterns of `granted` channels the user may subscribe to.
    pub channels: Vec<String>,
}

/// What a subscription token grants: one user, one channel, until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionGrant {
    pub user_id: UserId,
    pub channel: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a token was refused. Messages are safe to return to the client and to log: none of them
/// contains the token or any part of it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token was presented")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token header names no supported algorithm (\"none\" is never accepted)")]
    UnsupportedAlgorithm,
    #[error("the token's algorithm {0:?} is not accepted for this key")]
    AlgorithmNotAllowed(Algorithm),
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    #[error("the token lacks the required claim {0:?}")]
    MissingClaim(String),
    #[error("the token's sub claim must be a UUID")]
    InvalidSubject,
    #[error("the token's key id is not among the issuer's published keys")]
    UnknownKey,
    #[error("the token has no key id and the key set holds more than one key")]
    MissingKeyId,
    #[error("the signing keys could not be fetched")]
    KeysUnavailable,
    #[error("the token header lists critical extensions ({0}) that are not understood")]
    UnsupportedCritical(String),
    #[error("the token's type {0:?} is not an access token")]
    WrongType(String),
}

/// A key together with the only algorithms it may verify.
#[derive(Clone)]
struct VerificationKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey").field("algorithms", &self.algorithms).finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum KeySource {
    Static(VerificationKey),
    Jwks(Box<jwks::JwksCache>),
}

/// Verifies bearer JWTs. Cheap to share behind an `Arc`; JWKS keys are cached inside.
#[derive(Debug)]
pub struct Verifier {
    keys: KeySource,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    /// Lowercase header `typ` values accepted as access tokens.
    allowed_types: Vec<String>,
}

impl Verifier {
    /// Verifies signature, algorithm, `exp`, `nbf` and, when configured, `iss` and `aud`.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.claims(token).await?.into_identity()
    }

    /// Verifies a subscription token (signed like access tokens, with a `channel` claim): the
    /// same checks as [`Self::verify`].
    pub async fn verify_subscription(&self, token: &str) -> Result<SubscriptionGrant, AuthError> {
        self.claims(token).await?.into_grant()
    }

    async fn claims(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|error| match error.kind() {
            ErrorKind::Json(_) | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
                AuthError::UnsupportedAlgorithm
            }
            _ => AuthError::Malformed,
        })?;
        // RFC 7515 §4.1.11: a `crit` extension the recipient does not understand must be refused,
        // and Parley understands none. jsonwebtoken's header ignores `crit`, so read it raw.
        if let Some(critical) = raw_header(token)?.get("crit") {
            return Err(AuthError::UnsupportedCritical(critical.to_string()));
        }
        // RFC 8725 §3.11: other kinds of JWT (refresh, logout) must not pass as access tokens.
        if let Some(typ) = header.typ.filter(|typ| !self.allowed_types.contains(&typ.to_ascii_lowercase())) {
            return Err(AuthError::WrongType(typ));
        }
        let key = match &self.keys {
            KeySource::Static(key) => key.clone(),
            KeySource::Jwks(cache) => cache.key(header.kid.as_deref()).await?,
        };
        if !key.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed(header.alg));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(header.alg))
            .map_err(|error| map_jwt_error(error.kind()))?;
        Ok(data.claims)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        // Without a configured audience a token's `aud` is ignored rather than refused.
        validation.validate_aud = self.audience.is_some();
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// The token's header as a JSON object (the first dot-separated part, base64url).
fn raw_header(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, AuthError> {
    use base64::Engine as _;
    let encoded = token.split('.').next().ok_or(AuthError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
            AuthError::UnsupportedAlgorithm
        }
        // Key/algorithm mismatches surface as key errors in the crypto provider.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests;
