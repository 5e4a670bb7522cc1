//! Conversations and members over real HTTP against the real binary and PostgreSQL.

mod common;

use std::collections::HashSet;

use common::User;
use parley_testkit::{Binary, TestContext};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn direct_conversation_is_created_once_per_pair_and_context() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Bob"));

    let first = alice.post("/v1/conversations", json!({ "kind": "direct", "user_id": bob.uuid() })).await.expect(201);
    let again = alice.post("/v1/conversations", json!({ "kind": "direct", "user_id": bob.uuid() })).await.expect(200);
    let from_bob =
        bob.post("/v1/conversations", json!({ "kind": "direct", "user_id": alice.uuid() })).await.expect(200);
    assert_eq!(first["id"], again["id"]);
    assert_eq!(first["id"], from_bob["id"]);
    assert_eq!(first["kind"], "direct");
    assert_eq!(first["member_count"], 2);
    assert_eq!(first["last_seq"], 1, "conversation.created is event 1");

    let listing = json!({ "kind": "listing", "id": "123", "title": "Blue bike" });
    let about_bike =
        bob.post("/v1/conversations", json!({ "kind": "direct", "user_id": alice.uuid(), "context": listing })).await;
    let about_bike = about_bike.expect(201);
    assert_ne!(about_bike["id"], first["id"], "another context is another conversation");
    assert_eq!(about_bike["context"]["title"], "Blue bike");
}

#[tokio::test]
async fn both_users_creating_their_direct_conversation_at_once_end_with_one() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Bob"));
    let attempts = (0..20).map(|i| {
        let (me, other) = if i % 2 == 0 { (alice.clone(), bob.uuid()) } else { (bob.clone(), alice.uuid()) };
        tokio::spawn(async move { me.post("/v1/conversations", json!({ "kind": "direct", "user_id": other })).await })
    });
    let replies = futures_util::future::join_all(attempts).await;
    let mut ids = HashSet::new();
    let mut created = 0;
    for reply in replies {
        let reply = reply.expect("task");
        assert!(reply.status == 200 || reply.status == 201, "{reply:?}");
        created += usize::from(reply.status == 201);
        ids.insert(reply.body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "one conversation");
    assert_eq!(created, 1, "exactly one 201");
    let count: i64 =
        sqlx::query_scalar("select count(*) from conversations").fetch_one(&ctx.pool().await).await.expect("count");
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_direct_conversation_needs_another_user() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let problem = alice
        .post("/v1/conversations", json!({ "kind": "direct", "user_id": alice.uuid() }))
        .await
        .expect_problem(400, "validation_failed");
    assert_eq!(problem["field"], "user_id");
}

#[tokio::test]
async fn group_creator_is_owner_and_members_see_unread_counts() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Bob"));
    // Carol was never seen by Parley: adding her by id must work.
    let carol_id = Uuid::now_v7();
    let body = alice
        .post(
            "/v1/conversations",
            json!({ "kind": "group", "title": "  Team  ", "member_ids": [bob.uuid(), carol_id, bob.uuid()] }),
        )
        .await
        .expect(201);
    assert_eq!(body["title"], "Team");
    assert_eq!(body["member_count"], 3);
    let roles: Vec<(String, String)> = body["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["user_id"].as_str().expect("id").to_owned(), m["role"].as_str().expect("role").to_owned()))
        .collect();
    assert!(roles.contains(&(alice.uuid().to_string(), "owner".into())));
    assert!(roles.contains(&(bob.uuid().to_string(), "member".into())));

    let id = body["id"].as_str().expect("id");
    alice.say(id.parse().expect("uuid"), "one").await;
    alice.say(id.parse().expect("uuid"), "two").await;
    let for_bob = bob.get(&format!("/v1/conversations/{id}")).await.expect(200);
    assert_eq!(for_bob["unread_count"], 2);
    assert_eq!(for_bob["last_message"]["text"], "two");
    let for_alice = alice.get(&format!("/v1/conversations/{id}")).await.expect(200);
    assert_eq!(for_alice["unread_count"], 0, "one's own messages are not unread");
}

