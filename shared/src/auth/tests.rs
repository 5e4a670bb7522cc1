//! JWT verification against real signatures: HS256, PEM keys of each family, and a JWKS served
//! over HTTP by the test itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json};
use poem::{EndpointExt, Route, Server, get, handler};
use tokio::sync::RwLock;

use super::*;

const SECRET: &str = "unit-test-secret";
const USER: &str = "0191d0c2-6c3e-7f00-8000-00000000a11c";
const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa_public.pem");
const RSA_OTHER_PRIVATE: &[u8] = include_bytes!("testdata/rsa_other_private.pem");
const EC_PRIVATE: &[u8] = include_bytes!("testdata/ec_private.pem");
const ED_PRIVATE: &[u8] = include_bytes!("testdata/ed_private.pem");

fn claims() -> Claims {
    Claims::for_user(USER.parse().expect("uuid"), Some("Alice".into()), Duration::from_secs(300))
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Claims) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn hs_verifier() -> Verifier {
    AuthArgs::with_secret(SECRET).build().expect("verifier")
}

fn pem_verifier(public_pem: &[u8]) -> (Verifier, tempfile::TempPath) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), public_pem).expect("write key");
    let path = file.into_temp_path();
    let mut args = AuthArgs::with_secret("unused");
    args.jwt_public_key_file = Some(path.to_path_buf());
    (args.build().expect("verifier"), path)
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa key")
}

#[tokio::test]
async fn valid_hs256_token_yields_the_identity() {
    let token = issue_hs256(SECRET, &claims());
    let identity = hs_verifier().verify(&token).await.expect("valid");
    assert_eq!(identity.user_id.to_string(), USER);
    assert_eq!(identity.display_name.as_deref(), Some("Alice"));
    assert!(identity.expires_at > Utc::now());
}

#[tokio::test]
async fn preferred_username_is_the_fallback_display_name() {
    let mut claims = claims();
    claims.name = None;
    claims.preferred_username = Some("alice42".into());
    let identity = hs_verifier().verify(&issue_hs256(SECRET, &claims)).await.expect("valid");
    assert_eq!(identity.display_name.as_deref(), Some("alice42"));
}

#[tokio::test]
async fn expired_token_is_rejected_beyond_the_leeway() {
    let mut claims = claims();
    claims.exp = Utc::now().timestamp() - 120;
    let result = hs_verifier().verify(&issue_hs256(SECRET, &claims)).await;
    assert_eq!(result, Err(AuthError::Expired));
}

#[tokio::test]
async fn token_not_yet_valid_is_rejected() {
    let mut claims = claims();
    claims.nbf = Some(Utc::now().timestamp() + 600);
    let result = hs_verifier().verify(&issue_hs256(SECRET, &claims)).await;
    assert_eq!(result, Err(AuthError::NotYetValid));
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let mut args = AuthArgs::with_secret(SECRET);
    args.jwt_issuer = Some("https://id.example".into());
    args.jwt_audience = Some("parley".into());
    let verifier = args.build().expect("verifier");

    let mut good = claims();
    good.iss = Some("https://id.example".into());
    good.aud = Some("parley".into());
    assert!(verifier.verify(&issue_hs256(SECRET, &good)).await.is_ok());

    let mut wrong_issuer = good.clone();
    wrong_issuer.iss = Some("https://evil.example".into());
    assert_eq!(verifier.verify(&issue_hs256(SECRET, &wrong_issuer)).await, Err(AuthError::WrongIssuer));

    let mut wrong_audience = good.clone();
    wrong_audience.aud = Some("someone-else".into());
    assert_eq!(verifier.verify(&issue_hs256(SECRET, &wrong_audience)).await, Err(AuthError::WrongAudience));

    let mut no_audience = good;
    no_audience.aud = None;
    assert_eq!(verifier.verify(&issue_hs256(SECRET, &no_audience)).await, Err(AuthError::MissingClaim("aud".into())));
}

#[tokio::test]
async fn wrong_signatures_are_rejected() {
    let forged = issue_hs256("another-secret", &claims());
    assert_eq!(hs_verifier().verify(&forged).await, Err(AuthError::BadSignature));

    let (verifier, _key) = pem_verifier(RSA_PUBLIC);
    let other = EncodingKey::from_rsa_pem(RSA_OTHER_PRIVATE).expect("rsa key");
    let forged = sign(Algorithm::RS256, &other, None, &claims());
    assert_eq!(verifier.verify(&forged).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(serde_json::to_string(&claims()).expect("json").as_bytes())
    );
    assert_eq!(hs_verifier().verify(&unsigned).await, Err(AuthError::UnsupportedAlgorithm));
    let (verifier, _key) = pem_verifier(RSA_PUBLIC);
    assert_eq!(verifier.verify(&unsigned).await, Err(AuthError::UnsupportedAlgorithm));
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    // The classic algorithm-confusion forgery: the attacker knows the public key.
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(RSA_PUBLIC), None, &claims());
    let (verifier, _key) = pem_verifier(RSA_PUBLIC);
    assert_eq!(verifier.verify(&forged).await, Err(AuthError::AlgorithmNotAllowed(Algorithm::HS256)));
}

