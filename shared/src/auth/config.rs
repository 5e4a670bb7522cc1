//! Auth settings (flattened into both binaries' configuration) and building a [`Verifier`] from them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use jsonwebtoken::DecodingKey;

use super::jwks::{JwksCache, JwksOptions};
use super::{KeySource, VerificationKey, Verifier};

/// The HS256 secret used when no key is configured. Fine on a laptop, never in production: the
/// binaries log a warning at start while it is in use.
pub const DEV_SECRET: &str = "parley-dev-secret-do-not-use-in-production";

/// How bearer JWTs are verified. Set exactly one key source: `--jwt-secret` (HS256, the
/// default), `--jwt-public-key-file` (PEM: RSA, EC or Ed25519) or `--jwks-url`.
#[derive(Args, Clone)]
pub struct AuthArgs {
    /// HS256 shared secret. Ignored when a public key file or JWKS URL is set.
    #[arg(long, env = "PARLEY_JWT_SECRET", default_value = DEV_SECRET, hide_default_value = true, hide_env_values = true)]
    pub jwt_secret: String,
    /// PEM file with the issuer's public key (RSA → RS*/PS*, EC → ES256/ES384, Ed25519 → EdDSA).
    #[arg(long, env = "PARLEY_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// URL of the issuer's JSON Web Key Set; keys are cached and refetched on an unknown `kid`.
    #[arg(long, env = "PARLEY_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Refetch the JWKS after this long even if every `kid` is known.
    #[arg(long, env = "PARLEY_JWKS_MAX_AGE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub jwks_max_age: Duration,
    /// At most one JWKS refetch per this interval, however many unknown `kid`s arrive.
    #[arg(long, env = "PARLEY_JWKS_MIN_REFETCH", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwks_min_refetch: Duration,
    /// Required `iss` claim; unchecked when unset.
    #[arg(long, env = "PARLEY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim; unchecked when unset.
    #[arg(long, env = "PARLEY_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "PARLEY_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,
    /// Header `typ` values accepted (comma-separated, case-insensitive); a token without `typ`
    /// is always accepted. Other types (`refresh+jwt`, `logout+jwt`, …) are not access tokens.
    #[arg(
        long,
        env = "PARLEY_JWT_ALLOWED_TYPES",
        default_value = "JWT,at+jwt,application/at+jwt",
        value_delimiter = ','
    )]
    pub jwt_allowed_types: Vec<String>,
}

impl std::fmt::Debug for AuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthArgs")
            .field("jwt_secret", &"<redacted>")
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwks_url", &self.jwks_url)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .finish_non_exhaustive()
    }
}

/// A configuration that cannot produce a verifier.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("set only one of PARLEY_JWT_PUBLIC_KEY_FILE and PARLEY_JWKS_URL")]
    TwoKeySources,
    #[error("cannot read the JWT public key file {path}: {source}")]
    ReadKey { path: PathBuf, source: std::io::Error },
    #[error("the JWT public key file {0} holds no RSA, EC or Ed25519 public key in PEM form")]
    UnusableKey(PathBuf),
    #[error("the JWT secret is empty")]
    EmptySecret,
}

impl AuthArgs {
    /// Settings with the given HS256 secret and every other value at its default.
    pub fn with_secret(secret: impl Into<String>) -> Self {
        Self {
            jwt_secret: secret.into(),
            jwt_public_key_file: None,
            jwks_url: None,
            jwks_max_age: Duration::from_secs(600),
            jwks_min_refetch: Duration::from_secs(30),
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: Duration::from_secs(30),
            jwt_allowed_types: ["JWT", "at+jwt", "application/at+jwt"].map(str::to_owned).to_vec(),
        }
    }

    /// True while tokens are checked against the public development secret.
    fn uses_dev_secret(&self) -> bool {
        self.jwt_public_key_file.is_none() && self.jwks_url.is_none() && self.jwt_secret == super::DEV_SECRET
    }

    /// The verifier these settings describe; warns when it accepts development tokens.
    pub fn build(&self) -> Result<Verifier, AuthConfigError> {
        if self.uses_dev_secret() {
            tracing::warn!(
                "verifying tokens with the public development secret; set PARLEY_JWT_SECRET or a key source"
            );
        }
        let keys = match (&self.jwt_public_key_file, &self.jwks_url) {
            (Some(_), Some(_)) => return Err(AuthConfigError::TwoKeySources),
            (Some(path), None) => KeySource::Static(load_pem(path)?),
            (None, Some(url)) => KeySource::Jwks(Box::new(JwksCache::new(
                url.clone(),
                JwksOptions { max_age: self.jwks_max_age, min_refetch: self.jwks_min_refetch },
            ))),
            (None, None) => {
                if self.jwt_secret.is_empty() {
                    return Err(AuthConfigError::EmptySecret);
                }
                let key = DecodingKey::from_secret(self.jwt_secret.as_bytes());
                KeySource::Static(VerificationKey { algorithms: key.family().algorithms().to_vec(), key })
            }
        };
        Ok(Verifier {
            keys,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway: self.jwt_leeway,
            allowed_types: self.jwt_allowed_types.iter().map(|typ| typ.trim().to_ascii_lowercase()).collect(),
        })
    }
}

/// Reads a PEM public key of any supported type; the key's type fixes which algorithms it accepts.
fn load_pem(path: &Path) -> Result<VerificationKey, AuthConfigError> {
    let pem = std::fs::read(path).map_err(|source| AuthConfigError::ReadKey { path: path.to_path_buf(), source })?;
    DecodingKey::from_rsa_pem(&pem)
        .or_else(|_| DecodingKey::from_ec_pem(&pem))
        .or_else(|_| DecodingKey::from_ed_pem(&pem))
        .ok()
        .map(|key| VerificationKey { algorithms: key.family().algorithms().to_vec(), key })
        .ok_or_else(|| AuthConfigError::UnusableKey(path.to_path_buf()))
}
