//! Domain events reach JetStream: every write exactly once, on its subject, in seq order per
//! conversation, also when NATS or an API instance dies in between.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::User;
use futures_util::StreamExt;
use parley_shared::events::Event;
use parley_testkit::stream::{self, StreamEvent};
use parley_testkit::{Binary, TestContext, wait};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// The events table: (id, conversation, seq, type) in commit order per conversation.
async fn stored_events(db: &PgPool) -> Vec<(Uuid, Uuid, i64, String)> {
    sqlx::query_as("select id, conversation_id, seq, type from events order by conversation_id, seq")
        .fetch_all(db)
        .await
        .expect("read events")
}

/// Asserts that the stream's conversation-subject messages are exactly the stored events, each
/// once, on `<prefix>.conv.<id>.<type>`, with `Nats-Msg-Id` = event id, every conversation's
/// seq strictly increasing in stream order. Returns the user-subject messages.
async fn assert_stream_matches_events(ctx: &TestContext, db: &PgPool, timeout: Duration) -> Vec<StreamEvent> {
    let stored = stored_events(db).await;
    let conv_prefix = format!("{}.conv.", ctx.subjects().prefix());
    let what = format!("all {} stored events on conversation subjects", stored.len());
    let published = wait::until(&what, timeout, || async {
        let all = stream::read_all(&ctx.nats_url(), ctx.subjects()).await.ok()?;
        let on_conversations = all.iter().filter(|event| event.subject.starts_with(&conv_prefix)).count();
        (on_conversations >= stored.len()).then_some(all)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    let (conversation_messages, user_messages): (Vec<_>, Vec<_>) =
        published.into_iter().partition(|event| event.subject.starts_with(&conv_prefix));

    let mut seen = HashSet::new();
    let mut last_seq: HashMap<Uuid, i64> = HashMap::new();
    for message in &conversation_messages {
        let envelope = &message.envelope;
        assert!(seen.insert(*envelope.id.as_uuid()), "event {} published twice", envelope.id);
        assert_eq!(message.message_id, envelope.id.to_string());
        assert_eq!(
            message.subject,
            ctx.subjects().conversation_event(envelope.conversation_id, envelope.event.kind()),
            "subject of {envelope:?}"
        );
        let previous = last_seq.insert(*envelope.conversation_id.as_uuid(), envelope.seq);
        assert!(
            previous.is_none_or(|previous| previous < envelope.seq),
            "conversation {} went from seq {previous:?} to {} in the stream",
            envelope.conversation_id,
            envelope.seq
        );
    }
    let published: HashSet<(Uuid, Uuid, i64, String)> = conversation_messages
        .iter()
        .map(|m| {
            let e = &m.envelope;
            (*e.id.as_uuid(), *e.conversation_id.as_uuid(), e.seq, e.event.kind().to_owned())
        })
        .collect();
    let stored: HashSet<_> = stored.into_iter().collect();
    assert_eq!(published, stored, "the stream and the events table differ");
    user_messages
}

#[tokio::test]
async fn every_write_is_published_once_on_its_subject_and_members_hear_their_own() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let db = ctx.pool().await;
    let [alice, bob, carol] = ["Alice", "Bob", "Carol"].map(|name| User::new(&ctx, &api.url(), name));
    let group = alice.group("events", &[&bob]).await;
    let base = format!("/v1/conversations/{group}");
    alice.post(&format!("{base}/members"), json!({ "user_id": carol.uuid() })).await.expect(201);
    let message = alice.say(group, "hello").await;
    let message_path = format!("{base}/messages/{}", message["id"].as_str().expect("id"));
    alice.patch(&message_path, json!({ "text": "hello, edited" })).await.expect(200);
    bob.put_empty(&format!("{message_path}/reactions/%F0%9F%91%8D")).await.expect(204);
    bob.delete(&format!("{message_path}/reactions/%F0%9F%91%8D")).await.expect(204);
    bob.post(&format!("{base}/delivered"), json!({ "seq": 3 })).await.expect(200);
    bob.post(&format!("{base}/read"), json!({ "seq": 3 })).await.expect(200);
    alice.patch(&base, json!({ "title": "renamed" })).await.expect(200);
    alice.delete(&message_path).await.expect(204);
    alice.delete(&format!("{base}/members/{}", carol.uuid())).await.expect(204);

    let user_messages = assert_stream_matches_events(&ctx, &db, Duration::from_secs(10)).await;
    let kinds: Vec<String> = stored_events(&db).await.into_iter().map(|(.., kind)| kind).collect();
    assert_eq!(
        kinds,
        [
            "conversation.created",
            "member.added",
            "message.created",
            "message.edited",
            "reaction.added",
            "reaction.removed",
            "receipt.delivered",
            "receipt.read",
            "conversation.updated",
            "message.deleted",
            "member.removed",
        ]
    );
    let mut heard: Vec<String> = user_messages.iter().map(|m| m.subject.clone()).collect();
    heard.sort();
    let subjects = ctx.subjects();
    let mut expected = vec![
        subjects.user_event(alice.id, "conversation.created"),
        subjects.user_event(bob.id, "conversation.created"),
        subjects.user_event(carol.id, "member.added"),
        subjects.user_event(carol.id, "member.removed"),
    ];
    expected.sort();
    assert_eq!(heard, expected);
    // Each member's copy of `conversation.created` names only them: O(n) bytes for n members.
    for user in [alice.id, bob.id] {
        let subject = subjects.user_event(user, "conversation.created");
        let copy = user_messages.iter().find(|message| message.subject == subject).expect("the user's copy");
        let Event::ConversationCreated(created) = &copy.envelope.event else { panic!("{copy:?}") };
        assert_eq!((created.member_ids.as_slice(), created.member_count), ([user].as_slice(), Some(2)));
    }

    // The counters move just after the acknowledgements the stream check saw: poll briefly.
    let metrics = wait::until("the relay's metrics to count 11 events", Duration::from_secs(5), || async {
        let text = reqwest::get(format!("{}/metrics", api.url())).await.ok()?.text().await.ok()?;
        text.contains("parley_outbox_published_events_total 11\n").then_some(text)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert_eq!(value("parley_outbox_leader"), 1.0);
    assert_eq!(value("parley_outbox_publish_latency_seconds_count"), 11.0);
}

#[tokio::test]
async fn typing_over_rest_is_published_on_core_nats_and_never_stored() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let [alice, bob] = ["Alice", "Bob"].map(|name| User::new(&ctx, &api.url(), name));
    let group = alice.group("typing", &[&bob]).await;
    let nats = async_nats::connect(ctx.nats_url()).await.expect("connect NATS");
    let group_id = parley_shared::ids::ConversationId::from_uuid(group);
    let mut signals = nats.subscribe(ctx.subjects().typing(group_id)).await.expect("subscribe");
    nats.flush().await.expect("flush");

    bob.post(&format!("/v1/conversations/{group}/typing"), json!({})).await.expect(202);
    let signal = tokio::time::timeout(Duration::from_secs(5), signals.next()).await.expect("a typing signal");
    let signal: serde_json::Value = serde_json::from_slice(&signal.expect("message").payload).expect("json");
    assert_eq!(signal["type"], "typing");
    assert_eq!(signal["actor"], bob.uuid().to_string());
    assert_eq!(signal["conversation_id"], group.to_string());
    assert_eq!(signal["data"]["state"], "start");
    let stored: i64 = sqlx::query_scalar("select count(*) from events where type = 'typing'")
        .fetch_one(&ctx.pool().await)
        .await
        .expect("count");
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn writes_while_nats_is_down_all_succeed_and_are_published_in_order_once_it_is_back() {
    let mut ctx = TestContext::with_own_services().await;
    let api = ctx.spawn(Binary::Api, common::unlimited_writes()).await;
    let db = ctx.pool().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let mut groups = Vec::new();
    for n in 0..5 {
        groups.push(alice.group(&format!("outage {n}"), &[]).await);
    }
    assert_stream_matches_events(&ctx, &db, Duration::from_secs(10)).await;

    ctx.nats().stop().await;
    let posts =
        (0..100).map(|n| {
            let (alice, group) = (alice.clone(), groups[n % groups.len()]);
            async move {
                alice.post(&format!("/v1/conversations/{group}/messages"), json!({ "text": format!("m{n}") })).await
            }
        });
    let replies = futures_util::stream::iter(posts).buffer_unordered(10).collect::<Vec<_>>().await;
    assert!(replies.iter().all(|reply| reply.status == 201), "a POST failed while NATS was down");

    ctx.nats().start_again().await.expect("restart NATS");
    // Stated bound: the relay retries within 2 s of a failure and NATS clients reconnect within
    // a few seconds; 15 s leaves room for a loaded CI machine.
    assert_stream_matches_events(&ctx, &db, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn events_an_instance_committed_but_never_published_are_published_by_another_after_sigkill() {
    let ctx = TestContext::start().await;
    // Instance A reaches PostgreSQL but not NATS: everything it commits stays unpublished.
    let unreachable_nats = format!("nats://127.0.0.1:{}", wait::free_port().expect("port"));
    let mut a = ctx.spawn(Binary::Api, vec![("NATS_URL".into(), unreachable_nats)]).await;
    let db = ctx.pool().await;
    let alice = User::new(&ctx, &a.url(), "Alice");
    let group = alice.group("crash", &[]).await;
    for n in 0..20 {
        alice.say(group, &format!("m{n}")).await;
    }
    let unpublished: i64 = sqlx::query_scalar("select count(*) from events where published_at is null")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(unpublished, 21, "A should have committed 21 events it could not publish");
    a.kill();

    let _b = ctx.spawn_api().await;
    assert_stream_matches_events(&ctx, &db, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn two_instances_under_concurrent_load_publish_every_event_exactly_once_in_order() {
    let ctx = TestContext::start().await;
    let (a, b) = (
        ctx.spawn(Binary::Api, common::unlimited_writes()).await,
        ctx.spawn(Binary::Api, common::unlimited_writes()).await,
    );
    let db = ctx.pool().await;
    let alice_a = User::new(&ctx, &a.url(), "Alice");
    let alice_b = alice_a.clone().on(&b.url());
    let bob_b = User::new(&ctx, &b.url(), "Bob");
    let mut groups = Vec::new();
    for n in 0..4 {
        groups.push(alice_a.group(&format!("shared {n}"), &[&bob_b]).await);
    }
    let posts =
        (0..200).map(|n| {
            let user = match n % 3 {
                0 => alice_a.clone(),
                1 => alice_b.clone(),
                _ => bob_b.clone(),
            };
            let group = groups[n % groups.len()];
            async move {
                user.post(&format!("/v1/conversations/{group}/messages"), json!({ "text": format!("m{n}") })).await
            }
        });
    let replies = futures_util::stream::iter(posts).buffer_unordered(16).collect::<Vec<_>>().await;
    assert!(replies.iter().all(|reply| reply.status == 201), "a POST failed");
    assert_stream_matches_events(&ctx, &db, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn the_published_message_continues_the_trace_of_the_http_request() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn_api().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let group = alice.group("traced", &[]).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let sent = alice
        .post_with_header(
            &format!("/v1/conversations/{group}/messages"),
            ("traceparent", &traceparent),
            json!({ "text": "traced" }),
        )
        .await
        .expect(201);

    // conversation.created (conversation and creator subjects), then message.created.
    let events = stream::wait_for(&ctx.nats_url(), ctx.subjects(), 3, Duration::from_secs(10)).await.expect("events");
    let published =
        events.iter().find(|event| event.envelope.event.kind() == "message.created").expect("the message's event");
    assert_eq!(published.envelope.seq, sent["seq"].as_i64().expect("seq"));
    let header = published.traceparent.as_deref().expect("a traceparent header");
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "malformed traceparent {header}");
    assert_eq!(parts[1], trace_id, "the publish is not in the request's trace");
    assert_ne!(parts[2], "00f067aa0ba902b7", "the publish should be a span of its own");
    // Requests without a traceparent start a trace of their own, which the event carries too.
    let untraced = events.iter().find(|event| event.envelope.event.kind() == "conversation.created").expect("created");
    assert!(untraced.traceparent.as_deref().is_some_and(|header| !header.contains(trace_id)));
}

#[tokio::test]
async fn published_events_past_their_retention_are_pruned_and_replay_from_before_them_is_410() {
    let ctx = TestContext::start().await;
    // 3 s: long enough that the event written after the pruning is still there when replayed.
    let api = ctx.spawn(Binary::Api, vec![("PARLEY_EVENT_RETENTION".into(), "3s".into())]).await;
    let db = ctx.pool().await;
    let alice = User::new(&ctx, &api.url(), "Alice");
    let group = alice.group("retention", &[]).await;
    for n in 0..3 {
        alice.say(group, &format!("old {n}")).await;
    }
    wait::until("the relay to prune the 4 published events", Duration::from_secs(15), || async {
        let left: i64 = sqlx::query_scalar("select count(*) from events").fetch_one(&db).await.ok()?;
        (left == 0).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));

    let events = format!("/v1/conversations/{group}/events");
    let problem = alice.get(&format!("{events}?after_seq=0")).await.expect_problem(410, "history_pruned");
    assert!(problem["detail"].as_str().expect("detail").contains("1..4"), "{problem}");
    // Messages themselves stay: a client reloads them and continues from last_seq.
    let page = alice.get(&format!("/v1/conversations/{group}/messages")).await.expect(200);
    assert_eq!(page["items"].as_array().expect("items").len(), 3);
    alice.say(group, "new").await;
    let replay = alice.get(&format!("{events}?after_seq=4")).await.expect(200);
    assert_eq!(replay["items"][0]["seq"], 5);
    // Nothing after the newest event: an empty page, not a 410.
    let caught_up = alice.get(&format!("{events}?after_seq=5")).await.expect(200);
    assert_eq!(caught_up["items"].as_array().expect("items").len(), 0);
    let beyond = alice.get(&format!("{events}?after_seq={}", i64::MAX)).await.expect(200);
    assert_eq!(beyond["items"].as_array().expect("items").len(), 0);
}
