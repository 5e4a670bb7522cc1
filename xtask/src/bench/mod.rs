//! `cargo xtask bench rest`: REST throughput against the same transaction run by pgbench.
//!
//! One private, durable PostgreSQL (fsync on, as in production), a nats-server and one
//! `parley-api` (release build, rate limits lifted). For each concurrency C, with C clients
//! (each a user with its own group): API runs (POST messages for the interval) alternate with
//! pgbench runs of the transaction the API runs for a message (bump the conversation's seq,
//! insert the message, insert the event) on C connections, one conversation each; each pair
//! gives a ratio and the median pair is reported (`--pairs`). Then the clients GET pages of 50
//! messages. The load generator shares the machine, so the ratios are the result; absolute
//! numbers move with whatever else runs.

mod channels;
pub mod connections;
pub mod e2e;
mod events;
pub mod fanout;
mod hot;
mod http;
mod lean_ws;
mod plot;
mod push;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hyper::Method;
use parley_shared::auth::{Claims, issue_hs256};
use parley_shared::ids::UserId;
use parley_testkit::nats::NatsServer;
use parley_testkit::postgres::{PostgresOptions, PostgresServer};
use parley_testkit::process::Output;
use parley_testkit::{AppProcess, Binary, binaries, wait};
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "bench-secret";
const CONCURRENCY: [usize; 2] = [8, 32];

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenario: `rest`, `events`, `connections`, `e2e`, `fanout`, `channels`, `hot` or `push`.
    scenario: String,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Alternating API/pgbench pairs per concurrency; the median pair is reported.
    #[arg(long, default_value_t = 3)]
    pairs: usize,
    /// `connections` only: run just one part, `realistic` (19,000 connections: baseline, users
    /// without conversations, realistic users) or `many` (one user in 10,000 conversations).
    #[arg(long)]
    only: Option<connections::Part>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.scenario.as_str() {
        "rest" => run_rest(args).await,
        "events" => events::run(args.seconds).await,
        "connections" => connections::run(args.only).await,
        "e2e" => e2e::run(args.seconds).await,
        "fanout" => fanout::run().await,
        "channels" => channels::run(args.seconds).await,
        "hot" => hot::run(args.seconds).await,
        "push" => push::run(args.seconds, args.pairs).await,
        other => {
            anyhow::bail!(
                "unknown scenario {other:?}; available: rest, events, connections, e2e, fanout, channels, hot, push"
            )
        }
    }
}

