//! `cargo xtask bench fanout`: one group of 10,000 members, every member connected; messages
//! posted as fast as [`POSTERS`] concurrent posters can (a burst, as the baseline's sender
//! writes all of its frames at once), each delivered to every member. Reports
//! deliveries per second (frames received by all members ÷ time from the first POST to the
//! last frame), latency percentiles and how many deliveries are missing.
//!
//! Then: how many presence frames the members' connecting produced, and the CPU the broker
//! spends on 20,000 events/s for conversations none of its users is in.
//!
//! Baseline in the same invocation: a bare tokio broadcast relay (child process, hidden
//! subcommand `bench-bare-fanout`): the same 10,000 receiving connections, one sending
//! connection, each frame broadcast to all and whatever is queued for a receiver written in one
//! flush, as the broker does. Its frames are the broker's `message.created` event frame (same
//! types, same size), so both relay and parse the same bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use memchr::memmem;
use parley_shared::events::{Envelope, Event, MessageCreated};
use parley_shared::ids::{ConversationId, EventId, MessageId, UserId};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::events::Sample;
use super::lean_ws::LeanSocket;
use super::{Stack, http};

pub(super) const MEMBERS: usize = 10_000;
pub(super) const MESSAGES: usize = 100;
pub(super) const POSTERS: usize = 32;
const IN_FLIGHT: usize = 128;

pub async fn run() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut broker = stack.spawn_release_broker().await?;
    let pid = broker.pid().context("broker pid")?;
    let parley = measure_parley(&stack, &format!("ws://127.0.0.1:{}/ws", broker.port()), pid).await?;
    let presence_frames = super::broker_metric(&broker.url(), "parley_broker_presence_frames_total").await?;
    eprintln!("bench fanout: {presence_frames} presence frames while {MEMBERS} members connected");
    let foreign = measure_foreign_events(&stack, &broker.url(), pid).await?;
    eprintln!("bench fanout: {foreign}");
    broker.terminate().await;
    stack.stop().await;
    let bare = measure_bare(bare_frame, sent_micros).await?;

    let rows = vec![parley.row("Parley (POST → broker → members)"), bare.row("bare tokio broadcast relay")];
    let ratio = rows[0]["deliveries_per_second"].as_f64().unwrap_or_default()
        / rows[1]["deliveries_per_second"].as_f64().unwrap_or(f64::NAN);
    let mut table = format!("{MESSAGES} messages to one conversation of {MEMBERS} connected members:\n\n");
    table.push_str(&fanout_table(&rows));
    table.push_str(&format!("\nParley ÷ bare (deliveries/s): {ratio:.2}\n"));
    table.push_str(&format!(
        "\nPresence frames sent while the {MEMBERS} members connected: {presence_frames} \
         (a group larger than PARLEY_PRESENCE_AUTO_MAX_MEMBERS: members follow each other only on request).\n"
    ));
    table.push_str(&format!(
        "\nEvents for conversations with no member on the broker: {:.0} events/s for {:.0} s cost the broker \
         {:.1}% of one core (idle before: {:.1}%; {} routed, {} dropped).\n",
        foreign["events_per_second"].as_f64().unwrap_or_default(),
        foreign["seconds"].as_f64().unwrap_or_default(),
        foreign["broker_cpu_percent"].as_f64().unwrap_or_default(),
        foreign["broker_idle_cpu_percent"].as_f64().unwrap_or_default(),
        foreign["routed"],
        foreign["dropped"],
    ));
    let report = json!({
        "scenario": "fanout", "rows": rows, "ratio": ratio,
        "presence_frames_while_connecting": presence_frames, "foreign_events": foreign,
    });
    super::write_named_report("fanout", &report, &table)?;
    let title = format!("fan-out: {MESSAGES} messages to {MEMBERS} members");
    super::write_plot("fanout", &title, &[("Parley", &parley.latency), ("bare broadcast relay", &bare.latency)])
}

