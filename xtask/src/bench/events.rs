//! `cargo xtask bench events`: how long a committed event takes to reach a NATS subscriber
//! through the outbox relay, at 1,000 messages/s, against bare NATS at the same rate.
//!
//! Latency is measured from the event's `occurred_at` (written with `clock_timestamp()` just
//! before commit) to its arrival at a core-NATS subscriber of `<prefix>.conv.*.message.created`,
//! on the same machine and clock. The baseline in the same invocation publishes timestamped
//! messages straight to NATS at the same rate and measures publish → arrival.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use hyper::Method;
use parley_shared::events::Envelope;
use serde_json::json;
use tokio::sync::Mutex;

use super::{Stack, http};

pub(super) const RATE_PER_SECOND: u64 = 1_000;
const WORKERS: usize = 32;

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let users = stack.users(WORKERS).await?;
    let nats = async_nats::connect(stack.nats_url()).await?;
    let duration = Duration::from_secs(seconds);

    let relay = measure_relay(&nats, &users, duration).await?;
    let bare = measure_bare(&nats, duration).await?;
    stack.stop().await;

    let report = json!({
        "scenario": "events",
        "rate_per_second": RATE_PER_SECOND,
        "seconds": seconds,
        "commit_to_nats_us": relay.summary(),
        "bare_nats_us": bare.summary(),
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("events.json"), serde_json::to_string_pretty(&report)?)?;
    let mut table = format!(
        "At {RATE_PER_SECOND} messages/s for {seconds} s ({} events):\n\n| latency (ms) | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|\n",
        relay.0.len()
    );
    for (name, sample) in
        [("commit → NATS subscriber (outbox relay)", &relay), ("bare NATS publish → subscriber", &bare)]
    {
        let [p50, p90, p99, max] = sample.percentiles();
        table.push_str(&format!("| {name} | {p50:.2} | {p90:.2} | {p99:.2} | {max:.2} |\n"));
    }
    let ([r50, _, r99, _], [b50, _, b99, _]) = (relay.percentiles(), bare.percentiles());
    table.push_str(&format!("| ratio relay ÷ bare | {:.1} | | {:.1} | |\n", r50 / b50, r99 / b99));
    std::fs::write(dir.join("events.md"), &table)?;
    println!("{table}\nReport: target/bench/events.json, target/bench/events.md");
    Ok(())
}

/// Latencies in microseconds.
pub(super) struct Sample(pub(super) Vec<i64>);

impl Sample {
    /// Latencies from `arrivals` until `expected` have come or none came for 10 s; with when
    /// the last one came.
    pub(super) async fn gather(
        arrivals: &mut tokio::sync::mpsc::UnboundedReceiver<i64>,
        expected: usize,
    ) -> (Self, std::time::Instant) {
        let mut latencies = Vec::with_capacity(expected);
        let mut last = std::time::Instant::now();
        while latencies.len() < expected {
            match tokio::time::timeout(Duration::from_secs(10), arrivals.recv()).await {
                Ok(Some(latency)) => {
                    latencies.push(latency);
                    last = std::time::Instant::now();
                }
                _ => break,
            }
        }
        (Self(latencies), last)
    }

    /// p50, p90, p99 and max, in milliseconds.
    pub(super) fn percentiles(&self) -> [f64; 4] {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let at = |q: f64| {
            let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
            sorted.get(index).copied().unwrap_or_default() as f64 / 1000.0
        };
        [at(0.5), at(0.9), at(0.99), at(1.0)]
    }

    pub(super) fn summary(&self) -> serde_json::Value {
        let [p50, p90, p99, max] = self.percentiles();
        json!({ "count": self.0.len(), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max })
    }
}

/// Ticks at the target rate; each tick is one send by whichever worker is free.
pub(super) fn ticket_feed(
    rate_per_second: u64,
    duration: Duration,
) -> (Arc<Mutex<tokio::sync::mpsc::Receiver<()>>>, tokio::task::JoinHandle<()>) {
    let (tickets, feed) = tokio::sync::mpsc::channel(10_000);
    let pacer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate_per_second));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let total = rate_per_second * duration.as_secs();
        for _ in 0..total {
            tick.tick().await;
            if tickets.send(()).await.is_err() {
                return;
            }
        }
    });
    (Arc::new(Mutex::new(feed)), pacer)
}

async fn measure_relay(
    nats: &async_nats::Client,
    users: &[super::BenchUser],
    duration: Duration,
) -> anyhow::Result<Sample> {
    let mut arrivals = nats.subscribe("parley.conv.*.message.created").await?;
    nats.flush().await?;
    // Arrivals are timed as they come, while the POSTs go on; `sent` says when to stop.
    let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(usize::MAX);
    let reader = tokio::spawn(async move {
        let mut latencies = Vec::new();
        while latencies.len() < *sent_rx.borrow_and_update() {
            let message = tokio::select! {
                message = arrivals.next() => message.context("subscription ended")?,
                changed = sent_rx.changed() => { changed?; continue; }
                () = tokio::time::sleep(Duration::from_secs(10)) => {
                    anyhow::bail!("only {} events arrived", latencies.len())
                }
            };
            let received = Utc::now();
            let envelope: Envelope = serde_json::from_slice(&message.payload)?;
            latencies.push((received - envelope.occurred_at).num_microseconds().unwrap_or(i64::MAX));
        }
        anyhow::Ok(latencies)
    });
    let (feed, pacer) = ticket_feed(RATE_PER_SECOND, duration);
    let mut workers = Vec::new();
    for user in users {
        let mut connection = http::Connection::open(user.api, &user.token).await?;
        let path = format!("/v1/conversations/{}/messages", user.conversation);
        let feed = feed.clone();
        workers.push(tokio::spawn(async move {
            let mut sent = 0usize;
            loop {
                if feed.lock().await.recv().await.is_none() {
                    return Ok::<usize, anyhow::Error>(sent);
                }
                let status =
                    connection.send(Method::POST, &path, Some(Bytes::from_static(br#"{"text":"latency"}"#))).await?;
                anyhow::ensure!(status.is_success(), "POST answered {status}");
                sent += 1;
            }
        }));
    }
    pacer.await?;
    let mut sent = 0;
    for worker in workers {
        sent += worker.await??;
    }
    sent_tx.send(sent)?;
    Ok(Sample(reader.await??))
}

async fn measure_bare(nats: &async_nats::Client, duration: Duration) -> anyhow::Result<Sample> {
    let mut arrivals = nats.subscribe("bench.bare").await?;
    nats.flush().await?;
    let total = usize::try_from(RATE_PER_SECOND * duration.as_secs())?;
    let publisher = nats.clone();
    let publish = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SECOND));
        for _ in 0..total {
            tick.tick().await;
            let stamp = Utc::now().timestamp_micros().to_string();
            publisher.publish("bench.bare", stamp.into()).await?;
        }
        anyhow::Ok(())
    });
    let mut latencies = Vec::with_capacity(total);
    while latencies.len() < total {
        let message = tokio::time::timeout(Duration::from_secs(10), arrivals.next())
            .await
            .context("bare NATS messages stopped arriving")?
            .context("subscription ended")?;
        let sent: i64 = std::str::from_utf8(&message.payload)?.parse()?;
        latencies.push(Utc::now().timestamp_micros() - sent);
    }
    publish.await??;
    Ok(Sample(latencies))
}
