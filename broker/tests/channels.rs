//! Application channels end to end, on the real binaries: backends publish with a server API key
//! (or on NATS), brokers fan out to subscribers (anonymous ones on public channels), durable
//! channels recover exactly what a subscriber missed or say they cannot.

mod common;

use std::time::Duration;

use futures_util::SinkExt;
use parley_shared::auth::{Claims, issue_hs256};
use parley_testkit::rest::{Reply, User};
use parley_testkit::ws::{WsClient, open};
use parley_testkit::{AppProcess, Binary, TEST_JWT_SECRET, TestContext};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEY: &str = "server-key-one-0123456789abcdef";
const NEXT_KEY: &str = "server-key-two-0123456789abcdef";

/// `public`, `live`, `granted` as by default, plus `brief` (history of 5) and `chat` (clients
/// publish, ephemeral).
const NAMESPACES: &str = r#"
[namespace.public]
subscribe = "public"
delivery = "durable"

[namespace.live]
subscribe = "public"
delivery = "ephemeral"

[namespace.granted]
subscribe = "granted"
delivery = "durable"

[namespace.brief]
subscribe = "public"
delivery = "durable"
history_size = 5

[namespace.chat]
subscribe = "authenticated"
delivery = "ephemeral"
client_publish = true
client_publish_per_second = 2
"#;

/// How long a listener that must receive nothing listens.
const QUIET: Duration = Duration::from_millis(800);

struct Channels {
    ctx: TestContext,
    api: AppProcess,
    brokers: Vec<AppProcess>,
    http: reqwest::Client,
}

impl Channels {
    async fn start(brokers: usize) -> Self {
        Self::on(TestContext::start().await, brokers).await
    }

    async fn on(ctx: TestContext, brokers: usize) -> Self {
        let config = ctx.dir().join("channels.toml");
        std::fs::write(&config, NAMESPACES).expect("write the channels config");
        let config = config.to_string_lossy().into_owned();
        let api_env = common::env(&[
            ("PARLEY_SERVER_API_KEYS", &format!("{KEY}, {NEXT_KEY}")),
            ("PARLEY_CHANNELS_CONFIG", &config),
        ]);
        let api = ctx.spawn(Binary::Api, [parley_testkit::rest::unlimited_writes(), api_env].concat()).await;
        let broker_env = common::env(&[
            ("PARLEY_CHANNELS_CONFIG", &config),
            ("PARLEY_BROKER_ALLOW_ANONYMOUS", "true"),
            ("PARLEY_BROKER_MAX_SUBSCRIPTIONS", "3"),
        ]);
        let mut started = Vec::new();
        for _ in 0..brokers {
            started.push(ctx.spawn(Binary::Broker, broker_env.clone()).await);
        }
        Self { ctx, api, brokers: started, http: reqwest::Client::new() }
    }

    fn ws_url(&self, broker: usize) -> String {
        format!("{}/ws", self.brokers[broker].url().replace("http://", "ws://"))
    }

    /// A backend's publish, with `key` in `X-API-Key`.
    async fn publish_with(&self, key: &str, channel: &str, data: Value, idempotency_key: Option<&str>) -> Reply {
        let mut request = self
            .http
            .post(format!("{}/v1/channels/{channel}/publications", self.api.url()))
            .header("X-API-Key", key)
            .json(&json!({ "data": data }));
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        reply(request).await
    }

    async fn publish(&self, channel: &str, data: Value) -> Value {
        self.publish_with(KEY, channel, data, None).await.expect(202)
    }

