//! Messages over real HTTP against the real binary and PostgreSQL.

mod common;

use std::time::Duration;

use common::User;
use parley_testkit::{Binary, TestContext};
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test]
async fn fifty_concurrent_posts_get_fifty_consecutive_seqs() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let group = alice.group("busy", &[]).await;
    let posts = (0..50).map(|i| {
        let alice = alice.clone();
        tokio::spawn(async move { alice.say(group, &format!("message {i}")).await })
    });
    let mut seqs: Vec<i64> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .map(|m| m.expect("task")["seq"].as_i64().expect("seq"))
        .collect();
    seqs.sort_unstable();
    // Seq 1 is the conversation.created event; the 50 messages take 2..=51, no gap, no repeat.
    assert_eq!(seqs, (2..=51).collect::<Vec<i64>>());
}

#[tokio::test]
async fn concurrent_posts_committed_together_each_get_their_own_answer_and_one_refused_fails_alone() {
    // Posts into one conversation that queue behind a commit are stored by the next one, all
    // together. One the database refuses (a NUL character in its client_message_id), a non-member's and a reply to no
    // message of the conversation must fail on their own; the others keep consecutive seqs.
    let ctx = TestContext::start().await;
    let api = ctx.spawn(Binary::Api, parley_testkit::rest::unlimited_writes()).await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let mallory = User::new(&ctx, &api.url(), "Mallory");
    let group = alice.group("busy", &[]).await;
    mallory.group("elsewhere", &[]).await;
    let path = format!("/v1/conversations/{group}/messages");
    let mut sent = tokio::task::JoinSet::new();
    for round in 0..5 {
        for i in 0..20 {
            let (alice, path) = (alice.clone(), path.clone());
            sent.spawn(async move { ("good", alice.post(&path, json!({ "text": format!("{round}/{i}") })).await) });
        }
        let (alice, mallory, path) = (alice.clone(), mallory.clone(), path.clone());
        sent.spawn({
            let (alice, path) = (alice.clone(), path.clone());
            async move { ("nul", alice.post(&path, json!({ "text": "hi", "client_message_id": "a\u{0}b" })).await) }
        });
        sent.spawn({
            let path = path.clone();
            async move { ("stranger", mallory.post(&path, json!({ "text": "let me in" })).await) }
        });
        sent.spawn(
            async move { ("reply", alice.post(&path, json!({ "text": "re", "reply_to": Uuid::now_v7() })).await) },
        );
    }
    let mut seqs = Vec::new();
    while let Some(answered) = sent.join_next().await {
        let (kind, reply) = answered.expect("task");
        match kind {
            "good" => seqs.push(reply.expect(201)["seq"].as_i64().expect("seq")),
            "nul" => assert_eq!(reply.expect_problem(400, "validation_failed")["status"], 400),
            "stranger" => assert_eq!(reply.expect_problem(404, "not_found")["status"], 404),
            _ => assert_eq!(reply.expect_problem(400, "validation_failed")["field"], "reply_to"),
        }
    }
    seqs.sort_unstable();
    // Seq 1 is conversation.created; the 100 stored messages take 2..=101, no gap, no repeat.
    assert_eq!(seqs, (2..=101).collect::<Vec<i64>>());
    let events: Vec<i64> = sqlx::query_scalar("select seq from events where conversation_id = $1 order by position")
        .bind(group)
        .fetch_all(&ctx.pool().await)
        .await
        .expect("events");
    assert_eq!(events, (1..=101).collect::<Vec<i64>>(), "one event per stored message, in seq order");
    let metrics = reqwest::get(format!("{}/metrics", api.url())).await.expect("metrics").text().await.expect("text");
    let commits: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("parley_messages_per_commit_count ")?.parse().ok())
        .expect("parley_messages_per_commit_count");
    assert!(commits < 100.0, "concurrent posts shared commits ({commits} commits for 100 messages)");
}

