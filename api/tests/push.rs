//! Push to devices, against real local HTTP receivers standing in for the providers: an
//! Expo-compatible endpoint, a Web Push endpoint that decrypts the payload with the
//! subscription's private key and checks the VAPID JWT, and a webhook receiver that verifies
//! the Standard Webhooks signature.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use parley_testkit::rest::{User, unlimited_writes};
use parley_testkit::ws::WsClient;
use parley_testkit::{AppProcess, Binary, TestContext};
use poem::web::{Data, Path};
use poem::{EndpointExt, IntoResponse, Request, Response, Route, handler, post};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::time::Instant;
use uuid::Uuid;
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ES256KeyPair, ES256PublicKey};
use web_push_native::jwt_simple::claims::NoCustomClaims;
use web_push_native::jwt_simple::common::VerificationOptions;
use web_push_native::p256;

const SERVER_KEY: &str = "push-test-server-key-0123456789";
/// Two webhook secrets (a rotation in progress); the receiver knows only the new one.
const OLD_SECRET: &str = "whsec_b2xkLXNlY3JldC1vZi10aGlydHktdHdvLWJ5dGVzISE=";
const NEW_SECRET: &str = "whsec_bmV3LXNlY3JldC1vZi10aGlydHktdHdvLWJ5dGVzISE=";
const AUTH_SECRET: [u8; 16] = *b"sixteen-byte-key";

/// One push as a receiver got it.
#[derive(Clone, Debug)]
struct Received {
    provider: &'static str,
    push_id: String,
    body: Value,
}

/// The stand-in providers' shared state.
#[derive(Default)]
struct Receiver {
    received: Mutex<Vec<Received>>,
    /// Requests refused with 503 while down.
    refused: AtomicU64,
    down: AtomicBool,
    /// Each request waits this long before it is answered (it is recorded on arrival).
    delay_ms: AtomicU64,
    /// Expo tokens that are "not registered".
    gone: Mutex<HashSet<String>>,
    /// Web Push subscriptions by id: their private key.
    subscriptions: Mutex<HashMap<String, p256::SecretKey>>,
    vapid_public: Mutex<String>,
    /// Requests that failed verification (bad signature, bad VAPID JWT, undecryptable).
    forged: Mutex<Vec<String>>,
}

impl Receiver {
    fn all(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    fn forged(&self) -> Vec<String> {
        self.forged.lock().expect("lock").clone()
    }

    async fn answer_after_delay(&self) -> Option<Response> {
        tokio::time::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))).await;
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Some(Response::builder().status(poem::http::StatusCode::SERVICE_UNAVAILABLE).finish());
        }
        None
    }

    fn record(&self, provider: &'static str, push_id: String, body: Value) {
        self.received.lock().expect("lock").push(Received { provider, push_id, body });
    }
}

#[handler]
async fn expo(Data(receiver): Data<&Arc<Receiver>>, body: poem::web::Json<Vec<Value>>) -> Response {
    if let Some(refused) = receiver.answer_after_delay().await {
        return refused;
    }
    let gone = receiver.gone.lock().expect("lock").clone();
    let tickets: Vec<Value> = body
        .0
        .iter()
        .map(|message| {
            receiver.record(
                "expo",
                message["data"]["push_id"].as_str().unwrap_or_default().to_owned(),
                message.clone(),
            );
            if gone.contains(message["to"].as_str().unwrap_or_default()) {
                json!({ "status": "error", "message": "not registered", "details": { "error": "DeviceNotRegistered" } })
            } else {
                json!({ "status": "ok", "id": Uuid::new_v4() })
            }
        })
        .collect();
    poem::web::Json(json!({ "data": tickets })).into_response()
}

