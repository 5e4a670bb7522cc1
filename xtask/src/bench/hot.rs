//! `cargo xtask bench hot`: one busy group. [`POSTERS`] members post into it while
//! [`WATCHERS`] other members are connected to a broker, in two runs: paced at
//! [`PACED_RATE`] messages/s (latency at that load), then flat out (each poster sends its
//! next POST when the last one is answered: the most the conversation takes). Each run
//! reports messages/s, POST → frame latency at the watchers, PostgreSQL CPU per message, and
//! checks that every watcher received every message once, in seq order.
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

use super::events::{Sample, ticket_feed};
use super::{BenchUser, Stack, http};

const POSTERS: usize = 32;
const WATCHERS: usize = 10;
const PACED_RATE: u64 = 1_500;

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut broker = stack.spawn_release_broker().await?;
    let duration = Duration::from_secs(seconds);
    let mut room = Room::open(&stack, &format!("ws://127.0.0.1:{}/ws", broker.port())).await?;
    let paced = room.post(&stack, Some(PACED_RATE), duration).await?;
    let flat_out = room.post(&stack, None, duration).await?;
    // Where the time goes, from the processes' own histograms (both runs; bucket upper bounds).
    let relay = super::e2e::histogram_quantiles(&stack.api_url(), "parley_outbox_publish_latency_seconds").await?;
    let delivery = super::e2e::histogram_quantiles(&broker.url(), "parley_broker_delivery_latency_seconds").await?;
    room.close();
    broker.terminate().await;
    let pgbench = super::run_pgbench(&stack.postgres, stack.dir(), &room.posters(&stack), duration)?;
    stack.stop().await;

    let rows = [paced.row(&format!("Parley, paced at {PACED_RATE}/s")), flat_out.row("Parley, flat out")];
    let mut table = format!(
        "One conversation, {POSTERS} members posting for {seconds} s per run, {WATCHERS} members connected:\n\n\
         | run | messages/s | POST → frame p50 / p90 / p99 / max (ms) | POST → 201 p50 / p99 (ms) | PostgreSQL CPU µs/message | missing / duplicated / out of order |\n\
         |---|---:|---:|---:|---:|---:|---:|\n"
    );
    for row in &rows {
        let number = |key: &str| row[key].as_f64().unwrap_or_default();
        table.push_str(&format!(
            "| {} | {:.0} | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} / {:.1} | {:.0} | {} / {} / {} |\n",
            row["run"].as_str().unwrap_or_default(),
            number("messages_per_second"),
            number("p50_ms"),
            number("p90_ms"),
            number("p99_ms"),
            number("max_ms"),
            number("post_p50_ms"),
            number("post_p99_ms"),
            number("postgres_cpu_us_per_message"),
            row["missing"],
            row["duplicated"],
            row["out_of_order"],
        ));
    }
    let ratio = flat_out.rate() / pgbench;
    table.push_str(&format!(
        "| pgbench, one transaction per message | {pgbench:.0} | | | | |\n\n\
         Flat out, Parley ÷ pgbench: {ratio:.2}.\n\n\
         Breakdown, both runs (ms, p50 / p90 / p99, ≤ histogram bucket bound): occurred_at → JetStream ack \
         {} / {} / {}; occurred_at → frame written by the broker {} / {} / {}.\n",
        relay[0], relay[1], relay[2], delivery[0], delivery[1], delivery[2],
    ));
    let report = json!({
        "scenario": "hot", "posters": POSTERS, "watchers": WATCHERS, "seconds_per_run": seconds,
        "runs": rows, "pgbench_tx_per_second": pgbench, "flat_out_ratio": ratio,
        "api_commit_to_jetstream_ack_ms_le": relay, "broker_commit_to_frame_written_ms_le": delivery,
    });
    super::write_named_report("hot", &report, &table)?;
    anyhow::ensure!(
        paced.check.is_clean() && flat_out.check.is_clean(),
        "watchers did not receive every message once in seq order"
    );
    Ok(())
}