#[tokio::test]
async fn one_idempotency_key_retried_concurrently_creates_one_message() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let group = alice.group("retries", &[]).await;
    let path = format!("/v1/conversations/{group}/messages");
    let body = json!({ "text": "only once", "client_message_id": "c-1" });
    let attempts = (0..10).map(|_| {
        let (alice, path, body) = (alice.clone(), path.clone(), body.clone());
        tokio::spawn(async move { alice.post_with_key(&path, "key-1", body).await })
    });
    let replies = futures_util::future::join_all(attempts).await;
    let ids: Vec<Value> = replies.into_iter().map(|r| r.expect("task").expect(201)["id"].clone()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "every retry returns the same message");
    let count: i64 =
        sqlx::query_scalar("select count(*) from messages").fetch_one(&ctx.pool().await).await.expect("count");
    assert_eq!(count, 1);

    alice
        .post_with_key(&path, "key-1", json!({ "text": "something else" }))
        .await
        .expect_problem(422, "idempotency_key_reused");
    // Keys are per user: Bob may use the same string.
    let bob = User::new(&ctx, &api.url(), "Bob");
    let members = format!("/v1/conversations/{group}/members");
    alice.post(&members, json!({ "user_id": bob.uuid() })).await.expect(201);
    bob.post_with_key(&path, "key-1", body).await.expect(201);
}

#[tokio::test]
async fn invalid_messages_are_refused_with_the_field_at_fault() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let group = alice.group("validation", &[]).await;
    let other_group = alice.group("elsewhere", &[]).await;
    let elsewhere = alice.say(other_group, "elsewhere").await;
    let path = format!("/v1/conversations/{group}/messages");
    let attachment = |url: &str| json!({ "url": url, "mime_type": "image/png", "size_bytes": 10 });
    let cases = [
        (json!({ "text": "" }), Some("text")),
        (json!({ "text": " \n\t " }), Some("text")),
        (json!({ "text": "x".repeat(4001) }), Some("text")),
        (json!({ "text": "ok", "attachment": attachment("http://example.test/a.png") }), Some("attachment.url")),
        (json!({ "text": "ok", "attachment": attachment("https://") }), Some("attachment.url")),
        (json!({ "text": "ok", "reply_to": elsewhere["id"] }), Some("reply_to")),
        (json!({ "text": "ok", "reply_to": Uuid::now_v7() }), Some("reply_to")),
        (json!({ "text": "nul \u{0000} inside" }), Some("text")),
        (json!({ "text": "ok", "client_message_id": "nul\u{0000}" }), None),
        (json!({ "text": 42 }), Some("text")),
        (json!({ "text": true }), Some("text")),
        (json!({ "text": ["a"] }), Some("text")),
        (json!({ "text": "ok", "client_message_id": 7 }), Some("client_message_id")),
        (json!({ "text": null }), None),
        (json!({}), None),
        (
            json!({ "text": "ok", "attachment": { "url": "https://x.test/a", "mime_type": "not a type", "size_bytes": 1 } }),
            None,
        ),
        (
            json!({ "text": "ok", "attachment": { "url": "https://x.test/a", "mime_type": "a/b", "size_bytes": -1 } }),
            None,
        ),
    ];
    for (body, field) in cases {
        let problem = alice.post(&path, body.clone()).await.expect_problem(400, "validation_failed");
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "for {body}: {problem}");
        }
    }
    // A body that does not fit its schema is named in plain words, with the field at fault.
    let read = format!("/v1/conversations/{group}/read");
    let problem = alice.post(&read, json!({})).await.expect_problem(400, "validation_failed");
    assert_eq!((problem["field"].as_str(), problem["detail"].as_str()), (Some("seq"), Some("\"seq\" is required")));
    let problem = alice.post(&read, json!({ "seq": "3" })).await.expect_problem(400, "validation_failed");
    assert_eq!(problem["detail"], "\"seq\" must be an integer");
    alice.post_raw(&path, "application/json", b"{not json".to_vec()).await.expect_problem(400, "validation_failed");
    let twice = alice.post_raw(&path, "application/json", br#"{"text":"a","text":"b"}"#.to_vec()).await;
    let problem = twice.expect_problem(400, "validation_failed");
    assert_eq!((problem["field"].as_str(), problem["detail"].as_str()), (Some("text"), Some("\"text\" appears twice")));
    // 4,000 characters of a multi-byte script is allowed: the limit counts characters, not bytes.
    let long = "日".repeat(4000);
    assert_eq!(alice.say(group, &long).await["text"], long);
    let count: i64 = sqlx::query_scalar("select count(*) from messages where conversation_id = $1")
        .bind(group)
        .fetch_one(&ctx.pool().await)
        .await
        .expect("count");
    assert_eq!(count, 1, "nothing of the refused requests was stored");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let group = alice.group("big", &[]).await;
    let huge = serde_json::to_vec(&json!({ "text": "x".repeat(70 * 1024) })).expect("json");
    alice
        .post_raw(&format!("/v1/conversations/{group}/messages"), "application/json", huge)
        .await
        .expect_problem(413, "payload_too_large");
}

