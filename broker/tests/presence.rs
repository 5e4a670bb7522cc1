//! Presence across two brokers: online when a user's first connection opens on either broker,
//! offline when the last one closes or when their broker is killed (within the lease TTL), seen
//! live by the members who share a conversation and over REST by nobody else.

use std::time::{Duration, Instant};

use parley_testkit::rest::{User, unlimited_writes};
use parley_testkit::ws::WsClient;
use parley_testkit::{AppProcess, Binary, TestContext};
use serde_json::Value;

const TTL: Duration = Duration::from_secs(2);
/// The API looks for expired leases once a second.
const SWEEP: Duration = Duration::from_secs(1);

fn ws_url(broker: &AppProcess) -> String {
    format!("{}/ws", broker.url().replace("http://", "ws://"))
}

async fn spawn_broker(ctx: &TestContext) -> AppProcess {
    ctx.spawn(Binary::Broker, vec![("PARLEY_PRESENCE_TTL".into(), format!("{}s", TTL.as_secs()))]).await
}

/// The next `presence` frame, skipping others.
async fn next_presence(client: &mut WsClient) -> Value {
    loop {
        let frame = client.next_frame().await.expect("a presence frame before the timeout");
        if frame["type"] == "presence" {
            return frame;
        }
    }
}

/// Polls `viewer`'s view of `user`'s presence until it has `status` (the API's copy of the
/// bucket follows it within milliseconds).
async fn presence_becomes(viewer: &User, user: &User, status: &str) -> Value {
    let path = format!("/v1/users/{}/presence", user.uuid());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let presence = viewer.get(&path).await.expect(200);
        if presence["status"] == status {
            return presence;
        }
        assert!(Instant::now() < deadline, "presence stayed {presence}, expected {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn presence_follows_connections_on_either_broker_and_a_killed_brokers_users_go_offline_within_the_ttl() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn(Binary::Api, unlimited_writes()).await;
    let broker_a = spawn_broker(&ctx).await;
    let mut broker_b = spawn_broker(&ctx).await;
    let (alice, bob, carol) = (
        User::new(&ctx, &api.url(), "alice"),
        User::new(&ctx, &api.url(), "bob"),
        User::new(&ctx, &api.url(), "carol"),
    );
    let group = alice.group("team", &[&bob]).await;
    carol.get("/v1/me").await.expect(200);
    let bob_presence = format!("/v1/users/{}/presence", bob.uuid());

    // Never connected: offline, never seen. Carol shares no conversation with Bob: 404.
    let never = alice.get(&bob_presence).await.expect(200);
    assert_eq!((never["status"].as_str(), never.get("last_seen_at")), (Some("offline"), None), "{never}");
    carol.get(&bob_presence).await.expect_problem(404, "not_found");

    let mut alice_on_a = WsClient::connect(&ws_url(&broker_a), &ctx.token(alice.id, "alice")).await;
    let mut carol_on_a = WsClient::connect(&ws_url(&broker_a), &ctx.token(carol.id, "carol")).await;

    // Bob's first connection, on broker A: Alice is told; REST and the member list agree.
    let bob_on_a = WsClient::connect(&ws_url(&broker_a), &ctx.token(bob.id, "bob")).await;
    let online = next_presence(&mut alice_on_a).await;
    assert_eq!(
        (online["user_id"].as_str(), online["status"].as_str()),
        (Some(bob.uuid().to_string().as_str()), Some("online"))
    );
    presence_becomes(&alice, &bob, "online").await;
    carol.get(&bob_presence).await.expect_problem(404, "not_found");
    let conversation = alice.get(&format!("/v1/conversations/{group}")).await.expect(200);
    let listed = conversation["members"].as_array().expect("members");
    let bob_listed = listed.iter().find(|member| member["user_id"] == bob.uuid().to_string()).expect("bob listed");
    assert_eq!(bob_listed["presence"]["status"], "online", "{bob_listed}");

    // A second connection, on broker B, is not news, nor is closing the one on A while B's is open.
    let bob_on_b = WsClient::connect(&ws_url(&broker_b), &ctx.token(bob.id, "bob")).await;
    drop(bob_on_a);
    let quiet = alice_on_a.next_frame_within(Duration::from_secs(1)).await;
    assert!(quiet.is_none(), "unexpected frame while Bob stayed online: {quiet:?}");
    presence_becomes(&alice, &bob, "online").await;

    // His last connection closes (on broker B, Alice is on A): offline, last seen now.
    drop(bob_on_b);
    let offline = next_presence(&mut alice_on_a).await;
    assert_eq!(offline["status"], "offline", "{offline}");
    assert!(offline["last_seen_at"].is_string(), "{offline}");
    let rest = presence_becomes(&alice, &bob, "offline").await;
    assert!(rest["last_seen_at"].is_string(), "{rest}");

    // Back, first on broker B, which is then killed: nobody closes anything, the lease runs out.
    let _bob_on_b = WsClient::connect(&ws_url(&broker_b), &ctx.token(bob.id, "bob")).await;
    assert_eq!(next_presence(&mut alice_on_a).await["status"], "online");
    presence_becomes(&alice, &bob, "online").await;
    let killed = Instant::now();
    broker_b.kill();
    let offline = next_presence(&mut alice_on_a).await;
    let took = killed.elapsed();
    eprintln!("offline announced {took:?} after SIGKILL (TTL {TTL:?})");
    assert_eq!(
        (offline["user_id"].as_str(), offline["status"].as_str()),
        (Some(bob.uuid().to_string().as_str()), Some("offline"))
    );
    assert!(took <= TTL + SWEEP + Duration::from_secs(2), "offline announced {took:?} after the kill (TTL {TTL:?})");
    presence_becomes(&alice, &bob, "offline").await;

    // Carol, who shares nothing with Bob, heard none of it.
    let heard = carol_on_a.next_frame_within(Duration::from_millis(200)).await;
    assert!(heard.is_none(), "carol got {heard:?}");
}

/// Presence frames (only) within `quiet`.
async fn presence_frames_within(client: &mut WsClient, quiet: Duration) -> Vec<Value> {
    let mut frames = Vec::new();
    let deadline = Instant::now() + quiet;
    while let Some(frame) = client.next_frame_within(deadline.saturating_duration_since(Instant::now())).await {
        if frame["type"] == "presence" {
            frames.push(frame);
        }
    }
    frames
}

#[tokio::test]
async fn a_change_reaches_each_connection_once_however_many_conversations_are_shared() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn(Binary::Api, unlimited_writes()).await;
    let broker = spawn_broker(&ctx).await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "alice"), User::new(&ctx, &api.url(), "bob"));
    for title in ["one", "two", "three"] {
        alice.group(title, &[&bob]).await;
    }
    alice.post("/v1/conversations", serde_json::json!({ "kind": "direct", "user_id": bob.uuid() })).await.expect(201);
    let mut alice_ws = WsClient::connect(&ws_url(&broker), &ctx.token(alice.id, "alice")).await;
    let bob_ws = WsClient::connect(&ws_url(&broker), &ctx.token(bob.id, "bob")).await;
    let frames = presence_frames_within(&mut alice_ws, Duration::from_millis(1500)).await;
    assert_eq!(frames.len(), 1, "four shared conversations, one change: {frames:?}");
    assert_eq!(
        (frames[0]["user_id"].as_str(), frames[0]["status"].as_str()),
        (Some(&*bob.id.to_string()), Some("online"))
    );
    drop(bob_ws);
    let frames = presence_frames_within(&mut alice_ws, Duration::from_millis(1500)).await;
    assert_eq!(frames.iter().map(|f| f["status"].as_str()).collect::<Vec<_>>(), [Some("offline")]);
}

