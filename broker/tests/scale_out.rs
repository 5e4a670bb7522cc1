//! Two APIs and two brokers on one NATS and one PostgreSQL: events and typing cross nodes.

use std::time::Duration;

use futures_util::SinkExt;
use parley_testkit::rest::{User, unlimited_writes};
use parley_testkit::ws::WsClient;
use parley_testkit::{AppProcess, Binary, TestContext};
use serde_json::json;

fn ws_url(broker: &AppProcess) -> String {
    format!("{}/ws", broker.url().replace("http://", "ws://"))
}

#[tokio::test]
async fn events_and_typing_cross_apis_and_brokers_and_typing_never_returns_to_the_typist() {
    let ctx = TestContext::start().await;
    let (api_a, api_b) =
        (ctx.spawn(Binary::Api, unlimited_writes()).await, ctx.spawn(Binary::Api, unlimited_writes()).await);
    let (broker_a, broker_b) = (ctx.spawn_broker().await, ctx.spawn_broker().await);
    let alice = User::new(&ctx, &api_a.url(), "alice");
    let bob = User::new(&ctx, &api_b.url(), "bob");
    let carol = User::new(&ctx, &api_a.url(), "carol");
    let group = alice.group("team", &[&bob]).await;
    carol.get("/v1/me").await.expect(200);

    let mut alice_on_a = WsClient::connect(&ws_url(&broker_a), &ctx.token(alice.id, "alice")).await;
    let mut bob_on_b = WsClient::connect(&ws_url(&broker_b), &ctx.token(bob.id, "bob")).await;
    let mut bob_on_a = WsClient::connect(&ws_url(&broker_a), &ctx.token(bob.id, "bob")).await;
    let mut carol_on_b = WsClient::connect(&ws_url(&broker_b), &ctx.token(carol.id, "carol")).await;

    // Posted through API B, received on both brokers.
    let sent = bob.say(group, "from api b").await;
    for client in [&mut alice_on_a, &mut bob_on_b, &mut bob_on_a] {
        assert_eq!(client.next_event().await["data"]["message_id"], sent["id"]);
    }

    // Typing from Bob on broker B: Alice on broker A sees it, Bob's own connections never do.
    bob_on_b.send_json(&json!({ "type": "typing", "conversation_id": group, "state": "start" })).await;
    let typing = alice_on_a.next_frame().await.expect("typing frame");
    assert_eq!(typing["type"], "typing", "{typing}");
    assert_eq!(typing["actor"], bob.uuid().to_string());
    assert_eq!(typing["data"]["state"], "start");
    bob_on_b.send_json(&json!({ "type": "typing", "conversation_id": group, "state": "stop" })).await;
    let stop = alice_on_a.next_frame().await.expect("typing frame");
    assert_eq!((stop["type"].as_str(), stop["data"]["state"].as_str()), (Some("typing"), Some("stop")), "{stop}");
    // The REST endpoint reaches the same clients.
    alice.post(&format!("/v1/conversations/{group}/typing"), json!({})).await.expect(202);
    for client in [&mut bob_on_a, &mut bob_on_b] {
        let typing = client.next_frame().await.expect("typing frame");
        assert_eq!(
            (typing["type"].as_str(), typing["actor"].as_str()),
            (Some("typing"), Some(alice.uuid().to_string().as_str()))
        );
    }
    for client in [&mut bob_on_b, &mut bob_on_a] {
        let quiet = client.next_frame_within(Duration::from_millis(500)).await;
        assert!(quiet.is_none(), "the typist got a frame back: {quiet:?}");
    }

    // A non-member's typing is refused and reaches nobody.
    carol_on_b.send_json(&json!({ "type": "typing", "conversation_id": group, "state": "start" })).await;
    let refused = carol_on_b.next_frame().await.expect("error frame");
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("not_a_member")));
    assert!(alice_on_a.next_frame_within(Duration::from_millis(500)).await.is_none());
}