#[handler]
async fn webhook(Data(receiver): Data<&Arc<Receiver>>, request: &Request, body: Vec<u8>) -> Response {
    let header = |name: &str| request.header(name).unwrap_or_default().to_owned();
    let (id, timestamp, signatures) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let key = STANDARD.decode(NEW_SECRET.trim_start_matches("whsec_")).expect("secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let fresh = timestamp.parse::<i64>().is_ok_and(|at| (chrono::Utc::now().timestamp() - at).abs() < 300);
    if !signatures.split(' ').any(|signature| signature == expected) || !fresh {
        receiver.forged.lock().expect("lock").push(format!("webhook {id}: {signatures}"));
        return Response::builder().status(poem::http::StatusCode::UNAUTHORIZED).finish();
    }
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["push_id"].as_str(), Some(id.as_str()), "webhook-id is the push id");
    receiver.record("webhook", id, body);
    receiver
        .answer_after_delay()
        .await
        .unwrap_or_else(|| Response::builder().status(poem::http::StatusCode::NO_CONTENT).finish())
}

#[handler]
async fn webpush(
    Data(receiver): Data<&Arc<Receiver>>,
    Path(id): Path<String>,
    request: &Request,
    body: Vec<u8>,
) -> Response {
    let authorization = request.header("authorization").unwrap_or_default().to_owned();
    let verified = verify_vapid(&authorization, &receiver.vapid_public.lock().expect("lock"));
    let secret = receiver.subscriptions.lock().expect("lock").get(&id).cloned();
    let mut auth = web_push_native::Auth::default();
    auth.copy_from_slice(&AUTH_SECRET);
    let decrypted = secret.and_then(|secret| web_push_native::decrypt(body, &secret, &auth).ok());
    let encoding = request.header("content-encoding").unwrap_or_default();
    match (verified, decrypted) {
        (Ok(()), Some(plain)) if encoding == "aes128gcm" => {
            let payload: Value = serde_json::from_slice(&plain).expect("the payload is JSON");
            receiver.record("webpush", payload["push_id"].as_str().unwrap_or_default().to_owned(), payload);
            Response::builder().status(poem::http::StatusCode::CREATED).finish()
        }
        (verified, decrypted) => {
            receiver
                .forged
                .lock()
                .expect("lock")
                .push(format!("webpush {id}: {verified:?}, decrypted: {}", decrypted.is_some()));
            Response::builder().status(poem::http::StatusCode::BAD_REQUEST).finish()
        }
    }
}