/// An API and a broker for which groups of more than 2 members are "large": their members see
/// each other's presence only on request.
async fn spawn_with_groups_of_two_at_most_small(ctx: &TestContext) -> (AppProcess, AppProcess) {
    let small = ("PARLEY_PRESENCE_AUTO_MAX_MEMBERS".to_owned(), "2".to_owned());
    let api = ctx.spawn(Binary::Api, [unlimited_writes(), vec![small.clone()]].concat()).await;
    let broker = ctx.spawn(Binary::Broker, vec![small]).await;
    (api, broker)
}

#[tokio::test]
async fn members_of_large_groups_subscribe_to_the_users_they_show_and_only_to_visible_ones() {
    let ctx = TestContext::start().await;
    let (api, broker) = spawn_with_groups_of_two_at_most_small(&ctx).await;
    let [alice, bob, dan, carol] = ["alice", "bob", "dan", "carol"].map(|name| User::new(&ctx, &api.url(), name));
    alice.group("large", &[&bob, &dan]).await;
    carol.get("/v1/me").await.expect(200);
    let mut alice_ws = WsClient::connect(&ws_url(&broker), &ctx.token(alice.id, "alice")).await;
    let bob_ws = WsClient::connect(&ws_url(&broker), &ctx.token(bob.id, "bob")).await;
    assert_eq!(presence_frames_within(&mut alice_ws, Duration::from_millis(1000)).await, Vec::<Value>::new());

    alice_ws
        .send_json(&serde_json::json!({ "type": "presence.subscribe", "user_ids": [bob.uuid(), carol.uuid()] }))
        .await;
    let subscribed = alice_ws.next_frame().await.expect("presence.subscribed");
    assert_eq!(subscribed["type"], "presence.subscribed", "{subscribed}");
    assert_eq!(subscribed["user_ids"], serde_json::json!([bob.uuid()]));
    let refused = alice_ws.next_frame().await.expect("error");
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("not_visible")), "{refused}");
    assert_eq!(refused["user_ids"], serde_json::json!([carol.uuid()]));

    drop(bob_ws);
    let frames = presence_frames_within(&mut alice_ws, Duration::from_millis(1500)).await;
    assert_eq!(frames.iter().map(|f| f["status"].as_str()).collect::<Vec<_>>(), [Some("offline")], "{frames:?}");
    // Dan is in the same large group but nobody subscribed to him.
    let _dan_ws = WsClient::connect(&ws_url(&broker), &ctx.token(dan.id, "dan")).await;
    let _bob_ws = WsClient::connect(&ws_url(&broker), &ctx.token(bob.id, "bob")).await;
    let frames = presence_frames_within(&mut alice_ws, Duration::from_millis(1500)).await;
    let about: Vec<(&str, &str)> =
        frames.iter().map(|f| (f["user_id"].as_str().unwrap_or(""), f["status"].as_str().unwrap_or(""))).collect();
    assert_eq!(about, [(&*bob.id.to_string(), "online")]);

    alice_ws.send_json(&serde_json::json!({ "type": "presence.unsubscribe", "user_ids": [bob.uuid()] })).await;
    let subscribed = alice_ws.next_frame().await.expect("presence.subscribed");
    assert_eq!(subscribed["user_ids"], serde_json::json!([]));
}

