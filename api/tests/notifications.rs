//! Mentions and the notification inbox: what creates a notification, the REST inbox, and the
//! live frames every device of the user receives through the broker.

use std::time::Duration;

use parley_testkit::rest::{User, unlimited_writes};
use parley_testkit::ws::WsClient;
use parley_testkit::{AppProcess, Binary, TestContext};
use serde_json::{Value, json};
use uuid::Uuid;

const SERVER_KEY: &str = "notifications-test-server-key-0123";

struct Stack {
    ctx: TestContext,
    api: AppProcess,
    broker: AppProcess,
}

impl Stack {
    async fn start() -> Self {
        let ctx = TestContext::start().await;
        let mut api_env = unlimited_writes();
        api_env.push(("PARLEY_SERVER_API_KEYS".into(), SERVER_KEY.into()));
        let api = ctx.spawn(Binary::Api, api_env).await;
        let broker = ctx.spawn(Binary::Broker, Vec::new()).await;
        Self { ctx, api, broker }
    }

    fn user(&self, name: &str) -> User {
        User::new(&self.ctx, &self.api.url(), name)
    }

    async fn device(&self, user: &User, name: &str) -> WsClient {
        let url = format!("{}/ws", self.broker.url().replace("http://", "ws://"));
        WsClient::connect(&url, &self.ctx.token(user.id, name)).await
    }
}

/// The next frame of `kind`, skipping others (presence, events); panics after 10 s.
async fn next_of(device: &mut WsClient, kind: &str) -> Value {
    next_of_any(device, &[kind]).await
}

/// The next frame of one of `kinds`, skipping others; panics after 10 s.
async fn next_of_any(device: &mut WsClient, kinds: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = device.next_frame_within(left).await.unwrap_or_else(|| panic!("no {kinds:?} frame within 10 s"));
        if kinds.iter().any(|kind| frame["type"] == *kind) {
            return frame;
        }
    }
}

fn messages(conversation: Uuid) -> String {
    format!("/v1/conversations/{conversation}/messages")
}

async fn inbox(user: &User, query: &str) -> Value {
    user.get(&format!("/v1/me/notifications{query}")).await.expect(200)
}

#[tokio::test]
async fn a_mention_is_stored_listed_counted_and_sent_to_every_device_and_read_and_clear_reach_them_too() {
    let stack = Stack::start().await;
    let (alice, bob, carol, dave) = (stack.user("alice"), stack.user("bob"), stack.user("carol"), stack.user("dave"));
    dave.get("/v1/me").await.expect(200);
    let group = alice.group("trip", &[&bob, &carol]).await;
    // Bob starts from an empty inbox (being added to the group notified him).
    bob.delete("/v1/me/notifications").await.expect(204);
    let (mut phone, mut laptop) = (stack.device(&bob, "bob").await, stack.device(&bob, "bob").await);

    // Naming someone who is not a member is refused, and nothing is stored; a non-member
    // learns nothing about who is one.
    let refused = alice.post(&messages(group), json!({ "text": "hi", "mentions": [dave.uuid()] })).await;
    assert_eq!(refused.expect_problem(400, "validation_failed")["field"], "mentions");
    for named in [bob.uuid(), dave.uuid()] {
        let probe = dave.post(&messages(group), json!({ "text": "hi", "mentions": [named] })).await;
        probe.expect_problem(404, "not_found");
    }

    let sent = alice
        .post(
            &messages(group),
            json!({ "text": "@bob is the bike still there?", "mentions": [bob.uuid(), bob.uuid()] }),
        )
        .await
        .expect(201);
    assert_eq!(sent["mentions"], json!([bob.uuid()]));
    // The relay publishes events and notification frames side by side: either may come first.
    let (mut event, mut notified) = (None, None);
    while event.is_none() || notified.is_none() {
        let frame = next_of_any(&mut phone, &["event", "notification"]).await;
        if frame["type"] == "notification" {
            notified = Some(frame);
        } else if frame["event"]["type"] == "message.created" {
            event = Some(frame);
        }
    }
    assert_eq!(event.expect("event")["event"]["data"]["mentions"], json!([bob.uuid()]));

    for frame in [notified.expect("on the phone"), next_of(&mut laptop, "notification").await] {
        assert_eq!(frame["notification"]["kind"], "mention");
        assert_eq!(frame["notification"]["title"], "alice mentioned you");
        assert_eq!(frame["notification"]["data"]["message_id"], sent["id"]);
        assert_eq!(frame["unread_count"], 1);
    }
    let listed = inbox(&bob, "").await;
    let items = listed["items"].as_array().expect("items");
    assert_eq!((items.len(), &listed["unread_count"]), (1, &json!(1)));
    let notification = &items[0];
    assert_eq!(notification["body"], "@bob is the bike still there?");
    assert_eq!(notification["data"]["seq"], sent["seq"]);
    assert_eq!(notification["data"]["conversation_id"], json!(group));
    assert_eq!(bob.get("/v1/me").await.expect(200)["unread_notifications"], 1);
    // Neither the author nor a member who was not named hears of it.
    assert_eq!(inbox(&alice, "").await["items"], json!([]));
    assert_eq!(
        inbox(&carol, "").await["items"].as_array().map(|items| items.iter().all(|n| n["kind"] == "added")),
        Some(true)
    );

    // Read on one device: both hear it, the count is 0 everywhere.
    let id = notification["id"].as_str().expect("id");
    let state = bob.post(&format!("/v1/me/notifications/{id}/read"), json!({})).await.expect(200);
    assert_eq!(state["unread_count"], 0);
    for device in [&mut phone, &mut laptop] {
        let frame = next_of(device, "notifications.read").await;
        assert_eq!((frame["id"].as_str(), &frame["unread_count"]), (Some(id), &json!(0)));
    }
    assert_eq!(inbox(&bob, "?status=unread").await["items"], json!([]));
    assert!(inbox(&bob, "").await["items"][0]["read_at"].is_string());
    // Nobody else can read or clear it.
    carol.post(&format!("/v1/me/notifications/{id}/read"), json!({})).await.expect_problem(404, "not_found");
    carol.delete(&format!("/v1/me/notifications/{id}")).await.expect_problem(404, "not_found");

    bob.delete(&format!("/v1/me/notifications/{id}")).await.expect(204);
    for device in [&mut phone, &mut laptop] {
        let frame = next_of(device, "notifications.cleared").await;
        assert_eq!((frame["id"].as_str(), &frame["all"]), (Some(id), &json!(false)));
    }
    assert_eq!(inbox(&bob, "").await["items"], json!([]));
}