/// `vapid t=<JWT>, k=<key>`: the key is the server's, the JWT is signed by it, for this origin.
fn verify_vapid(authorization: &str, expected_key: &str) -> Result<(), String> {
    let rest = authorization.strip_prefix("vapid ").ok_or("not a vapid authorization")?;
    let part = |name: &str| rest.split(", ").find_map(|part| part.strip_prefix(name)).map(str::to_owned);
    let (token, key) = (part("t=").ok_or("no t=")?, part("k=").ok_or("no k=")?);
    if key != expected_key {
        return Err("another server's key".into());
    }
    let key = ES256PublicKey::from_bytes(&URL_SAFE_NO_PAD.decode(&key).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let options = VerificationOptions {
        allowed_audiences: Some(HashSet::from(["http://127.0.0.1".to_owned()])),
        ..Default::default()
    };
    let claims = key.verify_token::<NoCustomClaims>(&token, Some(options)).map_err(|e| e.to_string())?;
    (claims.subject.as_deref() == Some("mailto:push-test@example.com"))
        .then_some(())
        .ok_or_else(|| "wrong subject".into())
}

struct Stack {
    ctx: TestContext,
    api: AppProcess,
    broker: AppProcess,
    receiver: Arc<Receiver>,
    receiver_url: String,
    api_env: Vec<(String, String)>,
}

impl Stack {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let receiver = Arc::new(Receiver::default());
        let port = parley_testkit::wait::free_port().expect("free port");
        let app = Route::new()
            .at("/expo", post(expo))
            .at("/webhook", post(webhook))
            .at("/webpush/:id", post(webpush))
            .data(receiver.clone());
        let listener = poem::listener::TcpListener::bind(format!("127.0.0.1:{port}"));
        tokio::spawn(poem::Server::new(listener).run(app));
        let receiver_url = format!("http://127.0.0.1:{port}");
        let vapid = ES256KeyPair::generate();
        *receiver.vapid_public.lock().expect("lock") =
            URL_SAFE_NO_PAD.encode(vapid.public_key().public_key().to_bytes_uncompressed());
        let ctx = TestContext::start().await;
        let mut api_env = unlimited_writes();
        let settings = [
            ("PARLEY_SERVER_API_KEYS", SERVER_KEY.to_owned()),
            ("PARLEY_EXPO_PUSH_URL", format!("{receiver_url}/expo")),
            ("PARLEY_PUSH_WEBHOOK_URL", format!("{receiver_url}/webhook")),
            ("PARLEY_PUSH_WEBHOOK_SECRETS", format!("{OLD_SECRET},{NEW_SECRET}")),
            ("PARLEY_VAPID_PRIVATE_KEY", URL_SAFE_NO_PAD.encode(vapid.to_bytes())),
            ("PARLEY_VAPID_SUBJECT", "mailto:push-test@example.com".to_owned()),
            ("PARLEY_PUSH_ALLOW_PRIVATE_ENDPOINTS", "true".to_owned()),
            ("PARLEY_PUSH_GRACE_DELAY", "2s".to_owned()),
            ("PARLEY_PUSH_TIMEOUT", "5s".to_owned()),
        ];
        api_env.extend(settings.into_iter().map(|(key, value)| (key.to_owned(), value)));
        api_env.extend(extra.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())));
        let api = ctx.spawn(Binary::Api, api_env.clone()).await;
        let broker = ctx.spawn(Binary::Broker, Vec::new()).await;
        Self { ctx, api, broker, receiver, receiver_url, api_env }
    }

    fn user(&self, name: &str) -> User {
        User::new(&self.ctx, &self.api.url(), name)
    }

    async fn online(&self, user: &User, name: &str) -> WsClient {
        let url = format!("{}/ws", self.broker.url().replace("http://", "ws://"));
        let client = WsClient::connect(&url, &self.ctx.token(user.id, name)).await;
        let presence = format!("/v1/users/{}/presence", user.uuid());
        let online = parley_testkit::wait::until("the user to be online", Duration::from_secs(5), || async {
            (user.get(&presence).await.expect(200)["status"] == "online").then_some(())
        });
        online.await.expect("online");
        client
    }

    /// A backend's notification for `user`.
    async fn notify(&self, user: &User, priority: &str, title: &str) -> Value {
        let backend = User::anonymous(&self.api.url());
        let path = format!("/v1/users/{}/notifications", user.uuid());
        backend
            .post_with_header(&path, ("X-API-Key", SERVER_KEY), json!({ "priority": priority, "title": title }))
            .await
            .expect(201)
    }

    /// Waits up to `limit` for pushes matching `wanted`; all of them, when any.
    async fn pushes_within(&self, limit: Duration, wanted: impl Fn(&Received) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let found: Vec<Received> = self.receiver.all().into_iter().filter(&wanted).collect();
            if !found.is_empty() || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn titled(title: &str) -> impl Fn(&Received) -> bool + '_ {
    move |push| push.body["title"] == title
}

fn mentions(conversation: Uuid, user: &User, text: &str) -> (String, Value) {
    (format!("/v1/conversations/{conversation}/messages"), json!({ "text": text, "mentions": [user.uuid()] }))
}

async fn register(user: &User, target: Value) -> Value {
    user.post("/v1/me/push-targets", target).await.expect(201)
}

