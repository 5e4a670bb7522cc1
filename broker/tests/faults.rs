//! What clients see when NATS goes away and comes back, and when a client never finishes its
//! handshake.

mod common;

use std::time::Duration;

use common::{Stack, env};
use parley_testkit::ws::Ended;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn after_a_nats_outage_clients_are_told_to_resume_and_miss_nothing() {
    let mut stack = Stack::with_own_nats(Vec::new()).await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let group = alice.group("team", &[&bob]).await;
    let mut bob_ws = stack.connect(&bob, "bob").await;
    let delivered = bob_ws.hello["conversations"][0]["last_seq"].as_i64().expect("last_seq");

    stack.ctx.nats().kill();
    for n in 0..5 {
        alice.say(group, &format!("during the outage {n}")).await;
    }
    stack.ctx.nats().start_again().await.expect("restart nats");
    assert_eq!(bob_ws.ended().await, Ended::Closed { code: 4004, reason: "unavailable".into() });

    // The resume flow: reconnect, then backfill from what was delivered.
    let bob_ws = stack.connect(&bob, "bob").await;
    let last_seq = bob_ws.hello["conversations"][0]["last_seq"].as_i64().expect("last_seq");
    assert_eq!(last_seq, delivered + 5);
    let page = bob.get(&format!("/v1/conversations/{group}/events?after_seq={delivered}")).await.expect(200);
    let bodies: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|event| event["data"]["body"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(bodies, (0..5).map(|n| format!("during the outage {n}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn after_a_nats_outage_the_closes_are_spread_over_the_resync_window() {
    const SPREAD: Duration = Duration::from_secs(2);
    let mut stack = Stack::with_own_nats(env(&[("PARLEY_BROKER_RESYNC_SPREAD", "2s")])).await;
    let users: Vec<_> = (0..40).map(|n| stack.user(&format!("user{n}"))).collect();
    let mut clients = Vec::new();
    for (n, user) in users.iter().enumerate() {
        clients.push(stack.connect(user, &format!("user{n}")).await);
    }
    stack.ctx.nats().kill();
    stack.ctx.nats().start_again().await.expect("restart nats");
    let closes = futures_util::future::join_all(clients.iter_mut().map(|client| async {
        let ended = client.ended().await;
        (ended, tokio::time::Instant::now())
    }))
    .await;
    for (ended, _) in &closes {
        assert_eq!(*ended, Ended::Closed { code: 4004, reason: "unavailable".into() });
    }
    let first = closes.iter().map(|(_, at)| *at).min().expect("closes");
    let last = closes.iter().map(|(_, at)| *at).max().expect("closes");
    // 40 batches 50 ms apart: the last close comes ~1.95 s after the first, never all at once.
    assert!(last - first >= SPREAD / 2, "closes spread over {:?} only", last - first);
}

#[tokio::test]
async fn a_connection_that_never_sends_its_upgrade_request_is_closed_at_the_handshake_deadline() {
    let stack = Stack::start_with(env(&[("PARLEY_BROKER_HANDSHAKE_TIMEOUT", "1s")])).await;
    let address = stack.broker.url().trim_start_matches("http://").to_owned();
    let mut idle = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the server kept the silent connection: {read:?}");

    // A complete request in time is served as usual.
    let health = reqwest::get(format!("{}/health", stack.broker.url())).await.expect("health");
    assert_eq!(health.status(), 200);
}
