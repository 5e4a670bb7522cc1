//! `cargo xtask bench channels`: application channels.
//!
//! 1. Fan-out: [`MEMBERS`] anonymous connections subscribe to one public channel; a backend
//!    publishes [`MESSAGES`] publications through the publish API ([`POSTERS`] concurrent publishers, a
//!    server API key), each delivered to every subscriber. Once on a durable channel (`public`:
//!    stored, offset, outbox relay, JetStream) and once on an ephemeral one (`live`: core
//!    NATS). Baseline in the same invocation: the bare tokio broadcast relay of `bench fanout`,
//!    carrying the same publication frame (same size) to the same number of receivers.
//! 2. Publish throughput: C backends (8 and 32), each publishing back to back to a channel of
//!    its own, durable and ephemeral, beside the message POST rate of C users at the same
//!    concurrency in the same run.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use hyper::Method;
use memchr::memmem;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::fanout::{
    MEMBERS, MESSAGES, POSTERS, Posted, Receiver, Run, connect_all, cpu_seconds, finish, measure_bare,
};
use super::{CONCURRENCY, Op, Stack, drive, http};

const KEY: &str = "bench-server-key-0123456789abcdef";

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let stack = Stack::start_with(vec![("PARLEY_SERVER_API_KEYS".into(), KEY.into())]).await?;
    // Every subscriber connects anonymously from 127.0.0.1: lift the per-address limit.
    let anonymous = vec![
        ("PARLEY_BROKER_ALLOW_ANONYMOUS".into(), "true".into()),
        ("PARLEY_UNAUTHENTICATED_BURST".into(), "1000000".into()),
    ];
    let mut fanout = Vec::new();
    for channel in ["public:fanout", "live:fanout"] {
        let mut broker = stack.spawn_release_broker_with(anonymous.clone()).await?;
        let run = measure_channel(&stack, &broker, channel).await?;
        eprintln!("bench channels: {channel}: {:.0} deliveries/s", run.latency.0.len() as f64 / run.seconds);
        fanout.push((channel, run));
        broker.terminate().await;
    }
    let throughput = measure_throughput(&stack, Duration::from_secs(seconds)).await?;
    stack.stop().await;
    let bare = measure_bare(bare_frame, sent_micros).await?;

    let bare_rate = bare.latency.0.len() as f64 / bare.seconds;
    let mut rows: Vec<Value> = fanout
        .iter()
        .map(|(channel, run)| {
            let mut row = run.row(&format!("Parley: publish API → broker → {channel} subscribers"));
            row["ratio_to_bare"] = json!(run.latency.0.len() as f64 / run.seconds / bare_rate);
            row
        })
        .collect();
    rows.push(bare.row("bare tokio broadcast relay"));
    let mut table = format!(
        "{MESSAGES} publications to one channel of {MEMBERS} anonymous subscribers:\n\n{}",
        super::fanout::fanout_table(&rows)
    );
    for row in &rows[..2] {
        table.push_str(&format!(
            "\n{} ÷ bare (deliveries/s): {:.2}",
            row["variant"].as_str().unwrap_or_default(),
            row["ratio_to_bare"].as_f64().unwrap_or_default()
        ));
    }
    table.push_str(
        "\n\nPublish API throughput (each client publishes back to back to a channel of its own), \
         beside message POSTs at the same concurrency:\n\n\
         | clients | message POST/s | durable publish/s | ÷ POST | ephemeral publish/s | ÷ POST |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    for row in &throughput {
        let posts = row["message_post_per_s"].as_f64().unwrap_or(f64::NAN);
        let durable = row["durable_publish_per_s"].as_f64().unwrap_or_default();
        let ephemeral = row["ephemeral_publish_per_s"].as_f64().unwrap_or_default();
        table.push_str(&format!(
            "| {} | {posts:.0} | {durable:.0} | {:.2} | {ephemeral:.0} | {:.2} |\n",
            row["clients"],
            durable / posts,
            ephemeral / posts
        ));
    }
    let report =
        json!({ "scenario": "channels", "fanout": rows, "throughput": throughput, "seconds_per_run": seconds });
    super::write_named_report("channels", &report, &table)
}