#[tokio::test]
async fn replies_new_conversations_additions_and_edits_notify_the_right_users() {
    let stack = Stack::start().await;
    let (alice, bob, carol) = (stack.user("alice"), stack.user("bob"), stack.user("carol"));
    let direct = alice.post("/v1/conversations", json!({ "kind": "direct", "user_id": bob.uuid() })).await.expect(201)
        ["id"]
        .clone();
    let group = alice.group("book club", &[&bob]).await;
    alice.post(&format!("/v1/conversations/{group}/members"), json!({ "user_id": carol.uuid() })).await.expect(201);

    let kinds = |page: &Value| -> Vec<String> {
        page["items"].as_array().expect("items").iter().map(|n| n["kind"].as_str().expect("kind").to_owned()).collect()
    };
    let bobs = inbox(&bob, "").await;
    assert_eq!(kinds(&bobs), ["added", "direct"], "newest first");
    assert_eq!(bobs["items"][0]["body"], "book club");
    assert_eq!(bobs["items"][0]["priority"], "low");
    assert_eq!(bobs["items"][1]["data"]["conversation_id"], direct);
    assert_eq!(kinds(&inbox(&carol, "").await), ["added"]);
    assert_eq!(kinds(&inbox(&alice, "").await), Vec::<String>::new());

    // A reply notifies the replied-to author, once even when also named; not a self-reply.
    let question = alice.say(group, "who has read it?").await;
    let reply = json!({ "text": "me", "reply_to": question["id"], "mentions": [alice.uuid()] });
    bob.post(&messages(group), reply).await.expect(201);
    alice.post(&messages(group), json!({ "text": "and?", "reply_to": question["id"] })).await.expect(201);
    let alices = inbox(&alice, "").await;
    assert_eq!(kinds(&alices), ["mention"], "one notification for the reply that also names her");
    bob.post(&messages(group), json!({ "text": "good", "reply_to": question["id"] })).await.expect(201);
    assert_eq!(kinds(&inbox(&alice, "").await), ["reply", "mention"]);
    assert_eq!(inbox(&alice, "").await["items"][0]["title"], "bob replied to you");

    // An edit notifies only the members it names for the first time.
    let message =
        alice.post(&messages(group), json!({ "text": "hello @bob", "mentions": [bob.uuid()] })).await.expect(201);
    let path = format!("{}/{}", messages(group), message["id"].as_str().expect("id"));
    let edited =
        alice.patch(&path, json!({ "text": "hello @bob @carol", "mentions": [bob.uuid(), carol.uuid()] })).await;
    assert_eq!(edited.expect(200)["mentions"].as_array().map(Vec::len), Some(2));
    alice.patch(&path, json!({ "text": "hello all" })).await.expect(200);
    assert_eq!(alice.get(&path).await.expect(200)["mentions"].as_array().map(Vec::len), Some(2), "kept");
    assert_eq!(kinds(&inbox(&bob, "").await), ["mention", "added", "direct"]);
    assert_eq!(kinds(&inbox(&carol, "").await), ["mention", "added"]);

    // Read up to the second newest, then all; clear all.
    let bobs = inbox(&bob, "").await;
    let up_to = &bobs["items"][1]["id"];
    let state = bob.post("/v1/me/notifications/read", json!({ "up_to": up_to })).await.expect(200);
    assert_eq!(state["unread_count"], 1);
    assert_eq!(kinds(&inbox(&bob, "?status=unread").await), ["mention"]);
    assert_eq!(bob.post("/v1/me/notifications/read", json!({})).await.expect(200)["unread_count"], 0);
    bob.delete("/v1/me/notifications").await.expect(204);
    assert_eq!(inbox(&bob, "").await["items"], json!([]));
}

