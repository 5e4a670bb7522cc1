//! Real `parley-api` and `parley-broker` binaries, real PostgreSQL and NATS, real WebSocket
//! clients: who receives which event, in which order, and how a reconnecting client resumes.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use common::Stack;
use parley_testkit::rest::User;
use serde_json::{Value, json};
use uuid::Uuid;

/// How long "receives nothing" is watched for.
const QUIET: Duration = Duration::from_millis(1500);

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|event| event["seq"].as_i64().expect("seq")).collect()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|event| event["type"].as_str().expect("type")).collect()
}

#[tokio::test]
async fn members_get_events_on_every_connection_outsiders_never_and_removed_members_no_more() {
    let stack = Stack::start().await;
    let (alice, bob, carol) = (stack.user("alice"), stack.user("bob"), stack.user("carol"));
    carol.get("/v1/me").await.expect(200);
    let group = alice.group("team", &[&bob]).await;
    let mut alice_ws = stack.connect(&alice, "alice").await;
    let mut bob_phone = stack.connect(&bob, "bob").await;
    let mut bob_laptop = stack.connect(&bob, "bob").await;
    let mut carol_ws = stack.connect(&carol, "carol").await;
    for client in [&alice_ws, &bob_phone, &bob_laptop] {
        let conversations = client.hello["conversations"].as_array().expect("conversations");
        assert!(conversations.iter().any(|c| c["conversation_id"] == group.to_string()), "{}", client.hello);
    }
    assert_eq!(carol_ws.hello["conversations"], json!([]));

    let sent = alice
        .post(
            &format!("/v1/conversations/{group}/messages"),
            json!({ "text": "hello bob", "client_message_id": "draft-1" }),
        )
        .await
        .expect(201);
    for client in [&mut alice_ws, &mut bob_phone, &mut bob_laptop] {
        let event = client.next_event().await;
        assert_eq!(event["type"], "message.created");
        assert_eq!(event["conversation_id"], group.to_string());
        assert_eq!(event["data"]["message_id"], sent["id"]);
        assert_eq!(event["data"]["client_message_id"], "draft-1");
        assert_eq!(event["seq"], sent["seq"]);
    }

    alice.delete(&format!("/v1/conversations/{group}/members/{}", bob.uuid())).await.expect(204);
    for client in [&mut alice_ws, &mut bob_phone, &mut bob_laptop] {
        let event = client.next_event().await;
        assert_eq!(event["type"], "member.removed", "{event}");
        assert_eq!(event["data"]["user_id"], bob.uuid().to_string());
    }
    alice.say(group, "bob has left").await;
    assert_eq!(alice_ws.next_event().await["data"]["body"], "bob has left");
    bob_phone.expect_no_event(QUIET).await;
    bob_laptop.expect_no_event(Duration::from_millis(100)).await;
    carol_ws.expect_no_event(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn edits_deletions_reactions_and_receipts_arrive_in_seq_order() {
    let stack = Stack::start().await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let group = alice.group("team", &[&bob]).await;
    let mut bob_ws = stack.connect(&bob, "bob").await;
    let base = format!("/v1/conversations/{group}");
    let message = alice.say(group, "first").await;
    let id = message["id"].as_str().expect("id");
    alice.patch(&format!("{base}/messages/{id}"), json!({ "text": "first, edited" })).await.expect(200);
    bob.put_empty(&format!("{base}/messages/{id}/reactions/%F0%9F%91%8D")).await.expect(204);
    bob.delete(&format!("{base}/messages/{id}/reactions/%F0%9F%91%8D")).await.expect(204);
    bob.post(&format!("{base}/delivered"), json!({ "seq": message["seq"] })).await.expect(200);
    bob.post(&format!("{base}/read"), json!({ "seq": message["seq"] })).await.expect(200);
    alice.delete(&format!("{base}/messages/{id}")).await.expect(204);

    let events = bob_ws.events(7).await;
    assert_eq!(
        kinds(&events),
        [
            "message.created",
            "message.edited",
            "reaction.added",
            "reaction.removed",
            "receipt.delivered",
            "receipt.read",
            "message.deleted"
        ]
    );
    let seqs = seqs(&events);
    assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1), "seqs {seqs:?}");
}

