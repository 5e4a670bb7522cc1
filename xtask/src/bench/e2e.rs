//! `cargo xtask bench e2e`: 1,000 two-member conversations, 2,000 messages/s posted over REST
//! (spread round-robin over the conversations), latency from just before the POST to the
//! `event` frame's arrival at the other member's WebSocket (PostgreSQL commit, outbox relay,
//! JetStream, broker and NATS hops included).
//!
//! Baseline in the same invocation: a bare tokio-tungstenite relay (child process, hidden
//! subcommand `bench-bare-relay`) with 1,000 sender/receiver connection pairs at the same
//! rate, frame sent → frame received.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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

use super::events::{Sample, ticket_feed};
use super::{Stack, http};

const CONVERSATIONS: usize = 1_000;
const POSTERS: usize = 32;
/// Messages per second, spread round-robin over the conversations.
const RATE_PER_SECOND: u64 = 2_000;

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut broker = stack.spawn_release_broker().await?;
    let duration = Duration::from_secs(seconds);
    let (parley, post, postgres_cpu_us_per_message) =
        measure_parley(&stack, &format!("ws://127.0.0.1:{}/ws", broker.port()), duration).await?;
    // Where the time goes, from the processes' own histograms (bucket upper bounds: coarse).
    let relay = histogram_quantiles(&stack.api_url(), "parley_outbox_publish_latency_seconds").await?;
    let delivery = histogram_quantiles(&broker.url(), "parley_broker_delivery_latency_seconds").await?;
    broker.terminate().await;
    stack.stop().await;
    let bare = measure_bare(duration).await?;

    let [p50, p90, p99, max] = parley.percentiles();
    let [b50, b90, b99, bmax] = bare.percentiles();
    let report = json!({
        "scenario": "e2e", "rate_per_second": RATE_PER_SECOND, "conversations": CONVERSATIONS, "seconds": seconds,
        "post_to_frame": parley.summary(), "bare_relay_frame_to_frame": bare.summary(),
        "ratio_p50": p50 / b50, "ratio_p99": p99 / b99,
        "post_response": post.summary(), "postgres_cpu_us_per_message": postgres_cpu_us_per_message,
        "api_commit_to_jetstream_ack_ms_le": relay, "broker_commit_to_frame_written_ms_le": delivery,
    });
    let table = format!(
        "At {RATE_PER_SECOND} messages/s over {CONVERSATIONS} two-member conversations for {seconds} s:\n\n\
         | latency (ms) | count | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n\
         | POST → frame at the recipient (Parley) | {} | {p50:.2} | {p90:.2} | {p99:.2} | {max:.2} |\n\
         | frame → frame (bare tokio-tungstenite relay) | {} | {b50:.2} | {b90:.2} | {b99:.2} | {bmax:.2} |\n\
         | ratio Parley ÷ bare | | {:.1} | {:.1} | {:.1} | |\n\n\
         Breakdown (same run):\n\n| part (ms) | p50 | p90 | p99 |\n|---|---:|---:|---:|\n\
         | POST → 201 response, at the client | {:.2} | {:.2} | {:.2} |\n\
         | occurred_at → JetStream ack (API histogram, ≤ bucket bound) | {} | {} | {} |\n\
         | occurred_at → frame written (broker histogram, ≤ bucket bound) | {} | {} | {} |\n\n\
         PostgreSQL CPU per message (all of its processes, relay reads and marks included): {postgres_cpu_us_per_message:.0} µs.\n",
        parley.0.len(),
        bare.0.len(),
        p50 / b50,
        p90 / b90,
        p99 / b99,
        post.percentiles()[0],
        post.percentiles()[1],
        post.percentiles()[2],
        relay[0],
        relay[1],
        relay[2],
        delivery[0],
        delivery[1],
        delivery[2],
    );
    super::write_named_report("e2e", &report, &table)?;
    let title = format!("e2e: {RATE_PER_SECOND} messages/s over {CONVERSATIONS} conversations");
    super::write_plot(
        "e2e",
        &title,
        &[("Parley: POST → frame at the recipient", &parley), ("bare relay: frame → frame", &bare)],
    )
}

