//! Routing under load: every event after a client's `hello` positions reaches it exactly once
//! and in order — while users connect and disconnect continuously, and while NATS is killed
//! and restarted under two brokers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::Stack;
use parley_testkit::rest::{User, unlimited_writes};
use parley_testkit::ws::WsClient;
use parley_testkit::{Binary, TestContext};
use serde_json::Value;
use uuid::Uuid;

/// What one connection has seen of each conversation: the next `seq` it must get.
struct Positions {
    next: HashMap<String, i64>,
}

impl Positions {
    fn from_hello(hello: &Value) -> Self {
        let next = hello["conversations"]
            .as_array()
            .expect("conversations")
            .iter()
            .map(|p| (p["conversation_id"].as_str().expect("id").to_owned(), p["last_seq"].as_i64().expect("seq") + 1))
            .collect();
        Self { next }
    }

    /// Checks one event: anything `hello` covered is dropped (the documented client rule); the
    /// rest must come exactly in seq order, no gap, no repeat.
    fn accept(&mut self, event: &Value) -> Result<(), String> {
        let conversation = event["conversation_id"].as_str().expect("conversation").to_owned();
        let seq = event["seq"].as_i64().expect("seq");
        let Some(next) = self.next.get_mut(&conversation) else {
            return Err(format!("event for a conversation not in hello: {event}"));
        };
        if seq < *next {
            return Err(format!("seq {seq} of {conversation} again or out of order (expected {next})"));
        }
        if seq > *next {
            return Err(format!("gap in {conversation}: got {seq}, expected {next}"));
        }
        *next += 1;
        Ok(())
    }
}

/// Reads event frames until `until` holds or `deadline` passes; an error for a broken order.
/// (A closed connection shows up as `until` never holding.)
async fn read_events(
    client: &mut WsClient,
    positions: &mut Positions,
    deadline: Instant,
    until: impl Fn(&Positions) -> bool,
) -> Result<(), String> {
    let covered = Positions::from_hello(&client.hello);
    while !until(positions) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let Some(frame) = client.next_frame_within(left.min(Duration::from_millis(200))).await else { continue };
        if frame["type"] != "event" {
            continue;
        }
        let event = &frame["event"];
        let conversation = event["conversation_id"].as_str().unwrap_or_default();
        let hello_next = covered.next.get(conversation).copied().unwrap_or(i64::MAX);
        if event["seq"].as_i64().unwrap_or_default() < hello_next {
            continue;
        }
        positions.accept(event)?;
    }
    Ok(())
}

/// Posts `total` messages round-robin over `conversations` with `posters` concurrent clients,
/// at most `per_second` in all.
async fn post(poster: &User, conversations: &[Uuid], total: usize, per_second: u32, posters: usize) {
    let interval = Duration::from_secs(1) / per_second * u32::try_from(posters).expect("posters");
    let tasks = (0..posters).map(|lane| {
        let (poster, conversations) = (poster.clone(), conversations.to_vec());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            for n in (lane..total).step_by(posters) {
                ticks.tick().await;
                poster.say(conversations[n % conversations.len()], &format!("message {n}")).await;
            }
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.expect("poster");
    }
}

/// Each conversation's `last_seq`, read over REST.
async fn last_seqs(user: &User, conversations: &[Uuid]) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for conversation in conversations {
        let body = user.get(&format!("/v1/conversations/{conversation}")).await.expect(200);
        out.insert(conversation.to_string(), body["last_seq"].as_i64().expect("last_seq"));
    }
    out
}

/// Whether the connection has every event up to `finals` of each of its conversations.
fn reached(positions: &Positions, finals: &HashMap<String, i64>) -> bool {
    positions.next.iter().all(|(conversation, next)| finals.get(conversation).is_some_and(|last| next > last))
}