#[tokio::test]
async fn conversation_list_is_ordered_by_activity_and_paginated() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let first = alice.group("first", &[]).await;
    let second = alice.group("second", &[]).await;
    let third = alice.group("third", &[]).await;
    alice.say(first, "bump").await;

    let page = alice.get("/v1/conversations?limit=2").await.expect(200);
    let ids: Vec<&str> =
        page["items"].as_array().expect("items").iter().map(|c| c["id"].as_str().expect("id")).collect();
    assert_eq!(ids, [first.to_string(), third.to_string()]);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let rest = alice.get(&format!("/v1/conversations?limit=2&cursor={cursor}")).await.expect(200);
    let ids: Vec<&str> =
        rest["items"].as_array().expect("items").iter().map(|c| c["id"].as_str().expect("id")).collect();
    assert_eq!(ids, [second.to_string()]);
    assert!(rest["next_cursor"].is_null());

    alice.get("/v1/conversations?cursor=garbage").await.expect_problem(400, "validation_failed");
    alice.get("/v1/conversations?limit=1000").await.expect_problem(400, "validation_failed");
}

#[tokio::test]
async fn non_members_get_404_on_every_conversation_route() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, mallory) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Mallory"));
    let group = alice.group("private", &[]).await;
    let message = alice.say(group, "secret").await;
    let message_id = message["id"].as_str().expect("id");
    let base = format!("/v1/conversations/{group}");
    let replies = [
        mallory.get(&base).await,
        mallory.patch(&base, json!({ "title": "mine" })).await,
        mallory.post(&format!("{base}/members"), json!({ "user_id": mallory.uuid() })).await,
        mallory.delete(&format!("{base}/members/{}", alice.uuid())).await,
        mallory.post(&format!("{base}/messages"), json!({ "text": "hi" })).await,
        mallory.get(&format!("{base}/messages")).await,
        mallory.patch(&format!("{base}/messages/{message_id}"), json!({ "text": "x" })).await,
        mallory.delete(&format!("{base}/messages/{message_id}")).await,
        mallory.get(&format!("{base}/events")).await,
        mallory.put_empty(&format!("{base}/messages/{message_id}/reactions/%F0%9F%91%8D")).await,
        mallory.delete(&format!("{base}/messages/{message_id}/reactions/%F0%9F%91%8D")).await,
        mallory.post(&format!("{base}/read"), json!({ "seq": 1 })).await,
        mallory.post(&format!("{base}/delivered"), json!({ "seq": 1 })).await,
        mallory.post(&format!("{base}/typing"), json!({})).await,
    ];
    for reply in replies {
        let body = reply.expect_problem(404, "not_found");
        assert!(!body.to_string().contains("secret"));
    }
    // A conversation that does not exist looks exactly the same.
    let missing = mallory.get(&format!("/v1/conversations/{}", Uuid::now_v7())).await.expect_problem(404, "not_found");
    let hidden = mallory.get(&base).await.expect_problem(404, "not_found");
    assert_eq!(missing, hidden);
    let list = mallory.get("/v1/conversations").await.expect(200);
    assert_eq!(list["items"], json!([]));
    let found = mallory.get("/v1/search/messages?q=secret").await.expect(200);
    assert_eq!(found["items"], json!([]));
}

#[tokio::test]
async fn only_owners_rename_groups_and_direct_conversations_have_no_title() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Bob"));
    let group = alice.group("old", &[&bob]).await;
    bob.patch(&format!("/v1/conversations/{group}"), json!({ "title": "bob's" }))
        .await
        .expect_problem(403, "not_owner");
    let renamed = alice.patch(&format!("/v1/conversations/{group}"), json!({ "title": "new" })).await.expect(200);
    assert_eq!(renamed["title"], "new");
    assert_eq!(renamed["last_seq"], 2);
    alice
        .patch(&format!("/v1/conversations/{group}"), json!({ "title": "" }))
        .await
        .expect_problem(400, "validation_failed");
    alice
        .patch(&format!("/v1/conversations/{group}"), json!({ "title": 12 }))
        .await
        .expect_problem(400, "validation_failed");

    let direct = alice.post("/v1/conversations", json!({ "kind": "direct", "user_id": bob.uuid() })).await.expect(201);
    let direct = direct["id"].as_str().expect("id");
    alice
        .patch(&format!("/v1/conversations/{direct}"), json!({ "title": "x" }))
        .await
        .expect_problem(409, "direct_conversation");
}

