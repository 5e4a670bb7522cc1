//! `cargo xtask up | down | reset`: the whole system on this machine, with its state in `.parley/`.
//!
//! ```text
//! .parley/pg         PostgreSQL data directory (kept between runs)
//! .parley/nats       JetStream store (kept between runs)
//! .parley/logs       one log file per process (also echoed to the terminal)
//! .parley/stack.env  DATABASE_URL, NATS_URL, API_URL, BROKER_URL of the running stack, and
//!                    development tokens (PARLEY_TOKEN, DEMO_<NAME>_ID/TOKEN)
//! .parley/stack.pid  the pid of the `up` process, for `down`
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use parley_testkit::nats::NatsServer;
use parley_testkit::postgres::{PostgresOptions, PostgresServer};
use parley_testkit::privilege::RunAs;
use parley_testkit::process::Output;
use parley_testkit::{AppProcess, Binary, wait};
use sqlx::{Connection, PgConnection};

use crate::{demo, install, sdk, token};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The development user the printed token is for.
const DEV_USER: &str = "0191d0c2-6c3e-7f00-8000-00000000a11c";
/// Demo users whose tokens `up` writes to `.parley/stack.env`, so that trying the API or a
/// frontend needs no toolchain: (name, id).
const DEMO_USERS: [(&str, &str); 3] = [
    ("Alice", "0191d0c2-6c3e-7f00-8000-0000000a11ce"),
    ("Bob", "0191d0c2-6c3e-7f00-8000-000000000b0b"),
    ("Carol", "0191d0c2-6c3e-7f00-8000-00000000ca01"),
];
/// How long the tokens `up` writes stay valid.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(86_400);

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// PostgreSQL port.
    #[arg(long, env = "PARLEY_DEV_PG_PORT", default_value_t = 55432)]
    pg_port: u16,
    /// nats-server port.
    #[arg(long, env = "PARLEY_DEV_NATS_PORT", default_value_t = 54222)]
    nats_port: u16,
    /// parley-api port.
    #[arg(long, env = "PARLEY_DEV_API_PORT", default_value_t = 8080)]
    api_port: u16,
    /// parley-broker port.
    #[arg(long, env = "PARLEY_DEV_BROKER_PORT", default_value_t = 8081)]
    broker_port: u16,
    /// Port of the demo chat app (clients/demo).
    #[arg(long, env = "PARLEY_DEV_DEMO_PORT", default_value_t = 8082)]
    demo_port: u16,
}

/// The project root and its `.parley/` directory.
struct Paths {
    root: PathBuf,
    state: PathBuf,
}

impl Paths {
    fn new() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf();
        let state = root.join(".parley");
        Self { root, state }
    }

    fn logs(&self) -> PathBuf {
        self.state.join("logs")
    }

    fn pid_file(&self) -> PathBuf {
        self.state.join("stack.pid")
    }

    /// `.parley/pg`, unless PostgreSQL must run as another user who cannot reach it (a project
    /// under `/root`, say): then a directory under /var/lib/parley named after the project path.
    fn pg_data(&self) -> anyhow::Result<PathBuf> {
        let local = self.state.join("pg");
        match RunAs::for_postgres()? {
            Some(run_as) if !run_as.can_reach(&local) => {
                let name = self.root.to_string_lossy().trim_start_matches('/').replace('/', "_");
                Ok(PathBuf::from("/var/lib/parley").join(name).join("pg"))
            }
            _ => Ok(local),
        }
    }
}

fn echo(prefix: &str, file: PathBuf) -> Output {
    Output::Echo { prefix: format!("[{prefix}]"), file }
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let paths = Paths::new();
    if let Some(pid) = running_stack(&paths) {
        anyhow::bail!("a stack is already running (xtask pid {pid}); stop it with `cargo xtask down`");
    }
    for (what, port) in [
        ("PostgreSQL", args.pg_port),
        ("NATS", args.nats_port),
        ("the API", args.api_port),
        ("the broker", args.broker_port),
        ("the demo app", args.demo_port),
    ] {
        if wait::port_in_use(port) {
            anyhow::bail!(
                "port {port}, for {what}, is in use: stop what holds it or choose another with --help's port flags"
            );
        }
    }
    install::ensure_services()?;
    build_binaries()?;
    std::fs::create_dir_all(paths.logs())?;
    std::fs::write(paths.pid_file(), std::process::id().to_string())?;

    let result = run_stack(&args, &paths).await;
    let _ = std::fs::remove_file(paths.pid_file());
    let _ = std::fs::remove_file(paths.state.join("stack.env"));
    result
}

