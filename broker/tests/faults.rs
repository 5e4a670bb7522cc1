//! What clients see when NATS goes away and comes back (or comes back without the events it
//! held), and when a client never finishes its handshake.

mod common;

use std::time::Duration;

use common::{Stack, env};
use parley_testkit::ws::Ended;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn after_a_nats_outage_clients_stay_connected_and_receive_what_was_posted_meanwhile_in_order() {
    let mut stack = Stack::with_own_nats(Vec::new()).await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let group = alice.group("team", &[&bob]).await;
    let mut bob_ws = stack.connect(&bob, "bob").await;
    alice.say(group, "before the outage").await;
    assert_eq!(bob_ws.next_event().await["data"]["body"], "before the outage");

    stack.ctx.nats().kill();
    for n in 0..5 {
        alice.say(group, &format!("during the outage {n}")).await;
    }
    stack.ctx.nats().start_again().await.expect("restart nats");
    // The relay publishes what PostgreSQL holds; the broker resumes its consumer from where it
    // left off. No close, no resume round trip for the client.
    let events = tokio::time::timeout(Duration::from_secs(20), bob_ws.events(5)).await.expect("the 5 events");
    let bodies: Vec<&str> = events.iter().map(|event| event["data"]["body"].as_str().unwrap_or_default()).collect();
    assert_eq!(bodies, (0..5).map(|n| format!("during the outage {n}")).collect::<Vec<_>>());
    let seqs: Vec<i64> = events.iter().map(|event| event["seq"].as_i64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|pair| pair[1] == pair[0] + 1), "seqs {seqs:?}");
    alice.say(group, "after").await;
    assert_eq!(bob_ws.next_event().await["data"]["body"], "after");
}

#[tokio::test]
async fn when_the_stream_lost_what_a_broker_missed_its_clients_are_told_to_resume_spread_over_the_window() {
    const SPREAD: Duration = Duration::from_secs(2);
    let mut stack = Stack::with_own_nats(env(&[("PARLEY_BROKER_RESYNC_SPREAD", "2s")])).await;
    let users: Vec<_> = (0..40).map(|n| stack.user(&format!("user{n}"))).collect();
    let mut clients = Vec::new();
    for (n, user) in users.iter().enumerate() {
        clients.push(stack.connect(user, &format!("user{n}")).await);
    }
    let group = users[0].group("everyone", &users[1..].iter().collect::<Vec<_>>()).await;
    // Every event published and marked so: none is published again into the new stream, whose
    // positions then really are past what the broker had seen.
    let pool = stack.ctx.pool().await;
    parley_testkit::wait::until("the outbox to be published", Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            let unpublished: i64 = sqlx::query_scalar("select count(*) from events where published_at is null")
                .fetch_one(&pool)
                .await
                .expect("count unpublished events");
            (unpublished == 0).then_some(())
        }
    })
    .await
    .expect("published");
    // NATS comes back without its store: the stream (and every event in it) is gone.
    stack.ctx.nats().kill();
    std::fs::remove_dir_all(stack.ctx.nats().store_dir()).expect("wipe the NATS store");
    stack.ctx.nats().start_again().await.expect("restart nats");
    users[0].say(group, "into a new stream").await;
    let closes = futures_util::future::join_all(clients.iter_mut().map(|client| async {
        let ended = tokio::time::timeout(Duration::from_secs(30), client.ended()).await.expect("closed");
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
    let stack = Stack::start_with(env(&[("PARLEY_HTTP_HEADER_TIMEOUT", "1s")])).await;
    let address = stack.broker.url().trim_start_matches("http://").to_owned();
    let mut idle = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the server kept the silent connection: {read:?}");

    // A complete request in time is served as usual.
    let health = reqwest::get(format!("{}/health", stack.broker.url())).await.expect("health");
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn typing_signals_that_waited_out_a_frozen_broker_are_dropped_not_delivered() {
    const TYPING_TIMEOUT: Duration = Duration::from_secs(6);
    let stack = Stack::start().await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let group = alice.group("team", &[&bob]).await;
    let mut bob_ws = stack.connect(&bob, "bob").await;
    let typing = format!("/v1/conversations/{group}/typing");
    alice.post(&typing, serde_json::json!({})).await.expect(202);
    assert_eq!(bob_ws.next_frame().await.expect("typing")["type"], "typing", "a fresh signal is delivered");

    // Frozen for 9 s while Alice types (one signal per 2 s, the API's limit): the first ones
    // are older than the typing timeout when the broker gets to them.
    stack.broker.pause();
    for _ in 0..5 {
        alice.post(&typing, serde_json::json!({})).await.expect(202);
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }
    stack.broker.resume();
    let mut delivered = 0;
    while let Some(frame) = bob_ws.next_frame_within(Duration::from_secs(2)).await {
        if frame["type"] != "typing" {
            continue;
        }
        let occurred_at: chrono::DateTime<chrono::Utc> =
            frame["occurred_at"].as_str().and_then(|at| at.parse().ok()).expect("occurred_at");
        let age = (chrono::Utc::now() - occurred_at).to_std().unwrap_or_default();
        assert!(age <= TYPING_TIMEOUT + Duration::from_millis(500), "a typing frame {age:?} old: {frame}");
        delivered += 1;
    }
    assert!(delivered >= 1, "the fresh signals still arrive");
    let metrics =
        reqwest::get(format!("{}/metrics", stack.broker.url())).await.expect("metrics").text().await.expect("text");
    let stale: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("parley_broker_stale_signals_total ")?.parse().ok())
        .expect("the stale signals counter");
    assert!(stale >= 2.0, "{stale} stale signals dropped");
}

/// Polls the broker's `/ready` until it answers `status`; returns how long that took.
async fn ready_becomes(stack: &Stack, status: u16, within: Duration) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let answer = reqwest::get(format!("{}/ready", stack.broker.url())).await.expect("/ready answers").status();
        if answer == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "/ready stayed {answer} for {within:?}, expected {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_frozen_nats_is_noticed_by_unanswered_pings_and_ready_says_so_until_it_answers_again() {
    let mut stack = Stack::with_own_nats(Vec::new()).await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let group = alice.group("team", &[&bob]).await;
    let mut bob_ws = stack.connect(&bob, "bob").await;
    ready_becomes(&stack, 200, Duration::from_secs(10)).await;

    // Three unanswered pings 2 s apart: the link is dropped ~6 s into the freeze (it was kept,
    // and /ready said 200, for as long as the server stayed frozen).
    stack.ctx.nats().pause();
    let noticed = ready_becomes(&stack, 503, Duration::from_secs(10)).await;
    stack.ctx.nats().resume();
    ready_becomes(&stack, 200, Duration::from_secs(10)).await;
    assert!(noticed >= Duration::from_secs(3), "not ready {noticed:?} into the freeze: too soon for three pings");
    alice.say(group, "after the freeze").await;
    assert_eq!(bob_ws.next_event().await["data"]["body"], "after the freeze");
}