/// The next frame of `type`, skipping others.
async fn next_of_type(client: &mut WsClient, kind: &str) -> Value {
    loop {
        let frame = client.next_frame().await.unwrap_or_else(|| panic!("a {kind} frame before the timeout"));
        if frame["type"] == kind {
            return frame;
        }
    }
}

#[tokio::test]
async fn subscriptions_end_when_the_users_no_longer_share_a_conversation() {
    let ctx = TestContext::start().await;
    let (api, broker) = spawn_with_groups_of_two_at_most_small(&ctx).await;
    let [alice, bob, dan] = ["alice", "bob", "dan"].map(|name| User::new(&ctx, &api.url(), name));
    let group = alice.group("large", &[&bob, &dan]).await;
    let mut alice_ws = WsClient::connect(&ws_url(&broker), &ctx.token(alice.id, "alice")).await;
    let mut bob_ws = WsClient::connect(&ws_url(&broker), &ctx.token(bob.id, "bob")).await;
    alice_ws
        .send_json(&serde_json::json!({ "type": "presence.subscribe", "user_ids": [bob.uuid(), dan.uuid()] }))
        .await;
    let subscribed = next_of_type(&mut alice_ws, "presence.subscribed").await;
    let mut followed: Vec<String> = subscribed["user_ids"]
        .as_array()
        .expect("user_ids")
        .iter()
        .map(|id| id.as_str().unwrap_or("").to_owned())
        .collect();
    followed.sort();
    let mut expected = vec![bob.uuid().to_string(), dan.uuid().to_string()];
    expected.sort();
    assert_eq!(followed, expected);
    bob_ws.send_json(&serde_json::json!({ "type": "presence.subscribe", "user_ids": [alice.uuid()] })).await;
    assert_eq!(next_of_type(&mut bob_ws, "presence.subscribed").await["user_ids"], serde_json::json!([alice.uuid()]));

    // Bob leaves the only conversation he shares with alice: both lose sight of each other.
    alice.delete(&format!("/v1/conversations/{group}/members/{}", bob.uuid())).await.expect(204);
    let alice_follows = next_of_type(&mut alice_ws, "presence.subscribed").await;
    assert_eq!(alice_follows["user_ids"], serde_json::json!([dan.uuid()]), "{alice_follows}");
    let bob_follows = next_of_type(&mut bob_ws, "presence.subscribed").await;
    assert_eq!(bob_follows["user_ids"], serde_json::json!([]), "{bob_follows}");

    drop(bob_ws);
    let _bob_ws = WsClient::connect(&ws_url(&broker), &ctx.token(bob.id, "bob")).await;
    let _dan_ws = WsClient::connect(&ws_url(&broker), &ctx.token(dan.id, "dan")).await;
    let frames = presence_frames_within(&mut alice_ws, Duration::from_millis(1500)).await;
    let about: Vec<&str> = frames.iter().map(|f| f["user_id"].as_str().unwrap_or("")).collect();
    assert_eq!(about, [dan.id.to_string()], "only dan's presence still reaches alice: {frames:?}");
}