#[tokio::test]
async fn pem_keys_of_every_family_verify_their_own_algorithm() {
    let cases: [(Algorithm, EncodingKey, &[u8]); 3] = [
        (Algorithm::RS256, rsa_key(), RSA_PUBLIC),
        (Algorithm::ES256, EncodingKey::from_ec_pem(EC_PRIVATE).expect("ec"), include_bytes!("testdata/ec_public.pem")),
        (Algorithm::EdDSA, EncodingKey::from_ed_pem(ED_PRIVATE).expect("ed"), include_bytes!("testdata/ed_public.pem")),
    ];
    for (alg, private, public) in cases {
        let (verifier, _key) = pem_verifier(public);
        let identity = verifier.verify(&sign(alg, &private, None, &claims())).await;
        assert_eq!(identity.map(|id| id.user_id.to_string()), Ok(USER.to_string()), "{alg:?}");
    }
}

#[tokio::test]
async fn non_uuid_subject_and_garbage_are_rejected() {
    let mut claims = claims();
    claims.sub = "auth0|abc.*".into();
    assert_eq!(hs_verifier().verify(&issue_hs256(SECRET, &claims)).await, Err(AuthError::InvalidSubject));
    assert_eq!(hs_verifier().verify("not a jwt").await, Err(AuthError::Malformed));
}

#[test]
fn errors_never_echo_the_token() {
    let token = issue_hs256(SECRET, &claims());
    let errors = [
        AuthError::Malformed,
        AuthError::BadSignature,
        AuthError::Expired,
        AuthError::UnknownKey,
        AuthError::AlgorithmNotAllowed(Algorithm::HS256),
    ];
    for error in errors {
        let text = format!("{error} {error:?}");
        for part in token.split('.') {
            assert!(!text.contains(part), "{text} leaks the token");
        }
    }
}