/// Starts everything, waits for a stop request or a crash, then stops everything in reverse order.
async fn run_stack(args: &UpArgs, paths: &Paths) -> anyhow::Result<()> {
    let pg_data = paths.pg_data()?;
    let pg_output = echo("postgres", paths.logs().join("postgres.log"));
    PostgresServer::init(&pg_data, &pg_output)?;
    let options = PostgresOptions { port: args.pg_port, durable: true, max_connections: 100 };
    let mut postgres = PostgresServer::start(&pg_data, options, pg_output).await?;
    let database_url = postgres.url("parley");
    create_database(&postgres.url("postgres"), "parley").await?;

    let mut nats =
        NatsServer::start(&paths.state.join("nats"), args.nats_port, echo("nats", paths.logs().join("nats.log")))
            .await?;

    let mut env: Vec<(String, String)> = std::env::vars().filter(|(key, _)| key.starts_with("PARLEY_")).collect();
    env.push(("DATABASE_URL".into(), database_url.clone()));
    env.push(("NATS_URL".into(), nats.url()));
    // A development stack: let a web app on any local dev server connect and call the API.
    for setting in ["PARLEY_BROKER_ALLOWED_ORIGINS", "PARLEY_API_ALLOWED_ORIGINS"] {
        if !env.iter().any(|(key, _)| key == setting) {
            env.push((setting.into(), "*".into()));
        }
    }
    migrate(&env)?;

    let api =
        AppProcess::spawn(Binary::Api, args.api_port, env.clone(), echo("api", paths.logs().join("api.log"))).await;
    let broker =
        AppProcess::spawn(Binary::Broker, args.broker_port, env, echo("broker", paths.logs().join("broker.log"))).await;
    let (mut api, mut broker) = match (api, broker) {
        (Ok(api), Ok(broker)) => (api, broker),
        (api, broker) => {
            nats.stop().await;
            postgres.stop().await;
            return Err(api.err().or(broker.err()).expect("one of them failed"));
        }
    };
    for app in [&api, &broker] {
        wait_ready(&app.url()).await?;
    }

    let stack_env = format!(
        "DATABASE_URL={database_url}\nNATS_URL={}\nAPI_URL={}\nBROKER_URL={}\nBROKER_WS_URL=ws://127.0.0.1:{}/ws\n",
        nats.url(),
        api.url(),
        broker.url(),
        broker.port()
    );
    std::fs::write(paths.state.join("stack.env"), format!("{stack_env}{}", dev_tokens()))?;
    let broker_ws_url = format!("ws://127.0.0.1:{}/ws", broker.port());
    let demo = serve_demo(args.demo_port, &api.url(), &broker_ws_url).await;
    print_banner(&stack_env, &pg_data, demo.as_ref().map(|_| args.demo_port));

    let reason = stopped_or_crashed(&mut [&mut api, &mut broker], &mut postgres, &mut nats).await;
    if let Some(demo) = demo {
        demo.abort();
    }
    eprintln!("xtask: {reason}; stopping the stack");
    let (api_status, broker_status) = tokio::join!(api.terminate(), broker.terminate());
    nats.stop().await;
    postgres.stop().await;
    let describe = |status: Option<std::process::ExitStatus>| {
        status.map_or_else(|| "killed after the deadline".to_owned(), |status| status.to_string())
    };
    eprintln!("xtask: stopped (api: {}, broker: {})", describe(api_status), describe(broker_status));
    Ok(())
}

/// Builds the binaries `up` runs, into the same target directory as this xtask.
pub fn build_binaries() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--package", "parley-api", "--package", "parley-broker"])
        .status()
        .context("running cargo build")?;
    anyhow::ensure!(status.success(), "cargo build failed");
    Ok(())
}

async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    let exists: bool = sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        sqlx::raw_sql(&format!(r#"create database "{name}""#)).execute(&mut admin).await?;
    }
    admin.close().await?;
    Ok(())
}

fn migrate(env: &[(String, String)]) -> anyhow::Result<()> {
    let status = std::process::Command::new(Binary::Api.path()?)
        .arg("migrate")
        .envs(env.iter().cloned())
        .status()
        .context("running parley-api migrate")?;
    anyhow::ensure!(status.success(), "parley-api migrate failed");
    Ok(())
}

async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let url = format!("{base}/ready");
    wait::until(&url, READY_TIMEOUT, || async {
        reqwest::get(&url).await.ok().filter(|response| response.status().is_success()).map(|_| ())
    })
    .await
}

