//! `cargo xtask asyncapi-check`: validates `openapi/asyncapi.yaml` (WebSocket) and
//! `openapi/asyncapi-nats.yaml` (NATS) with the reference AsyncAPI
//! parser (npm `@asyncapi/parser`, pinned by `openapi/validate/package-lock.json`).

use std::path::Path;
use std::process::Command;

use anyhow::Context;

pub fn run() -> anyhow::Result<()> {
    let validate = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/validate");
    for tool in ["node", "npm"] {
        let found = Command::new(tool).arg("--version").output().is_ok_and(|output| output.status.success());
        anyhow::ensure!(found, "{tool} not found; install Node.js 18 or newer (Debian: apt-get install nodejs npm)");
    }
    if !validate.join("node_modules/@asyncapi/parser").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&validate)
            .status()
            .context("npm ci")?;
        anyhow::ensure!(status.success(), "npm ci in {} failed", validate.display());
    }
    for file in ["asyncapi.yaml", "asyncapi-nats.yaml"] {
        let status = Command::new("node")
            .args(["validate.mjs", &format!("../{file}")])
            .current_dir(&validate)
            .status()
            .context("node validate.mjs")?;
        anyhow::ensure!(status.success(), "openapi/{file} is not a valid AsyncAPI document");
    }
    Ok(())
}