#[tokio::test]
async fn messages_page_by_seq_in_both_directions() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let group = alice.group("pages", &[]).await;
    for i in 1..=5 {
        alice.say(group, &format!("m{i}")).await;
    }
    let texts = |page: &Value| -> Vec<String> {
        page["items"].as_array().expect("items").iter().map(|m| m["text"].as_str().expect("text").to_owned()).collect()
    };
    let path = format!("/v1/conversations/{group}/messages");
    let latest = alice.get(&format!("{path}?limit=2")).await.expect(200);
    assert_eq!(texts(&latest), ["m4", "m5"]);
    assert_eq!(latest["has_more"], true);
    let before = latest["items"][0]["seq"].as_i64().expect("seq");
    let older = alice.get(&format!("{path}?limit=2&before_seq={before}")).await.expect(200);
    assert_eq!(texts(&older), ["m2", "m3"]);
    let after = alice.get(&format!("{path}?limit=10&after_seq={before}")).await.expect(200);
    assert_eq!(texts(&after), ["m5"]);
    assert_eq!(after["has_more"], false);
    alice.get(&format!("{path}?limit=101")).await.expect_problem(400, "validation_failed");
    alice.get(&format!("{path}?before_seq=abc")).await.expect_problem(400, "validation_failed");
}

#[tokio::test]
async fn one_message_by_id_as_members_who_may_see_it_see_it() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, bob, carol) = (
        User::new(&ctx, &api.url(), "Alice"),
        User::new(&ctx, &api.url(), "Bob"),
        User::new(&ctx, &api.url(), "Carol"),
    );
    let group = alice.group("by id", &[&bob]).await;
    let early = alice.say(group, "before carol").await;
    let message = bob.say(group, "hello").await;
    let path = |m: &Value| format!("/v1/conversations/{group}/messages/{}", m["id"].as_str().expect("id"));
    alice.put_empty(&format!("{}/reactions/%F0%9F%91%8D", path(&message))).await.expect(204);

    let got = alice.get(&path(&message)).await.expect(200);
    assert_eq!((got["text"].as_str(), got["seq"].as_i64()), (Some("hello"), message["seq"].as_i64()));
    assert_eq!(got["reactions"], json!([{ "emoji": "👍", "count": 1, "me": true }]));

    // Not a member: 404 as for any conversation the caller is not in.
    carol.get(&path(&message)).await.expect_problem(404, "not_found");
    // A member from now on sees what comes next, not what came before.
    alice.post(&format!("/v1/conversations/{group}/members"), json!({ "user_id": carol.uuid() })).await.expect(201);
    carol.get(&path(&early)).await.expect_problem(404, "not_found");
    let later = alice.say(group, "welcome carol").await;
    assert_eq!(carol.get(&path(&later)).await.expect(200)["text"], "welcome carol");
    // The id of another conversation's message.
    let other = alice.group("other", &[]).await;
    let elsewhere = alice.say(other, "elsewhere").await;
    alice
        .get(&format!("/v1/conversations/{group}/messages/{}", elsewhere["id"].as_str().expect("id")))
        .await
        .expect_problem(404, "not_found");

    bob.delete(&path(&message)).await.expect(204);
    let tombstone = alice.get(&path(&message)).await.expect(200);
    assert_eq!((tombstone["deleted"].as_bool(), tombstone["text"].is_null()), (Some(true), true));
}