/// A JWKS endpoint whose key set the test can rotate, counting the fetches it serves.
struct JwksServer {
    url: String,
    keys: Arc<RwLock<JwkSet>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(keys: Vec<Jwk>) -> Self {
        #[handler]
        async fn jwks(keys: Data<&Arc<RwLock<JwkSet>>>, fetches: Data<&Arc<AtomicUsize>>) -> Json<JwkSet> {
            fetches.fetch_add(1, Ordering::SeqCst);
            Json(keys.read().await.clone())
        }
        let keys = Arc::new(RwLock::new(JwkSet { keys }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.expect("bind");
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().expect("tcp address");
        let app = Route::new().at("/jwks.json", get(jwks)).data(keys.clone()).data(fetches.clone());
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Self { url: format!("http://{addr}/jwks.json"), keys, fetches }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn verifier(&self, min_refetch: Duration) -> Verifier {
        let mut args = AuthArgs::with_secret("unused");
        args.jwks_url = Some(self.url.clone());
        args.jwks_min_refetch = min_refetch;
        args.build().expect("verifier")
    }
}

fn rsa_jwk(kid: &str, private: &EncodingKey) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(private, Algorithm::RS256).expect("jwk");
    jwk.common.key_id = Some(kid.into());
    jwk
}

#[tokio::test]
async fn valid_rs256_token_verifies_through_a_jwks() {
    let server = JwksServer::start(vec![rsa_jwk("k1", &rsa_key())]).await;
    let verifier = server.verifier(Duration::from_secs(30));
    let token = sign(Algorithm::RS256, &rsa_key(), Some("k1"), &claims());
    assert_eq!(verifier.verify(&token).await.map(|id| id.user_id.to_string()), Ok(USER.into()));
    assert_eq!(verifier.verify(&token).await.map(|id| id.user_id.to_string()), Ok(USER.into()));
    assert_eq!(server.fetches(), 1, "the key set is cached");
}

#[tokio::test]
async fn unknown_kid_causes_one_rate_limited_refetch_then_rejection() {
    let server = JwksServer::start(vec![rsa_jwk("k1", &rsa_key())]).await;
    let verifier = server.verifier(Duration::from_secs(30));
    let known = sign(Algorithm::RS256, &rsa_key(), Some("k1"), &claims());
    verifier.verify(&known).await.expect("known kid");
    assert_eq!(server.fetches(), 1);

    // Outside the refetch interval an unknown kid triggers exactly one refetch…
    let verifier = server.verifier(Duration::ZERO);
    verifier.verify(&known).await.expect("known kid");
    let before = server.fetches();
    let unknown = sign(Algorithm::RS256, &rsa_key(), Some("k-unknown"), &claims());
    assert_eq!(verifier.verify(&unknown).await, Err(AuthError::UnknownKey));
    assert_eq!(server.fetches(), before + 1, "one refetch for an unknown kid");

    // …and inside it, none at all, however many arrive.
    let limited = server.verifier(Duration::from_secs(30));
    limited.verify(&known).await.expect("known kid");
    let before = server.fetches();
    for _ in 0..20 {
        assert_eq!(limited.verify(&unknown).await, Err(AuthError::UnknownKey));
    }
    assert_eq!(server.fetches(), before, "refetches are rate-limited");
}

#[tokio::test]
async fn rotated_key_is_picked_up_by_the_refetch() {
    let server = JwksServer::start(vec![rsa_jwk("k1", &rsa_key())]).await;
    let verifier = server.verifier(Duration::ZERO);
    verifier.verify(&sign(Algorithm::RS256, &rsa_key(), Some("k1"), &claims())).await.expect("k1");

    let rotated = EncodingKey::from_rsa_pem(RSA_OTHER_PRIVATE).expect("rsa key");
    server.keys.write().await.keys.push(rsa_jwk("k2", &rotated));
    let token = sign(Algorithm::RS256, &rotated, Some("k2"), &claims());
    assert!(verifier.verify(&token).await.is_ok(), "k2 found after one refetch");
}

#[tokio::test]
async fn hs256_token_is_refused_by_a_jwks_verifier() {
    let server = JwksServer::start(vec![rsa_jwk("k1", &rsa_key())]).await;
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(RSA_PUBLIC), Some("k1"), &claims());
    assert_eq!(
        server.verifier(Duration::from_secs(30)).verify(&forged).await,
        Err(AuthError::AlgorithmNotAllowed(Algorithm::HS256))
    );
}

#[tokio::test]
async fn unreachable_jwks_is_reported_as_unavailable_keys() {
    let mut args = AuthArgs::with_secret("unused");
    args.jwks_url = Some("http://127.0.0.1:9/jwks.json".into());
    let token = sign(Algorithm::RS256, &rsa_key(), Some("k1"), &claims());
    assert_eq!(args.build().expect("verifier").verify(&token).await, Err(AuthError::KeysUnavailable));
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An HS256 token with a header written by hand (jsonwebtoken's `Header` cannot carry `crit`).
fn sign_with_raw_header(header: serde_json::Value) -> String {
    use base64::Engine as _;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let claims = serde_json::to_vec(&claims()).expect("claims");
    let message = format!("{}.{}", encode(&serde_json::to_vec(&header).expect("header")), encode(&claims));
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("sign");
    format!("{message}.{signature}")
}

#[tokio::test]
async fn a_critical_extension_is_refused() {
    let verifier = hs_verifier();
    let plain = sign_with_raw_header(serde_json::json!({ "alg": "HS256", "typ": "JWT" }));
    verifier.verify(&plain).await.expect("the same token without crit is valid");
    let critical =
        sign_with_raw_header(serde_json::json!({ "alg": "HS256", "typ": "JWT", "crit": ["exp2"], "exp2": 1 }));
    assert!(matches!(verifier.verify(&critical).await, Err(AuthError::UnsupportedCritical(_))));
}

#[tokio::test]
async fn only_access_token_types_are_accepted() {
    let verifier = hs_verifier();
    for typ in [None, Some("JWT"), Some("jwt"), Some("at+jwt"), Some("application/at+JWT")] {
        let mut header = serde_json::json!({ "alg": "HS256" });
        if let Some(typ) = typ {
            header["typ"] = typ.into();
        }
        verifier.verify(&sign_with_raw_header(header)).await.unwrap_or_else(|error| panic!("{typ:?}: {error}"));
    }
    for typ in ["refresh+jwt", "logout+jwt", "secevent+jwt"] {
        let token = sign_with_raw_header(serde_json::json!({ "alg": "HS256", "typ": typ }));
        assert!(matches!(verifier.verify(&token).await, Err(AuthError::WrongType(_))), "{typ}");
    }
    let mut args = AuthArgs::with_secret(SECRET);
    args.jwt_allowed_types = vec!["refresh+jwt".into()];
    let permissive = args.build().expect("verifier");
    let token = sign_with_raw_header(serde_json::json!({ "alg": "HS256", "typ": "refresh+jwt" }));
    permissive.verify(&token).await.expect("a configured type is accepted");
}

#[tokio::test]
async fn a_subscription_token_grants_its_channel_and_is_no_access_token() {
    let verifier = hs_verifier();
    let token = issue_hs256(SECRET, &Claims { channel: Some("granted:b-42".into()), ..claims() });
    let grant = verifier.verify_subscription(&token).await.expect("valid");
    assert_eq!((grant.user_id.to_string().as_str(), grant.channel.as_str()), (USER, "granted:b-42"));
    assert_eq!(verifier.verify(&token).await, Err(AuthError::WrongType("subscription token".into())));
    let access = issue_hs256(SECRET, &Claims { channels: vec!["granted:*".into()], ..claims() });
    assert_eq!(verifier.verify_subscription(&access).await, Err(AuthError::MissingClaim("channel".into())));
    assert_eq!(verifier.verify(&access).await.expect("valid").channels, ["granted:*"]);
    let expired = Claims { channel: Some("granted:b-42".into()), exp: Utc::now().timestamp() - 600, ..claims() };
    assert_eq!(verifier.verify_subscription(&issue_hs256(SECRET, &expired)).await, Err(AuthError::Expired));
}