#[tokio::test]
async fn a_client_that_reconnects_and_follows_the_resume_flow_gets_every_message_once_in_order() {
    let stack = Stack::start().await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let group = alice.group("team", &[&bob]).await;
    alice.say(group, "before").await;

    // Bob's client state: the last seq it has delivered per conversation, and what it saw.
    let mut seen: BTreeMap<i64, Value> = BTreeMap::new();
    let mut ws = stack.connect(&bob, "bob").await;
    let mut delivered = resume(&bob, &ws.hello, group, 0, &mut seen).await;
    alice.say(group, "live 1").await;
    let event = ws.next_event().await;
    delivered = accept(event, delivered, &mut seen);
    drop(ws);

    for n in 0..20 {
        alice.say(group, &format!("while away {n}")).await;
    }
    let mut ws = stack.connect(&bob, "bob").await;
    delivered = resume(&bob, &ws.hello, group, delivered, &mut seen).await;
    for n in 0..5 {
        alice.say(group, &format!("after {n}")).await;
    }
    while delivered < ws.hello["conversations"][0]["last_seq"].as_i64().unwrap_or(0) + 5 {
        let event = ws.next_event().await;
        delivered = accept(event, delivered, &mut seen);
    }

    let bodies: Vec<String> = seen
        .values()
        .filter(|event| event["type"] == "message.created")
        .map(|event| event["data"]["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut expected = vec!["before".to_owned(), "live 1".to_owned()];
    expected.extend((0..20).map(|n| format!("while away {n}")));
    expected.extend((0..5).map(|n| format!("after {n}")));
    assert_eq!(bodies, expected);
    let seqs: Vec<i64> = seen.keys().copied().collect();
    assert_eq!(seqs, (1..=delivered).collect::<Vec<_>>(), "every seq exactly once");
}

/// The documented resume flow for one conversation: backfill from `delivered` up to the
/// `last_seq` in `hello` over REST. Returns the new `delivered`.
async fn resume(
    user: &User,
    hello: &Value,
    conversation: Uuid,
    mut delivered: i64,
    seen: &mut BTreeMap<i64, Value>,
) -> i64 {
    let position = hello["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .find(|c| c["conversation_id"] == conversation.to_string())
        .expect("the conversation is in hello");
    let last_seq = position["last_seq"].as_i64().expect("last_seq");
    while delivered < last_seq {
        let page = user
            .get(&format!("/v1/conversations/{conversation}/events?after_seq={delivered}&limit=100"))
            .await
            .expect(200);
        let items = page["items"].as_array().expect("items");
        assert!(!items.is_empty(), "the API has events up to {last_seq}: {page}");
        for event in items {
            delivered = accept(event.clone(), delivered, seen);
        }
    }
    delivered
}

/// Delivers `event` if it is the next one; duplicates are dropped, a gap is a test failure here
/// (a real client would backfill it).
fn accept(event: Value, delivered: i64, seen: &mut BTreeMap<i64, Value>) -> i64 {
    let seq = event["seq"].as_i64().expect("seq");
    if seq <= delivered {
        return delivered;
    }
    assert_eq!(seq, delivered + 1, "gap before {event}");
    assert!(seen.insert(seq, event).is_none(), "seq {seq} twice");
    seq
}

#[tokio::test]
async fn a_user_added_to_a_conversation_receives_it_live_from_then_on_and_so_does_a_new_conversation() {
    let stack = Stack::start().await;
    let (alice, bob, carol) = (stack.user("alice"), stack.user("bob"), stack.user("carol"));
    let group = alice.group("team", &[&carol]).await;
    let mut bob_ws = stack.connect(&bob, "bob").await;
    assert_eq!(bob_ws.hello["conversations"], json!([]));

    alice.post(&format!("/v1/conversations/{group}/members"), json!({ "user_id": bob.uuid() })).await.expect(201);
    let added = bob_ws.next_event().await;
    assert_eq!(
        (added["type"].as_str(), added["data"]["user_id"].as_str()),
        (Some("member.added"), Some(bob.uuid().to_string().as_str()))
    );
    let sent = alice.say(group, "welcome bob").await;
    let event = bob_ws.next_event().await;
    assert_eq!(event["data"]["message_id"], sent["id"], "{event}");

    let direct = carol.post("/v1/conversations", json!({ "kind": "direct", "user_id": bob.uuid() })).await.expect(201);
    let created = bob_ws.next_event().await;
    assert_eq!(created["type"], "conversation.created");
    assert_eq!(created["conversation_id"], direct["id"]);
    let direct: Uuid = direct["id"].as_str().expect("id").parse().expect("uuid");
    carol.say(direct, "hi bob").await;
    assert_eq!(bob_ws.next_event().await["data"]["body"], "hi bob");
}

#[tokio::test]
async fn the_delivery_continues_the_request_trace_and_metrics_count_it() {
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", sink.local_addr().expect("addr"));
    let mut stack = Stack::start_with(common::env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)])).await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let group = alice.group("team", &[&bob]).await;
    let mut bob_ws = stack.connect(&bob, "bob").await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    alice
        .post_with_header(
            &format!("/v1/conversations/{group}/messages"),
            ("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01")),
            json!({ "text": "traced" }),
        )
        .await
        .expect(201);
    assert_eq!(bob_ws.next_event().await["data"]["body"], "traced");

    let lines = [
        "parley_broker_connections 1",
        "parley_broker_users 1",
        "parley_broker_index_conversations 1",
        "parley_broker_index_memberships 1",
        "parley_broker_delivery_latency_seconds_count 1",
    ];
    // The index gauges are refreshed once a second.
    let url = format!("{}/metrics", stack.broker.url());
    let counted = parley_testkit::wait::until("the broker's metrics", Duration::from_secs(5), || async {
        let metrics = reqwest::get(&url).await.ok()?.text().await.ok()?;
        lines.iter().all(|line| metrics.contains(line)).then_some(())
    })
    .await;
    if counted.is_err() {
        let metrics = reqwest::get(&url).await.expect("metrics").text().await.expect("body");
        panic!("missing some of {lines:?} in\n{metrics}");
    }
    drop(bob_ws);
    stack.broker.terminate().await.expect("broker stops");
    let export = tokio::time::timeout(Duration::from_secs(15), parley_testkit::otlp::accept_export(&sink))
        .await
        .expect("an OTLP export");
    let trace_bytes: Vec<u8> =
        (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).expect("hex")).collect();
    assert!(export.contains(b"broker.deliver"), "no delivery span exported");
    assert!(export.contains(&trace_bytes), "the delivery span is not in the request's trace");
}

