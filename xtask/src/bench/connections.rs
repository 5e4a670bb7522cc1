//! `cargo xtask bench connections`: N authenticated idle WebSocket connections to one broker
//! (N = 5,000 and 19,000: the per-process file limit here is 20,000); how long connecting all
//! of them takes and the broker's resident memory per connection.
//!
//! Clients run in worker processes (this binary, hidden subcommand `bench-connect`), each from
//! its own source addresses in 127.0.0.0/8, 128 handshakes in flight per worker. Variants:
//! - `broker, users without conversations`: every connection a distinct user;
//! - `broker, users in direct pairs`: users 2k and 2k+1 share a direct conversation, so the
//!   broker holds N/2 conversation subscriptions as well;
//! - `broker, realistic users` (N = 19,000 only): each user a member of 20 conversations, 10
//!   direct ones with users who never connect and 10 groups of 50 connected users; reported
//!   also as bytes per membership above the users without conversations;
//! - baseline `bare tokio-tungstenite`, in the same invocation: an accept loop, one task and one
//!   tokio mpsc channel per connection, the broker's WebSocket buffer settings, no auth, no hub.
//!
//! KiB per connection = (RSS 3 s after the last connection − RSS of the idle server) ÷ N.
//! Last, one user who is a member of 10,000 conversations connects alone: the broker's RSS
//! growth and the time to its `hello`.

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

/// A part of the scenario to run alone (`--only`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Realistic,
    Many,
}

