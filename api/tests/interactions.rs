//! Reactions, receipts, search, typing and rate limits over real HTTP.

mod common;

use common::User;
use parley_testkit::{Binary, TestContext};
use serde_json::{Value, json};

fn encode(emoji: &str) -> String {
    emoji.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[tokio::test]
async fn reactions_are_counted_per_emoji_with_the_callers_own_flag() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Bob"));
    let group = alice.group("reactions", &[&bob]).await;
    let message = alice.say(group, "react to me").await;
    let base = format!("/v1/conversations/{group}/messages/{}/reactions", message["id"].as_str().expect("id"));

    for (user, emoji) in [(&alice, "👍"), (&bob, "👍"), (&bob, "👍🏽"), (&bob, "❤️")] {
        user.put_empty(&format!("{base}/{}", encode(emoji))).await.expect(204);
    }
    bob.put_empty(&format!("{base}/{}", encode("👍"))).await.expect(204); // idempotent
    bob.delete(&format!("{base}/{}", encode("❤️"))).await.expect(204);
    bob.delete(&format!("{base}/{}", encode("❤️"))).await.expect(204);

    let page = alice.get(&format!("/v1/conversations/{group}/messages")).await.expect(200);
    let reactions = &page["items"][0]["reactions"];
    assert_eq!(reactions[0], json!({ "emoji": "👍", "count": 2, "me": true }));
    assert_eq!(reactions[1], json!({ "emoji": "👍🏽", "count": 1, "me": false }));
    assert_eq!(reactions.as_array().expect("array").len(), 2);

    for bad in ["a", "hello", "👍👍", "%20"] {
        alice.put_empty(&format!("{base}/{bad}")).await.expect_problem(400, "validation_failed");
    }
    let events = alice.get(&format!("/v1/conversations/{group}/events")).await.expect(200);
    let kinds: Vec<&str> =
        events["items"].as_array().expect("items").iter().map(|e| e["type"].as_str().expect("t")).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "reaction.added").count(), 4, "no event for the repeated PUT");
    assert_eq!(kinds.iter().filter(|k| **k == "reaction.removed").count(), 1, "no event for the repeated DELETE");
}

#[tokio::test]
async fn receipt_cursors_only_move_forward_and_drive_unread_counts_and_read_by() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let bob = User::new(&ctx, &api.url(), "Bob");
    let carol = User::new(&ctx, &api.url(), "Carol");
    let group = alice.group("receipts", &[&bob, &carol]).await;
    let first = alice.say(group, "one").await;
    let second = alice.say(group, "two").await;
    let read = format!("/v1/conversations/{group}/read");
    let delivered = format!("/v1/conversations/{group}/delivered");

    let cursors = bob.post(&delivered, json!({ "seq": second["seq"] })).await.expect(200);
    assert_eq!(cursors["delivered_seq"], second["seq"]);
    assert_eq!(cursors["unread_count"], 2);
    let cursors = bob.post(&read, json!({ "seq": first["seq"] })).await.expect(200);
    assert_eq!(cursors["read_seq"], first["seq"]);
    assert_eq!(cursors["unread_count"], 1);
    let cursors = bob.post(&read, json!({ "seq": second["seq"] })).await.expect(200);
    assert_eq!(cursors["unread_count"], 0);
    // An older seq is accepted and changes nothing.
    let cursors = bob.post(&read, json!({ "seq": first["seq"] })).await.expect(200);
    assert_eq!(cursors["read_seq"], second["seq"]);
    assert_eq!(cursors["delivered_seq"], second["seq"]);
    bob.post(&read, json!({ "seq": 10_000 })).await.expect_problem(400, "validation_failed");
    bob.post(&read, json!({ "seq": -1 })).await.expect_problem(400, "validation_failed");

    let page = alice.get(&format!("/v1/conversations/{group}/messages")).await.expect(200);
    let read_by = |message: &Value| message["read_by"].as_array().expect("read_by").len();
    assert_eq!(page["items"][0]["read_count"], 1);
    assert_eq!(read_by(&page["items"][0]), 1);
    assert_eq!(page["items"][0]["read_by"][0], bob.uuid().to_string());
    let carol_view = carol.get(&format!("/v1/conversations/{group}")).await.expect(200);
    assert_eq!(carol_view["unread_count"], 2);

    let events = alice.get(&format!("/v1/conversations/{group}/events")).await.expect(200);
    let receipts = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("receipt.")))
        .count();
    assert_eq!(receipts, 3, "one event per cursor move, none for the no-op");
}