#[tokio::test]
async fn offline_users_are_pushed_at_once_connected_ones_only_when_unread_after_the_grace_delay() {
    let stack = Stack::start(&[]).await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let group = alice.group("rides", &[&bob]).await;
    register(&bob, json!({ "kind": "expo", "token": "ExponentPushToken[bob-phone]" })).await;
    let started = Instant::now();

    // Offline: at once.
    let (path, body) = mentions(group, &bob, "offline ping");
    let sent = alice.post(&path, body).await.expect(201);
    let pushed = stack.pushes_within(Duration::from_secs(5), |push| push.body["body"] == "offline ping").await;
    assert!(started.elapsed() < Duration::from_secs(3), "pushed {:?} after the mention", started.elapsed());
    let push = &pushed[0].body;
    assert_eq!(
        (push["to"].as_str(), push["title"].as_str()),
        (Some("ExponentPushToken[bob-phone]"), Some("alice mentioned you"))
    );
    assert_eq!(push["data"]["data"]["message_id"], sent["id"]);
    assert_eq!(push["badge"], 2, "added to the group, then mentioned: two unread");

    // Connected: a mention read within the grace delay is never pushed...
    let _bob_online = stack.online(&bob, "bob").await;
    let (path, body) = mentions(group, &bob, "read in time");
    alice.post(&path, body).await.expect(201);
    let unread = bob.get("/v1/me/notifications?status=unread").await.expect(200);
    let id = unread["items"][0]["id"].as_str().expect("id").to_owned();
    bob.post(&format!("/v1/me/notifications/{id}/read"), json!({})).await.expect(200);
    // ... one left unread is pushed once the grace delay (2 s) is over ...
    let (path, body) = mentions(group, &bob, "left unread");
    let mentioned = Instant::now();
    alice.post(&path, body).await.expect(201);
    let late = stack.pushes_within(Duration::from_secs(8), |push| push.body["body"] == "left unread").await;
    assert!(!late.is_empty(), "an unread notification is pushed after the grace delay");
    assert!(
        mentioned.elapsed() >= Duration::from_millis(1900),
        "pushed after {:?}, before the grace delay",
        mentioned.elapsed()
    );
    assert!(stack.receiver.all().iter().all(|push| push.body["body"] != "read in time"));
    // ... and high priority does not wait.
    let urgent = Instant::now();
    stack.notify(&bob, "high", "Your driver is here").await;
    assert!(!stack.pushes_within(Duration::from_secs(5), titled("Your driver is here")).await.is_empty());
    assert!(urgent.elapsed() < Duration::from_millis(1500), "high priority pushed after {:?}", urgent.elapsed());

    // A muted conversation is never pushed; others still are.
    let settings = format!("/v1/conversations/{group}/settings");
    let muted = bob.put(&settings, json!({ "muted_until": "2100-01-01T00:00:00Z" })).await.expect(200);
    let year_2100 =
        |settings: &Value| settings["muted_until"].as_str().is_some_and(|at| at.starts_with("2100-01-01T00:00:00"));
    assert!(year_2100(&muted), "{muted}");
    assert!(year_2100(&bob.get(&settings).await.expect(200)));
    drop(_bob_online);
    let (path, body) = mentions(group, &bob, "muted");
    alice.post(&path, body).await.expect(201);
    stack.notify(&bob, "normal", "after the muted one").await;
    assert!(!stack.pushes_within(Duration::from_secs(8), titled("after the muted one")).await.is_empty());
    assert!(stack.receiver.all().iter().all(|push| push.body["body"] != "muted"), "a muted conversation was pushed");
    assert_eq!(stack.receiver.forged(), Vec::<String>::new());
}