pub async fn run(only: Option<Part>) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut rows = Vec::new();
    let counts: &[usize] = match only {
        None => &COUNTS,
        Some(Part::Realistic) => &[REALISTIC_USERS],
        Some(Part::Many) => &[],
    };
    for &count in counts {
        let bare = measure_bare(count, stack.dir()).await?;
        eprintln!("bench connections N={count}: bare {bare}");
        let tokens = lone_users(count);
        let lone = measure_broker(&stack, &tokens).await?;
        eprintln!("bench connections N={count}: broker, users without conversations {lone}");
        let mut variants = vec![
            ("bare tokio-tungstenite (baseline)", bare.clone()),
            ("broker, users without conversations", lone.clone()),
        ];
        if only.is_none() {
            let tokens = paired_users(&stack, count).await?;
            let paired = measure_broker(&stack, &tokens).await?;
            eprintln!("bench connections N={count}: broker, users in direct pairs {paired}");
            variants.push(("broker, users in direct pairs", paired));
        }
        if count == REALISTIC_USERS {
            let tokens = realistic_users(&stack, count).await?;
            // With presence as configured by default (each arrival goes to up to 490 co-members
            // here), and without automatic presence: what interest itself costs.
            for (variant, env) in [
                ("broker, realistic users (20 conversations each)", Vec::new()),
                (
                    "broker, realistic users, no automatic presence",
                    vec![("PARLEY_PRESENCE_AUTO_MAX_MEMBERS".to_owned(), "0".to_owned())],
                ),
            ] {
                let mut broker = stack.spawn_release_broker_with(env).await?;
                let pid = broker.pid().context("broker pid")?;
                let url = format!("ws://127.0.0.1:{}/ws", broker.port());
                let mut realistic = measure(pid, &url, &tokens, stack.dir()).await?;
                realistic["presence_frames"] =
                    json!(super::broker_metric(&broker.url(), "parley_broker_presence_frames_total").await?);
                broker.terminate().await;
                let extra_kib = realistic["kib_per_connection"].as_f64().unwrap_or_default()
                    - lone["kib_per_connection"].as_f64().unwrap_or_default();
                realistic["bytes_per_membership"] = json!(extra_kib * 1024.0 / MEMBERSHIPS_PER_USER as f64);
                eprintln!("bench connections N={count}: {variant} {realistic}");
                variants.push((variant, realistic));
            }
        }
        for (variant, measured) in &variants {
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
    let many = match only {
        None | Some(Part::Many) => one_user_in_many_conversations(&stack).await?,
        Some(Part::Realistic) => Value::Null,
    };
    if !many.is_null() {
        eprintln!("bench connections: one user in {MANY_CONVERSATIONS} conversations {many}");
    }
    stack.stop().await;
    report(&rows, &many)
}

/// The realistic mix: 10 direct conversations with users who never connect, 10 groups of 50.
const REALISTIC_USERS: usize = 19_000;
const MEMBERSHIPS_PER_USER: usize = 20;
const DIRECTS_PER_USER: usize = 10;
const GROUP_SIZE: usize = 50;
/// One multiplier per round of groups, coprime with 19,000: each round is a permutation.
const GROUP_ROUNDS: [usize; 10] = [1, 3, 7, 11, 13, 17, 21, 23, 27, 29];
const MANY_CONVERSATIONS: usize = 10_000;

/// Tokens of `count` users in the realistic mix, arranged directly in PostgreSQL (creating
/// 190,000 conversations over REST would take minutes and measure nothing of the broker).
async fn realistic_users(stack: &Stack, count: usize) -> anyhow::Result<Vec<String>> {
    let users: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
    let mut memberships: Vec<(Uuid, Uuid)> = Vec::with_capacity(count * MEMBERSHIPS_PER_USER);
    let mut directs = Vec::with_capacity(count * DIRECTS_PER_USER);
    for &user in &users {
        for _ in 0..DIRECTS_PER_USER {
            let (conversation, ghost) = (Uuid::now_v7(), Uuid::now_v7());
            directs.push((conversation, user, ghost));
            memberships.push((conversation, user));
            memberships.push((conversation, ghost));
        }
    }
    let mut groups = Vec::new();
    for multiplier in GROUP_ROUNDS {
        let round: Vec<Uuid> = (0..count.div_ceil(GROUP_SIZE)).map(|_| Uuid::now_v7()).collect();
        for (index, &user) in users.iter().enumerate() {
            memberships.push((round[(index * multiplier % count) / GROUP_SIZE], user));
        }
        groups.extend(round);
    }
    let db = sqlx::PgPool::connect(&stack.database_url()).await?;
    arrange(&db, &users, &directs, &groups, &memberships).await?;
    db.close().await;
    Ok(users.into_iter().map(|user| token(UserId::from_uuid(user))).collect())
}

/// Inserts users, direct conversations (with their other member), groups and memberships.
async fn arrange(
    db: &sqlx::PgPool,
    users: &[Uuid],
    directs: &[(Uuid, Uuid, Uuid)],
    groups: &[Uuid],
    memberships: &[(Uuid, Uuid)],
) -> anyhow::Result<()> {
    let mut everyone: Vec<Uuid> = users.to_vec();
    everyone.extend(directs.iter().map(|(_, _, ghost)| *ghost));
    for chunk in everyone.chunks(50_000) {
        sqlx::query("insert into users (id) select unnest($1::uuid[]) on conflict do nothing")
            .bind(chunk)
            .execute(db)
            .await?;
    }
    for chunk in directs.chunks(50_000) {
        let (ids, owners, ghosts): (Vec<Uuid>, Vec<Uuid>, Vec<Uuid>) =
            chunk.iter().fold((vec![], vec![], vec![]), |(mut a, mut b, mut c), (id, owner, ghost)| {
                a.push(*id);
                b.push(*owner);
                c.push(*ghost);
                (a, b, c)
            });
        sqlx::query(
            "insert into conversations (id, kind, direct_key, created_by, last_seq)
             select d.id, 'direct', d.owner || ':' || d.ghost, d.owner, 1
               from unnest($1::uuid[], $2::uuid[], $3::uuid[]) as d (id, owner, ghost)",
        )
        .bind(&ids)
        .bind(&owners)
        .bind(&ghosts)
        .execute(db)
        .await?;
    }
    let creator = users.first().copied().unwrap_or_default();
    sqlx::query(
        "insert into conversations (id, kind, title, created_by, last_seq)
         select id, 'group', 'bench group', $2, 1 from unnest($1::uuid[]) as id",
    )
    .bind(groups)
    .bind(creator)
    .execute(db)
    .await?;
    for chunk in memberships.chunks(100_000) {
        let (conversations, members): (Vec<Uuid>, Vec<Uuid>) = chunk.iter().copied().unzip();
        sqlx::query(
            "insert into conversation_members (conversation_id, user_id, role, visible_from_seq)
             select m.conversation, m.member, 'member', 1 from unnest($1::uuid[], $2::uuid[]) as m (conversation, member)
             on conflict do nothing",
        )
        .bind(&conversations)
        .bind(&members)
        .execute(db)
        .await?;
    }
    Ok(())
}

/// One user in [`MANY_CONVERSATIONS`] groups connects to a fresh broker: its RSS growth and the
/// time to `hello`.
async fn one_user_in_many_conversations(stack: &Stack) -> anyhow::Result<Value> {
    let user = Uuid::now_v7();
    let groups: Vec<Uuid> = (0..MANY_CONVERSATIONS).map(|_| Uuid::now_v7()).collect();
    let memberships: Vec<(Uuid, Uuid)> = groups.iter().map(|group| (*group, user)).collect();
    let db = sqlx::PgPool::connect(&stack.database_url()).await?;
    arrange(&db, &[user], &[], &groups, &memberships).await?;
    db.close().await;
    let tokens = [token(UserId::from_uuid(user))];
    let measured = measure_broker(stack, &tokens).await?;
    Ok(json!({
        "conversations": MANY_CONVERSATIONS,
        "rss_growth_mib": measured["rss_after_mib"].as_f64().unwrap_or_default()
            - measured["rss_before_mib"].as_f64().unwrap_or_default(),
        "hello_seconds": measured["connect_seconds"],
    }))
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

async fn measure_broker(stack: &Stack, tokens: &[String]) -> anyhow::Result<Value> {
    let mut broker = stack.spawn_release_broker().await?;
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

fn report(rows: &[Value], many: &Value) -> anyhow::Result<()> {
    let mut table = String::from(
        "| variant | connections | connect all (s) | RSS idle → loaded (MiB) | KiB per connection | ÷ bare | bytes per membership |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let per_membership = row["bytes_per_membership"].as_f64().map_or_else(String::new, |b| format!("{b:.0}"));
        table.push_str(&format!(
            "| {} | {} | {:.2} | {:.1} → {:.1} | {:.2} | {:.2} | {per_membership} |\n",
            row["variant"].as_str().unwrap_or_default(),
            row["connections"],
            row["connect_seconds"].as_f64().unwrap_or_default(),
            row["rss_before_mib"].as_f64().unwrap_or_default(),
            row["rss_after_mib"].as_f64().unwrap_or_default(),
            row["kib_per_connection"].as_f64().unwrap_or_default(),
            row["ratio_to_bare"].as_f64().unwrap_or_default(),
        ));
    }
    if !many.is_null() {
        table.push_str(&format!(
            "\nOne user in {} conversations: broker RSS grew {:.2} MiB, `hello` after {:.3} s.\n",
            many["conversations"],
            many["rss_growth_mib"].as_f64().unwrap_or_default(),
            many["hello_seconds"].as_f64().unwrap_or_default(),
        ));
    }
    let json = json!({ "scenario": "connections", "rows": rows, "one_user_in_many_conversations": many });
    super::write_named_report("connections", &json, &table)
}
