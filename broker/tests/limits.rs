//! Every limit of a connection and what crossing it does: bad frames, oversize frames, floods,
//! too many connections, silence, a client that stops reading, and SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::{Stack, env};
use futures_util::{SinkExt, StreamExt};
use parley_testkit::netns::FarSide;
use parley_testkit::process::rss_kib;
use parley_testkit::ws::{self, Ended};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn malformed_unknown_and_binary_frames_get_an_error_and_the_connection_lives_on() {
    let stack = Stack::start().await;
    let bob = stack.user("bob");
    let mut client = stack.connect(&bob, "bob").await;
    let cases = [
        (Message::text("{not json"), "malformed_frame"),
        (Message::text(r#"{"type":"subscribe_all","channel":"*"}"#), "unknown_type"),
        (Message::text(r#"{"type":"subscribe","channel":"*"}"#), "bad_channel"),
        (Message::text(r#"{"type":"auth"}"#), "malformed_frame"),
        (Message::binary(vec![0u8, 159, 146, 150]), "binary_not_supported"),
    ];
    for (frame, code) in cases {
        client.stream().send(frame).await.expect("send");
        let error = client.next_frame().await.expect("error frame");
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], code, "{error}");
    }
    client.send_json(&json!({ "type": "ping" })).await;
    assert_eq!(client.next_frame().await.expect("pong")["type"], "pong");
}

#[tokio::test]
async fn a_frame_over_the_size_limit_and_a_flood_of_frames_close_with_their_codes() {
    let stack = Stack::start_with(env(&[
        ("PARLEY_BROKER_MAX_FRAME_BYTES", "1024"),
        ("PARLEY_BROKER_MAX_FRAMES_PER_SECOND", "5"),
    ]))
    .await;
    let bob = stack.user("bob");
    let mut big = stack.connect(&bob, "bob").await;
    assert_eq!(big.hello["limits"]["max_frame_bytes"], 1024);
    big.send_text(&format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(2000))).await;
    assert_eq!(big.ended().await, Ended::Closed { code: 4102, reason: "frame_too_large".into() });

    let mut flood = stack.connect(&bob, "bob").await;
    for _ in 0..30 {
        if flood.stream().send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
            break;
        }
    }
    assert_eq!(flood.ended().await, Ended::Closed { code: 4103, reason: "rate_limited".into() });
}

#[tokio::test]
async fn one_connection_over_the_per_user_limit_is_refused_and_the_others_stay() {
    let stack = Stack::start_with(env(&[("PARLEY_BROKER_MAX_CONNECTIONS_PER_USER", "2")])).await;
    let (bob, alice) = (stack.user("bob"), stack.user("alice"));
    let mut first = stack.connect(&bob, "bob").await;
    let _second = stack.connect(&bob, "bob").await;
    let mut third =
        ws::open(ws::request_with_token(&stack.ws_url(), &stack.ctx.token(bob.id, "bob"))).await.expect("upgrade");
    assert_eq!(ws::ended(&mut third).await, Ended::Closed { code: 4002, reason: "too_many_connections".into() });
    let _alice = stack.connect(&alice, "alice").await;
    first.send_json(&json!({ "type": "ping" })).await;
    assert_eq!(first.next_frame().await.expect("pong")["type"], "pong");
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout_and_a_responsive_one_is_not() {
    let stack =
        Stack::start_with(env(&[("PARLEY_BROKER_HEARTBEAT_INTERVAL", "200ms"), ("PARLEY_BROKER_IDLE_TIMEOUT", "1s")]))
            .await;
    let bob = stack.user("bob");
    let mut silent = stack.connect(&bob, "bob").await;
    let mut responsive = stack.connect(&bob, "bob").await;
    assert_eq!(responsive.hello["heartbeat_interval_ms"], 200);
    // Reading lets the client library answer the server's pings; the silent one reads nothing.
    assert!(responsive.next_frame_within(Duration::from_secs(2)).await.is_none());
    assert_eq!(silent.ended().await, Ended::Closed { code: 4003, reason: "idle_timeout".into() });
    responsive.send_json(&json!({ "type": "ping" })).await;
    assert_eq!(responsive.next_frame().await.expect("pong")["type"], "pong");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_slow_consumer_without_costing_memory_or_slowing_others() {
    const MESSAGES: usize = 1000;
    // The test client stops reading for the whole run, so it may read its close frame late.
    let stack = Stack::start_with(env(&[("PARLEY_BROKER_CLOSE_TIMEOUT", "60s")])).await;
    let (alice, bob, carol) = (stack.user("alice"), stack.user("bob"), stack.user("carol"));
    let group = alice.group("busy", &[&bob, &carol]).await;
    let mut carol_ws = stack.connect(&carol, "carol").await;

    // Bob's client takes its hello and then never reads again; a small receive buffer stands
    // for a slow network.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream =
        socket.connect(stack.broker.url().trim_start_matches("http://").parse().expect("addr")).await.expect("connect");
    let request = ws::request_with_token(&stack.ws_url(), &stack.ctx.token(bob.id, "bob"));
    let (mut bob_ws, _) = tokio_tungstenite::client_async(request, stream).await.expect("handshake");
    let hello = bob_ws.next().await.expect("hello").expect("hello");
    assert!(hello.to_text().expect("text").contains(r#""type":"hello""#));

    let pid = stack.broker.pid().expect("broker pid");
    let rss_before = rss_kib(pid).expect("broker RSS");
    let text = "x".repeat(4000);
    let posters = (0..8).map(|poster| {
        let (alice, text) = (alice.clone(), text.clone());
        tokio::spawn(async move {
            for _ in (poster..MESSAGES).step_by(8) {
                alice.say(group, &text).await;
            }
        })
    });
    let posted = futures_util::future::join_all(posters);
    let received = async {
        let mut events = Vec::new();
        while events.len() < MESSAGES {
            match carol_ws.next_frame().await {
                // Carol's `hello` may already cover `conversation.created`, which can still
                // arrive (clients drop what `hello` covers): count the messages only.
                Some(frame) if frame["event"]["type"] == "message.created" => events.push(frame["event"].clone()),
                Some(_) => {}
                None => panic!("carol's connection stalled after {} events", events.len()),
            }
        }
        assert_eq!(events.iter().filter(|event| event["type"] == "message.created").count(), MESSAGES);
    };
    let started = Instant::now();
    let (posted, ()) = tokio::join!(posted, received);
    assert!(posted.iter().all(Result::is_ok));
    let rss_growth_kib = rss_kib(pid).expect("broker RSS").saturating_sub(rss_before);
    eprintln!("{MESSAGES} messages in {:?}; broker RSS grew by {rss_growth_kib} KiB", started.elapsed());

    assert_eq!(ws::ended(&mut bob_ws).await, Ended::Closed { code: 4000, reason: "slow_consumer".into() });
    // 4 MB of frames were addressed to the stalled client: had its queue been unbounded the
    // broker would have held them all. Bound: the queue (1 MiB) plus allocator slack.
    assert!(rss_growth_kib < 2560, "broker RSS grew by {rss_growth_kib} KiB");
    let metrics =
        reqwest::get(format!("{}/metrics", stack.broker.url())).await.expect("metrics").text().await.expect("body");
    assert!(metrics.contains("parley_broker_slow_consumer_disconnects_total 1"), "{metrics}");
}

#[tokio::test]
async fn sigterm_closes_every_connection_with_1012_and_the_broker_exits_within_the_deadline() {
    let mut stack = Stack::start_with(env(&[("PARLEY_SHUTDOWN_TIMEOUT", "5s")])).await;
    let users: Vec<_> = (0..100).map(|n| stack.user(&format!("user{n}"))).collect();
    let mut clients = Vec::new();
    for user in &users {
        clients.push(stack.connect(user, "user").await);
    }
    // Clients read all the time, as real ones do, so they answer the close handshake at once.
    let endings: Vec<_> =
        clients.into_iter().map(|mut client| tokio::spawn(async move { client.ended().await })).collect();
    let started = Instant::now();
    let status = stack.broker.terminate().await.expect("exits without being killed");
    let took = started.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    for ending in endings {
        assert_eq!(ending.await.expect("reader"), Ended::Closed { code: 1012, reason: "shutdown".into() });
    }
    eprintln!("100 connections closed and the broker exited in {took:?}");
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame_echoing_valid_codes_and_1002_for_others_and_malformed_ones() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

    let stack = Stack::start().await;
    let bob = stack.user("bob");
    let cases = [(1000, 1000), (1001, 1001), (3000, 3000), (4321, 4321)]
        .into_iter()
        .chain([0, 999, 1004, 1005, 1006, 1015, 1100, 2999, 5000].map(|invalid| (invalid, 1002)));
    for (sent, answered) in cases {
        let mut client = stack.connect(&bob, "bob").await;
        let frame = CloseFrame { code: CloseCode::from(sent), reason: "bye".into() };
        client.stream().send(Message::Close(Some(frame))).await.expect("close sent");
        match client.ended().await {
            Ended::Closed { code, .. } => assert_eq!(code, answered, "close code {sent}"),
            Ended::Dropped => panic!("close {sent} was not answered with a close frame"),
        }
    }
    // A close frame without a code is answered with one without a code.
    let mut client = stack.connect(&bob, "bob").await;
    client.stream().send(Message::Close(None)).await.expect("close sent");
    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.stream().next().await {
                Some(Ok(Message::Close(reply))) => return Some(reply),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("answered in time");
    assert_eq!(reply, Some(None), "a close frame with no code back");

    // Malformed close payloads: a lone byte (a code is two), a reason that is not UTF-8.
    for payload in [vec![0x03], vec![0x03, 0xE8, 0xFF, 0xFE]] {
        let mut client = stack.connect(&bob, "bob").await;
        let header = FrameHeader { opcode: OpCode::Control(Control::Close), ..FrameHeader::default() };
        let frame = Frame::from_payload(header, payload.clone().into());
        client.stream().send(Message::Frame(frame)).await.expect("close sent");
        match client.ended().await {
            Ended::Closed { code, .. } => assert_eq!(code, 1002, "close payload {payload:?}"),
            Ended::Dropped => panic!("close payload {payload:?} was not answered with a close frame"),
        }
    }
}

/// A counter of the broker's `/metrics` (0 while absent).
async fn broker_counter(stack: &Stack, line_prefix: &str) -> f64 {
    let metrics = reqwest::get(format!("{}/metrics", stack.broker.url())).await.expect("metrics");
    let text = metrics.text().await.expect("text");
    text.lines().find_map(|line| line.strip_prefix(line_prefix)?.trim().parse().ok()).unwrap_or(0.0)
}

/// Polls until `check` holds; how long that took (panics after `limit`).
async fn took_until<F: std::future::Future<Output = bool>>(limit: Duration, mut check: impl FnMut() -> F) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_peer_that_answers_no_ping_is_closed_at_the_pong_timeout_and_goes_offline() {
    let stack =
        Stack::start_with(env(&[("PARLEY_BROKER_HEARTBEAT_INTERVAL", "1s"), ("PARLEY_BROKER_PONG_TIMEOUT", "2s")]))
            .await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    alice.group("pair", &[&bob]).await;
    // Bob's app hangs right after `hello`: nothing reads the socket, so no ping is answered.
    let mut hung =
        ws::open(ws::request_with_token(&stack.ws_url(), &stack.ctx.token(bob.id, "bob"))).await.expect("handshake");
    assert_eq!(hung.next().await.and_then(Result::ok).map(|m| m.is_text()), Some(true), "hello");
    let presence = format!("/v1/users/{}/presence", bob.uuid());
    let status = || async { alice.get(&presence).await.expect(200)["status"].clone() };
    took_until(Duration::from_secs(5), || async { status().await == "online" }).await;
    // The next ping comes within 1 s; 2 s later the peer is dead (the idle timeout is 60 s).
    let offline = took_until(Duration::from_secs(8), || async { status().await == "offline" }).await;
    assert!(offline <= Duration::from_secs(5), "offline after {offline:?}");
    assert!(broker_counter(&stack, "parley_broker_closes_total{reason=\"idle_timeout\"}").await >= 1.0);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_when_a_write_stalls_past_the_write_timeout() {
    let stack =
        Stack::start_with(env(&[("PARLEY_BROKER_WRITE_TIMEOUT", "2s"), ("PARLEY_BROKER_SOCKET_SEND_BUFFER", "4096")]))
            .await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let group = alice.group("pair", &[&bob]).await;
    let _stopped_reading = stack.connect_with_receive_buffer(&bob, "bob", 4096).await;
    // About 120 KB: far past both socket buffers, far below the queue's bound (1 MiB).
    let text = "x".repeat(3000);
    for _ in 0..40 {
        alice.say(group, &text).await;
    }
    let closed = took_until(Duration::from_secs(10), || async {
        broker_counter(&stack, "parley_broker_closes_total{reason=\"slow_consumer\"}").await >= 1.0
    })
    .await;
    assert!(closed <= Duration::from_secs(5), "closed {closed:?} after the last message");
}

#[tokio::test]
async fn a_peer_behind_a_cut_network_link_is_closed_and_offline_within_heartbeat_and_pong_timeout() {
    let far_side = FarSide::create();
    let ctx = parley_testkit::TestContext::start().await;
    let api = ctx.spawn(parley_testkit::Binary::Api, parley_testkit::rest::unlimited_writes()).await;
    // Listening on all addresses, so that the far side of the link reaches the broker too.
    let port = parley_testkit::wait::free_port().expect("free port");
    let listen = format!("0.0.0.0:{port}");
    let broker_env = env(&[
        ("PARLEY_BROKER_HEARTBEAT_INTERVAL", "1s"),
        ("PARLEY_BROKER_PONG_TIMEOUT", "2s"),
        ("PARLEY_BROKER_LISTEN", &listen),
    ]);
    let broker = ctx.spawn_on(parley_testkit::Binary::Broker, port, broker_env).await;
    let stack = Stack { ctx, api, broker };
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    alice.group("pair", &[&bob]).await;

    // Bob's client is healthy: it reads all the time, so its WebSocket answers every ping.
    let url = format!("ws://{}:{port}/ws", far_side.near_address);
    let request = ws::request_with_token(&url, &stack.ctx.token(bob.id, "bob"));
    let tcp = tokio_tungstenite::MaybeTlsStream::Plain(far_side.connect(port));
    let (mut client, _) = tokio_tungstenite::client_async(request, tcp).await.expect("WebSocket handshake");
    let reader = tokio::spawn(async move { while client.next().await.is_some_and(|frame| frame.is_ok()) {} });
    let presence = format!("/v1/users/{}/presence", bob.uuid());
    let status = || async { alice.get(&presence).await.expect(200)["status"].clone() };
    took_until(Duration::from_secs(5), || async { status().await == "online" }).await;
    // Several heartbeats later it is still there: its pongs come back across the link.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(status().await, "online", "a peer that answers pings stays connected");
    assert_eq!(broker_counter(&stack, "parley_broker_connections ").await, 1.0);

    far_side.cut();
    // Heartbeat 1 s + pong timeout 2 s + 2 s.
    let offline = took_until(Duration::from_secs(15), || async { status().await == "offline" }).await;
    assert!(offline <= Duration::from_secs(5), "offline {offline:?} after the link was cut");
    assert_eq!(broker_counter(&stack, "parley_broker_connections ").await, 0.0, "the connection is released");
    assert!(!reader.is_finished(), "the client saw no close either: nothing crossed the cut link");
}
