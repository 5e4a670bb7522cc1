//! `cargo xtask bench hot`: one busy group. [`POSTERS`] members post into it as fast as they
//! can (each sends its next POST when the last one is answered) while [`WATCHERS`] other
//! members are connected to a broker. Reports messages/s, POST → frame latency at the watchers,
//! PostgreSQL CPU per message, and checks that every watcher received every message once, in
//! seq order.
//!
//! Baseline in the same invocation: pgbench running the per-message transaction of
//! `bench rest` (bump the seq, insert the message and its event, commit) on [`POSTERS`]
//! connections into one conversation: what one durable commit per message allows when every
//! writer waits for the conversation's row lock.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use hyper::Method;
use parley_shared::ids::UserId;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use super::events::Sample;
use super::{BenchUser, Stack, http};

const POSTERS: usize = 32;
const WATCHERS: usize = 10;

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut broker = stack.spawn_release_broker().await?;
    let duration = Duration::from_secs(seconds);
    let parley = measure_parley(&stack, &format!("ws://127.0.0.1:{}/ws", broker.port()), duration).await?;
    broker.terminate().await;
    let pgbench = super::run_pgbench(&stack.postgres, stack.dir(), &parley.posters, duration)?;
    stack.stop().await;

    let rate = parley.posted as f64 / parley.seconds;
    let [p50, p90, p99, max] = parley.latency.percentiles();
    let [r50, _, r99, _] = parley.responses.percentiles();
    let report = json!({
        "scenario": "hot", "posters": POSTERS, "watchers": WATCHERS, "seconds": parley.seconds,
        "messages": parley.posted, "messages_per_second": rate, "pgbench_tx_per_second": pgbench,
        "ratio": rate / pgbench, "post_to_frame": parley.latency.summary(), "post_response": parley.responses.summary(),
        "postgres_cpu_us_per_message": parley.postgres_cpu_us_per_message,
        "missing": parley.check.missing, "duplicated": parley.check.duplicated, "out_of_order": parley.check.out_of_order,
    });
    let table = format!(
        "One conversation, {POSTERS} members posting back to back for {seconds} s, {WATCHERS} members connected:\n\n\
         | | messages/s | POST → frame p50 / p90 / p99 / max (ms) | POST → 201 p50 / p99 (ms) | PostgreSQL CPU µs/message |\n\
         |---|---:|---:|---:|---:|\n\
         | Parley | {rate:.0} | {p50:.1} / {p90:.1} / {p99:.1} / {max:.1} | {r50:.1} / {r99:.1} | {:.0} |\n\
         | pgbench, one transaction per message | {pgbench:.0} | | | |\n\n\
         Parley ÷ pgbench: {:.2}. Of {} messages × {WATCHERS} watchers: {} missing, {} duplicated, {} out of seq order.\n",
        parley.postgres_cpu_us_per_message,
        rate / pgbench,
        parley.posted,
        parley.check.missing,
        parley.check.duplicated,
        parley.check.out_of_order,
    );
    super::write_named_report("hot", &report, &table)?;
    anyhow::ensure!(parley.check.is_clean(), "watchers did not receive every message once in seq order");
    Ok(())
}

struct Run {
    /// The posting members, all in the one conversation (pgbench posts as them too).
    posters: Vec<BenchUser>,
    posted: usize,
    seconds: f64,
    latency: Sample,
    responses: Sample,
    postgres_cpu_us_per_message: f64,
    check: Check,
}