/// Arrival latencies, POST response times and PostgreSQL's CPU µs per message.
async fn measure_parley(stack: &Stack, ws_url: &str, duration: Duration) -> anyhow::Result<(Sample, Sample, f64)> {
    let sender = UserId::from_uuid(Uuid::now_v7());
    let sender_token = super::token(sender);
    let recipients: Vec<(String, Uuid)> = direct_conversations(stack, &sender_token, CONVERSATIONS).await?;
    let (latencies, mut arrivals) = mpsc::unbounded_channel::<i64>();
    let mut readers = Vec::new();
    for (token, _) in &recipients {
        let mut request = ws_url.into_client_request()?;
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
        let latencies = latencies.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                let received = Utc::now().timestamp_micros();
                let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                if frame["event"]["type"] == "message.created" {
                    let sent: i64 =
                        frame["event"]["data"]["body"].as_str().and_then(|b| b.parse().ok()).unwrap_or(received);
                    let _ = latencies.send(received - sent);
                }
            }
        }));
    }
    let conversations: Arc<Vec<String>> =
        Arc::new(recipients.iter().map(|(_, id)| format!("/v1/conversations/{id}/messages")).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let postgres_pid = stack.postgres.pid().context("postgres pid")?;
    let postgres_cpu_before = super::fanout::tree_cpu_seconds(postgres_pid)?;
    let (feed, pacer) = ticket_feed(RATE_PER_SECOND, duration);
    let mut posters = Vec::new();
    for _ in 0..POSTERS {
        let mut connection = http::Connection::open(stack.api_addr(), &sender_token).await?;
        let (feed, next, conversations) = (feed.clone(), next.clone(), conversations.clone());
        posters.push(tokio::spawn(async move {
            let mut response_times = Vec::new();
            while feed.lock().await.recv().await.is_some() {
                let path = &conversations[next.fetch_add(1, Ordering::Relaxed) % conversations.len()];
                let sent_at = Utc::now().timestamp_micros();
                let body = format!(r#"{{"text":"{sent_at}"}}"#);
                let status = connection.send(Method::POST, path, Some(Bytes::from(body))).await?;
                anyhow::ensure!(status.is_success(), "POST answered {status}");
                response_times.push(Utc::now().timestamp_micros() - sent_at);
            }
            anyhow::Ok(response_times)
        }));
    }
    pacer.await?;
    let mut response_times = Vec::new();
    for poster in posters {
        response_times.extend(poster.await??);
    }
    let sample = collect(&mut arrivals, response_times.len()).await;
    // Everything PostgreSQL did meanwhile (the relay's reads and marks included) counts.
    let postgres_cpu = super::fanout::tree_cpu_seconds(postgres_pid)? - postgres_cpu_before;
    readers.iter().for_each(tokio::task::JoinHandle::abort);
    let cpu_per_message = postgres_cpu * 1e6 / response_times.len().max(1) as f64;
    Ok((sample?, Sample(response_times), cpu_per_message))
}

/// p50, p90, p99 of a Prometheus histogram at `base`/metrics, in ms: the upper bound of the
/// bucket each quantile falls in.
pub(super) async fn histogram_quantiles(base: &str, name: &str) -> anyhow::Result<[f64; 3]> {
    let text = reqwest::get(format!("{base}/metrics")).await?.text().await?;
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|line| line.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .filter_map(|rest| {
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |bucket| bucket.1);
    let at = |q: f64| buckets.iter().find(|bucket| bucket.1 >= q * total).map_or(f64::NAN, |bucket| bucket.0 * 1000.0);
    Ok([at(0.5), at(0.9), at(0.99)])
}

/// `count` recipients, each in a direct conversation with the sender: (their token, conversation).
async fn direct_conversations(stack: &Stack, sender_token: &str, count: usize) -> anyhow::Result<Vec<(String, Uuid)>> {
    let http = reqwest::Client::new();
    let api = stack.api_url();
    futures_util::stream::iter(0..count)
        .map(|_| {
            let (http, api) = (http.clone(), api.clone());
            async move {
                let recipient = UserId::from_uuid(Uuid::now_v7());
                let created: Value = http
                    .post(format!("{api}/v1/conversations"))
                    .bearer_auth(sender_token)
                    .json(&json!({ "kind": "direct", "user_id": recipient }))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let id = created["id"].as_str().context("conversation id")?.parse()?;
                anyhow::Ok((super::token(recipient), id))
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// `expected` latencies, or fails when they stop arriving.
async fn collect(arrivals: &mut mpsc::UnboundedReceiver<i64>, expected: usize) -> anyhow::Result<Sample> {
    let (sample, _) = Sample::gather(arrivals, expected).await;
    anyhow::ensure!(sample.0.len() == expected, "only {} of {expected} messages arrived", sample.0.len());
    Ok(sample)
}

async fn measure_bare(duration: Duration) -> anyhow::Result<Sample> {
    let (mut server, port) = super::spawn_baseline("bench-bare-relay").await?;
    let (latencies, mut arrivals) = mpsc::unbounded_channel::<i64>();
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for pair in 0..CONVERSATIONS {
        let (mut receiver, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/recv/{pair}")).await?;
        receiver.next().await.context("hello")??;
        let latencies = latencies.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = receiver.next().await {
                let sent: i64 = text.parse().unwrap_or_default();
                let _ = latencies.send(Utc::now().timestamp_micros() - sent);
            }
        }));
        let (mut sender, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/send/{pair}")).await?;
        sender.next().await.context("hello")??;
        senders.push(sender);
    }
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SECOND));
    let total = usize::try_from(RATE_PER_SECOND * duration.as_secs())?;
    for n in 0..total {
        tick.tick().await;
        let stamp = Utc::now().timestamp_micros().to_string();
        let pair = n % senders.len();
        senders[pair].send(Message::text(stamp)).await?;
    }
    let sample = collect(&mut arrivals, total).await;
    readers.iter().for_each(tokio::task::JoinHandle::abort);
    server.kill().await?;
    sample
}

/// The baseline relay: a frame from `/send/<k>` goes to `/recv/<k>`.
pub async fn bare_relay() -> anyhow::Result<()> {
    let listener = super::baseline_listener().await?;
    let receivers: Arc<std::sync::Mutex<HashMap<String, mpsc::Sender<Message>>>> = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let receivers = receivers.clone();
        tokio::spawn(async move {
            let Some((mut ws, path)) = super::accept_with_path(stream).await else { return };
            if let Some(pair) = path.strip_prefix("/recv/") {
                let (relay, mut inbox) = mpsc::channel::<Message>(1024);
                // Registered before `hello`, so a sender connecting after it finds the receiver.
                receivers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(pair.to_owned(), relay);
                if ws.send(Message::text("hello")).await.is_err() {
                    return;
                }
                while let Some(message) = inbox.recv().await {
                    if ws.send(message).await.is_err() {
                        return;
                    }
                }
            } else if let Some(pair) = path.strip_prefix("/send/") {
                let relay = receivers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(pair).cloned();
                let Some(relay) = relay else { return };
                if ws.send(Message::text("hello")).await.is_err() {
                    return;
                }
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && relay.send(message).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}