#[tokio::test]
async fn text_is_optional_only_when_an_attachment_is_sent() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let group = alice.group("files", &[]).await;
    let path = format!("/v1/conversations/{group}/messages");
    let attachment = json!({ "url": "https://files.example/cat.png", "mime_type": "image/png", "size_bytes": 1234 });
    let sent = alice.post(&path, json!({ "attachment": attachment })).await.expect(201);
    assert!(sent["text"].is_null());
    assert_eq!(sent["attachment"]["url"], "https://files.example/cat.png");
    let events = alice.get(&format!("/v1/conversations/{group}/events")).await.expect(200);
    let created = events["items"].as_array().expect("items").last().expect("the message's event").clone();
    assert_eq!((created["type"].as_str(), created["data"].get("body")), (Some("message.created"), None));

    let refused = alice.post(&path, json!({})).await.expect_problem(400, "validation_failed");
    assert_eq!(refused["field"], "text");
    alice.post(&path, json!({ "text": "  ", "attachment": attachment })).await.expect_problem(400, "validation_failed");
}

#[tokio::test]
async fn only_the_author_edits_and_only_within_the_window() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn(Binary::Api, vec![("PARLEY_EDIT_WINDOW".into(), "2s".into())]).await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Bob"));
    let group = alice.group("edits", &[&bob]).await;
    let message = alice.say(group, "draft").await;
    let path = format!("/v1/conversations/{group}/messages/{}", message["id"].as_str().expect("id"));

    bob.patch(&path, json!({ "text": "hijacked" })).await.expect_problem(403, "not_author");
    let edited = alice.patch(&path, json!({ "text": "final" })).await.expect(200);
    assert_eq!(edited["text"], "final");
    assert!(edited["edited_at"].is_string());
    assert_eq!(edited["seq"], message["seq"], "an edit keeps the message's seq");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    alice.patch(&path, json!({ "text": "too late" })).await.expect_problem(403, "edit_window_expired");
    alice
        .patch(&format!("/v1/conversations/{group}/messages/{}", Uuid::now_v7()), json!({ "text": "x" }))
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test]
async fn a_deleted_messages_text_never_comes_back() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Bob"));
    let group = alice.group("oops", &[&bob]).await;
    let secret = "my password is hunter2";
    let message = bob.say(group, secret).await;
    let id = message["id"].as_str().expect("id");
    let path = format!("/v1/conversations/{group}/messages/{id}");
    bob.patch(&path, json!({ "text": format!("{secret}!") })).await.expect(200);

    alice
        .delete(&format!(
            "/v1/conversations/{group}/messages/{}",
            alice.say(group, "x").await["id"].as_str().expect("id")
        ))
        .await
        .expect(204);
    // Bob is not an owner and not the author of Alice's message…
    let alices = alice.say(group, "alice's").await;
    bob.delete(&format!("/v1/conversations/{group}/messages/{}", alices["id"].as_str().expect("id")))
        .await
        .expect_problem(403, "not_author");
    // …but the author may delete his own, twice without harm.
    bob.delete(&path).await.expect(204);
    bob.delete(&path).await.expect(204);
    bob.patch(&path, json!({ "text": "back" })).await.expect_problem(409, "message_deleted");

    let reads = [
        alice.get(&format!("/v1/conversations/{group}/messages")).await.expect(200),
        alice.get(&format!("/v1/conversations/{group}")).await.expect(200),
        alice.get("/v1/conversations").await.expect(200),
        alice.get(&format!("/v1/conversations/{group}/events")).await.expect(200),
        bob.get(&format!("/v1/conversations/{group}/events")).await.expect(200),
        alice.get("/v1/search/messages?q=hunter2").await.expect(200),
        bob.get("/v1/search/messages?q=password").await.expect(200),
    ];
    for read in reads {
        assert!(!read.to_string().contains("hunter2"), "deleted text leaked: {read}");
    }
    let page = alice.get(&format!("/v1/conversations/{group}/messages")).await.expect(200);
    let tombstone = page["items"].as_array().expect("items").iter().find(|m| m["id"] == id).expect("tombstone").clone();
    assert_eq!(tombstone["deleted"], true);
    assert!(tombstone["text"].is_null());
    assert_eq!(tombstone["seq"], message["seq"]);
    let stored: i64 = sqlx::query_scalar("select count(*) from events where data::text like '%hunter2%'")
        .fetch_one(&ctx.pool().await)
        .await
        .expect("count");
    assert_eq!(stored, 0, "no stored event keeps the text");
}

