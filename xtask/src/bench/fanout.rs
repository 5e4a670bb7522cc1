//! `cargo xtask bench fanout`: one group of 10,000 members, every member connected; messages
//! posted as fast as 4 concurrent posters can, each delivered to every member. Reports
//! deliveries per second (frames received by all members ÷ time from the first POST to the
//! last frame), latency percentiles and how many deliveries are missing.
//!
//! Baseline in the same invocation: a bare tokio broadcast relay (child process, hidden
//! subcommand `bench-bare-fanout`): the same 10,000 receiving connections, one sending
//! connection, each frame broadcast to all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use parley_shared::ids::UserId;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use super::events::Sample;
use super::{Stack, http};

const MEMBERS: usize = 10_000;
const MESSAGES: usize = 100;
const POSTERS: usize = 4;
const IN_FLIGHT: usize = 128;

pub async fn run() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let release = Stack::build_release("parley-broker")?;
    let mut broker = stack.spawn_release_broker(&release).await?;
    let parley = measure_parley(&stack, &format!("ws://127.0.0.1:{}/ws", broker.port())).await?;
    broker.terminate().await;
    stack.stop().await;
    let bare = measure_bare().await?;

    let rows: Vec<Value> = [("Parley (POST → broker → members)", &parley), ("bare tokio broadcast relay", &bare)]
        .into_iter()
        .map(|(name, run)| {
            let [p50, p90, p99, max] = run.latency.percentiles();
            json!({
                "variant": name, "deliveries": run.latency.0.len(), "missing": run.missing,
                "seconds": run.seconds, "deliveries_per_second": run.latency.0.len() as f64 / run.seconds,
                "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
            })
        })
        .collect();
    let ratio = rows[0]["deliveries_per_second"].as_f64().unwrap_or_default()
        / rows[1]["deliveries_per_second"].as_f64().unwrap_or(f64::NAN);
    let mut table = format!(
        "{MESSAGES} messages to one conversation of {MEMBERS} connected members:\n\n\
         | variant | deliveries/s | missing | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|\n"
    );
    for row in &rows {
        table.push_str(&format!(
            "| {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            row["variant"].as_str().unwrap_or_default(),
            row["deliveries_per_second"].as_f64().unwrap_or_default(),
            row["missing"],
            row["p50_ms"].as_f64().unwrap_or_default(),
            row["p90_ms"].as_f64().unwrap_or_default(),
            row["p99_ms"].as_f64().unwrap_or_default(),
            row["max_ms"].as_f64().unwrap_or_default(),
        ));
    }
    table.push_str(&format!("\nParley ÷ bare (deliveries/s): {ratio:.2}\n"));
    super::write_named_report("fanout", &json!({ "scenario": "fanout", "rows": rows, "ratio": ratio }), &table)?;
    let title = format!("fan-out: {MESSAGES} messages to {MEMBERS} members");
    super::write_plot("fanout", &title, &[("Parley", &parley.latency), ("bare broadcast relay", &bare.latency)])
}

struct Run {
    latency: Sample,
    missing: usize,
    seconds: f64,
}

async fn measure_parley(stack: &Stack, ws_url: &str) -> anyhow::Result<Run> {
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
    let mut requests = Vec::with_capacity(MEMBERS);
    for user in std::iter::once(owner).chain(members) {
        let mut request = ws_url.into_client_request()?;
        request.headers_mut().insert("authorization", format!("Bearer {}", super::token(user)).parse()?);
        requests.push(request);
    }
    let (latencies, arrivals) = mpsc::unbounded_channel::<i64>();
    let readers = connect_all(requests, latencies).await?;
    // `conversation.created` goes to 10,000 user subjects first; time only the messages.
    wait_for_outbox(&stack.api_url()).await?;
    let path = format!("/v1/conversations/{conversation}/messages");
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
    finish(arrivals, readers, started).await
}

/// Waits until the API's outbox has nothing left to publish.
async fn wait_for_outbox(api: &str) -> anyhow::Result<()> {
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

/// Opens every connection (128 handshakes in flight), each with a reader that reports the
/// latency of every `message.created` (the body is the send time in µs).
async fn connect_all(
    requests: Vec<tokio_tungstenite::tungstenite::handshake::client::Request>,
    latencies: mpsc::UnboundedSender<i64>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut opening = tokio::task::JoinSet::new();
    for request in requests {
        let in_flight = in_flight.clone();
        opening.spawn(async move {
            let _permit = in_flight.acquire_owned().await?;
            let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
            ws.next().await.context("first frame")??;
            anyhow::Ok(ws)
        });
    }
    let mut readers = Vec::new();
    while let Some(opened) = opening.join_next().await {
        let mut ws = opened??;
        let latencies = latencies.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                if let Some(sent) = sent_micros(&text) {
                    let _ = latencies.send(Utc::now().timestamp_micros() - sent);
                }
            }
        }));
    }
    Ok(readers)
}

/// The send time in a frame: a bare relay's frame is the number; Parley's is an `event` frame
/// whose message body is the number.
fn sent_micros(text: &str) -> Option<i64> {
    if let Ok(sent) = text.parse() {
        return Some(sent);
    }
    if !text.contains(r#""type":"message.created""#) {
        return None;
    }
    let body = text.split(r#""body":""#).nth(1)?;
    body.split('"').next()?.parse().ok()
}

/// Waits until every member has every message (or arrivals stop for 10 s).
async fn finish(
    mut arrivals: mpsc::UnboundedReceiver<i64>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
) -> anyhow::Result<Run> {
    let expected = MEMBERS * MESSAGES;
    let (latency, last) = Sample::gather(&mut arrivals, expected).await;
    readers.iter().for_each(tokio::task::JoinHandle::abort);
    let seconds = last.saturating_duration_since(started).as_secs_f64();
    Ok(Run { missing: expected - latency.0.len(), latency, seconds })
}

async fn measure_bare() -> anyhow::Result<Run> {
    let (mut server, port) = super::spawn_baseline("bench-bare-fanout").await?;
    let mut requests = Vec::with_capacity(MEMBERS);
    for _ in 0..MEMBERS {
        requests.push(format!("ws://127.0.0.1:{port}/recv").into_client_request()?);
    }
    let (latencies, arrivals) = mpsc::unbounded_channel::<i64>();
    let readers = connect_all(requests, latencies).await?;
    let (mut sender, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/send")).await?;
    sender.next().await.context("first frame")??;
    let started = Instant::now();
    for _ in 0..MESSAGES {
        sender.send(Message::text(Utc::now().timestamp_micros().to_string())).await?;
    }
    let run = finish(arrivals, readers, started).await;
    server.kill().await?;
    run
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
                while let Ok(message) = inbox.recv().await {
                    if ws.send(message).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}