#[tokio::test]
async fn an_unregistered_device_is_removed_and_a_receiver_that_was_down_gets_its_signed_push_when_back() {
    let stack = Stack::start(&[]).await;
    let (alice, carol) = (stack.user("alice"), stack.user("carol"));
    let group = alice.group("garden", &[&carol]).await;
    stack.receiver.gone.lock().expect("lock").insert("ExponentPushToken[old-phone]".into());
    register(&carol, json!({ "kind": "expo", "token": "ExponentPushToken[old-phone]" })).await;
    register(&carol, json!({ "kind": "webhook", "device_id": "carol-laptop" })).await;

    let (path, body) = mentions(group, &carol, "first");
    alice.post(&path, body).await.expect(201);
    let signed = stack.pushes_within(Duration::from_secs(5), |push| push.provider == "webhook").await;
    let push = &signed[0].body;
    assert_eq!(
        (push["device_id"].as_str(), push["notification"]["body"].as_str()),
        (Some("carol-laptop"), Some("first"))
    );
    let targets = parley_testkit::wait::until("the gone device to be removed", Duration::from_secs(5), || async {
        let listed = carol.get("/v1/me/push-targets").await.expect(200);
        let kinds: Vec<Value> = listed["items"].as_array().expect("items").iter().map(|t| t["kind"].clone()).collect();
        (kinds == [json!("webhook")]).then_some(())
    });
    targets.await.expect("DeviceNotRegistered removes the target");

    // The receiver is down for 30 s: the push is retried, with the same id, and arrives after
    // (retries back off 1, 2, 4, 8, 16 s with jitter: the next comes within 32 s of its return).
    stack.receiver.down.store(true, Ordering::SeqCst);
    let (path, body) = mentions(group, &carol, "while down");
    alice.post(&path, body).await.expect(201);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let refused_while_down = stack.receiver.refused.load(Ordering::SeqCst);
    assert!(refused_while_down >= 4, "retried while down ({refused_while_down} attempts)");
    stack.receiver.down.store(false, Ordering::SeqCst);
    let attempts = stack
        .pushes_within(Duration::from_secs(40), |push| {
            push.body["notification"]["body"] == "while down" && !stack.receiver.down.load(Ordering::SeqCst)
        })
        .await;
    assert!(!attempts.is_empty(), "delivered after the receiver came back");
    let ids: HashSet<String> = stack
        .receiver
        .all()
        .into_iter()
        .filter(|push| push.body["notification"]["body"] == "while down")
        .map(|push| push.push_id)
        .collect();
    assert_eq!(ids.len(), 1, "every attempt carries the same push id");
    assert_eq!(stack.receiver.forged(), Vec::<String>::new());
}

#[tokio::test]
async fn web_push_is_encrypted_for_the_subscription_and_signed_with_vapid_and_bad_targets_are_refused() {
    let stack = Stack::start(&[("PARLEY_PUSH_TARGETS_PER_USER", "3")]).await;
    let (alice, dave) = (stack.user("alice"), stack.user("dave"));
    let group = alice.group("book club", &[&dave]).await;
    let setup = dave.get("/v1/push/config").await.expect(200);
    assert_eq!(setup["vapid_public_key"].as_str(), Some(stack.receiver.vapid_public.lock().expect("lock").as_str()));
    assert_eq!(setup["kinds"], json!(["expo", "webpush", "webhook"]));

    let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    stack.receiver.subscriptions.lock().expect("lock").insert("dave".into(), secret.clone());
    let p256dh = URL_SAFE_NO_PAD.encode(secret.public_key().to_sec1_bytes());
    let subscription = |endpoint: &str, p256dh: &str, auth: &str| json!({ "kind": "webpush", "subscription": { "endpoint": endpoint, "keys": { "p256dh": p256dh, "auth": auth } } });
    let auth = URL_SAFE_NO_PAD.encode(AUTH_SECRET);
    let endpoint = format!("{}/webpush/dave", stack.receiver_url);
    register(&dave, subscription(&endpoint, &p256dh, &auth)).await;
    dave.post("/v1/me/push-targets", subscription(&endpoint, &p256dh, &auth)).await.expect(200);

    let (path, body) = mentions(group, &dave, "are we reading Dune?");
    alice.post(&path, body).await.expect(201);
    let pushed = stack.pushes_within(Duration::from_secs(5), |push| push.provider == "webpush").await;
    assert_eq!(stack.receiver.forged(), Vec::<String>::new());
    let payload = &pushed.first().expect("a Web Push arrived").body;
    assert_eq!(
        (payload["title"].as_str(), payload["body"].as_str()),
        (Some("alice mentioned you"), Some("are we reading Dune?"))
    );
    assert!(Uuid::parse_str(payload["push_id"].as_str().unwrap_or_default()).is_ok());

    // Bad input names its field; nothing is stored.
    let refused = |reply: parley_testkit::rest::Reply| reply.expect_problem(400, "validation_failed")["field"].clone();
    let post = |body: Value| dave.post("/v1/me/push-targets", body);
    assert_eq!(refused(post(subscription(&endpoint, "AAAA", &auth)).await), "subscription.keys.p256dh");
    assert_eq!(refused(post(subscription(&endpoint, &p256dh, "c2hvcnQ")).await), "subscription.keys.auth");
    assert_eq!(refused(post(subscription("ftp://push.example/x", &p256dh, &auth)).await), "subscription.endpoint");
    assert_eq!(refused(post(json!({ "kind": "expo", "token": "not-a-token" })).await), "token");
    assert_eq!(refused(post(json!({ "kind": "pager", "number": "555" })).await), "kind");
    // At most 3 targets.
    register(&dave, json!({ "kind": "expo", "token": "ExponentPushToken[a]" })).await;
    register(&dave, json!({ "kind": "webhook", "device_id": "tablet" })).await;
    post(json!({ "kind": "expo", "token": "ExponentPushToken[b]" })).await.expect_problem(409, "too_many_push_targets");
    let listed = dave.get("/v1/me/push-targets").await.expect(200);
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(3));
    let id = listed["items"][0]["id"].as_str().expect("id");
    dave.delete(&format!("/v1/me/push-targets/{id}")).await.expect(204);
    stack.user("mallory").delete(&format!("/v1/me/push-targets/{id}")).await.expect_problem(404, "not_found");
}

