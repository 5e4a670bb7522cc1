//! What a test gets: real services of its own.
//!
//! Once per test binary: one PostgreSQL cluster (or the server at `TEST_DATABASE_URL`) holding a
//! migrated template database. Once per test: a fresh database cloned from that template, a
//! private nats-server with JetStream (or the one at `TEST_NATS_URL`), and a directory for the
//! logs of every process the test starts. Fault tests ask for [`TestContext::with_own_services`]
//! and get a PostgreSQL cluster of their own too, which they may stop, kill and restart.

use parley_shared::subjects::Subjects;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parley_shared::auth::{Claims, issue_hs256};
use parley_shared::ids::UserId;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::app::{AppProcess, Binary};
use crate::nats::NatsServer;
use crate::postgres::{PostgresOptions, PostgresServer};
use crate::process::Output;
use crate::wait;

/// The HS256 secret every test process is configured with.
pub const TEST_JWT_SECRET: &str = "parley-test-secret";

static SHARED: OnceCell<Shared> = OnceCell::const_new();
static NEXT_TEST: AtomicU32 = AtomicU32::new(0);

/// Per-binary state. Lives until the process exits; its servers then die with it (see `process`).
#[derive(Debug)]
struct Shared {
    root: PathBuf,
    /// `None` when `TEST_DATABASE_URL` names an external server.
    _postgres: Option<PostgresServer>,
    /// A URL on the server as a user that may `CREATE DATABASE`.
    admin_url: String,
    template: String,
}

impl Shared {
    async fn get() -> &'static Shared {
        SHARED
            .get_or_try_init(Self::start)
            .await
            .unwrap_or_else(|error| panic!("test harness could not start PostgreSQL: {error:#}"))
    }

    async fn start() -> anyhow::Result<Self> {
        let root = make_root()?;
        let (postgres, admin_url) = match std::env::var("TEST_DATABASE_URL") {
            Ok(url) => (None, url),
            Err(_) => {
                let server = start_postgres(&root.join("shared-pg")).await?;
                let url = server.url("postgres");
                (Some(server), url)
            }
        };
        if postgres.is_none() {
            drop_stale_databases(&admin_url).await?;
        }
        let (template, template_url) = create_database(&admin_url, "parley_template", None).await?;
        migrate(&template_url).await?;
        Ok(Self { root, _postgres: postgres, admin_url, template })
    }
}

/// `<kind>_<our pid>_<random>`: database names that say which test process made them.
fn owned_name(kind: &str) -> String {
    format!("{kind}_{}_{}", std::process::id(), Uuid::new_v4().simple())
}