#[tokio::test]
async fn clients_that_connect_and_disconnect_continuously_get_every_event_after_hello_once_in_order() {
    const USERS: usize = 12;
    const GROUPS: usize = 6;
    const MESSAGES: usize = 1200;
    let stack = Stack::start().await;
    let users: Vec<User> = (0..USERS).map(|n| stack.user(&format!("user{n}"))).collect();
    let others: Vec<&User> = users[1..].iter().collect();
    let mut groups = Vec::new();
    for n in 0..GROUPS {
        groups.push(users[0].group(&format!("group {n}"), &others).await);
    }
    let posting = Arc::new(AtomicBool::new(true));
    let clients = users.iter().enumerate().map(|(n, user)| {
        let (token, ws_url, posting) = (stack.ctx.token(user.id, "user"), stack.ws_url(), Arc::clone(&posting));
        tokio::spawn(async move {
            let mut sessions = 0u32;
            let mut events = 0usize;
            while posting.load(Ordering::Relaxed) {
                let mut client = WsClient::connect(&ws_url, &token).await;
                let mut positions = Positions::from_hello(&client.hello);
                let before: i64 = positions.next.values().sum();
                // Stay between 50 and 500 ms, differently for each user and session.
                let stay = Duration::from_millis(50 + ((n as u64 * 37 + u64::from(sessions) * 101) % 450));
                read_events(&mut client, &mut positions, Instant::now() + stay, |_| false)
                    .await
                    .unwrap_or_else(|error| panic!("user {n}, session {sessions}: {error}"));
                events += usize::try_from(positions.next.values().sum::<i64>() - before).unwrap_or(0);
                sessions += 1;
            }
            (sessions, events)
        })
    });
    let clients: Vec<_> = clients.collect();
    post(&users[0], &groups, MESSAGES, 200, 4).await;
    posting.store(false, Ordering::Relaxed);
    let mut sessions = 0;
    let mut events = 0;
    for client in clients {
        let (client_sessions, client_events) = client.await.expect("client");
        sessions += client_sessions;
        events += client_events;
    }
    eprintln!("{sessions} sessions checked, {events} events received after hello");
    assert!(sessions >= 100, "only {sessions} sessions");

    // And a last connection per user sees everything through to the end.
    let finals = last_seqs(&users[0], &groups).await;
    let mut client = WsClient::connect(&stack.ws_url(), &stack.ctx.token(users[1].id, "user")).await;
    let mut positions = Positions::from_hello(&client.hello);
    read_events(&mut client, &mut positions, Instant::now() + Duration::from_secs(5), |p| reached(p, &finals))
        .await
        .expect("final session");
    assert!(reached(&positions, &finals));
}

#[tokio::test]
async fn nats_killed_and_restarted_under_load_closes_no_client_and_every_event_arrives_once_in_order() {
    const PAIRS: usize = 100;
    const MESSAGES: usize = 1600;
    let mut ctx = TestContext::with_own_services().await;
    let api = ctx.spawn(Binary::Api, unlimited_writes()).await;
    let brokers = [ctx.spawn(Binary::Broker, Vec::new()).await, ctx.spawn(Binary::Broker, Vec::new()).await];
    let ws_urls: Vec<String> = brokers.iter().map(|b| format!("{}/ws", b.url().replace("http://", "ws://"))).collect();
    let poster = User::new(&ctx, &api.url(), "poster");
    let mut conversations = Vec::new();
    let mut clients = Vec::new();
    for pair in 0..PAIRS {
        let members = [User::new(&ctx, &api.url(), "a"), User::new(&ctx, &api.url(), "b")];
        conversations.push(poster.group(&format!("pair {pair}"), &[&members[0], &members[1]]).await);
        for (member, ws_url) in members.iter().zip(&ws_urls) {
            clients.push(WsClient::connect(ws_url, &ctx.token(member.id, "member")).await);
        }
    }
    // What had been posted when NATS came back, and what was posted in all.
    let (at_back_tx, at_back) = tokio::sync::watch::channel(None::<HashMap<String, i64>>);
    let (finals_tx, finals) = tokio::sync::watch::channel(None::<HashMap<String, i64>>);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (at_back, finals) = (at_back.clone(), finals.clone());
            tokio::spawn(async move {
                let mut positions = Positions::from_hello(&client.hello);
                let deadline = Instant::now() + Duration::from_secs(90);
                let has = |target: &tokio::sync::watch::Receiver<Option<HashMap<String, i64>>>, p: &Positions| {
                    target.borrow().as_ref().is_some_and(|target| reached(p, target))
                };
                let caught_up = read_events(&mut client, &mut positions, deadline, |p| has(&at_back, p)).await;
                let caught_up_at = Instant::now();
                let result =
                    caught_up.and(read_events(&mut client, &mut positions, deadline, |p| has(&finals, p)).await);
                // Still open: a ping is answered.
                client.send_json(&serde_json::json!({ "type": "ping" })).await;
                let open = loop {
                    match client.next_frame_within(Duration::from_secs(5)).await {
                        Some(frame) if frame["type"] == "pong" => break true,
                        Some(_) => continue,
                        None => break false,
                    }
                };
                (result, open, caught_up_at)
            })
        })
        .collect();
    let outage = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        ctx.nats().kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        ctx.nats().start_again().await.expect("restart nats");
        let back = Instant::now();
        at_back_tx.send_replace(Some(last_seqs(&poster, &conversations).await));
        back
    };
    let ((), back) = tokio::join!(post(&poster, &conversations, MESSAGES, 200, 8), outage);
    finals_tx.send_replace(Some(last_seqs(&poster, &conversations).await));
    let mut slowest = Duration::ZERO;
    for (n, reader) in futures_util::future::join_all(readers).await.into_iter().enumerate() {
        let (result, open, done_at) = reader.expect("reader");
        result.unwrap_or_else(|error| panic!("client {n}: {error}"));
        assert!(open, "client {n} was closed");
        let after = done_at.saturating_duration_since(back);
        slowest = slowest.max(after);
        assert!(
            after <= Duration::from_secs(10),
            "client {n} had what was posted during the outage only {after:?} after NATS was back"
        );
    }
    eprintln!("every client had what was posted during the outage {slowest:?} after NATS was back");
}