pub(super) struct Run {
    pub latency: Sample,
    pub missing: usize,
    pub seconds: f64,
    /// CPU time of the relaying process (the broker; the bare relay) while it relayed.
    pub relay_cpu_seconds: f64,
    /// Time until the last message was handed over (the POSTs answered; the frames sent).
    pub posting_seconds: f64,
}

impl Run {
    /// The report row of this run.
    pub(super) fn row(&self, variant: &str) -> Value {
        let [p50, p90, p99, max] = self.latency.percentiles();
        json!({
            "variant": variant, "deliveries": self.latency.0.len(), "missing": self.missing,
            "seconds": self.seconds, "deliveries_per_second": self.latency.0.len() as f64 / self.seconds,
            "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
            "relay_cpu_seconds": self.relay_cpu_seconds, "posting_seconds": self.posting_seconds,
        })
    }
}

/// The table of fan-out rows (see [`Run::row`]).
pub(super) fn fanout_table(rows: &[Value]) -> String {
    let mut table = String::from(
        "| variant | deliveries/s | missing | p50 ms | p90 ms | p99 ms | max ms | relay CPU s | posted in s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        table.push_str(&format!(
            "| {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |\n",
            row["variant"].as_str().unwrap_or_default(),
            row["deliveries_per_second"].as_f64().unwrap_or_default(),
            row["missing"],
            row["p50_ms"].as_f64().unwrap_or_default(),
            row["p90_ms"].as_f64().unwrap_or_default(),
            row["p99_ms"].as_f64().unwrap_or_default(),
            row["max_ms"].as_f64().unwrap_or_default(),
            row["relay_cpu_seconds"].as_f64().unwrap_or_default(),
            row["posting_seconds"].as_f64().unwrap_or_default(),
        ));
    }
    table
}