/// The conversation, its posting members and its connected watchers.
struct Room {
    conversation: Uuid,
    posters: Vec<UserId>,
    /// (watcher, seq, latency µs) of every `message.created` frame, in arrival order.
    arrived: mpsc::UnboundedReceiver<(usize, i64, i64)>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Room {
    async fn open(stack: &Stack, ws_url: &str) -> anyhow::Result<Self> {
        let posters: Vec<UserId> = (0..POSTERS).map(|_| UserId::from_uuid(Uuid::now_v7())).collect();
        let watchers: Vec<UserId> = (0..WATCHERS).map(|_| UserId::from_uuid(Uuid::now_v7())).collect();
        let members: Vec<&UserId> = posters[1..].iter().chain(&watchers).collect();
        let created: Value = reqwest::Client::new()
            .post(format!("{}/v1/conversations", stack.api_url()))
            .bearer_auth(super::token(posters[0]))
            .json(&json!({ "kind": "group", "title": "hot", "member_ids": members }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let conversation: Uuid = created["id"].as_str().context("conversation id")?.parse()?;

        let (arrivals, arrived) = mpsc::unbounded_channel();
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
                        let body = frame["event"]["data"]["body"].as_str();
                        let sent = body.and_then(|b| b.parse().ok()).unwrap_or(received);
                        let _ = arrivals.send((watcher, seq, received - sent));
                    }
                }
            }));
        }
        super::fanout::wait_for_outbox(&stack.api_url()).await?;
        Ok(Self { conversation, posters, arrived, readers })
    }

    /// One run: every poster sends for `duration`, at `pace` messages/s shared between them or,
    /// without one, each as fast as it is answered; then waits for the watchers' frames.
    async fn post(&mut self, stack: &Stack, pace: Option<u64>, duration: Duration) -> anyhow::Result<Run> {
        let postgres_pid = stack.postgres.pid().context("postgres pid")?;
        let postgres_cpu_before = super::fanout::tree_cpu_seconds(postgres_pid)?;
        let (feed, pacer) = match pace {
            Some(rate) => {
                let (feed, pacer) = ticket_feed(rate, duration);
                (Some(feed), Some(pacer))
            }
            None => (None, None),
        };
        let started = Instant::now();
        let mut posting = Vec::new();
        for user in &self.posters {
            let mut connection = http::Connection::open(stack.api_addr(), &super::token(*user)).await?;
            let path = format!("/v1/conversations/{}/messages", self.conversation);
            let feed = feed.clone();
            posting.push(tokio::spawn(async move {
                let mut response_times = Vec::new();
                loop {
                    match &feed {
                        Some(feed) if feed.lock().await.recv().await.is_none() => break,
                        None if started.elapsed() >= duration => break,
                        _ => {}
                    }
                    let sent_at = Utc::now().timestamp_micros();
                    let body = format!(r#"{{"text":"{sent_at}"}}"#);
                    let status = connection.send(Method::POST, &path, Some(Bytes::from(body))).await?;
                    anyhow::ensure!(status.is_success(), "POST answered {status}");
                    response_times.push(Utc::now().timestamp_micros() - sent_at);
                }
                anyhow::Ok(response_times)
            }));
        }
        if let Some(pacer) = pacer {
            pacer.await?;
        }
        let mut response_times = Vec::new();
        for poster in posting {
            response_times.extend(poster.await??);
        }
        let seconds = started.elapsed().as_secs_f64();
        let posted = response_times.len();
        let mut frames = Vec::with_capacity(posted * WATCHERS);
        while frames.len() < posted * WATCHERS {
            match tokio::time::timeout(Duration::from_secs(10), self.arrived.recv()).await {
                Ok(Some(frame)) => frames.push(frame),
                _ => break,
            }
        }
        // Everything PostgreSQL did meanwhile (the relay's reads and marks included) counts.
        let postgres_cpu = super::fanout::tree_cpu_seconds(postgres_pid)? - postgres_cpu_before;
        Ok(Run {
            posted,
            seconds,
            check: Check::of(&frames, posted),
            latency: Sample(frames.iter().map(|frame| frame.2).collect()),
            responses: Sample(response_times),
            postgres_cpu_us_per_message: postgres_cpu * 1e6 / posted.max(1) as f64,
        })
    }

    fn close(&self) {
        self.readers.iter().for_each(tokio::task::JoinHandle::abort);
    }

    /// The posters as pgbench clients of this conversation.
    fn posters(&self, stack: &Stack) -> Vec<BenchUser> {
        let conversation = self.conversation;
        self.posters
            .iter()
            .map(|&id| BenchUser { id, token: super::token(id), conversation, api: stack.api_addr() })
            .collect()
    }
}

struct Run {
    posted: usize,
    seconds: f64,
    latency: Sample,
    responses: Sample,
    postgres_cpu_us_per_message: f64,
    check: Check,
}

impl Run {
    fn rate(&self) -> f64 {
        self.posted as f64 / self.seconds
    }

    fn row(&self, run: &str) -> Value {
        let [p50, p90, p99, max] = self.latency.percentiles();
        let [post_p50, _, post_p99, _] = self.responses.percentiles();
        json!({
            "run": run, "messages": self.posted, "seconds": self.seconds, "messages_per_second": self.rate(),
            "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max, "post_p50_ms": post_p50, "post_p99_ms": post_p99,
            "postgres_cpu_us_per_message": self.postgres_cpu_us_per_message,
            "missing": self.check.missing, "duplicated": self.check.duplicated, "out_of_order": self.check.out_of_order,
        })
    }
}

/// Whether each watcher saw every message of a run once, in seq order.
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
        let mut faulty = clean;
        faulty.retain(|frame| *frame != (0, 6, 0));
        faulty.push((1, 5, 0));
        assert_eq!(Check::of(&faulty, 3), Check { missing: 1, duplicated: 1, out_of_order: 1 });
    }
}