#[tokio::test]
async fn a_slow_reader_gets_whole_frames_with_pongs_to_its_pings_between_them() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    const MESSAGES: usize = 40;
    const PINGS: usize = 40;
    // Pings count against the inbound frame rate like any frame.
    let stack = Stack::start_with(common::env(&[("PARLEY_BROKER_MAX_FRAMES_PER_SECOND", "1000")])).await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let group = alice.group("team", &[&bob]).await;
    // A small receive window and long frames: the broker's writes stop part-way through frames
    // while pings come in.
    let mut bob_ws = stack.connect_with_receive_buffer(&bob, "bob", 4096).await;
    let body = |i: usize| format!("{i} {}", "x".repeat(3_000));
    let posting = tokio::spawn(async move {
        for i in 0..MESSAGES {
            alice.say(group, &body(i)).await;
        }
    });
    let (mut bodies, mut pongs, mut pings) = (Vec::new(), Vec::new(), 0);
    while bodies.len() < MESSAGES || pongs.len() < PINGS {
        if pings < PINGS {
            bob_ws.stream().send(Message::Ping(vec![pings as u8].into())).await.expect("ping sent");
            pings += 1;
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), bob_ws.stream().next())
            .await
            .expect("frames keep coming")
            .expect("connection open")
            .expect("a valid frame: frames were never interleaved");
        match frame {
            Message::Pong(payload) => pongs.push(payload[0]),
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).expect("whole JSON frame");
                if frame["type"] == "event" && frame["event"]["type"] == "message.created" {
                    bodies.push(frame["event"]["data"]["body"].as_str().expect("body").to_owned());
                }
            }
            other => panic!("unexpected frame {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    posting.await.expect("posted");
    assert_eq!(bodies, (0..MESSAGES).map(body).collect::<Vec<_>>());
    assert_eq!(pongs, (0..PINGS).map(|i| i as u8).collect::<Vec<_>>());
}