#[tokio::test]
async fn messages_committed_together_each_notify_the_members_they_name() {
    let stack = Stack::start().await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let group = alice.group("busy", &[&bob]).await;
    bob.delete("/v1/me/notifications").await.expect(204);
    let mut phone = stack.device(&bob, "bob").await;
    // Sent at once, these are committed in batches (one statement for many messages).
    let bob_id = bob.uuid();
    let sends = (0..40).map(|n| {
        let alice = alice.clone();
        async move {
            alice.post(&messages(group), json!({ "text": format!("ping {n}"), "mentions": [bob_id] })).await.expect(201)
        }
    });
    let sent = futures_util::future::join_all(sends).await;
    let page = inbox(&bob, "?limit=100").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(40));
    assert_eq!(page["unread_count"], 40);
    // Each message's event announced its own notification: one frame per message, each naming it.
    let mut framed = std::collections::BTreeSet::new();
    while framed.len() < 40 {
        let frame = next_of(&mut phone, "notification").await;
        let message = frame["notification"]["data"]["message_id"].as_str().map(str::to_owned);
        assert!(framed.insert(message), "a second frame for {frame}");
    }
    assert_eq!(framed, sent.iter().map(|message| message["id"].as_str().map(str::to_owned)).collect());
    // Paging by `before` walks them all, newest first, without repeats.
    let first = inbox(&bob, "?limit=25").await;
    assert_eq!(first["has_more"], true);
    let last_id = first["items"][24]["id"].as_str().expect("id");
    let second = inbox(&bob, &format!("?limit=25&before={last_id}")).await;
    assert_eq!((second["items"].as_array().map(Vec::len), &second["has_more"]), (Some(15), &json!(false)));
}

#[tokio::test]
async fn a_backend_notifies_a_user_with_its_server_key_and_bad_input_is_refused_by_field() {
    let stack = Stack::start().await;
    let backend = User::anonymous(&stack.api.url());
    let erin = stack.user("erin");
    let path = format!("/v1/users/{}/notifications", erin.uuid());
    let key = ("X-API-Key", SERVER_KEY);
    let post = |body: Value| {
        let (backend, path) = (&backend, &path);
        async move { backend.post_with_header(path, key, body).await }
    };
    // Erin has never connected: the notification waits in her inbox.
    let created = post(json!({ "title": "Your order has shipped", "priority": "high", "data": { "order": 7 } }))
        .await
        .expect(201);
    assert_eq!((created["kind"].as_str(), created["priority"].as_str()), (Some("app"), Some("high")));
    let mut device = stack.device(&erin, "erin").await;
    let page = inbox(&erin, "").await;
    assert_eq!(page["items"][0]["data"], json!({ "order": 7 }));
    assert_eq!(page["unread_count"], 1);

    post(json!({ "kind": "call_missed", "title": "Missed call from Bob" })).await.expect(201);
    // (The first one's frame may have gone out after the device connected, or before.)
    let mut frame = next_of(&mut device, "notification").await;
    if frame["notification"]["kind"] == "app" {
        frame = next_of(&mut device, "notification").await;
    }
    assert_eq!((frame["notification"]["kind"].as_str(), &frame["unread_count"]), (Some("call_missed"), &json!(2)));

    let field = |reply: parley_testkit::rest::Reply| reply.expect_problem(400, "validation_failed")["field"].clone();
    assert_eq!(field(post(json!({ "kind": "party", "title": "x" })).await), "kind");
    assert_eq!(field(post(json!({ "title": "\u{200b}" })).await), "title");
    assert_eq!(field(post(json!({ "title": "x".repeat(201) })).await), "title");
    assert_eq!(field(post(json!({ "title": "x", "body": "b".repeat(1001) })).await), "body");
    assert_eq!(field(post(json!({ "title": "x", "data": { "blob": "d".repeat(5000) } })).await), "data");
    // Users' tokens cannot post notifications, and no key at all is 401.
    erin.post(&path, json!({ "title": "self-made" })).await.expect_problem(401, "unauthorized");
    backend.post(&path, json!({ "title": "x" })).await.expect_problem(401, "unauthorized");
    assert_eq!(inbox(&erin, "").await["items"].as_array().map(Vec::len), Some(2));
}
