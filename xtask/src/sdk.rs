//! `cargo xtask sdk-check`: the TypeScript SDK (`clients/typescript`) built and tested against a
//! private stack, as CI runs it.
//!
//! 1. `npm ci` when `node_modules` is missing or older than the lockfile.
//! 2. The generated sources (`src/generated/`) are written again into a temporary directory and
//!    compared with the committed ones: they must match (`cargo xtask openapi` regenerates them).
//! 3. `npm run build` (tsc --strict), then `npm test` (Node's test runner) with
//!    `PARLEY_API_URL`, `PARLEY_BROKER_WS_URL` and `PARLEY_CONTROL_URL` set: a private
//!    PostgreSQL, nats-server, parley-api and parley-broker, and a control endpoint
//!    ([`control`]) through which the tests mint tokens and restart the broker or NATS.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

pub mod control;

/// The SDK package's directory.
pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript")
}

/// Runs `npm <args>` in `dir`, failing with npm's exit status.
pub fn npm(dir: &Path, args: &[&str], env: &[(String, String)]) -> anyhow::Result<()> {
    let status = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .envs(env.iter().cloned())
        .status()
        .context("running npm: install Node.js 18 or later (Debian: apt-get install nodejs npm)")?;
    anyhow::ensure!(status.success(), "`npm {}` in {} failed with {status}", args.join(" "), dir.display());
    Ok(())
}

/// Installs a package's locked dependencies unless they are already there.
pub fn ensure_dependencies(dir: &Path) -> anyhow::Result<()> {
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|meta| meta.modified()).ok();
    let lock = modified(dir.join("package-lock.json"));
    let installed = modified(dir.join("node_modules/.package-lock.json"));
    if installed.is_none() || installed < lock {
        npm(dir, &["ci", "--no-audit", "--no-fund"], &[])?;
    }
    Ok(())
}

/// Installs the SDK's dependencies and builds `dist/` (what the demo page loads).
pub fn build() -> anyhow::Result<()> {
    let dir = package_dir();
    ensure_dependencies(&dir)?;
    npm(&dir, &["run", "build"], &[])
}

/// Writes `src/generated/` from `openapi/openapi.json` and `schema/protocol.json`.
pub fn generate() -> anyhow::Result<()> {
    let dir = package_dir();
    ensure_dependencies(&dir)?;
    npm(&dir, &["run", "generate"], &[])
}

pub async fn check() -> anyhow::Result<()> {
    let dir = package_dir();
    ensure_dependencies(&dir)?;
    check_generated_sources(&dir)?;
    npm(&dir, &["run", "build"], &[])?;
    crate::stack::build_binaries()?;
    let stack = control::PrivateStack::start().await?;
    let env = stack.env();
    let result = npm(&dir, &["test"], &env);
    if result.is_err() {
        eprintln!(
            "xtask: SDK tests failed; API log:\n{}\nbroker log:\n{}",
            stack.api_log(60),
            stack.broker_log(60).await
        );
    }
    result
}

fn check_generated_sources(dir: &Path) -> anyhow::Result<()> {
    let fresh = tempfile::tempdir()?;
    npm(dir, &["run", "generate", "--", &fresh.path().display().to_string()], &[])?;
    let committed = dir.join("src/generated");
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(fresh.path())? {
        let name = entry?.file_name();
        let want = std::fs::read(fresh.path().join(&name))?;
        if std::fs::read(committed.join(&name)).ok().as_deref() != Some(want.as_slice()) {
            stale.push(name.to_string_lossy().into_owned());
        }
    }
    anyhow::ensure!(
        stale.is_empty(),
        "clients/typescript/src/generated/ {stale:?} differ from the contract: run `cargo xtask openapi` and commit the result"
    );
    Ok(())
}