/// One client following a conversation the documented way: resume after `hello`, apply live
/// events, backfill gaps over REST, and on a lost connection reconnect to the next broker.
/// Returns every seq it delivered, in delivery order, once it has delivered `last`, and how
/// many connections it opened.
async fn follow(
    ctx_token: String,
    user: User,
    conversation: uuid::Uuid,
    brokers: Vec<String>,
    first: usize,
    last: std::sync::Arc<std::sync::atomic::AtomicI64>,
    greeted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (Vec<i64>, usize) {
    use std::sync::atomic::Ordering;
    let mut connections = 0;
    let mut delivered_seqs = Vec::new();
    let mut delivered = 0i64;
    let mut broker = first;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "{} never caught up: delivered {delivered}", user.uuid());
        let opened =
            parley_testkit::ws::open(parley_testkit::ws::request_with_token(&brokers[broker], &ctx_token)).await;
        // Refused, or closed before `hello` (4004 while the broker's NATS node is down): retry.
        let client = match opened {
            Ok(stream) => WsClient::try_after_handshake(stream).await,
            Err(_) => None,
        };
        let Some(mut client) = client else {
            broker = (broker + 1) % brokers.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        connections += 1;
        if connections == 1 {
            greeted.fetch_add(1, Ordering::SeqCst);
        }
        let position = client.hello["conversations"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["conversation_id"] == conversation.to_string()))
            .and_then(|c| c["last_seq"].as_i64())
            .unwrap_or(0);
        backfill(&user, conversation, position, &mut delivered, &mut delivered_seqs).await;
        loop {
            let target = last.load(Ordering::SeqCst);
            if target > 0 && delivered >= target {
                return (delivered_seqs, connections);
            }
            let Some(frame) = client.next_frame_within(Duration::from_secs(2)).await else {
                // Quiet or gone: if gone, the next round reconnects elsewhere.
                if client
                    .stream()
                    .send(tokio_tungstenite::tungstenite::Message::text(r#"{"type":"ping"}"#))
                    .await
                    .is_err()
                {
                    break;
                }
                if target > 0 {
                    backfill(&user, conversation, target, &mut delivered, &mut delivered_seqs).await;
                }
                continue;
            };
            if frame["type"] != "event" || frame["event"]["conversation_id"] != conversation.to_string() {
                continue;
            }
            let seq = frame["event"]["seq"].as_i64().expect("seq");
            if seq > delivered + 1 {
                backfill(&user, conversation, seq - 1, &mut delivered, &mut delivered_seqs).await;
            }
            if seq == delivered + 1 {
                delivered = seq;
                delivered_seqs.push(seq);
            }
        }
        broker = (broker + 1) % brokers.len();
    }
}

/// Delivers every event after `delivered` up to `until` from `GET …/events`.
async fn backfill(user: &User, conversation: uuid::Uuid, until: i64, delivered: &mut i64, seqs: &mut Vec<i64>) {
    while *delivered < until {
        let page = user
            .get(&format!("/v1/conversations/{conversation}/events?after_seq={delivered}&limit=500"))
            .await
            .expect(200);
        let items = page["items"].as_array().expect("items");
        if items.is_empty() {
            return;
        }
        for event in items {
            let seq = event["seq"].as_i64().expect("seq");
            if seq == *delivered + 1 {
                *delivered = seq;
                seqs.push(seq);
            }
        }
    }
}

/// `clients` members of one group follow it the documented way, client n starting on broker
/// `n % brokers.len()`, while Alice posts `messages`, calling `fault(n)` before message n. Asserts
/// that every client delivered every seq exactly once, in order; returns how many connections
/// each one opened.
async fn everyone_follows_through(
    ctx: &TestContext,
    api: &AppProcess,
    brokers: Vec<String>,
    clients: usize,
    messages: usize,
    mut fault: impl AsyncFnMut(usize),
) -> Vec<usize> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
    let alice = User::new(ctx, &api.url(), "alice");
    let members: Vec<User> = (0..clients).map(|n| User::new(ctx, &api.url(), &format!("member{n}"))).collect();
    let group = alice.group("everyone", &members.iter().collect::<Vec<_>>()).await;
    let (last, greeted) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicUsize::new(0)));
    let followers: Vec<_> = members
        .iter()
        .enumerate()
        .map(|(n, member)| {
            let token = ctx.token(member.id, "member");
            let first = n % brokers.len();
            tokio::spawn(follow(token, member.clone(), group, brokers.clone(), first, last.clone(), greeted.clone()))
        })
        .collect();
    // Everyone connected (their broker's feed is in place, so the events stream exists), then
    // the faults and the posting. Not a fixed delay: a 3-node cluster under load can take more
    // than 3 s to elect its JetStream meta leader, and a replicated stream cannot be created
    // while one of its peers is down, so faults injected before it exists leave it uncreated.
    parley_testkit::wait::until("every client to get hello", Duration::from_secs(60), || async {
        (greeted.load(Ordering::SeqCst) == clients).then_some(())
    })
    .await
    .expect("every client connected");
    let mut final_seq = 0;
    for n in 0..messages {
        fault(n).await;
        final_seq = alice.say(group, &format!("message {n}")).await["seq"].as_i64().expect("seq");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last.store(final_seq, Ordering::SeqCst);
    let mut connections = Vec::with_capacity(clients);
    for follower in followers {
        let (seqs, opened) =
            tokio::time::timeout(Duration::from_secs(120), follower).await.expect("caught up").expect("follower");
        let first = *seqs.first().expect("delivered something");
        assert_eq!(seqs, (first..=final_seq).collect::<Vec<_>>(), "every seq exactly once, in order");
        connections.push(opened);
    }
    connections
}