async fn measure_parley(stack: &Stack, ws_url: &str, broker_pid: u32) -> anyhow::Result<Run> {
    let owner = UserId::from_uuid(Uuid::now_v7());
    let owner_token = super::token(owner);
    let members: Vec<UserId> = (1..MEMBERS).map(|_| UserId::from_uuid(Uuid::now_v7())).collect();
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/v1/conversations", stack.api_url()))
        .bearer_auth(&owner_token)
        .json(&json!({ "kind": "group", "title": "fan-out" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let conversation = created["id"].as_str().context("conversation id")?.to_owned();
    // Members are added one request each: a creation request's body (64 KiB by default) holds
    // about 1,600 member ids.
    let added = futures_util::stream::iter(&members)
        .map(|member| {
            let (http, url) = (http.clone(), format!("{}/v1/conversations/{conversation}/members", stack.api_url()));
            let owner_token = owner_token.clone();
            async move {
                http.post(url)
                    .bearer_auth(owner_token)
                    .json(&json!({ "user_id": member }))
                    .send()
                    .await?
                    .error_for_status()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    added.into_iter().collect::<reqwest::Result<Vec<_>>>().context("adding members")?;
    let receivers = std::iter::once(owner)
        .chain(members)
        .map(|user| Receiver { url: ws_url.to_owned(), token: Some(super::token(user)), first_frame: None })
        .collect();
    let (latencies, arrivals) = mpsc::unbounded_channel::<i64>();
    let readers = connect_all(receivers, latencies, sent_micros).await?;
    // `conversation.created` goes to 10,000 user subjects first; time only the messages.
    wait_for_outbox(&stack.api_url()).await?;
    let path = format!("/v1/conversations/{conversation}/messages");
    eprintln!("bench fanout: {MEMBERS} members connected; posting");
    let cpu_before = cpu_seconds(broker_pid)?;
    let started = Instant::now();
    let mut posters = Vec::new();
    for poster in 0..POSTERS {
        let mut connection = http::Connection::open(stack.api_addr(), &owner_token).await?;
        let path = path.clone();
        posters.push(tokio::spawn(async move {
            for _ in (poster..MESSAGES).step_by(POSTERS) {
                let body = format!(r#"{{"text":"{}"}}"#, Utc::now().timestamp_micros());
                let status = connection.send(Method::POST, &path, Some(Bytes::from(body))).await?;
                anyhow::ensure!(status.is_success(), "POST answered {status}");
            }
            anyhow::Ok(())
        }));
    }
    for poster in posters {
        poster.await??;
    }
    let posted = Posted { started, seconds: started.elapsed().as_secs_f64(), relay_pid: broker_pid, cpu_before };
    finish(arrivals, readers, posted).await
}

/// Waits until the API's outbox has nothing left to publish.
pub(super) async fn wait_for_outbox(api: &str) -> anyhow::Result<()> {
    for _ in 0..120 {
        let metrics = reqwest::get(format!("{api}/metrics")).await?.text().await?;
        if metrics.lines().any(|line| line == "parley_outbox_lag_seconds 0.0" || line == "parley_outbox_lag_seconds 0")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("the outbox did not drain")
}

/// One receiving connection.
pub(super) struct Receiver {
    pub url: String,
    pub token: Option<String>,
    /// Sent at once (an anonymous subscriber's `subscribe`); its answer is skipped like `hello`.
    pub first_frame: Option<String>,
}

/// Opens every connection (128 handshakes in flight), each with a reader that reports the
/// latency of every frame `sent` finds a send time (µs) in.
pub(super) async fn connect_all(
    receivers: Vec<Receiver>,
    latencies: mpsc::UnboundedSender<i64>,
    sent: fn(&[u8]) -> Option<i64>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut opening = tokio::task::JoinSet::new();
    for Receiver { url, token, first_frame } in receivers {
        let in_flight = in_flight.clone();
        opening.spawn(async move {
            let _permit = in_flight.acquire_owned().await?;
            let mut socket = LeanSocket::connect(&url, token.as_deref()).await?;
            if let Some(frame) = &first_frame {
                socket.send_text(frame).await?;
                socket.skip_first_frame().await?;
            }
            socket.skip_first_frame().await?;
            anyhow::Ok(socket)
        });
    }
    let mut readers = Vec::new();
    while let Some(opened) = opening.join_next().await {
        let socket = opened??;
        let latencies = latencies.clone();
        readers.push(tokio::spawn(async move {
            let _ = socket
                .read_texts(|text, now| {
                    if let Some(sent) = sent(text) {
                        let _ = latencies.send(now - sent);
                    }
                })
                .await;
        }));
    }
    Ok(readers)
}

/// The send time in a frame: an `event` frame whose message body is the number.
fn sent_micros(text: &[u8]) -> Option<i64> {
    const KIND: &[u8] = br#""type":"message.created""#;
    const BODY: &[u8] = br#""body":""#;
    memmem::find(text, KIND)?;
    let start = memmem::find(text, BODY)? + BODY.len();
    let length = text[start..].iter().position(|&byte| byte == b'"')?;
    std::str::from_utf8(&text[start..start + length]).ok()?.parse().ok()
}

/// When the messages were handed over, and the relaying process's CPU time before.
pub(super) struct Posted {
    pub started: Instant,
    pub seconds: f64,
    pub relay_pid: u32,
    pub cpu_before: f64,
}

/// Waits until every member has every message (or arrivals stop for 10 s).
pub(super) async fn finish(
    mut arrivals: mpsc::UnboundedReceiver<i64>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    posted: Posted,
) -> anyhow::Result<Run> {
    let expected = MEMBERS * MESSAGES;
    let (latency, last) = Sample::gather(&mut arrivals, expected).await;
    let relay_cpu_seconds = cpu_seconds(posted.relay_pid)? - posted.cpu_before;
    readers.iter().for_each(tokio::task::JoinHandle::abort);
    let seconds = last.saturating_duration_since(posted.started).as_secs_f64();
    Ok(Run {
        missing: expected - latency.0.len(),
        latency,
        seconds,
        relay_cpu_seconds,
        posting_seconds: posted.seconds,
    })
}

/// The bare relay carrying `frame(send time)` to [`MEMBERS`] receivers, read with `sent`.
pub(super) async fn measure_bare(frame: fn(i64) -> String, sent: fn(&[u8]) -> Option<i64>) -> anyhow::Result<Run> {
    let (mut server, port) = super::spawn_baseline("bench-bare-fanout").await?;
    let receivers = (0..MEMBERS)
        .map(|_| Receiver { url: format!("ws://127.0.0.1:{port}/recv"), token: None, first_frame: None })
        .collect();
    let (latencies, arrivals) = mpsc::unbounded_channel::<i64>();
    let readers = connect_all(receivers, latencies, sent).await?;
    let (mut sender, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/send")).await?;
    sender.next().await.context("first frame")??;
    let relay_pid = server.id().context("bare relay pid")?;
    let cpu_before = cpu_seconds(relay_pid)?;
    let started = Instant::now();
    for _ in 0..MESSAGES {
        sender.send(Message::text(frame(Utc::now().timestamp_micros()))).await?;
    }
    let posted = Posted { started, seconds: started.elapsed().as_secs_f64(), relay_pid, cpu_before };
    let run = finish(arrivals, readers, posted).await;
    server.kill().await?;
    run
}

/// What the bare relay carries: the frame the broker sends for a `message.created`, built from
/// the same types (so the same size and the same parsing at the receivers), with the send time
/// as its body.
fn bare_frame(sent_micros: i64) -> String {
    let envelope = Envelope {
        id: EventId::from_uuid(Uuid::now_v7()),
        conversation_id: ConversationId::from_uuid(Uuid::now_v7()),
        seq: 1,
        actor: UserId::from_uuid(Uuid::now_v7()),
        occurred_at: Utc::now(),
        event: Event::MessageCreated(MessageCreated {
            message_id: MessageId::from_uuid(Uuid::now_v7()),
            author_id: UserId::from_uuid(Uuid::now_v7()),
            body: Some(sent_micros.to_string()),
            reply_to: None,
            attachment: None,
            client_message_id: None,
            mentions: Vec::new(),
        }),
    };
    json!({ "type": "event", "event": envelope }).to_string()
}

/// The baseline: every frame from `/send` is broadcast to every `/recv` connection.
pub async fn bare_fanout() -> anyhow::Result<()> {
    let listener = super::baseline_listener().await?;
    let (broadcast, _) = tokio::sync::broadcast::channel::<Message>(4096);
    loop {
        let (stream, _) = listener.accept().await?;
        let broadcast = broadcast.clone();
        tokio::spawn(async move {
            let Some((mut ws, path)) = super::accept_with_path(stream).await else { return };
            let mut inbox = broadcast.subscribe();
            if ws.send(Message::text("hello")).await.is_err() {
                return;
            }
            if path == "/send" {
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() {
                        let _ = broadcast.send(message);
                    }
                }
            } else {
                // Like the broker: whatever is queued goes out in one flush.
                while let Ok(message) = inbox.recv().await {
                    if ws.feed(message).await.is_err() {
                        return;
                    }
                    while let Ok(message) = inbox.try_recv() {
                        if ws.feed(message).await.is_err() {
                            return;
                        }
                    }
                    if ws.flush().await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// Events published per second for conversations no member of which is on the broker.
const FOREIGN_RATE: u64 = 20_000;
const FOREIGN_SECONDS: u64 = 10;

/// Publishes [`FOREIGN_RATE`] events a second (each for a conversation of its own, none with a
/// member on the broker) into the events stream for [`FOREIGN_SECONDS`], and measures the CPU
/// time the broker spends meanwhile (utime + stime from /proc).
async fn measure_foreign_events(stack: &Stack, broker_url: &str, broker_pid: u32) -> anyhow::Result<Value> {
    let client = async_nats::connect(stack.nats_url()).await?;
    let jetstream = async_nats::jetstream::new(client);
    let subjects = parley_shared::subjects::Subjects::default();
    // The members' connections were just dropped: let the broker finish closing them (and
    // recording their users' departures) first, then take its idle CPU as a reference.
    for _ in 0..120 {
        if super::broker_metric(broker_url, "parley_broker_connections").await? == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_started = (Instant::now(), cpu_seconds(broker_pid)?);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_percent = (cpu_seconds(broker_pid)? - idle_started.1) / idle_started.0.elapsed().as_secs_f64() * 100.0;
    let dropped_before = super::broker_metric(broker_url, "parley_broker_events_dropped_total").await?;
    let routed_before = super::broker_metric(broker_url, "parley_broker_events_routed_total").await?;
    eprintln!("bench fanout: {MEMBERS} members connected; posting");
    let cpu_before = cpu_seconds(broker_pid)?;
    let started = Instant::now();
    let mut acks = futures_util::stream::FuturesUnordered::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let per_tick = FOREIGN_RATE / 100;
    let mut published = 0u64;
    while started.elapsed() < Duration::from_secs(FOREIGN_SECONDS) {
        ticks.tick().await;
        for _ in 0..per_tick {
            let conversation = parley_shared::ids::ConversationId::from_uuid(Uuid::now_v7());
            let payload = foreign_envelope(conversation);
            let subject = subjects.conversation_event(conversation, "message.created");
            acks.push(jetstream.publish(subject, payload.into()).await?.into_future());
            published += 1;
        }
        while acks.len() > 4096 {
            acks.next().await.context("ack")??;
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Let the broker finish what is queued for it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = cpu_seconds(broker_pid)? - cpu_before;
    Ok(json!({
        "events": published,
        "seconds": seconds,
        "events_per_second": published as f64 / seconds,
        "broker_cpu_seconds": cpu,
        "broker_cpu_percent": cpu / seconds * 100.0,
        "broker_idle_cpu_percent": idle_percent,
        "routed": super::broker_metric(broker_url, "parley_broker_events_routed_total").await? - routed_before,
        "dropped": super::broker_metric(broker_url, "parley_broker_events_dropped_total").await? - dropped_before,
    }))
}

/// A realistic `message.created` envelope (about 400 bytes).
fn foreign_envelope(conversation: parley_shared::ids::ConversationId) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": Uuid::now_v7(), "type": "message.created", "conversation_id": conversation, "seq": 2,
        "actor": Uuid::now_v7(), "occurred_at": Utc::now(),
        "data": { "message_id": Uuid::now_v7(), "author_id": Uuid::now_v7(),
                  "body": "a message for a conversation nobody on this broker is in", "client_message_id": "x" },
    }))
    .unwrap_or_default()
}

/// The process's CPU time so far (user + system), in seconds.
pub(super) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let fields = stat_fields(pid)?;
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// CPU time of `pid` and of its children, live and exited (a PostgreSQL server: the
/// postmaster, its backends and background workers).
pub(super) fn tree_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let mut ticks = 0.0;
    for entry in std::fs::read_dir("/proc")? {
        let Some(process) = entry?.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        // A process may exit between listing and reading.
        let Ok(fields) = stat_fields(process) else { continue };
        if process == pid || fields[1] == pid.to_string() {
            // utime, stime, and the children's cutime, cstime.
            ticks += fields[11..15].iter().map(|field| field.parse::<f64>()).sum::<Result<f64, _>>()?;
        }
    }
    Ok(ticks / 100.0)
}

/// The fields of `/proc/<pid>/stat` after the command name (which may contain spaces): state
/// is field 0, ppid 1, utime 11.
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(stat.rsplit_once(')').context("stat")?.1.split_whitespace().map(str::to_owned).collect())
}