/// A private, durable PostgreSQL, a nats-server and a release `parley-api` with rate limits
/// lifted, in a temporary directory.
pub struct Stack {
    dir: tempfile::TempDir,
    postgres: PostgresServer,
    nats: NatsServer,
    api: AppProcess,
    /// Where the release binaries it was started with are.
    release: std::path::PathBuf,
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Vec::new()).await
    }

    /// With extra settings for the API.
    pub async fn start_with(api_env: Vec<(String, String)>) -> anyhow::Result<Self> {
        crate::install::ensure_services()?;
        let release = Self::build_release()?;

        let dir = tempfile::Builder::new().prefix("parley-bench-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let pg_output = Output::File(dir.path().join("postgres.log"));
        PostgresServer::init(&dir.path().join("pg"), &pg_output)?;
        let options = PostgresOptions { port: wait::free_port()?, durable: true, max_connections: 200 };
        let postgres = PostgresServer::start(&dir.path().join("pg"), options, pg_output).await?;
        let nats =
            NatsServer::start(&dir.path().join("nats"), wait::free_port()?, Output::File(dir.path().join("nats.log")))
                .await?;
        let env = vec![
            ("DATABASE_URL".into(), postgres.url("postgres")),
            ("NATS_URL".into(), nats.url()),
            ("PARLEY_JWT_SECRET".into(), SECRET.into()),
            ("PARLEY_LOG".into(), "warn".into()),
            ("PARLEY_WRITE_RATE_PER_SECOND".into(), "1000000".into()),
            ("PARLEY_WRITE_BURST".into(), "1000000".into()),
            ("PARLEY_NEW_CONVERSATIONS_PER_HOUR".into(), "1000000".into()),
            ("PARLEY_NEW_DIRECT_PARTNERS_PER_HOUR".into(), "1000000".into()),
            // The fan-out group is created with its 10,000 members in one request.
            ("PARLEY_MAX_BODY_BYTES".into(), "1048576".into()),
        ]
        .into_iter()
        .chain(api_env)
        .collect();
        let api = spawn_release_api(&release, env, dir.path()).await?;
        Ok(Self { dir, postgres, nats, api, release })
    }

    /// Builds the API and the broker with the release profile; returns the directory of their
    /// binaries. Always both in one build: built apart, their shared dependencies unify to other
    /// feature sets and each build would invalidate the other's.
    ///
    /// `cargo run` gives this process xtask's package variables (`CARGO_PKG_NAME`,
    /// `CARGO_MANIFEST_DIR`, …); some build scripts (ring's) rebuild when those change, so the
    /// build runs without them, as one typed in a shell would.
    fn build_release() -> anyhow::Result<std::path::PathBuf> {
        let mut cargo = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args(["build", "--release", "--package", "parley-api", "--package", "parley-broker"]);
        for (name, _) in std::env::vars_os() {
            let name_str = name.to_string_lossy();
            let from_cargo_run =
                ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_PACKAGE"]
                    .iter()
                    .any(|prefix| name_str.starts_with(prefix));
            if from_cargo_run || name_str == "OUT_DIR" {
                cargo.env_remove(&name);
            }
        }
        let status = cargo.status()?;
        anyhow::ensure!(status.success(), "cargo build --release of parley-api and parley-broker failed");
        Ok(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release"))
    }

    /// A release `parley-broker` on this stack's NATS.
    pub async fn spawn_release_broker(&self) -> anyhow::Result<AppProcess> {
        self.spawn_release_broker_with(Vec::new()).await
    }

    /// Like [`Self::spawn_release_broker`], with extra settings.
    pub async fn spawn_release_broker_with(&self, extra_env: Vec<(String, String)>) -> anyhow::Result<AppProcess> {
        let mut env = vec![
            ("NATS_URL".into(), self.nats.url()),
            ("PARLEY_JWT_SECRET".into(), SECRET.into()),
            ("PARLEY_LOG".into(), "warn".into()),
        ];
        env.extend(extra_env);
        let port = wait::free_port()?;
        let output = Output::File(self.dir.path().join(format!("broker-{port}.log")));
        AppProcess::spawn_executable(Binary::Broker, self.release.join(Binary::Broker.name()), port, env, output).await
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn api_url(&self) -> String {
        self.api.url()
    }

    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.api.port()))
    }

    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// The API's database, for arranging large data sets directly.
    pub fn database_url(&self) -> String {
        self.postgres.url("postgres")
    }

    /// `clients` users, each with a token and a group of their own.
    pub async fn users(&self, clients: usize) -> anyhow::Result<Vec<BenchUser>> {
        setup_users(&self.api.url(), self.api_addr(), clients).await
    }

    pub async fn stop(mut self) {
        drop(self.api);
        self.nats.stop().await;
        self.postgres.stop().await;
    }
}

async fn run_rest(args: BenchArgs) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let mut rows = Vec::new();
    for clients in CONCURRENCY {
        let users = stack.users(clients).await?;
        let duration = Duration::from_secs(args.seconds);
        // API and pgbench runs alternate, and each pair gives one ratio: whatever else the
        // machine does then weighs on both sides of that pair. The median pair is reported.
        let mut pairs = Vec::with_capacity(args.pairs);
        for _ in 0..args.pairs {
            let posts = drive(&users, duration, Op::Post).await?;
            let pgbench = run_pgbench(&stack.postgres, stack.dir.path(), &users, duration)?;
            eprintln!(
                "bench rest C={clients}: POST {posts:.0}/s, pgbench {pgbench:.0} tx/s, ratio {:.2}",
                posts / pgbench
            );
            pairs.push((posts / pgbench, posts, pgbench));
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ratio, posts, pgbench) = pairs[pairs.len() / 2];
        let pages = drive(&users, duration, Op::Page).await?;
        eprintln!("bench rest C={clients}: GET page {pages:.0}/s");
        rows.push(json!({
            "clients": clients, "post_per_s": posts, "get_page_per_s": pages, "pgbench_tx_per_s": pgbench,
            "post_ratio": ratio, "get_ratio": pages / pgbench,
            "post_ratios_all_pairs": pairs.iter().map(|pair| pair.0).collect::<Vec<f64>>(),
        }));
    }
    stack.stop().await;
    write_report(&rows, args.seconds)
}