#[tokio::test]
async fn when_a_broker_is_killed_its_clients_resume_on_the_other_and_miss_nothing() {
    let ctx = TestContext::start().await;
    let api = ctx.spawn(Binary::Api, unlimited_writes()).await;
    let mut broker_a = ctx.spawn_broker().await;
    let broker_b = ctx.spawn_broker().await;
    let brokers = vec![ws_url(&broker_a), ws_url(&broker_b)];
    // Broker A dies a third of the way through.
    let connections = everyone_follows_through(&ctx, &api, brokers, 200, 60, async |n| {
        if n == 20 {
            broker_a.kill();
        }
    })
    .await;
    for (n, opened) in connections.iter().enumerate().step_by(2) {
        assert!(*opened >= 2, "client {n} started on the killed broker but never reconnected");
    }
}

#[tokio::test]
async fn a_three_node_nats_cluster_loses_each_node_in_turn_while_messages_are_posted_and_no_client_misses_one() {
    let ctx = TestContext::start().await;
    let logs = ctx.dir().to_path_buf();
    let mut cluster = parley_testkit::nats::NatsCluster::start(&ctx.dir().join("cluster"), 3, |n| {
        parley_testkit::process::Output::File(logs.join(format!("nats-cluster-{n}.log")))
    })
    .await
    .expect("3-node NATS cluster");
    let nats = ("NATS_URL".to_owned(), cluster.urls());
    let mut api_env = unlimited_writes();
    api_env.extend([nats.clone(), ("PARLEY_STREAM_REPLICAS".into(), "3".into())]);
    let api = ctx.spawn(Binary::Api, api_env).await;
    let broker = ctx.spawn(Binary::Broker, vec![nats]).await;
    // One node down at a time (the replicated stream keeps its quorum), each in turn, so
    // whichever node the API and the broker are connected to dies once while posting goes on.
    everyone_follows_through(&ctx, &api, vec![ws_url(&broker)], 20, 60, async |n| match n {
        10 => cluster.servers[0].kill(),
        20 => cluster.servers[0].start_again().await.expect("node 0 back"),
        30 => cluster.servers[1].kill(),
        40 => cluster.servers[1].start_again().await.expect("node 1 back"),
        50 => cluster.servers[2].kill(),
        _ => {}
    })
    .await;
    // Every committed event also reached the replicated stream (the relay survived the node).
    let published = parley_testkit::wait::until("the relay to publish every event", Duration::from_secs(60), || {
        let url = api.url();
        async move {
            let metrics = reqwest::get(format!("{url}/metrics")).await.ok()?.text().await.ok()?;
            metrics.lines().any(|line| line == "parley_outbox_lag_seconds 0.0").then_some(())
        }
    })
    .await;
    assert!(published.is_ok(), "outbox not drained after the node loss");
}