    async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        let mut request = self.http.get(format!("{}{path}", self.api.url()));
        if let Some(key) = key {
            request = request.header("Authorization", format!("ApiKey {key}"));
        }
        reply(request).await
    }

    fn user(&self, name: &str) -> User {
        User::new(&self.ctx, &self.api.url(), name)
    }

    async fn connect(&self, broker: usize, token: &str) -> WsClient {
        WsClient::connect(&self.ws_url(broker), token).await
    }

    /// An anonymous connection whose first frame subscribes to `channel`.
    async fn anonymous(&self, broker: usize, channel: &str, since: Option<Value>) -> WsClient {
        let mut stream = open(self.ws_url(broker).into_client_request().expect("URL")).await.expect("handshake");
        let mut frame = json!({ "type": "subscribe", "channel": channel });
        if let Some(since) = since {
            frame["since"] = since;
        }
        stream.send(Message::text(frame.to_string())).await.expect("send");
        let client = WsClient::after_handshake(stream).await;
        assert!(client.hello.get("user_id").is_none(), "anonymous hello: {}", client.hello);
        client
    }
}

async fn reply(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request reaches the API");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = serde_json::from_slice(&response.bytes().await.expect("body")).unwrap_or(Value::Null);
    Reply { status, content_type, headers, body }
}

fn token_with(user: &User, claims: impl FnOnce(Claims) -> Claims) -> String {
    issue_hs256(TEST_JWT_SECRET, &claims(Claims::for_user(user.id, None, Duration::from_secs(3600))))
}

/// Subscribes and returns the `subscribed` frame (panics on anything else first).
async fn subscribe(client: &mut WsClient, frame: Value) -> Value {
    client.send_json(&frame).await;
    let answer = client.next_frame().await.expect("an answer to subscribe");
    assert_eq!(answer["type"], "subscribed", "{answer}");
    answer
}

/// Sends `frame` and returns the `error` frame that must answer it.
async fn refused(client: &mut WsClient, frame: Value) -> Value {
    client.send_json(&frame).await;
    let answer = client.next_frame().await.expect("an answer");
    assert_eq!(answer["type"], "error", "{answer}");
    answer
}

/// The next `publication` frame.
async fn publication(client: &mut WsClient) -> Value {
    let frame = client.next_frame().await.expect("a publication before the timeout");
    assert_eq!(frame["type"], "publication", "{frame}");
    frame
}

/// Asserts nothing arrives for [`QUIET`].
async fn nothing(client: &mut WsClient) {
    if let Some(frame) = client.next_frame_within(QUIET).await {
        panic!("unexpected frame: {frame}");
    }
}