async fn spawn_release_api(release: &Path, mut env: Vec<(String, String)>, dir: &Path) -> anyhow::Result<AppProcess> {
    env.push(("PARLEY_DB_MAX_CONNECTIONS".into(), "32".into()));
    let executable = release.join(Binary::Api.name());
    AppProcess::spawn_executable(Binary::Api, executable, wait::free_port()?, env, Output::File(dir.join("api.log")))
        .await
}

/// A bench user's token, valid for an hour.
pub(crate) fn token(user: UserId) -> String {
    issue_hs256(SECRET, &Claims::for_user(user, Some("bench".into()), Duration::from_secs(3600)))
}

/// One client: a user, its token and its own group conversation.
#[derive(Clone, Debug)]
pub struct BenchUser {
    pub id: UserId,
    pub token: String,
    pub conversation: Uuid,
    pub api: SocketAddr,
}

async fn setup_users(api: &str, api_addr: SocketAddr, clients: usize) -> anyhow::Result<Vec<BenchUser>> {
    let http = reqwest::Client::new();
    let mut users = Vec::with_capacity(clients);
    for _ in 0..clients {
        let id = UserId::from_uuid(Uuid::now_v7());
        let token = token(id);
        let created: Value = http
            .post(format!("{api}/v1/conversations"))
            .bearer_auth(&token)
            .json(&json!({ "kind": "group", "title": "bench" }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let conversation = created["id"].as_str().context("conversation id")?.parse()?;
        users.push(BenchUser { id, token, conversation, api: api_addr });
    }
    Ok(users)
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Post,
    Page,
}

/// Each user loops on `op` for `duration`; returns successful requests per second.
async fn drive(users: &[BenchUser], duration: Duration, op: Op) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(users.len());
    for user in users {
        let mut connection = http::Connection::open(user.api, &user.token).await?;
        let messages = format!("/v1/conversations/{}/messages", user.conversation);
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let page = format!("{messages}?limit=50");
            while started.elapsed() < duration {
                let status = match op {
                    Op::Post => {
                        let body = Bytes::from_static(br#"{"text":"bench message"}"#);
                        connection.send(Method::POST, &messages, Some(body)).await
                    }
                    Op::Page => connection.send(Method::GET, &page, None).await,
                };
                let counter = if status.is_ok_and(|status| status.is_success()) { &done } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} requests failed during the {op:?} run");
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed)
}

/// pgbench with the API's message transaction, one connection and conversation per user.
fn run_pgbench(postgres: &PostgresServer, dir: &Path, users: &[BenchUser], duration: Duration) -> anyhow::Result<f64> {
    let url = postgres.url("postgres");
    let clients: Vec<String> =
        users.iter().enumerate().map(|(n, user)| format!("({n}, '{}', '{}')", user.conversation, user.id)).collect();
    let setup = format!(
        "drop table if exists bench_clients; create table bench_clients (n int primary key, conversation_id uuid, user_id uuid);
         insert into bench_clients values {};",
        clients.join(", ")
    );
    psql(&url, &setup)?;
    // The transaction the API runs for a message, statement for statement (outbox::next_seq,
    // then the message, its membership check and its event in one statement). The client's
    // conversation is looked up inside the statements, so pgbench pays no extra round trip.
    let script = dir.join("message.sql");
    std::fs::write(
        &script,
        r#"begin;
update conversations
   set last_seq = last_seq + 1, last_activity_at = case when true then now() else last_activity_at end
 where id = (select conversation_id from bench_clients where n = :client_id)
returning last_seq as seq \gset
with client as (select conversation_id as cid, user_id as uid from bench_clients where n = :client_id),
message as (
    insert into messages (id, conversation_id, seq, author_id, client_message_id, body, reply_to, attachment)
    select gen_random_uuid(), cid, :seq, uid, null, 'bench message', null, null from client
     where exists (select 1 from conversation_members m, client where m.conversation_id = cid and m.user_id = uid)
    returning conversation_id, author_id, created_at
), event as (
    insert into events (id, conversation_id, seq, type, actor_id, data, trace_context)
    select gen_random_uuid(), conversation_id, :seq, 'message.created', author_id,
           '{"body": "bench message", "author_id": "00000000-0000-0000-0000-000000000000", "message_id": "00000000-0000-0000-0000-000000000000"}'::jsonb,
           '00-0123456789abcdef0123456789abcdef-0123456789abcdef-00'
      from message
)
select created_at from message;
commit;
"#,
    )?;
    let output = std::process::Command::new(binaries::postgres_tool("pgbench")?)
        .args(["--no-vacuum", "--protocol=prepared", "--file"])
        .arg(&script)
        .args(["--client", &users.len().to_string(), "--jobs", "2", "--time", &duration.as_secs().to_string()])
        .arg(&url)
        .output()
        .context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "pgbench failed: {}{stdout}", String::from_utf8_lossy(&output.stderr));
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = ")?.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no tps in pgbench output:\n{stdout}"))
}

fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let output = std::process::Command::new(binaries::postgres_tool("psql")?)
        .args(["--quiet", "--set", "ON_ERROR_STOP=1", "--command", sql, url])
        .output()?;
    anyhow::ensure!(output.status.success(), "psql failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

fn write_report(rows: &[Value], seconds: u64) -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let report = json!({ "scenario": "rest", "seconds_per_run": seconds, "results": rows });
    std::fs::write(dir.join("rest.json"), serde_json::to_string_pretty(&report)?)?;
    let mut table = String::from(
        "| clients | POST msg/s | GET page/s | pgbench tx/s | POST ÷ pgbench | GET ÷ pgbench |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        table.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |\n",
            row["clients"],
            row["post_per_s"].as_f64().unwrap_or_default(),
            row["get_page_per_s"].as_f64().unwrap_or_default(),
            row["pgbench_tx_per_s"].as_f64().unwrap_or_default(),
            row["post_ratio"].as_f64().unwrap_or_default(),
            row["get_ratio"].as_f64().unwrap_or_default(),
        ));
    }
    std::fs::write(dir.join("rest.md"), &table)?;
    println!("{table}\nReport: target/bench/rest.json, target/bench/rest.md");
    Ok(())
}

/// Writes `target/bench/<name>.svg`: latency by percentile of each series.
fn write_plot(name: &str, title: &str, series: &[(&str, &events::Sample)]) -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.svg")), plot::latency_by_percentile(title, series))?;
    println!("Plot: target/bench/{name}.svg");
    Ok(())
}

/// Writes `target/bench/<name>.json` and `<name>.md`, and prints the table.
pub(crate) fn write_named_report(name: &str, report: &Value, table: &str) -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(report)?)?;
    std::fs::write(dir.join(format!("{name}.md")), table)?;
    println!("{table}\nReport: target/bench/{name}.json, target/bench/{name}.md");
    Ok(())
}

/// Starts this binary's hidden baseline-server `subcommand` as a child process (killed on
/// drop); returns it and the port it printed.
pub(crate) async fn spawn_baseline(subcommand: &str) -> anyhow::Result<(tokio::process::Child, u16)> {
    use tokio::io::AsyncBufReadExt;
    let mut server = tokio::process::Command::new(std::env::current_exe()?)
        .arg(subcommand)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut line = String::new();
    tokio::io::BufReader::new(server.stdout.as_mut().context("stdout")?).read_line(&mut line).await?;
    let port = line.trim().parse().with_context(|| format!("{subcommand} printed no port"))?;
    Ok((server, port))
}

/// A baseline server's WebSocket handshake, keeping the request path.
pub(crate) async fn accept_with_path(
    stream: tokio::net::TcpStream,
) -> Option<(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, String)> {
    let mut path = String::new();
    #[allow(clippy::result_large_err, reason = "tungstenite's Callback trait fixes this signature")]
    let callback = |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    let ws = tokio_tungstenite::accept_hdr_async(stream, callback).await.ok()?;
    Some((ws, path))
}

/// Binds a baseline server's listener and prints its port for [`spawn_baseline`].
pub(crate) async fn baseline_listener() -> anyhow::Result<tokio::net::TcpListener> {
    use std::io::Write;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    Ok(listener)
}

/// A counter or gauge of a broker's `/metrics`.
pub(crate) async fn broker_metric(broker_url: &str, name: &str) -> anyhow::Result<f64> {
    let metrics = reqwest::get(format!("{broker_url}/metrics")).await?.text().await?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .with_context(|| format!("{name} missing from the broker's metrics"))
}