/// The demo chat app, signed in with the demo users' development tokens; `None` (with the
/// reason printed) when the SDK cannot be built here, for example without Node.js.
async fn serve_demo(port: u16, api_url: &str, broker_ws_url: &str) -> Option<tokio::task::JoinHandle<()>> {
    let users: Vec<demo::DemoUser> = DEMO_USERS
        .into_iter()
        .map(|(name, id)| {
            let id = id.parse().expect("valid uuid");
            demo::DemoUser { name, id, token: token::issue(id, Some(name.into()), DEV_TOKEN_TTL) }
        })
        .collect();
    let served = match sdk::build() {
        Ok(()) => demo::serve(port, api_url, broker_ws_url, &users).await,
        Err(error) => Err(error),
    };
    served.inspect_err(|error| eprintln!("xtask: the demo app is not served: {error:#}")).ok()
}

/// `PARLEY_TOKEN` for the development user, then `DEMO_<NAME>_ID` and `DEMO_<NAME>_TOKEN` for
/// each demo user: lines for `.parley/stack.env`, valid for [`DEV_TOKEN_TTL`].
fn dev_tokens() -> String {
    let issue = |id: &str, name: &str| token::issue(id.parse().expect("valid uuid"), Some(name.into()), DEV_TOKEN_TTL);
    let mut lines = format!("PARLEY_TOKEN={}\n", issue(DEV_USER, "Dev User"));
    for (name, id) in DEMO_USERS {
        let upper = name.to_uppercase();
        lines.push_str(&format!("DEMO_{upper}_ID={id}\nDEMO_{upper}_TOKEN={}\n", issue(id, name)));
    }
    lines
}

fn print_banner(stack_env: &str, pg_data: &Path, demo_port: Option<u16>) {
    let token = token::issue(DEV_USER.parse().expect("valid uuid"), Some("Dev User".into()), DEV_TOKEN_TTL);
    let demo = demo_port.map_or_else(
        || "Demo chat app: not served (see the message above).".to_owned(),
        |port| format!("Demo chat app: http://127.0.0.1:{port}/ (sign in as Alice, Bob or Carol; one per browser tab)"),
    );
    println!(
        "\nParley is up.\n\n{stack_env}{demo}\n\nPostgreSQL data: {}\nSaved to .parley/stack.env (with tokens for the demo users \
         Alice, Bob and Carol). Logs: .parley/logs/.\n\n\
         A development token for user {DEV_USER}, valid 24 h (others: `cargo xtask token <uuid>`):\n\
         export PARLEY_TOKEN={token}\n\n\
         Stop with Ctrl-C, or `cargo xtask down` from another terminal.\n",
        pg_data.display()
    );
}

/// Resolves on SIGINT/SIGTERM, or when any process of the stack ends by itself.
async fn stopped_or_crashed(
    apps: &mut [&mut AppProcess],
    postgres: &mut PostgresServer,
    nats: &mut NatsServer,
) -> String {
    let signal = parley_shared::shutdown::signal();
    tokio::pin!(signal);
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            () = &mut signal => return "stop requested".into(),
            _ = poll.tick() => {
                for app in apps.iter_mut() {
                    if let Some(status) = app.exited() {
                        return format!("{} exited ({status})", app.url());
                    }
                }
                if let Some(status) = postgres.exited() {
                    return format!("PostgreSQL exited ({status})");
                }
                if let Some(status) = nats.exited() {
                    return format!("nats-server exited ({status})");
                }
            }
        }
    }
}

/// The pid of a running `cargo xtask up`, if the pid file names a live xtask process.
fn running_stack(paths: &Paths) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(paths.pid_file()).ok()?.trim().parse().ok()?;
    // A stale file may name a pid that now belongs to something else.
    let is_xtask = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map_or(true, |cmdline| String::from_utf8_lossy(&cmdline).contains("xtask"));
    (wait::pid_alive(pid) && is_xtask && pid != std::process::id()).then_some(pid)
}

pub async fn down() -> anyhow::Result<()> {
    let paths = Paths::new();
    let Some(pid) = running_stack(&paths) else {
        eprintln!("xtask: no stack is running");
        return Ok(());
    };
    // `up` stops its processes in order on SIGTERM, exactly as on Ctrl-C.
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM)?;
    wait::until("the stack to stop", Duration::from_secs(60), || async { (!wait::pid_alive(pid)).then_some(()) })
        .await?;
    eprintln!("xtask: stack stopped");
    Ok(())
}

pub async fn reset() -> anyhow::Result<()> {
    down().await?;
    let paths = Paths::new();
    let pg_data = paths.pg_data()?;
    if pg_data.exists() {
        std::fs::remove_dir_all(&pg_data).with_context(|| format!("removing {}", pg_data.display()))?;
    }
    if paths.state.exists() {
        std::fs::remove_dir_all(&paths.state).context("removing .parley")?;
    }
    eprintln!("xtask: all local data removed");
    Ok(())
}