#[tokio::test]
async fn a_backend_publishes_and_anonymous_subscribers_of_public_channels_receive_it_and_nothing_else() {
    let stack = Channels::start(1).await;
    let mut durable = stack.anonymous(0, "public:bounty.b-42", None).await;
    let subscribed = durable.next_frame().await.expect("subscribed");
    assert_eq!(
        (subscribed["type"].as_str(), subscribed["offset"].as_i64()),
        (Some("subscribed"), Some(0)),
        "{subscribed}"
    );
    let mut ephemeral = stack.anonymous(0, "live:scores", None).await;
    assert_eq!(ephemeral.next_frame().await.expect("subscribed")["type"], "subscribed");

    let accepted = stack.publish("public:bounty.b-42", json!({ "bounty_id": "b-42", "status": "accepted" })).await;
    assert_eq!((accepted["channel"].as_str(), accepted["offset"].as_i64()), (Some("public:bounty.b-42"), Some(1)));
    let frame = publication(&mut durable).await;
    assert_eq!(
        frame,
        json!({ "type": "publication", "channel": "public:bounty.b-42", "offset": 1, "epoch": accepted["epoch"], "data": { "bounty_id": "b-42", "status": "accepted" } })
    );
    let live = stack.publish("live:scores", json!({ "home": 2 })).await;
    assert!(live.get("offset").is_none(), "ephemeral publications have no offset: {live}");
    assert_eq!(
        publication(&mut ephemeral).await,
        json!({ "type": "publication", "channel": "live:scores", "data": { "home": 2 } })
    );

    // An anonymous connection may do nothing but subscribe to public channels.
    for channel in ["granted:secret", "user:0191d0c2-6c3e-7f00-8000-00000000a11c"] {
        let error = refused(&mut durable, json!({ "type": "subscribe", "channel": channel })).await;
        assert_eq!((error["code"].as_str(), error["channel"].as_str()), (Some("forbidden"), Some(channel)));
    }
    let error = refused(
        &mut durable,
        json!({ "type": "typing", "conversation_id": "00000000-0000-0000-0000-000000000000", "state": "start" }),
    )
    .await;
    assert_eq!(error["code"], "forbidden");
    stack.publish("granted:secret", json!({ "secret": true })).await;
    stack.publish("public:other", json!({ "other": true })).await;
    nothing(&mut durable).await;
    nothing(&mut ephemeral).await;

    for (frame, code) in [
        (json!({ "type": "subscribe", "channel": "nowhere:x" }), "unknown_namespace"),
        (json!({ "type": "subscribe", "channel": "public:a b" }), "bad_channel"),
        (json!({ "type": "subscribe", "channel": "public:bounty.b-42" }), "already_subscribed"),
        (json!({ "type": "unsubscribe", "channel": "public:never" }), "not_subscribed"),
        (json!({ "type": "publish", "channel": "public:bounty.b-42", "data": 1 }), "forbidden"),
    ] {
        assert_eq!(refused(&mut durable, frame.clone()).await["code"], code, "{frame}");
    }
    // At most 3 subscriptions per connection (PARLEY_BROKER_MAX_SUBSCRIPTIONS).
    for channel in ["public:second", "live:third"] {
        subscribe(&mut durable, json!({ "type": "subscribe", "channel": channel })).await;
    }
    let error = refused(&mut durable, json!({ "type": "subscribe", "channel": "public:fourth" })).await;
    assert_eq!(error["code"], "too_many_subscriptions");
    assert_eq!(durable.hello["limits"]["max_subscriptions"], 3);
    durable.send_json(&json!({ "type": "unsubscribe", "channel": "public:bounty.b-42" })).await;
    assert_eq!(durable.next_frame().await.expect("unsubscribed")["type"], "unsubscribed");
    stack.publish("public:bounty.b-42", json!({ "after": "unsubscribe" })).await;
    nothing(&mut durable).await;

    // Without anonymous connections allowed, the same first frame is a bad token.
    let strict = stack.ctx.spawn(Binary::Broker, Vec::new()).await;
    let url = format!("{}/ws", strict.url().replace("http://", "ws://"));
    let mut stream = open(url.into_client_request().expect("URL")).await.expect("handshake");
    stream.send(Message::text(json!({ "type": "subscribe", "channel": "public:x" }).to_string())).await.expect("send");
    assert_eq!(
        parley_testkit::ws::ended(&mut stream).await,
        parley_testkit::ws::Ended::Closed { code: 4100, reason: "bad_token".into() }
    );
}

#[tokio::test]
async fn a_user_channel_reaches_every_device_of_its_user_across_two_brokers_and_nobody_else() {
    let stack = Channels::start(2).await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let mine = format!("user:{}", alice.id);
    let (alice_token, bob_token) = (stack.ctx.token(alice.id, "alice"), stack.ctx.token(bob.id, "bob"));
    let mut phone = stack.connect(0, &alice_token).await;
    let mut laptop = stack.connect(1, &alice_token).await;
    let mut bob_ws = stack.connect(1, &bob_token).await;
    for device in [&mut phone, &mut laptop] {
        subscribe(device, json!({ "type": "subscribe", "channel": mine })).await;
    }
    assert_eq!(refused(&mut bob_ws, json!({ "type": "subscribe", "channel": mine })).await["code"], "forbidden");
    subscribe(&mut bob_ws, json!({ "type": "subscribe", "channel": format!("user:{}", bob.id) })).await;

    let sent = stack.publish(&mine, json!({ "notification": "your bounty was accepted" })).await;
    for device in [&mut phone, &mut laptop] {
        let frame = publication(device).await;
        assert_eq!(
            (frame["offset"].clone(), frame["data"]["notification"].as_str()),
            (sent["offset"].clone(), Some("your bounty was accepted"))
        );
    }
    nothing(&mut bob_ws).await;

    // Stats: both brokers answer; two connections subscribe.
    let stats = stack.get(&format!("/v1/channels/{mine}"), Some(KEY)).await.expect(200);
    assert_eq!((stats["subscribers"].as_u64(), stats["last_offset"].as_i64()), (Some(2), Some(1)), "{stats}");
    assert!(stats["brokers"].as_u64().is_some_and(|brokers| brokers >= 2), "{stats}");
    // A user reads their own channel's history with their token, not another's.
    alice.get(&format!("/v1/channels/{mine}/publications")).await.expect(200);
    bob.get(&format!("/v1/channels/{mine}/publications")).await.expect_problem(403, "forbidden");
}