async fn measure_parley(stack: &Stack, ws_url: &str, duration: Duration) -> anyhow::Result<Run> {
    let posters: Vec<UserId> = (0..POSTERS).map(|_| UserId::from_uuid(Uuid::now_v7())).collect();
    let watchers: Vec<UserId> = (0..WATCHERS).map(|_| UserId::from_uuid(Uuid::now_v7())).collect();
    let created: Value = reqwest::Client::new()
        .post(format!("{}/v1/conversations", stack.api_url()))
        .bearer_auth(super::token(posters[0]))
        .json(&json!({ "kind": "group", "title": "hot", "member_ids": posters[1..].iter().chain(&watchers).collect::<Vec<_>>() }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let conversation: Uuid = created["id"].as_str().context("conversation id")?.parse()?;

    let (arrivals, mut arrived) = mpsc::unbounded_channel::<(usize, i64, i64)>();
    let mut readers = Vec::new();
    for (watcher, user) in watchers.iter().enumerate() {
        let mut request = ws_url.into_client_request()?;
        request.headers_mut().insert("authorization", format!("Bearer {}", super::token(*user)).parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
        ws.next().await.context("hello")??;
        let arrivals = arrivals.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                let received = Utc::now().timestamp_micros();
                let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                if frame["event"]["type"] == "message.created" {
                    let seq = frame["event"]["seq"].as_i64().unwrap_or_default();
                    let sent = frame["event"]["data"]["body"].as_str().and_then(|b| b.parse().ok()).unwrap_or(received);
                    let _ = arrivals.send((watcher, seq, received - sent));
                }
            }
        }));
    }
    super::fanout::wait_for_outbox(&stack.api_url()).await?;

    let postgres_pid = stack.postgres.pid().context("postgres pid")?;
    let postgres_cpu_before = super::fanout::tree_cpu_seconds(postgres_pid)?;
    let started = Instant::now();
    let mut posting = Vec::new();
    for user in &posters {
        let mut connection = http::Connection::open(stack.api_addr(), &super::token(*user)).await?;
        let path = format!("/v1/conversations/{conversation}/messages");
        posting.push(tokio::spawn(async move {
            let mut response_times = Vec::new();
            while started.elapsed() < duration {
                let sent_at = Utc::now().timestamp_micros();
                let body = format!(r#"{{"text":"{sent_at}"}}"#);
                let status = connection.send(Method::POST, &path, Some(Bytes::from(body))).await?;
                anyhow::ensure!(status.is_success(), "POST answered {status}");
                response_times.push(Utc::now().timestamp_micros() - sent_at);
            }
            anyhow::Ok(response_times)
        }));
    }
    let mut response_times = Vec::new();
    for poster in posting {
        response_times.extend(poster.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let posted = response_times.len();
    let mut frames = Vec::with_capacity(posted * WATCHERS);
    while frames.len() < posted * WATCHERS {
        match tokio::time::timeout(Duration::from_secs(10), arrived.recv()).await {
            Ok(Some(frame)) => frames.push(frame),
            _ => break,
        }
    }
    // Everything written meanwhile (the relay's reads and marks included) counts.
    let postgres_cpu = super::fanout::tree_cpu_seconds(postgres_pid)? - postgres_cpu_before;
    readers.iter().for_each(tokio::task::JoinHandle::abort);
    let check = Check::of(&frames, posted);
    let posters = posters
        .into_iter()
        .map(|id| BenchUser { id, token: super::token(id), conversation, api: stack.api_addr() })
        .collect();
    Ok(Run {
        posters,
        posted,
        seconds,
        latency: Sample(frames.iter().map(|frame| frame.2).collect()),
        responses: Sample(response_times),
        postgres_cpu_us_per_message: postgres_cpu * 1e6 / posted.max(1) as f64,
        check,
    })
}

/// Whether each watcher saw seqs first + 1 … first + posted, each once, in order.
#[derive(Debug, Default, PartialEq)]
struct Check {
    missing: usize,
    duplicated: usize,
    out_of_order: usize,
}

impl Check {
    /// `frames`: (watcher, seq, latency) in arrival order.
    fn of(frames: &[(usize, i64, i64)], posted: usize) -> Self {
        let mut check = Self::default();
        for watcher in 0..WATCHERS {
            let seqs: Vec<i64> = frames.iter().filter(|frame| frame.0 == watcher).map(|frame| frame.1).collect();
            let mut distinct = seqs.clone();
            distinct.sort_unstable();
            distinct.dedup();
            check.duplicated += seqs.len() - distinct.len();
            check.missing += posted.saturating_sub(distinct.len());
            check.out_of_order += seqs.windows(2).filter(|pair| pair[1] <= pair[0]).count();
        }
        check
    }

    fn is_clean(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_counts_what_a_watcher_missed_repeated_or_saw_out_of_order() {
        let clean: Vec<(usize, i64, i64)> = (0..WATCHERS).flat_map(|w| (5..8).map(move |seq| (w, seq, 0))).collect();
        assert!(Check::of(&clean, 3).is_clean());
        let mut faulty = clean.clone();
        faulty.retain(|frame| *frame != (0, 6, 0));
        faulty.push((1, 5, 0));
        assert_eq!(Check::of(&faulty, 3), Check { missing: 1, duplicated: 1, out_of_order: 1 });
    }
}