#[tokio::test]
async fn every_write_stores_exactly_one_event_of_its_kind_at_the_next_seq() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let (alice, bob) = (User::new(&ctx, &api.url(), "Alice"), User::new(&ctx, &api.url(), "Bob"));
    let group = alice.group("audit", &[]).await;
    let base = format!("/v1/conversations/{group}");
    alice.post(&format!("{base}/members"), json!({ "user_id": bob.uuid() })).await.expect(201);
    let message = bob.say(group, "hello").await;
    let message_path = format!("{base}/messages/{}", message["id"].as_str().expect("id"));
    bob.patch(&message_path, json!({ "text": "hello!" })).await.expect(200);
    alice.patch(&base, json!({ "title": "renamed" })).await.expect(200);
    bob.delete(&message_path).await.expect(204);
    bob.delete(&format!("{base}/members/{}", bob.uuid())).await.expect(204);
    // Refused writes store nothing.
    bob.say_refused(group).await;

    let events = alice.get(&format!("{base}/events")).await.expect(200);
    let items = events["items"].as_array().expect("items");
    let kinds: Vec<&str> = items.iter().map(|e| e["type"].as_str().expect("type")).collect();
    assert_eq!(
        kinds,
        [
            "conversation.created",
            "member.added",
            "message.created",
            "message.edited",
            "conversation.updated",
            "message.deleted",
            "member.removed"
        ]
    );
    let seqs: Vec<i64> = items.iter().map(|e| e["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<i64>>());
    assert_eq!(events["last_seq"], 7);
    assert_eq!(items[2]["data"]["message_id"], message["id"]);
    assert_eq!(items[2]["actor"], bob.uuid().to_string());

    let later = alice.get(&format!("{base}/events?after_seq=5&limit=1")).await.expect(200);
    assert_eq!(later["items"][0]["seq"], 6);
    assert_eq!(later["has_more"], true);
}

trait Refused {
    async fn say_refused(&self, group: Uuid);
}

impl Refused for User {
    async fn say_refused(&self, group: Uuid) {
        self.post(&format!("/v1/conversations/{group}/messages"), json!({ "text": "after leaving" }))
            .await
            .expect_problem(404, "not_found");
    }
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_with_a_challenge() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let anonymous = User::anonymous(&api.url());
    let forged = User::anonymous(&api.url()).with_token(&parley_shared::auth::issue_hs256(
        "wrong-secret",
        &parley_shared::auth::Claims::for_user(
            parley_shared::ids::UserId::from_uuid(Uuid::now_v7()),
            None,
            Duration::from_secs(60),
        ),
    ));
    let garbage = User::anonymous(&api.url()).with_token("not-a-jwt");
    for user in [anonymous, forged, garbage] {
        let reply = user.get("/v1/me").await;
        assert!(
            reply.headers.get("www-authenticate").is_some_and(|v| v.to_str().unwrap_or_default().starts_with("Bearer"))
        );
        reply.expect_problem(401, "unauthorized");
    }
    let alice = User::new(&ctx, &api.url(), "Alice");
    let me = alice.get("/v1/me").await.expect(200);
    assert_eq!(me["id"], alice.uuid().to_string());
    assert_eq!(me["display_name"], "Alice");
    alice.get("/v1/nowhere").await.expect_problem(404, "not_found");
}
