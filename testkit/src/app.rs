//! The real `parley-api` and `parley-broker` executables, run as child processes.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{Output, Supervised};
use crate::wait;

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longer than either binary's own shutdown deadline.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Api,
    Broker,
}

impl Binary {
    pub fn name(self) -> &'static str {
        match self {
            Self::Api => "parley-api",
            Self::Broker => "parley-broker",
        }
    }

    /// The variable that sets the binary's listen address.
    pub fn listen_env(self) -> &'static str {
        match self {
            Self::Api => "PARLEY_API_LISTEN",
            Self::Broker => "PARLEY_BROKER_LISTEN",
        }
    }

    /// The executable in this build's target directory, built first if it is missing (as it is
    /// when only one package's tests were asked for; `cargo test --workspace` builds it).
    pub fn path(self) -> anyhow::Result<PathBuf> {
        let dir = match std::env::var_os("PARLEY_BIN_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => target_dir()?,
        };
        let path = dir.join(self.name());
        if !path.is_file() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status =
                Command::new(cargo).args(["build", "--package", self.name(), "--bin", self.name()]).status()?;
            anyhow::ensure!(status.success(), "building {} failed", self.name());
        }
        anyhow::ensure!(path.is_file(), "{} not found at {}", self.name(), path.display());
        Ok(path)
    }
}

/// `target/<profile>`, found from the running executable (`target/<profile>/deps/<test>` for
/// tests, `target/<profile>/xtask` for xtask).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().ok_or_else(|| anyhow::anyhow!("executable has no directory"))?;
    if dir.ends_with("deps") {
        dir = dir.parent().ok_or_else(|| anyhow::anyhow!("deps has no parent"))?;
    }
    Ok(dir.to_path_buf())
}

/// A running Parley binary on `127.0.0.1:<port>`.
#[derive(Debug)]
pub struct AppProcess {
    binary: Binary,
    executable: PathBuf,
    port: u16,
    env: Vec<(String, String)>,
    output: Output,
    process: Option<Supervised>,
}

impl AppProcess {
    /// Starts `binary` with exactly `env` (inherited `PARLEY_*`, `DATABASE_URL` and `NATS_URL`
    /// are removed) and waits until `GET /health` answers 200.
    pub async fn spawn(binary: Binary, port: u16, env: Vec<(String, String)>, output: Output) -> anyhow::Result<Self> {
        Self::spawn_executable(binary, binary.path()?, port, env, output).await
    }

    /// Like [`spawn`](Self::spawn), with an explicit executable (a release build, say).
    pub async fn spawn_executable(
        binary: Binary,
        executable: PathBuf,
        port: u16,
        env: Vec<(String, String)>,
        output: Output,
    ) -> anyhow::Result<Self> {
        let mut app = Self { binary, executable, port, env, output, process: None };
        app.start_again().await?;
        Ok(app)
    }

    fn command(&self) -> anyhow::Result<Command> {
        let mut command = Command::new(&self.executable);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("PARLEY_") || key == "DATABASE_URL" || key == "NATS_URL" {
                command.env_remove(key.as_ref());
            }
        }
        // A test may listen on another address of the same port (all addresses, say).
        command.env(self.binary.listen_env(), format!("127.0.0.1:{}", self.port));
        command.envs(self.env.iter().cloned());
        Ok(command)
    }

    /// Starts the process (again, after [`kill`](Self::kill) or [`terminate`](Self::terminate))
    /// on the same port with the same environment.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "{} is already running", self.binary.name());
        let mut process = Supervised::spawn(self.binary.name(), self.command()?, &self.output)?;
        let health = format!("{}/health", self.url());
        let http = reqwest::Client::new();
        let started = wait::until(&format!("{} to answer {health}", self.binary.name()), START_TIMEOUT, || {
            let exited = process.try_exit_status();
            let request = http.get(&health).timeout(Duration::from_secs(2)).send();
            async move {
                if let Some(status) = exited {
                    return Some(Err(anyhow::anyhow!("exited with {status}")));
                }
                request.await.ok().filter(|response| response.status().is_success()).map(|_| Ok(()))
            }
        })
        .await
        .and_then(|started| started);
        if let Err(error) = started {
            anyhow::bail!("{} did not start: {error}; its log:\n{}", self.binary.name(), self.log_tail(30));
        }
        self.process = Some(process);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// The exit status, once the process has ended by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.as_mut()?.try_exit_status()
    }

    /// SIGTERM, then waits for the graceful shutdown to finish. `None` if it had to be killed.
    pub async fn terminate(&mut self) -> Option<ExitStatus> {
        let mut process = self.process.take()?;
        process.stop(Signal::SIGTERM, STOP_TIMEOUT).await
    }

    /// Freezes the process (SIGSTOP), as on a hung host; [`resume`](Self::resume) thaws it.
    pub fn pause(&self) {
        if let Some(process) = &self.process {
            process.signal(Signal::SIGSTOP);
        }
    }

    pub fn resume(&self) {
        if let Some(process) = &self.process {
            process.signal(Signal::SIGCONT);
        }
    }

    /// SIGKILL, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// The last `lines` lines the process logged.
    pub fn log_tail(&self, lines: usize) -> String {
        wait::log_tail(self.output.log_file(), lines)
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        if std::thread::panicking() && self.process.is_some() {
            eprintln!("--- last lines of {} (port {}) ---\n{}", self.binary.name(), self.port, self.log_tail(40));
        }
    }
}
