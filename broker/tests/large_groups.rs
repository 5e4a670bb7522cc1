//! Groups far larger than the relay's publish window: creating one in a single request must
//! not stop delivery (an event with more user copies than async-nats admits unacknowledged
//! once halted the relay for good).

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
