//! A nats-server with JetStream this process owns: start on a port with a store directory, stop,
//! SIGKILL and restart on the same port and store.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::binaries::nats_server;
use crate::process::{Output, Supervised};
use crate::wait;

const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct NatsServer {
    store_dir: PathBuf,
    port: u16,
    output: Output,
    cluster: Option<ClusterMember>,
    /// A configuration file passed with `-c` (for settings without a flag, like `max_payload`).
    config: Option<PathBuf>,
    process: Option<Supervised>,
}

/// This server's place in a cluster: its route port and the other members' route ports.
#[derive(Clone, Debug)]
struct ClusterMember {
    port: u16,
    routes: Vec<u16>,
}

/// A JetStream cluster of nats-servers on 127.0.0.1, each with its own store.
#[derive(Debug)]
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` clustered servers under `dir` and waits until each greets clients.
    pub async fn start(dir: &Path, size: usize, output: impl Fn(usize) -> Output) -> anyhow::Result<Self> {
        let ports: Vec<(u16, u16)> =
            (0..size).map(|_| Ok((wait::free_port()?, wait::free_port()?))).collect::<anyhow::Result<_>>()?;
        let mut servers = Vec::with_capacity(size);
        for (index, &(port, route_port)) in ports.iter().enumerate() {
            let routes = ports.iter().filter(|(other, _)| *other != port).map(|(_, route)| *route).collect();
            let cluster = Some(ClusterMember { port: route_port, routes });
            let store_dir = dir.join(format!("nats-{index}"));
            std::fs::create_dir_all(&store_dir)?;
            servers.push(NatsServer { store_dir, port, output: output(index), cluster, config: None, process: None });
        }
        // All first, then wait: a clustered server greets clients before its peers are up.
        for server in &mut servers {
            server.launch().await?;
        }
        Ok(Self { servers })
    }

    /// Every member's URL, comma-separated, as NATS_URL takes them.
    pub fn urls(&self) -> String {
        self.servers.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }
}

impl NatsServer {
    /// Starts `nats-server -js` on `127.0.0.1:port` and waits until it greets clients.
    pub async fn start(store_dir: &Path, port: u16, output: Output) -> anyhow::Result<Self> {
        Self::start_configured(store_dir, port, output, None).await
    }

    /// Like [`start`](Self::start), with `config` (nats-server configuration text, e.g.
    /// `max_payload: 8192`) written next to the store and passed with `-c`.
    pub async fn start_with_config(store_dir: &Path, port: u16, output: Output, config: &str) -> anyhow::Result<Self> {
        let path = store_dir.with_extension("conf");
        std::fs::write(&path, config)?;
        Self::start_configured(store_dir, port, output, Some(path)).await
    }

    async fn start_configured(
        store_dir: &Path,
        port: u16,
        output: Output,
        config: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(store_dir)?;
        let store_dir = store_dir.to_path_buf();
        let mut server = Self { store_dir, port, output, cluster: None, config, process: None };
        server.launch().await?;
        Ok(server)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(nats_server()?);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store_dir)
            .args(["--server_name", &format!("parley-{}", self.port)]);
        if let Some(cluster) = &self.cluster {
            let routes: Vec<String> = cluster.routes.iter().map(|port| format!("nats://127.0.0.1:{port}")).collect();
            command
                .args(["--cluster_name", "parley-test", "--cluster", &format!("nats://127.0.0.1:{}", cluster.port)])
                .args(["--routes", &routes.join(",")]);
        }
        let mut process = Supervised::spawn("nats-server", command, &self.output)?;
        let port = self.port;
        let ready = wait::until("nats-server to accept connections", START_TIMEOUT, || {
            let exited = process.try_exit_status();
            async move {
                if let Some(status) = exited {
                    return Some(Err(anyhow::anyhow!("nats-server exited with {status}")));
                }
                greets(port).then_some(Ok(()))
            }
        })
        .await
        .and_then(|ready| ready);
        if let Err(error) = ready {
            let log = wait::log_tail(self.output.log_file(), 20);
            anyhow::bail!("{error}; nats-server log:\n{log}");
        }
        self.process = Some(process);
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where JetStream keeps its streams (remove it while stopped to lose them).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
    }

    /// The exit status, once the server has ended by itself.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.as_mut()?.try_exit_status()
    }

    /// Freezes the server (SIGSTOP): its sockets stay open but nothing answers, as on a hung
    /// host. [`resume`](Self::resume) thaws it.
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

    /// Graceful stop (SIGTERM).
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop(Signal::SIGTERM, Duration::from_secs(10)).await;
        }
    }

    /// SIGKILL, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts a stopped or killed server again on the same port and store.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "nats-server is already running");
        self.launch().await
    }
}

/// A NATS server writes `INFO {...}` as soon as a client connects.
fn greets(port: u16) -> bool {
    let Ok(mut stream) =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(250))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(250)));
    let mut greeting = [0u8; 4];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO"
}
