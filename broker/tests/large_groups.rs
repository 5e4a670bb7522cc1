//! Large groups and large memberships: creating a group far larger than the relay's publish
//! window in a single request must not stop delivery (an event with more user copies than
//! async-nats admits unacknowledged once halted the relay for good); a user in more
//! conversations than one membership reply carries connects with all of them.

use std::time::{Duration, Instant};

mod common;

use common::{Stack, env};
use serde_json::json;
use uuid::Uuid;

/// Bob is connected; Alice creates a group of `size` with him and posts right after.
async fn a_group_created_in_one_request_is_delivered(size: usize) {
    let stack = Stack::with_api_env(
        env(&[("PARLEY_MAX_BODY_BYTES", "8388608"), ("PARLEY_GROUP_MAX_MEMBERS", "100000")]),
        Vec::new(),
    )
    .await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let mut bob_ws = stack.connect(&bob, "bob").await;
    let mut members: Vec<Uuid> = (0..size - 2).map(|_| Uuid::now_v7()).collect();
    members.push(bob.uuid());
    let body = json!({ "kind": "group", "title": "everyone", "member_ids": members });
    let group = alice.post("/v1/conversations", body).await.expect(201);
    assert_eq!(group["member_count"], size, "{group}");
    let created = Instant::now();
    let group = group["id"].as_str().expect("id").to_owned();
    let sent = alice.say(group.parse().expect("uuid"), "welcome, all").await;

    let deadline = Duration::from_secs(5);
    let event = tokio::time::timeout(deadline, bob_ws.next_event()).await.expect("conversation.created within 5 s");
    assert_eq!(
        (event["type"].as_str(), event["conversation_id"].as_str()),
        (Some("conversation.created"), Some(&*group))
    );
    assert_eq!(event["data"]["member_count"], size);
    let remaining = deadline.saturating_sub(created.elapsed());
    let event = tokio::time::timeout(remaining, bob_ws.next_event()).await.expect("the message within 5 s");
    assert_eq!(event["type"], "message.created", "{event}");
    assert_eq!(event["data"]["message_id"], sent["id"]);
    eprintln!("{size} members: both events at Bob {:?} after the 201", created.elapsed());
}

#[tokio::test]
async fn a_group_of_10_000_created_in_one_request_is_delivered() {
    a_group_created_in_one_request_is_delivered(10_000).await;
}

#[tokio::test]
async fn a_group_of_20_000_created_in_one_request_is_delivered() {
    a_group_created_in_one_request_is_delivered(20_000).await;
}

#[tokio::test]
async fn a_user_in_12_000_conversations_connects_learns_them_all_page_by_page_and_gets_a_capped_hello() {
    const CONVERSATIONS: usize = 12_000;
    let stack = Stack::with_api_env(Vec::new(), env(&[("PARLEY_BROKER_HELLO_MAX_CONVERSATIONS", "1000")])).await;
    let bob = stack.user("bob");
    bob.get("/v1/me").await.expect(200);
    // Arranged in the database: 12,000 conversations over REST would take minutes.
    let groups: Vec<Uuid> = (0..CONVERSATIONS).map(|_| Uuid::now_v7()).collect();
    let db = stack.ctx.pool().await;
    sqlx::query(
        "insert into conversations (id, kind, title, created_by, last_seq)
         select id, 'group', 'many', $2, 1 from unnest($1::uuid[]) as id",
    )
    .bind(&groups)
    .bind(bob.uuid())
    .execute(&db)
    .await
    .expect("conversations");
    sqlx::query(
        "insert into conversation_members (conversation_id, user_id, role, visible_from_seq)
         select id, $2, 'owner', 1 from unnest($1::uuid[]) as id",
    )
    .bind(&groups)
    .bind(bob.uuid())
    .execute(&db)
    .await
    .expect("members");

    let started = Instant::now();
    let mut bob_ws = stack.connect(&bob, "bob").await;
    eprintln!("hello for {CONVERSATIONS} conversations after {:?}", started.elapsed());
    assert_eq!(bob_ws.hello["conversations"].as_array().expect("conversations").len(), 1000);
    assert_eq!(bob_ws.hello["conversations_truncated"], true);
    // The last conversation by id is on the last (12th) page of the membership reply, and not in
    // `hello`: its events still arrive.
    let last = *groups.iter().max().expect("groups");
    let sent = bob.say(last, "on the last page").await;
    let event = bob_ws.next_event().await;
    assert_eq!(
        (event["conversation_id"].as_str(), &event["data"]["message_id"]),
        (Some(&*last.to_string()), &sent["id"])
    );
}