/// On a server shared with other runs (`TEST_DATABASE_URL`), drops the databases of test
/// processes that have exited; a private cluster is thrown away whole instead.
async fn drop_stale_databases(admin_url: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url).await?;
    let names: Vec<String> = sqlx::query_scalar(
        r"select datname from pg_database where datname ~ '^(parley_template|test|empty)_[0-9]+_[0-9a-f]{32}$'",
    )
    .fetch_all(&mut admin)
    .await?;
    for name in names {
        let owner = name.split('_').find_map(|part| part.parse::<u32>().ok());
        if owner.is_some_and(|pid| !wait::pid_alive(pid)) {
            admin.execute(format!(r#"drop database if exists "{name}" with (force)"#).as_str()).await?;
        }
    }
    admin.close().await?;
    Ok(())
}

/// Creates a database named after this process (see [`owned_name`]) on the server of
/// `server_url`, optionally cloned from `template`; returns its name and URL.
async fn create_database(server_url: &str, kind: &str, template: Option<&str>) -> anyhow::Result<(String, String)> {
    let name = owned_name(kind);
    let clone = template.map(|template| format!(r#" template "{template}""#)).unwrap_or_default();
    let mut admin = PgConnection::connect(server_url).await?;
    admin.execute(format!(r#"create database "{name}"{clone}"#).as_str()).await?;
    admin.close().await?;
    let url = with_database(server_url, &name);
    Ok((name, url))
}

/// A temp directory for this test binary, world-searchable so an unprivileged PostgreSQL can
/// reach its data directory. Directories left by test binaries that have exited are removed.
fn make_root() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let owner = name.strip_prefix("parley-test-").and_then(|rest| rest.split('-').next()?.parse::<u32>().ok());
            if owner.is_some_and(|pid| !wait::pid_alive(pid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let root = tmp.join(format!("parley-test-{}-{}", std::process::id(), Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root)?;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
    Ok(root)
}

async fn start_postgres(data_dir: &Path) -> anyhow::Result<PostgresServer> {
    let output = Output::File(data_dir.with_extension("log"));
    PostgresServer::init(data_dir, &output)?;
    let options = PostgresOptions { port: wait::free_port()?, durable: false, max_connections: 300 };
    PostgresServer::start(data_dir, options, output).await
}

async fn migrate(url: &str) -> anyhow::Result<()> {
    let pool = PgPool::connect(url).await?;
    sqlx::migrate!("../migrations").run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// `url` with its database name replaced.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[derive(Debug)]
enum TestNats {
    Own(NatsServer),
    External(String),
}

/// One test's services. Dropping it stops every server it started; its directory (logs) is
/// removed unless the test failed.
#[derive(Debug)]
pub struct TestContext {
    dir: PathBuf,
    database_url: String,
    postgres: Option<PostgresServer>,
    nats: TestNats,
    subjects: Subjects,
}

impl TestContext {
    /// A fresh database on the shared cluster and a private nats-server.
    pub async fn start() -> Self {
        Self::build(false).await.unwrap_or_else(|error| panic!("test harness failed: {error:#}"))
    }

    /// PostgreSQL and nats-server of this test's own, for tests that stop, kill or restart them.
    pub async fn with_own_services() -> Self {
        Self::build(true).await.unwrap_or_else(|error| panic!("test harness failed: {error:#}"))
    }

    async fn build(own_services: bool) -> anyhow::Result<Self> {
        let shared = Shared::get().await;
        let id = NEXT_TEST.fetch_add(1, Ordering::Relaxed);
        let dir = shared.root.join(format!("test-{id}"));
        std::fs::create_dir_all(&dir)?;
        let (postgres, database_url) = if own_services {
            let server = start_postgres(&dir.join("pg")).await?;
            let url = server.url("postgres");
            migrate(&url).await?;
            (Some(server), url)
        } else {
            let (_, url) = create_database(&shared.admin_url, "test", Some(&shared.template)).await?;
            (None, url)
        };
        let nats = match std::env::var("TEST_NATS_URL") {
            Ok(url) if !own_services => TestNats::External(url),
            _ => {
                let output = Output::File(dir.join("nats.log"));
                TestNats::Own(NatsServer::start(&dir.join("nats"), wait::free_port()?, output).await?)
            }
        };
        // Tests may share one NATS (TEST_NATS_URL): each gets subjects and a stream of its own.
        let subjects = Subjects::new(&format!("t{}-{id}", std::process::id()))?;
        Ok(Self { dir, database_url, postgres, nats, subjects })
    }

    /// This test's directory; every process it starts logs here.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This test's own database.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    pub fn nats_url(&self) -> String {
        match &self.nats {
            TestNats::Own(server) => server.url(),
            TestNats::External(url) => url.clone(),
        }
    }

    /// This test's subject scheme (a prefix of its own), as the binaries it spawns use it.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// A new database with no tables, on this test's server (for migration tests).
    pub async fn empty_database(&self) -> String {
        let (_, url) = create_database(&self.database_url, "empty", None).await.expect("create an empty database");
        url
    }

    /// A pool on this test's database, for arranging data and asserting on it. It gives up on a
    /// connection after 3 s, so queries during an outage fail quickly instead of after sqlx's 30 s.
    pub async fn pool(&self) -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(3))
            .connect(&self.database_url)
            .await
            .expect("connect to the test database")
    }

    /// This test's PostgreSQL server, to stop, kill or restart. Only with [`Self::with_own_services`].
    pub fn postgres(&mut self) -> &mut PostgresServer {
        self.postgres.as_mut().expect("this test shares PostgreSQL; use TestContext::with_own_services()")
    }

    /// This test's nats-server, to stop, kill or restart.
    pub fn nats(&mut self) -> &mut NatsServer {
        match &mut self.nats {
            TestNats::Own(server) => server,
            TestNats::External(_) => {
                panic!("TEST_NATS_URL is set; use TestContext::with_own_services()")
            }
        }
    }

    /// A valid bearer token for `user`, signed with [`TEST_JWT_SECRET`].
    pub fn token(&self, user: UserId, name: &str) -> String {
        issue_hs256(TEST_JWT_SECRET, &Claims::for_user(user, Some(name.into()), Duration::from_secs(3600)))
    }

    /// The environment a Parley binary needs to run against this test's services.
    pub fn app_env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.database_url.clone()),
            ("NATS_URL".into(), self.nats_url()),
            ("PARLEY_JWT_SECRET".into(), TEST_JWT_SECRET.into()),
            ("PARLEY_NATS_PREFIX".into(), self.subjects.prefix().into()),
            ("PARLEY_LOG".into(), "info,parley_api=debug,parley_broker=debug".into()),
        ]
    }

    /// Starts the real `parley-api` executable against this test's services.
    pub async fn spawn_api(&self) -> AppProcess {
        self.spawn(Binary::Api, Vec::new()).await
    }

    /// Starts the real `parley-broker` executable against this test's NATS.
    pub async fn spawn_broker(&self) -> AppProcess {
        self.spawn(Binary::Broker, Vec::new()).await
    }

    /// Starts `binary` with extra environment variables on top of [`Self::app_env`].
    pub async fn spawn(&self, binary: Binary, extra_env: Vec<(String, String)>) -> AppProcess {
        self.spawn_on(binary, wait::free_port().expect("free port"), extra_env).await
    }

    /// Like [`Self::spawn`], on a port chosen by the caller (which may then name it in a
    /// listen address of its own in `extra_env`).
    pub async fn spawn_on(&self, binary: Binary, port: u16, extra_env: Vec<(String, String)>) -> AppProcess {
        let mut env = self.app_env();
        env.extend(extra_env);
        let log = self.dir.join(format!("{}-{port}.log", binary.name()));
        AppProcess::spawn(binary, port, env, Output::File(log)).await.unwrap_or_else(|error| panic!("{error:#}"))
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        if let Some(postgres) = &mut self.postgres {
            postgres.kill();
        }
        if let TestNats::Own(nats) = &mut self.nats {
            nats.kill();
        }
        if std::thread::panicking() {
            // Out of this binary's root, which the next test binary removes once we exited.
            let kept = self.dir.parent().and_then(Path::file_name).map(|root| {
                let name = root.to_string_lossy().replacen("parley-test-", "parley-kept-", 1);
                std::env::temp_dir()
                    .join(format!("{name}-{}", self.dir.file_name().unwrap_or_default().to_string_lossy()))
            });
            let kept = kept.filter(|kept| std::fs::rename(&self.dir, kept).is_ok());
            eprintln!("test services' logs are kept in {}", kept.as_deref().unwrap_or(&self.dir).display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_database_name() {
        let cases = [
            ("postgres://u@h:1/old", "postgres://u@h:1/new"),
            ("postgres://u@h:1/old?sslmode=disable", "postgres://u@h:1/new?sslmode=disable"),
            ("postgres://u@h:1", "postgres://u@h:1/new"),
            ("postgres://u:p@h:1/", "postgres://u:p@h:1/new"),
        ];
        for (input, expected) in cases {
            assert_eq!(with_database(input, "new"), expected, "{input}");
        }
    }
}