#[tokio::test]
async fn the_dispatching_api_killed_mid_batch_leaves_every_push_to_the_next_one_with_the_same_ids() {
    let mut stack = Stack::start(&[]).await;
    let erin = stack.user("erin");
    register(&erin, json!({ "kind": "webhook", "device_id": "erin-phone" })).await;
    // Slow answers keep a batch in flight when the dispatcher dies.
    stack.receiver.delay_ms.store(3_000, Ordering::SeqCst);
    let mut titles = Vec::new();
    for n in 0..20 {
        let title = format!("order {n} shipped");
        stack.notify(&erin, "high", &title).await;
        titles.push(title);
    }
    let arrived = stack.pushes_within(Duration::from_secs(10), |push| push.provider == "webhook").await;
    assert!(!arrived.is_empty(), "the first pushes reached the receiver");
    stack.api.kill();
    stack.receiver.delay_ms.store(0, Ordering::SeqCst);
    let _next = stack.ctx.spawn(Binary::Api, stack.api_env.clone()).await;

    let all_pushed =
        parley_testkit::wait::until("every notification to be pushed", Duration::from_secs(40), || async {
            let titles_pushed: HashSet<String> = stack
                .receiver
                .all()
                .iter()
                .filter_map(|push| push.body["notification"]["title"].as_str().map(str::to_owned))
                .collect();
            titles.iter().all(|title| titles_pushed.contains(title)).then_some(())
        });
    all_pushed.await.expect("every notification pushed at least once after the kill");
    let mut ids_by_notification: HashMap<String, HashSet<String>> = HashMap::new();
    for push in stack.receiver.all() {
        let notification = push.body["notification"]["id"].as_str().unwrap_or_default().to_owned();
        ids_by_notification.entry(notification).or_default().insert(push.push_id);
    }
    assert!(
        ids_by_notification.values().all(|ids| ids.len() == 1),
        "a repeated push carries its first id: {ids_by_notification:?}"
    );
    // Those in flight at the kill were sent again by the next dispatcher.
    assert!(stack.receiver.all().len() > titles.len(), "the kill left no push in flight: the test proves nothing");
}