/// [`MEMBERS`] anonymous subscribers of `channel` on `broker`; [`MESSAGES`] publications
/// through the publish API.
async fn measure_channel(stack: &Stack, broker: &parley_testkit::AppProcess, channel: &str) -> anyhow::Result<Run> {
    let url = format!("ws://127.0.0.1:{}/ws", broker.port());
    let subscribe = json!({ "type": "subscribe", "channel": channel }).to_string();
    let receivers = (0..MEMBERS)
        .map(|_| Receiver { url: url.clone(), token: None, first_frame: Some(subscribe.clone()) })
        .collect();
    let (latencies, arrivals) = mpsc::unbounded_channel::<i64>();
    let readers = connect_all(receivers, latencies, sent_micros).await?;
    eprintln!("bench channels: {MEMBERS} subscribers of {channel}; publishing");
    let pid = broker.pid().ok_or_else(|| anyhow::anyhow!("broker pid"))?;
    let path = format!("/v1/channels/{channel}/publications");
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let mut publishers = Vec::new();
    for publisher in 0..POSTERS {
        let mut connection =
            http::Connection::open_with_authorization(stack.api_addr(), format!("ApiKey {KEY}")).await?;
        let path = path.clone();
        publishers.push(tokio::spawn(async move {
            for _ in (publisher..MESSAGES).step_by(POSTERS) {
                let body = format!(r#"{{"data":{{"sent":{}}}}}"#, Utc::now().timestamp_micros());
                let status = connection.send(Method::POST, &path, Some(Bytes::from(body))).await?;
                anyhow::ensure!(status.as_u16() == 202, "publish answered {status}");
            }
            anyhow::Ok(())
        }));
    }
    for publisher in publishers {
        publisher.await??;
    }
    let posted = Posted { started, seconds: started.elapsed().as_secs_f64(), relay_pid: pid, cpu_before };
    finish(arrivals, readers, posted).await
}

/// The send time in a publication frame: `"data":{"sent":<µs>}`.
fn sent_micros(text: &[u8]) -> Option<i64> {
    const SENT: &[u8] = br#""sent":"#;
    memmem::find(text, br#""type":"publication""#)?;
    let start = memmem::find(text, SENT)? + SENT.len();
    let length = text[start..].iter().position(|byte| !byte.is_ascii_digit())?;
    std::str::from_utf8(&text[start..start + length]).ok()?.parse().ok()
}

/// What the bare relay carries: the publication frame the broker forwards, with the send time.
fn bare_frame(sent: i64) -> String {
    let publication =
        parley_shared::publications::Publication::durable("public:fanout", 1, "5f0c1e9a2b4d", json!({ "sent": sent }));
    serde_json::to_string(&publication).unwrap_or_default()
}

/// Publish rates (durable, ephemeral) beside message POSTs, at each concurrency.
async fn measure_throughput(stack: &Stack, duration: Duration) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    for clients in CONCURRENCY {
        let users = stack.users(clients).await?;
        let posts = drive(&users, duration, Op::Post).await?;
        let durable = publish_rate(stack, clients, "public", duration).await?;
        let ephemeral = publish_rate(stack, clients, "live", duration).await?;
        eprintln!(
            "bench channels C={clients}: POST {posts:.0}/s, durable publish {durable:.0}/s, ephemeral publish {ephemeral:.0}/s"
        );
        rows.push(json!({
            "clients": clients, "message_post_per_s": posts,
            "durable_publish_per_s": durable, "ephemeral_publish_per_s": ephemeral,
        }));
    }
    Ok(rows)
}

/// `clients` backends, each publishing back to back to `<namespace>:bench-<n>` for `duration`;
/// accepted publications per second.
async fn publish_rate(stack: &Stack, clients: usize, namespace: &str, duration: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let mut connection =
            http::Connection::open_with_authorization(stack.api_addr(), format!("ApiKey {KEY}")).await?;
        let path = format!("/v1/channels/{namespace}:bench-{client}/publications");
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            while started.elapsed() < duration {
                let body = Bytes::from_static(br#"{"data":{"score":[2,1],"minute":77}}"#);
                let status = connection.send(Method::POST, &path, Some(body)).await?;
                anyhow::ensure!(status.as_u16() == 202, "publish answered {status}");
                accepted += 1;
            }
            anyhow::Ok(accepted)
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await??;
    }
    Ok(accepted as f64 / started.elapsed().as_secs_f64())
}
