//! Finding the PostgreSQL and nats-server executables, with a one-line fix when one is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const INSTALL_HINT: &str = "install them with `sudo apt-get install -y postgresql nats-server` \
     (Debian/Ubuntu) or `brew install postgresql nats-server` (macOS), or run `cargo xtask up`, which installs them";

/// A PostgreSQL server program (`initdb`, `postgres`, `pg_ctl`, `pgbench`…).
pub fn postgres_tool(name: &str) -> anyhow::Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(dir) = std::env::var("PARLEY_PG_BINDIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    }
    // Debian keeps the server programs off the PATH, one directory per major version.
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|entry| entry.path().join("bin")).collect();
        versions.sort();
        dirs.extend(versions.into_iter().rev());
    }
    dirs.extend(["/opt/homebrew/bin", "/usr/local/bin", "/usr/bin"].map(PathBuf::from));
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .or_else(|| on_path(name))
        .ok_or_else(|| anyhow::anyhow!("PostgreSQL's `{name}` was not found: {INSTALL_HINT}"))
}

pub fn nats_server() -> anyhow::Result<PathBuf> {
    std::env::var_os("PARLEY_NATS_SERVER")
        .map(PathBuf::from)
        .or_else(|| on_path("nats-server"))
        .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|path| path.is_file()))
        .ok_or_else(|| anyhow::anyhow!("`nats-server` was not found: {INSTALL_HINT}"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
