//! Bounded waiting: every wait in the harness ends, with a message that says what never happened.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `probe` every 25 ms until it yields `Some`, for at most `timeout`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Ok(Some(value)) = tokio::time::timeout(remaining, probe()).await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A free TCP port on 127.0.0.1, as the kernel hands them out.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True while something accepts TCP connections on `127.0.0.1:port`.
pub fn port_in_use(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Whether a process with this pid exists (signal 0 probes without sending anything).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH)
}

/// The last `lines` lines of a log file, for failure messages.
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until `GET url` answers `status` and returns its JSON body (`Null` when it has none).
pub async fn until_http_status(url: &str, status: u16, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    until(&format!("{url} to answer {status}"), timeout, || {
        let request = http.get(url).send();
        async move {
            let response = request.await.ok()?;
            if response.status().as_u16() != status {
                return None;
            }
            Some(response.json().await.unwrap_or(serde_json::Value::Null))
        }
    })
    .await
}