#[tokio::test]
async fn search_finds_only_the_callers_visible_undeleted_messages() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, bob, eve) =
        (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Bob"), User::new(&ctx, &api.url(), "Eve"));
    let shared = alice.group("shared", &[&bob]).await;
    let private = eve.group("eve only", &[]).await;
    alice.say(shared, "the quick brown fox").await;
    alice.say(shared, "a lazy dog sleeps").await;
    let doomed = bob.say(shared, "fox secret to delete").await;
    eve.say(private, "eve's fox").await;
    bob.delete(&format!("/v1/conversations/{shared}/messages/{}", doomed["id"].as_str().expect("id")))
        .await
        .expect(204);

    let texts = |page: Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(texts(bob.get("/v1/search/messages?q=fox").await.expect(200)), ["the quick brown fox"]);
    assert_eq!(texts(eve.get("/v1/search/messages?q=fox").await.expect(200)), ["eve's fox"]);
    assert!(texts(bob.get("/v1/search/messages?q=%22brown%20fox%22").await.expect(200)).len() == 1);
    assert!(texts(bob.get("/v1/search/messages?q=fox%20-brown").await.expect(200)).is_empty());
    assert!(
        texts(bob.get("/v1/search/messages?q=secret").await.expect(200)).is_empty(),
        "deleted messages never match"
    );
    // Odd input is just a query, never an error.
    for odd in ["%27%3B%20drop", "%26%7C!%3A*", "or", "%22"] {
        bob.get(&format!("/v1/search/messages?q={odd}")).await.expect(200);
    }
    bob.get("/v1/search/messages?q=").await.expect_problem(400, "validation_failed");
    bob.get("/v1/search/messages?q=a%00b").await.expect_problem(400, "validation_failed");
    // Any stored string with a NUL is refused as input, never answered with 500.
    let title = bob.post("/v1/conversations", json!({ "kind": "group", "title": "t\u{0000}" })).await;
    title.expect_problem(400, "validation_failed");
    let page = alice.get("/v1/search/messages?q=fox%20or%20dog&limit=1").await.expect(200);
    assert_eq!(page["next_offset"], 1);
}

#[tokio::test]
async fn typing_is_authorised_and_rate_limited_per_conversation() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, eve) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Eve"));
    let group = alice.group("typing", &[]).await;
    let path = format!("/v1/conversations/{group}/typing");
    eve.post(&path, json!({})).await.expect_problem(404, "not_found");
    for _ in 0..3 {
        alice.post(&path, json!({})).await.expect(202);
    }
    let reply = alice.post(&path, json!({})).await;
    let retry_after = reply.headers.get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| (1..=2).contains(&s)), "Retry-After: {retry_after:?}");
    reply.expect_problem(429, "rate_limited");
    let stored: i64 = sqlx::query_scalar("select count(*) from events where type = 'typing'")
        .fetch_one(&ctx.pool().await)
        .await
        .expect("count");
    assert_eq!(stored, 0, "typing is never stored");
}

#[tokio::test]
async fn writes_beyond_the_per_user_rate_get_429_and_others_are_unaffected() {
    let ctx = TestContext::start().await;
    let env = vec![("PARLEY_WRITE_RATE_PER_SECOND".into(), "1".into()), ("PARLEY_WRITE_BURST".into(), "5".into())];
    let api = ctx.spawn(Binary::Api, env).await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Bob"));
    let group = alice.group("limits", &[&bob]).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(
            alice.post(&format!("/v1/conversations/{group}/messages"), json!({ "text": format!("{i}") })).await.status,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 4, "burst of 5 minus the group creation: {statuses:?}");
    bob.say(group, "bob is fine").await;
    alice.get(&format!("/v1/conversations/{group}")).await.expect(200);
}
