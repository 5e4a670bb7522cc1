//! Child processes that cannot outlive their owner.
//!
//! Every child runs in its own process group (so a signal reaches the server and anything it
//! forked) and gets SIGKILL when the process that started it dies (Linux `PR_SET_PDEATHSIG`).
//! The kernel delivers that signal when the *thread* that forked the child exits, and test
//! threads come and go, so all children are forked by one spawner thread that lives as long as
//! the process. Dropping a [`Supervised`] kills its process group.

use std::fs::File;
use std::io;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Where a child's stdout and stderr go.
#[derive(Clone, Debug)]
pub enum Output {
    /// Appended to a log file (tests: quiet, read back on failure).
    File(PathBuf),
    /// Appended to a log file and echoed line by line to our stderr behind a `[prefix]`
    /// (`cargo xtask up`).
    Echo { prefix: String, file: PathBuf },
}

impl Output {
    pub fn log_file(&self) -> &PathBuf {
        match self {
            Self::File(file) | Self::Echo { file, .. } => file,
        }
    }

    fn attach(&self, command: &mut Command) -> io::Result<()> {
        let log = File::options().create(true).append(true).open(self.log_file())?;
        match self {
            Self::File(_) => command.stdout(log.try_clone()?).stderr(log),
            Self::Echo { .. } => command.stdout(Stdio::piped()).stderr(Stdio::piped()),
        };
        Ok(())
    }

    fn pump(&self, name: &str, child: &mut Child) -> io::Result<()> {
        let Self::Echo { prefix, file } = self else {
            return Ok(());
        };
        let streams: [Option<Box<dyn io::Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn io::Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let mut log = File::options().create(true).append(true).open(file)?;
            let prefix = prefix.clone();
            // These threads end when the child closes its end of the pipe.
            std::thread::Builder::new().name(format!("{name}-output")).spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = writeln!(log, "{line}");
                    eprintln!("{prefix} {line}");
                }
            })?;
        }
        Ok(())
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("parley-testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the process spawner thread");
        Mutex::new(requests)
    })
}

/// A running child process in its own process group.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
}

impl Supervised {
    /// Spawns `command` in a new process group, to be killed if this process dies, with its
    /// stdout and stderr sent to `output`.
    pub fn spawn(name: impl Into<String>, mut command: Command, output: &Output) -> io::Result<Self> {
        use std::os::unix::process::CommandExt;
        let name = name.into();
        command.process_group(0).stdin(Stdio::null());
        output.attach(&mut command)?;
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs between fork and exec and only makes one async-signal-safe
        // syscall (prctl). It runs after std has applied uid/gid, which would otherwise reset
        // the parent-death signal.
        #[allow(unsafe_code, reason = "pre_exec is the only way to set PR_SET_PDEATHSIG for a child")]
        unsafe {
            command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
        }
        let (reply, response) = mpsc::channel();
        spawner()
            .lock()
            .map_err(|_| io::Error::other("process spawner lock poisoned"))?
            .send((command, reply))
            .map_err(|_| io::Error::other("process spawner thread is gone"))?;
        let mut child = response.recv().map_err(|_| io::Error::other("process spawner thread is gone"))??;
        output.pump(&name, &mut child)?;
        Ok(Self { name, child })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: Signal) {
        // ESRCH (already gone) is fine: the caller wanted it to stop.
        let pid = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        let _ = killpg(Pid::from_raw(pid), signal);
    }

    /// Blocks until the process ends (for short-lived tools such as initdb).
    pub fn wait_blocking(&mut self) -> io::Result<ExitStatus> {
        self.child.wait()
    }

    /// The exit status if the process has ended.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to end.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal`, waits up to `grace`, then SIGKILLs the group. Returns the exit status,
    /// or `None` when the process had to be killed.
    pub async fn stop(&mut self, signal: Signal, grace: Duration) -> Option<ExitStatus> {
        self.signal(signal);
        let status = self.wait_exit(grace).await;
        if status.is_none() {
            tracing::warn!(process = %self.name, "did not stop within {grace:?}; killing it");
            self.kill();
        }
        status
    }

    /// SIGKILLs the process group and reaps the child.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.try_exit_status().is_none() {
            self.kill();
        } else {
            // The leader is gone, but it may have left children in its group.
            self.signal(Signal::SIGKILL);
        }
    }
}

/// Resident memory of process `pid` in KiB (Linux: `VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS for process {pid}")))
}
