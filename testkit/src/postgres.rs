//! A PostgreSQL cluster this process owns: `initdb` into a directory, `postgres` on a port, stop,
//! SIGKILL and restart on the same port and data.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use sqlx::Connection;

use crate::binaries::postgres_tool;
use crate::privilege::RunAs;
use crate::process::{Output, Supervised};
use crate::wait;

/// The superuser `initdb` creates; local clusters trust connections from 127.0.0.1.
pub const SUPERUSER: &str = "parley";
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct PostgresOptions {
    pub port: u16,
    /// `false` turns off fsync: fine for throwaway test clusters (a killed server still keeps
    /// every commit in the OS page cache), never for data you keep.
    pub durable: bool,
    pub max_connections: u32,
}

/// Why one start attempt failed.
enum Launch {
    /// The server exited during start-up: worth another try.
    ExitedEarly(anyhow::Error),
    Failed(anyhow::Error),
}

#[derive(Debug)]
pub struct PostgresServer {
    data_dir: PathBuf,
    options: PostgresOptions,
    output: Output,
    run_as: Option<RunAs>,
    process: Option<Supervised>,
}

impl PostgresServer {
    /// Creates the cluster in `data_dir` unless one is there already.
    pub fn init(data_dir: &Path, output: &Output) -> anyhow::Result<()> {
        if data_dir.join("PG_VERSION").is_file() {
            return Ok(());
        }
        let run_as = RunAs::for_postgres()?;
        match run_as {
            Some(run_as) => {
                run_as.own(data_dir)?;
                if !run_as.can_reach(data_dir) {
                    anyhow::bail!(
                        "PostgreSQL runs as an unprivileged user here and cannot reach {}: \
                         make its parent directories world-searchable (chmod o+x) or move the project",
                        data_dir.display()
                    );
                }
            }
            None => std::fs::create_dir_all(data_dir)?,
        }
        let mut initdb = Command::new(postgres_tool("initdb")?);
        initdb
            .arg("--pgdata")
            .arg(data_dir)
            .args([
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-instructions",
            ])
            .current_dir(data_dir);
        if let Some(run_as) = run_as {
            run_as.apply(&mut initdb);
        }
        let mut process = Supervised::spawn("initdb", initdb, output)?;
        let status = process.wait_blocking()?;
        if !status.success() {
            anyhow::bail!("initdb failed ({status}) for {}", data_dir.display());
        }
        Ok(())
    }

    /// Starts the server on an initialised data directory and waits until it accepts connections.
    pub async fn start(data_dir: &Path, options: PostgresOptions, output: Output) -> anyhow::Result<Self> {
        let mut server =
            Self { data_dir: data_dir.to_path_buf(), options, output, run_as: RunAs::for_postgres()?, process: None };
        server.launch().await?;
        Ok(server)
    }

    /// Starts `postgres` and waits until it accepts connections. Right after a SIGKILL, backends
    /// orphaned by the old postmaster may hold its shared memory for a moment, and a new
    /// postmaster exits at once; it is tried again until they are gone.
    async fn launch(&mut self) -> anyhow::Result<()> {
        const ATTEMPTS: u32 = 20;
        let mut attempt = 1;
        loop {
            match self.launch_once().await {
                Ok(process) => {
                    self.process = Some(process);
                    return Ok(());
                }
                Err(Launch::ExitedEarly(_)) if attempt < ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(Launch::ExitedEarly(error) | Launch::Failed(error)) => {
                    let log = wait::log_tail(self.output.log_file(), 20);
                    anyhow::bail!("{error:#}; PostgreSQL log:\n{log}");
                }
            }
        }
    }

    async fn launch_once(&self) -> Result<Supervised, Launch> {
        let mut postgres = Command::new(postgres_tool("postgres").map_err(Launch::Failed)?);
        postgres
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &self.options.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="])
            .args(["-c", &format!("max_connections={}", self.options.max_connections)])
            .current_dir(&self.data_dir);
        if !self.options.durable {
            postgres.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        }
        if let Some(run_as) = self.run_as {
            run_as.apply(&mut postgres);
        }
        let mut process =
            Supervised::spawn("postgres", postgres, &self.output).map_err(|error| Launch::Failed(error.into()))?;
        let url = self.url("postgres");
        let ready = wait::until("PostgreSQL to accept connections", START_TIMEOUT, || {
            let exited = process.try_exit_status();
            let url = url.clone();
            async move {
                if let Some(status) = exited {
                    return Some(Err(status));
                }
                let conn = sqlx::PgConnection::connect(&url).await.ok()?;
                conn.close().await.ok();
                Some(Ok(()))
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => Ok(process),
            Ok(Err(status)) => Err(Launch::ExitedEarly(anyhow::anyhow!("postgres exited with {status}"))),
            Err(timeout) => Err(Launch::Failed(timeout)),
        }
    }

    pub fn port(&self) -> u16 {
        self.options.port
    }

    /// The URL of database `database`, as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.options.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// The exit status, once the server has ended by itself.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.as_mut()?.try_exit_status()
    }

    /// Fast shutdown: open transactions are rolled back, clients disconnected.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Signal::SIGINT, Duration::from_secs(30)).await;
        }
    }

    /// SIGKILL to the postmaster and every backend, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.launch().await
    }

    /// Starts a stopped or killed server again.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "PostgreSQL is already running");
        self.launch().await
    }
}