#[tokio::test]
async fn granted_channels_by_claim_pattern_and_by_subscription_token_which_ends_only_its_subscription() {
    let stack = Channels::start(1).await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let claimed = token_with(&alice, |claims| Claims { channels: vec!["granted:team-7.*".into()], ..claims });
    let mut alice_ws = stack.connect(0, &claimed).await;
    subscribe(&mut alice_ws, json!({ "type": "subscribe", "channel": "granted:team-7.board" })).await;
    assert_eq!(
        refused(&mut alice_ws, json!({ "type": "subscribe", "channel": "granted:team-8.board" })).await["code"],
        "forbidden"
    );

    let grant = |user: &User, channel: &str, seconds: i64| {
        let claims = Claims {
            channel: Some(channel.into()),
            exp: chrono::Utc::now().timestamp() + seconds,
            ..Claims::for_user(user.id, None, Duration::from_secs(60))
        };
        issue_hs256(TEST_JWT_SECRET, &claims)
    };
    let for_bob = grant(&bob, "granted:team-8.board", 60);
    let error =
        refused(&mut alice_ws, json!({ "type": "subscribe", "channel": "granted:team-8.board", "token": for_bob }))
            .await;
    assert_eq!(error["code"], "forbidden", "another user's subscription token");
    let expired = grant(&alice, "granted:team-8.board", -120);
    let error =
        refused(&mut alice_ws, json!({ "type": "subscribe", "channel": "granted:team-8.board", "token": expired }))
            .await;
    assert_eq!(error["code"], "token_expired");
    let short = grant(&alice, "granted:team-8.board", 3);
    subscribe(&mut alice_ws, json!({ "type": "subscribe", "channel": "granted:team-8.board", "token": short })).await;

    stack.publish("granted:team-8.board", json!({ "n": 1 })).await;
    assert_eq!(publication(&mut alice_ws).await["data"]["n"], 1);
    // The token expires: that subscription ends, the connection and the other one stay.
    let error =
        tokio::time::timeout(Duration::from_secs(10), alice_ws.next_frame()).await.expect("in time").expect("frame");
    assert_eq!(
        (error["code"].as_str(), error["channel"].as_str()),
        (Some("token_expired"), Some("granted:team-8.board")),
        "{error}"
    );
    assert_eq!(alice_ws.next_frame().await.expect("unsubscribed")["type"], "unsubscribed");
    stack.publish("granted:team-8.board", json!({ "n": 2 })).await;
    stack.publish("granted:team-7.board", json!({ "n": 3 })).await;
    let frame = publication(&mut alice_ws).await;
    assert_eq!((frame["channel"].as_str(), frame["data"]["n"].as_i64()), (Some("granted:team-7.board"), Some(3)));

    // A user with no claim and no token gets nothing of a granted channel.
    let mut bob_ws = stack.connect(0, &stack.ctx.token(bob.id, "bob")).await;
    assert_eq!(
        refused(&mut bob_ws, json!({ "type": "subscribe", "channel": "granted:team-7.board" })).await["code"],
        "forbidden"
    );
    stack.publish("granted:team-7.board", json!({ "n": 4 })).await;
    nothing(&mut bob_ws).await;
}

