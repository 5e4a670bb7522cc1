//! `cargo xtask bench connections`: N authenticated idle WebSocket connections to one broker
//! (N = 5,000 and 19,000: the per-process file limit here is 20,000); how long connecting all
//! of them takes and the broker's resident memory per connection.
//!
//! Clients run in worker processes (this binary, hidden subcommand `bench-connect`), each from
//! its own source addresses in 127.0.0.0/8, 128 handshakes in flight per worker. Variants:
//! - `broker, users without conversations`: every connection a distinct user;
//! - `broker, users in direct pairs`: users 2k and 2k+1 share a direct conversation, so the
//!   broker holds N/2 conversation subscriptions as well;
//! - baseline `bare tokio-tungstenite`, in the same invocation: an accept loop, one task and one
//!   tokio mpsc channel per connection, the broker's WebSocket buffer settings, no auth, no hub.
//!
//! KiB per connection = (RSS 3 s after the last connection − RSS of the idle server) ÷ N.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use parley_shared::ids::UserId;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use uuid::Uuid;

use super::{Stack, token};

const COUNTS: [usize; 2] = [5_000, 19_000];
const WORKERS: usize = 2;
const IN_FLIGHT: usize = 128;
const SOURCES_PER_WORKER: u8 = 8;
const SETTLE: Duration = Duration::from_secs(3);

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// WebSocket URL of the server.
    #[arg(long)]
    url: String,
    /// File with one token per line (empty lines: connect without a token).
    #[arg(long)]
    tokens: std::path::PathBuf,
    /// Worker number: picks the source addresses 127.0.<worker+1>.x.
    #[arg(long)]
    worker: u8,
}

pub async fn run() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let release = Stack::build_release("parley-broker")?;
    let mut rows = Vec::new();
    for count in COUNTS {
        let bare = measure_bare(count, stack.dir()).await?;
        eprintln!("bench connections N={count}: bare {bare}");
        let tokens = lone_users(count);
        let lone = measure_broker(&stack, &release, &tokens).await?;
        eprintln!("bench connections N={count}: broker, users without conversations {lone}");
        let tokens = paired_users(&stack, count).await?;
        let paired = measure_broker(&stack, &release, &tokens).await?;
        eprintln!("bench connections N={count}: broker, users in direct pairs {paired}");
        for (variant, measured) in [
            ("bare tokio-tungstenite (baseline)", &bare),
            ("broker, users without conversations", &lone),
            ("broker, users in direct pairs", &paired),
        ] {
            let mut row = measured.clone();
            row["variant"] = json!(variant);
            row["connections"] = json!(count);
            row["ratio_to_bare"] = json!(
                measured["kib_per_connection"].as_f64().unwrap_or(0.0)
                    / bare["kib_per_connection"].as_f64().unwrap_or(f64::NAN)
            );
            rows.push(row);
        }
    }
    stack.stop().await;
    report(&rows)
}

/// Tokens of `count` fresh users (the API learns them on their first request: here the
/// broker's membership request, which finds no conversations).
fn lone_users(count: usize) -> Vec<String> {
    (0..count).map(|_| token(UserId::from_uuid(Uuid::now_v7()))).collect()
}