#[tokio::test]
async fn owners_manage_members_and_anyone_may_leave() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let bob = User::new(&ctx, &api.url(), "Bob");
    let carol = User::new(&ctx, &api.url(), "Carol");
    let group = alice.group("team", &[&bob]).await;
    let members = format!("/v1/conversations/{group}/members");

    bob.post(&members, json!({ "user_id": carol.uuid() })).await.expect_problem(403, "not_owner");
    let added = alice.post(&members, json!({ "user_id": carol.uuid() })).await.expect(201);
    assert_eq!(added["role"], "member");
    alice.post(&members, json!({ "user_id": carol.uuid() })).await.expect_problem(409, "already_member");

    // Carol sees what happens after she joined, not before.
    let events = carol.get(&format!("/v1/conversations/{group}/events")).await.expect(200);
    let kinds: Vec<&str> =
        events["items"].as_array().expect("items").iter().map(|e| e["type"].as_str().expect("type")).collect();
    assert_eq!(kinds, ["member.added"]);

    bob.delete(&format!("{members}/{}", carol.uuid())).await.expect_problem(403, "not_owner");
    alice.delete(&format!("{members}/{}", alice.uuid())).await.expect_problem(409, "last_owner");
    bob.delete(&format!("{members}/{}", bob.uuid())).await.expect(204);
    bob.get(&format!("/v1/conversations/{group}")).await.expect_problem(404, "not_found");
    alice.delete(&format!("{members}/{}", carol.uuid())).await.expect(204);
    alice.delete(&format!("{members}/{}", carol.uuid())).await.expect_problem(404, "not_found");
    // Alone, the last owner may leave.
    alice.delete(&format!("{members}/{}", alice.uuid())).await.expect(204);
}

#[tokio::test]
async fn a_member_removed_while_posting_never_gets_a_message_in() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Bob"));
    let group = alice.group("team", &[&bob]).await;
    let posts = (0..20).map(|i| {
        let bob = bob.clone();
        tokio::spawn(async move {
            bob.post(&format!("/v1/conversations/{group}/messages"), json!({ "text": format!("m{i}") })).await.status
        })
    });
    let bob_membership = format!("/v1/conversations/{group}/members/{}", bob.uuid());
    let removal = alice.delete(&bob_membership);
    let (statuses, removal) = tokio::join!(futures_util::future::join_all(posts), removal);
    removal.expect(204);
    let pool = ctx.pool().await;
    let removed_at: i64 = sqlx::query_scalar("select seq from events where type = 'member.removed'")
        .fetch_one(&pool)
        .await
        .expect("removal event");
    let late: i64 = sqlx::query_scalar("select count(*) from messages where author_id = $1 and seq > $2")
        .bind(bob.uuid())
        .bind(removed_at)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(late, 0, "no message of Bob's after his removal");
    for status in statuses {
        let status = status.expect("task");
        assert!(status == 201 || status == 404, "{status}");
    }
}

#[tokio::test]
async fn new_groups_and_new_direct_partners_are_limited_per_user_and_hour() {
    let ctx = TestContext::start().await;
    let quotas = [("PARLEY_NEW_CONVERSATIONS_PER_HOUR", "3"), ("PARLEY_NEW_DIRECT_PARTNERS_PER_HOUR", "2")];
    let api = ctx.spawn(Binary::Api, quotas.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()).await;
    let [alice, bob, carol, dan, erin] =
        ["Alice", "Bob", "Carol", "Dan", "Erin"].map(|name| User::new(&ctx, &api.url(), name));
    for n in 0..3 {
        alice
            .post("/v1/conversations", json!({ "kind": "group", "title": format!("g{n}"), "member_ids": [] }))
            .await
            .expect(201);
    }
    let refused = alice.post("/v1/conversations", json!({ "kind": "group", "title": "g3", "member_ids": [] })).await;
    let retry_after: u64 =
        refused.headers["retry-after"].to_str().ok().and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((3500..=3600).contains(&retry_after), "Retry-After {retry_after}");
    refused.expect_problem(429, "rate_limited");
    let db = ctx.pool().await;
    let groups: i64 = sqlx::query_scalar("select count(*) from conversations where created_by = $1 and kind = 'group'")
        .bind(alice.uuid())
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(groups, 3, "the refused group was not stored");
    // Someone else's quota is their own.
    bob.post("/v1/conversations", json!({ "kind": "group", "title": "b", "member_ids": [] })).await.expect(201);

    let direct = |other: &User| json!({ "kind": "direct", "user_id": other.uuid() });
    alice.post("/v1/conversations", direct(&carol)).await.expect(201);
    alice.post("/v1/conversations", direct(&dan)).await.expect(201);
    alice.post("/v1/conversations", direct(&erin)).await.expect_problem(429, "rate_limited");
    // An existing partner is not a new one.
    alice.post("/v1/conversations", direct(&carol)).await.expect(200);
}