#[tokio::test]
async fn recovery_returns_exactly_what_was_missed_or_says_it_cannot() {
    let stack = Channels::start(1).await;
    let mut last = Value::Null;
    for n in 1..=10 {
        last = stack.publish("public:history", json!({ "n": n })).await;
        stack.publish("brief:history", json!({ "n": n })).await;
    }
    let epoch = last["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(last["offset"], 10);

    let mut client = stack.anonymous(0, "public:history", Some(json!({ "offset": 8, "epoch": epoch }))).await;
    let subscribed = client.next_frame().await.expect("subscribed");
    assert_eq!(
        (subscribed["recovered"].as_bool(), subscribed["offset"].as_i64()),
        (Some(true), Some(10)),
        "{subscribed}"
    );
    let recovered: Vec<i64> = subscribed["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["data"]["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(recovered, [9, 10]);
    stack.publish("public:history", json!({ "n": 11 })).await;
    assert_eq!(publication(&mut client).await["offset"], 11, "live after the recovery, no gap, no repeat");

    // `brief` keeps 5: offset 2 is past its retention. A future offset or another epoch cannot
    // be resumed either. Never some of the publications: none.
    let brief_epoch =
        stack.get("/v1/channels/brief:history/publications?after_offset=9", None).await.expect(200)["epoch"].clone();
    for (channel, since) in [
        ("brief:history", json!({ "offset": 2, "epoch": brief_epoch })),
        ("public:history", json!({ "offset": 50, "epoch": epoch })),
        ("public:history", json!({ "offset": 3, "epoch": "another" })),
    ] {
        let mut client = stack.anonymous(0, channel, Some(since.clone())).await;
        let subscribed = client.next_frame().await.expect("subscribed");
        assert_eq!(subscribed["recovered"], false, "{since}: {subscribed}");
        assert!(subscribed.get("publications").is_none(), "{subscribed}");
    }

    // The same over REST: pages after an offset, 410 past the retention.
    let page = stack.get("/v1/channels/public:history/publications?after_offset=8", None).await.expect(200);
    let offsets: Vec<i64> =
        page["items"].as_array().expect("items").iter().map(|item| item["offset"].as_i64().expect("offset")).collect();
    assert_eq!((offsets, page["last_offset"].as_i64()), (vec![9, 10, 11], Some(11)));
    stack
        .get("/v1/channels/brief:history/publications?after_offset=2", None)
        .await
        .expect_problem(410, "history_pruned");
    stack.get("/v1/channels/live:x/publications", None).await.expect_problem(400, "not_durable");
    stack.get("/v1/channels/granted:x/publications", None).await.expect_problem(401, "unauthorized");
}

#[tokio::test]
async fn one_publication_reaches_a_thousand_channels_and_a_replayed_idempotency_key_publishes_nothing_again() {
    let stack = Channels::start(1).await;
    let channels: Vec<String> =
        (0..1000).map(|n| if n % 2 == 0 { format!("public:c{n}") } else { format!("live:c{n}") }).collect();
    let mut watchers = Vec::new();
    for channel in ["public:c0", "live:c1", "public:c998", "live:c999"] {
        let mut client = stack.anonymous(0, channel, None).await;
        assert_eq!(client.next_frame().await.expect("subscribed")["type"], "subscribed");
        watchers.push(client);
    }
    let body = json!({ "channels": channels, "data": { "announcement": "maintenance at noon" } });
    let request = |key: &str| {
        stack
            .http
            .post(format!("{}/v1/publications", stack.api.url()))
            .header("X-API-Key", KEY)
            .header("Idempotency-Key", key)
            .json(&body)
    };
    let answer = reply(request("broadcast-1")).await.expect(202);
    let publications = answer["publications"].as_array().expect("publications");
    assert_eq!(publications.len(), 1000);
    assert_eq!((publications[0]["channel"].as_str(), publications[0]["offset"].as_i64()), (Some("public:c0"), Some(1)));
    assert!(publications[1].get("offset").is_none());
    for watcher in &mut watchers {
        assert_eq!(publication(watcher).await["data"]["announcement"], "maintenance at noon");
    }
    // The retry answers the same and publishes nothing.
    assert_eq!(reply(request("broadcast-1")).await.expect(202), answer);
    for watcher in &mut watchers {
        nothing(watcher).await;
    }
    let single = stack.publish_with(KEY, "public:c0", json!({ "n": 1 }), Some("single-1")).await.expect(202);
    assert_eq!(
        stack.publish_with(NEXT_KEY, "public:c0", json!({ "n": 1 }), Some("single-1")).await.expect(202),
        single
    );
    stack
        .publish_with(KEY, "public:c0", json!({ "n": 2 }), Some("single-1"))
        .await
        .expect_problem(422, "idempotency_key_reused");
    assert_eq!(publication(&mut watchers[0]).await["offset"], 2);
    nothing(&mut watchers[0]).await;

    let duplicate = json!({ "channels": ["public:a", "public:a"], "data": 1 });
    let response =
        stack.http.post(format!("{}/v1/publications", stack.api.url())).header("X-API-Key", KEY).json(&duplicate);
    reply(response).await.expect_problem(400, "validation_failed");
}

#[tokio::test]
async fn server_keys_rotate_and_every_wrong_credential_or_input_gets_its_problem() {
    let stack = Channels::start(1).await;
    let alice = stack.user("alice");
    stack.publish_with(KEY, "public:k", json!(1), None).await.expect(202);
    stack.publish_with(NEXT_KEY, "public:k", json!(2), None).await.expect(202);
    let authorization = |value: String| {
        stack
            .http
            .post(format!("{}/v1/channels/public:k/publications", stack.api.url()))
            .header("Authorization", value)
            .json(&json!({ "data": 3 }))
    };
    reply(authorization(format!("ApiKey {NEXT_KEY}"))).await.expect(202);
    stack
        .publish_with("server-key-wrong-0123456789abcdef", "public:k", json!(4), None)
        .await
        .expect_problem(401, "unauthorized");
    let user_token = alice.token().expect("token").to_owned();
    reply(authorization(format!("Bearer {user_token}"))).await.expect_problem(401, "unauthorized");
    let no_key =
        stack.http.post(format!("{}/v1/channels/public:k/publications", stack.api.url())).json(&json!({ "data": 5 }));
    reply(no_key).await.expect_problem(401, "unauthorized");
    // A server key is no user: refused on user routes, even beside a valid bearer token.
    let me = stack.http.get(format!("{}/v1/me", stack.api.url())).header("X-API-Key", KEY);
    reply(me).await.expect_problem(401, "unauthorized");
    let both = stack.http.get(format!("{}/v1/me", stack.api.url())).header("X-API-Key", KEY).bearer_auth(&user_token);
    reply(both).await.expect_problem(401, "unauthorized");
    stack.get("/v1/channels/public:k", None).await.expect_problem(401, "unauthorized");

    stack.publish_with(KEY, "nowhere:x", json!(1), None).await.expect_problem(400, "unknown_namespace");
    stack.publish_with(KEY, "public:a*b", json!(1), None).await.expect_problem(400, "validation_failed");
    stack.publish_with(KEY, "user:not-a-uuid", json!(1), None).await.expect_problem(400, "validation_failed");
    let shouted = format!("user:{}", alice.id.to_string().to_uppercase());
    stack.publish_with(KEY, &shouted, json!(1), None).await.expect_problem(400, "validation_failed");
    let big = "x".repeat(70 * 1024);
    stack.publish_with(KEY, "public:k", json!(big), None).await.expect_problem(413, "payload_too_large");
    // Nothing of that reached the channel.
    let page = stack.get("/v1/channels/public:k/publications", None).await.expect(200);
    assert_eq!(page["last_offset"], 3);
}

#[tokio::test]
async fn clients_publish_where_the_namespace_lets_them_and_backends_publish_on_nats() {
    let stack = Channels::start(1).await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let mut alice_ws = stack.connect(0, &stack.ctx.token(alice.id, "alice")).await;
    let mut bob_ws = stack.connect(0, &stack.ctx.token(bob.id, "bob")).await;
    for client in [&mut alice_ws, &mut bob_ws] {
        subscribe(client, json!({ "type": "subscribe", "channel": "chat:lobby" })).await;
    }
    alice_ws.send_json(&json!({ "type": "publish", "channel": "chat:lobby", "data": { "text": "hi" } })).await;
    assert_eq!(alice_ws.next_frame().await.expect("published")["type"], "published");
    assert_eq!(publication(&mut alice_ws).await["data"]["text"], "hi");
    assert_eq!(publication(&mut bob_ws).await["data"]["text"], "hi");
    // Two a second, bursts of four: the fifth at once is refused.
    let mut codes = Vec::new();
    for n in 0..5 {
        alice_ws.send_json(&json!({ "type": "publish", "channel": "chat:lobby", "data": n })).await;
        loop {
            let frame = alice_ws.next_frame().await.expect("answer");
            if frame["type"] != "publication" {
                codes.push(frame["code"].as_str().unwrap_or("published").to_owned());
                break;
            }
        }
    }
    assert_eq!(codes.last().map(String::as_str), Some("rate_limited"), "{codes:?}");

    // A backend on the same NATS.
    let nats = async_nats::connect(stack.ctx.nats_url()).await.expect("NATS");
    let mut watcher = stack.anonymous(0, "public:from-nats", None).await;
    watcher.next_frame().await.expect("subscribed");
    let subject = format!("{}.api.publish", stack.ctx.subjects().prefix());
    let request = json!({ "channel": "public:from-nats", "data": { "via": "nats" }, "idempotency_key": "nats-1" });
    let answer = nats.request(subject.clone(), request.to_string().into()).await.expect("reply");
    let answer: Value = serde_json::from_slice(&answer.payload).expect("json");
    assert_eq!(answer["publications"][0]["offset"], 1, "{answer}");
    assert_eq!(publication(&mut watcher).await["data"]["via"], "nats");
    let bad =
        nats.request(subject, json!({ "channel": "nowhere:x", "data": 1 }).to_string().into()).await.expect("reply");
    let bad: Value = serde_json::from_slice(&bad.payload).expect("json");
    assert_eq!(bad["error"]["code"], "unknown_namespace", "{bad}");
}

#[tokio::test]
async fn durable_publications_accepted_while_nats_is_down_are_delivered_once_in_order_when_it_returns() {
    let mut stack = Channels::on(TestContext::with_own_services().await, 1).await;
    let mut client = stack.anonymous(0, "public:outage", None).await;
    client.next_frame().await.expect("subscribed");
    stack.publish("public:outage", json!({ "n": 0 })).await;
    assert_eq!(publication(&mut client).await["offset"], 1);

    stack.ctx.nats().kill();
    for n in 1..=5 {
        let accepted = stack.publish("public:outage", json!({ "n": n })).await;
        assert_eq!(accepted["offset"], n + 1);
    }
    stack.ctx.nats().start_again().await.expect("restart nats");
    let mut offsets = Vec::new();
    for _ in 0..5 {
        let frame = tokio::time::timeout(Duration::from_secs(30), publication(&mut client)).await.expect("in time");
        offsets.push(frame["offset"].as_i64().expect("offset"));
    }
    assert_eq!(offsets, [2, 3, 4, 5, 6]);
    nothing(&mut client).await;
}