/// Tokens of `count` users, each pair sharing a direct conversation.
async fn paired_users(stack: &Stack, count: usize) -> anyhow::Result<Vec<String>> {
    let users: Vec<UserId> = (0..count).map(|_| UserId::from_uuid(Uuid::now_v7())).collect();
    let tokens: Vec<String> = users.iter().map(|user| token(*user)).collect();
    let http = reqwest::Client::new();
    let api = stack.api_url();
    let created = futures_util::stream::iter(users.chunks(2).zip(tokens.chunks(2)))
        .map(|(pair, pair_tokens)| {
            let (http, api) = (http.clone(), api.clone());
            async move {
                let Some(other) = pair.get(1) else { return Ok(()) };
                http.post(format!("{api}/v1/conversations"))
                    .bearer_auth(&pair_tokens[0])
                    .json(&json!({ "kind": "direct", "user_id": other }))
                    .send()
                    .await?
                    .error_for_status()
                    .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<reqwest::Result<()>>>()
        .await;
    created.into_iter().collect::<reqwest::Result<Vec<()>>>().context("creating direct conversations")?;
    Ok(tokens)
}

async fn measure_broker(stack: &Stack, release: &Path, tokens: &[String]) -> anyhow::Result<Value> {
    let mut broker = stack.spawn_release_broker(release).await?;
    let pid = broker.pid().context("broker pid")?;
    let url = format!("ws://127.0.0.1:{}/ws", broker.port());
    let measured = measure(pid, &url, tokens, stack.dir()).await;
    broker.terminate().await;
    measured
}

async fn measure_bare(count: usize, dir: &Path) -> anyhow::Result<Value> {
    let (mut server, port) = super::spawn_baseline("bench-bare-server").await?;
    let pid = server.id().context("bare server pid")?;
    let tokens = vec![String::new(); count];
    let measured = measure(pid, &format!("ws://127.0.0.1:{port}/"), &tokens, dir).await;
    server.kill().await?;
    measured
}

/// Connects `tokens.len()` clients through the workers and reads the server's memory.
async fn measure(pid: u32, url: &str, tokens: &[String], dir: &Path) -> anyhow::Result<Value> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = parley_testkit::process::rss_kib(pid)?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for (worker, chunk) in tokens.chunks(tokens.len().div_ceil(WORKERS)).enumerate() {
        let file = dir.join(format!("tokens-{worker}.txt"));
        std::fs::write(&file, chunk.join("\n") + "\n")?;
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["bench-connect", "--url", url, "--worker", &worker.to_string(), "--tokens"])
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        workers.push(child);
    }
    let mut connected = 0;
    for worker in &mut workers {
        let mut line = String::new();
        BufReader::new(worker.stdout.as_mut().context("stdout")?).read_line(&mut line).await?;
        let mut fields = line.split_whitespace().skip(1);
        connected += fields.next().and_then(|n| n.parse::<usize>().ok()).context("worker report")?;
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let after = parley_testkit::process::rss_kib(pid)?;
    for mut worker in workers {
        drop(worker.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(10), worker.wait()).await;
    }
    anyhow::ensure!(connected == tokens.len(), "only {connected} of {} connections were established", tokens.len());
    Ok(json!({
        "connect_seconds": connect_seconds,
        "rss_before_mib": before as f64 / 1024.0,
        "rss_after_mib": after as f64 / 1024.0,
        "kib_per_connection": (after.saturating_sub(before)) as f64 / tokens.len() as f64,
    }))
}

/// The client side: connect every token's connection, report, hold them until stdin closes.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens)?.lines().map(str::to_owned).collect();
    let target: SocketAddr = args.url.trim_start_matches("ws://").split('/').next().unwrap_or_default().parse()?;
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let mut handshakes = tokio::task::JoinSet::new();
    for (index, token) in tokens.into_iter().enumerate() {
        let source =
            Ipv4Addr::new(127, args.worker.saturating_add(1), 0, 1 + (index % usize::from(SOURCES_PER_WORKER)) as u8);
        let (url, in_flight) = (args.url.clone(), in_flight.clone());
        handshakes.spawn(async move {
            let _permit = in_flight.acquire_owned().await.ok()?;
            connect(&url, target, IpAddr::V4(source), &token).await.ok()
        });
    }
    let mut open = Vec::new();
    let mut failed = 0;
    while let Some(joined) = handshakes.join_next().await {
        match joined.ok().flatten() {
            Some(stream) => open.push(stream),
            None => failed += 1,
        }
    }
    println!("connected {} {failed} {}", open.len(), started.elapsed().as_millis());
    std::io::stdout().flush()?;
    // Keep reading so pings are answered, until the parent closes stdin.
    let readers: Vec<_> = open
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { while stream.next().await.is_some() {} }))
        .collect();
    let _ = tokio::io::stdin().read_to_end(&mut Vec::new()).await;
    readers.iter().for_each(tokio::task::JoinHandle::abort);
    Ok(())
}

type ClientStream = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(url: &str, target: SocketAddr, source: IpAddr, token: &str) -> anyhow::Result<ClientStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(target).await?;
    let mut request = url.into_client_request()?;
    if !token.is_empty() {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    // Established = the server's first frame (`hello`) has arrived.
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Text(_)))) => Ok(ws),
        other => anyhow::bail!("no first frame: {other:?}"),
    }
}

/// The baseline server: what a bare tokio-tungstenite relay holds per idle connection.
pub async fn bare_server() -> anyhow::Result<()> {
    let listener = super::baseline_listener().await?;
    let config = WebSocketConfig::default().read_buffer_size(512).write_buffer_size(4096);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else { return };
            let (_relay, mut inbox) = tokio::sync::mpsc::channel::<Message>(1024);
            if ws.send(Message::text(r#"{"type":"hello"}"#)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    inbound = ws.next() => if !matches!(inbound, Some(Ok(_))) { break },
                    Some(outbound) = inbox.recv() => if ws.send(outbound).await.is_err() { break },
                }
            }
        });
    }
}

fn report(rows: &[Value]) -> anyhow::Result<()> {
    let mut table = String::from(
        "| variant | connections | connect all (s) | RSS idle → loaded (MiB) | KiB per connection | ÷ bare |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        table.push_str(&format!(
            "| {} | {} | {:.2} | {:.1} → {:.1} | {:.2} | {:.2} |\n",
            row["variant"].as_str().unwrap_or_default(),
            row["connections"],
            row["connect_seconds"].as_f64().unwrap_or_default(),
            row["rss_before_mib"].as_f64().unwrap_or_default(),
            row["rss_after_mib"].as_f64().unwrap_or_default(),
            row["kib_per_connection"].as_f64().unwrap_or_default(),
            row["ratio_to_bare"].as_f64().unwrap_or_default(),
        ));
    }
    super::write_named_report("connections", &json!({ "scenario": "connections", "rows": rows }), &table)
}
